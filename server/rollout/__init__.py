"""Safe rollouts: routing, evidence per version, verdicts."""
