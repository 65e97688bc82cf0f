"""The attack suite (issue 26): each finding of the hostile-caller review as a test that failed
before the fix and passes now. Runs with the rest of the suite (CI included)."""
