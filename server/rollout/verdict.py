"""Stable against canary: PROMOTE, HOLD or ROLLBACK from two ``Evidence`` summaries.

``decide`` applies fixed rules in a fixed order and explains each one it evaluated, so an
operator can read why a canary was promoted or rolled back. ``next_percent`` and ``is_stale``
are the small policies automatic mode builds on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from server.rollout.evidence import Evidence

PROMOTE = "PROMOTE"
HOLD = "HOLD"
ROLLBACK = "ROLLBACK"
DECISIONS = (PROMOTE, HOLD, ROLLBACK)

# A canary exactly at a limit passes; this absorbs the rounding of sums like 0.001 + 0.005 so that
# "at the limit" does not turn into a rollback by one ulp.
_EPS = 1e-12


@dataclass(frozen=True)
class Gates:
    """The limits a canary must stay within. Fractions, not percents (0.005 is 0.5 points)."""

    max_error_rate_increase: float = 0.005   # canary error rate may exceed stable's by this much
    max_p99_ratio: float = 1.2               # canary p99 <= ratio * stable p99
    min_top1_agreement: float = 0.97         # used only when accuracy is not known for both
    max_accuracy_drop: float = 0.01          # canary accuracy >= stable accuracy - drop
    min_samples: int = 100                   # calls of each version; feedback rows of each; shadow comparisons

    def __post_init__(self):
        if self.max_error_rate_increase < 0:
            raise ValueError(f"max_error_rate_increase must be >= 0, got {self.max_error_rate_increase}")
        if self.max_p99_ratio <= 0:
            raise ValueError(f"max_p99_ratio must be > 0, got {self.max_p99_ratio}")
        if not 0 <= self.min_top1_agreement <= 1:
            raise ValueError(f"min_top1_agreement must be within [0, 1], got {self.min_top1_agreement}")
        if self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0, got {self.max_accuracy_drop}")
        if self.min_samples < 0:
            raise ValueError(f"min_samples must be >= 0, got {self.min_samples}")


@dataclass(frozen=True)
class Verdict:
    decision: str              # PROMOTE, HOLD or ROLLBACK
    reasons: tuple[str, ...]   # one per rule evaluated, in rule order


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f} %"


def decide(stable: Evidence, canary: Evidence, gates: Gates) -> Verdict:
    """Judge the canary against the stable version.

    Rules, in order, each evaluated one contributing one reason:

    1. samples: fewer than ``min_samples`` canary calls, then fewer than ``min_samples`` stable
       calls -> HOLD at once, with that single reason;
    2. errors: fails when canary error rate > stable error rate + ``max_error_rate_increase``;
    3. latency: fails when canary p99 > ``max_p99_ratio`` x stable p99; passes when either p99
       is unknown;
    4. quality: accuracy when both are known from at least ``min_samples`` feedback rows each
       (fails when canary accuracy < stable accuracy - ``max_accuracy_drop``); otherwise top-1
       agreement when the canary (the shadow) has it from at least ``min_samples`` comparisons
       (fails below ``min_top1_agreement``); otherwise unknown;
    5. any failure -> ROLLBACK; else unknown quality -> HOLD; else PROMOTE.

    Accuracy wins over agreement: a canary that answers differently from stable but more often
    right is better, not worse.
    """
    need = gates.min_samples
    if canary.requests < need:
        return Verdict(HOLD, (f"canary has {canary.requests} of {need} calls needed",))
    if stable.requests < need:
        return Verdict(HOLD, (f"stable has {stable.requests} of {need} calls needed",))

    reasons: list[str] = []
    failed = False

    limit = stable.error_rate + gates.max_error_rate_increase
    bad = canary.error_rate > limit + _EPS
    failed |= bad
    reasons.append(f"errors: canary error rate {_pct(canary.error_rate)} {'>' if bad else '<='} "
                   f"stable {_pct(stable.error_rate)} + {gates.max_error_rate_increase * 100:.2f} points")

    if canary.p99_ms is None or stable.p99_ms is None:
        reasons.append("latency: not enough successful calls")
    else:
        limit = gates.max_p99_ratio * stable.p99_ms
        bad = canary.p99_ms > limit + _EPS
        failed |= bad
        reasons.append(f"latency: canary p99 {canary.p99_ms:.2f} ms {'>' if bad else '<='} "
                       f"{gates.max_p99_ratio:g} x stable p99 {stable.p99_ms:.2f} ms ({limit:.2f} ms)")

    quality_known = True
    if (canary.accuracy is not None and stable.accuracy is not None
            and canary.feedback >= need and stable.feedback >= need):
        limit = stable.accuracy - gates.max_accuracy_drop
        bad = canary.accuracy < limit - _EPS
        failed |= bad
        reasons.append(f"quality: canary accuracy {_pct(canary.accuracy)} {'<' if bad else '>='} "
                       f"stable accuracy {_pct(stable.accuracy)} - {gates.max_accuracy_drop * 100:.2f} points "
                       f"({canary.feedback} and {stable.feedback} feedback rows)")
    elif canary.top1_agreement is not None and canary.shadow_compared >= need:
        bad = canary.top1_agreement < gates.min_top1_agreement - _EPS
        failed |= bad
        reasons.append(f"quality: canary agrees with stable on {_pct(canary.top1_agreement)} of top-1 answers "
                       f"{'<' if bad else '>='} {_pct(gates.min_top1_agreement)} needed "
                       f"({canary.shadow_compared} shadow comparisons)")
    else:
        quality_known = False
        reasons.append(f"quality: no feedback or shadow comparisons yet (need {need})")

    if failed:
        decision = ROLLBACK
    elif not quality_known:
        decision = HOLD
    else:
        decision = PROMOTE
    return Verdict(decision, tuple(reasons))


def next_percent(current: float, decision: str, steps: Sequence[float] = (10, 25, 50, 100)) -> float:
    """Automatic mode's next canary share (percent).

    PROMOTE -> the smallest step strictly above ``current`` (``current`` itself when no step is
    above it, so 100 stays 100); ROLLBACK -> 0; HOLD -> ``current``. Raises ValueError on any
    other decision.
    """
    if decision == PROMOTE:
        above = [s for s in steps if s > current]
        return float(min(above)) if above else float(current)
    if decision == ROLLBACK:
        return 0.0
    if decision == HOLD:
        return float(current)
    raise ValueError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")


def is_stale(age_s: Optional[float], max_age_s: float) -> bool:
    """True when ``max_age_s > 0`` (0 or less: never stale), ``age_s`` is known, and
    ``age_s > max_age_s``."""
    return max_age_s > 0 and age_s is not None and age_s > max_age_s
