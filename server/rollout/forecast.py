"""How much more data an INCONCLUSIVE check needs: pure arithmetic on a check's interval.

A check is INCONCLUSIVE while its confidence interval straddles the gate. If the effect stays
what it is now, the interval keeps its centre and shrinks as ``1 / sqrt(n)`` while both
versions gather samples at the current split, so the interval excludes the gate once the
sample counts are ``k`` times today's, with

    k = (half-width on the gate's side / distance from the estimate to the gate) ** 2.

``more_samples`` gives the extra samples of each version (``n * (k - 1)``), ``None`` when no
estimate can be made (the estimate sits on the gate, or nothing was measured). ``to_minimum``
covers checks that could not be computed yet (fewer samples than they need): the samples
still missing. ``describe`` turns either into one line for people, saying when the evidence
window (which keeps the last N samples of each version) is too small for the check ever to
decide at this effect.

Both are rough on purpose: an estimate of the order of magnitude ("about 2 000 more feedback
rows"), not a power analysis. Nothing here does I/O or keeps state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Forecast:
    """Samples each version still needs; ``factor``: the sample counts needed over today's."""

    canary: int
    stable: int
    factor: float


def more_samples(estimate: float, low: float, high: float, limit: float, n_canary: int, n_stable: int,
                 higher_is_worse: bool = True) -> Optional[Forecast]:
    """The samples each version needs beyond ``n_canary`` and ``n_stable`` before the interval
    ``[low, high]`` around ``estimate`` would exclude ``limit`` at the observed effect.

    ``higher_is_worse``: the check fails above the limit and passes at or below it (errors,
    latency, accuracy drop, loss, bias, cost); False for a measure that must stay above its
    limit (top-1 agreement). An interval that already excludes the limit needs nothing (0).
    None: no estimate (a value that is not finite, no samples, or the estimate on the gate)."""
    values = (estimate, low, high, limit)
    if not all(math.isfinite(x) for x in values) or min(n_canary, n_stable) < 1 or low > high:
        return None
    if not higher_is_worse:  # mirror it: the same arithmetic, the gate's side swapped
        estimate, low, high, limit = -estimate, -high, -low, -limit
    if estimate < limit:     # on the passing side: the high end must come down to the limit
        half, distance = high - estimate, limit - estimate
    elif estimate > limit:   # on the failing side: the low end must rise above the limit
        half, distance = estimate - low, estimate - limit
    else:
        return None
    if half <= distance:
        return Forecast(0, 0, 1.0)
    factor = (half / distance) ** 2
    # Rounded up, less a hair: 100 * (16 - 1) in floating point must stay 1500, not become 1501.
    return Forecast(math.ceil(n_canary * (factor - 1) - 1e-9), math.ceil(n_stable * (factor - 1) - 1e-9), factor)


def to_minimum(need: int, n_canary: int, n_stable: int) -> Forecast:
    """A check that needs ``need`` samples of each version before it can be computed at all."""
    more_c, more_s = max(0, need - n_canary), max(0, need - n_stable)
    have = max(min(n_canary, n_stable), 1)
    return Forecast(more_c, more_s, max(need / have, 1.0))


def _count(n: int) -> str:
    """1234567 -> "1 234 567" (as the rest of Verso writes numbers for people)."""
    return f"{n:,}".replace(",", " ")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def describe(f: Optional[Forecast], unit: str, n_canary: int, n_stable: int, window: Optional[int] = None,
             canary_per_s: float = 0.0, stable_per_s: float = 0.0, computed: bool = True) -> str:
    """One line: what ``f`` asks for, in ``unit`` ("calls", "feedback rows" ...). ``window``:
    the samples a version's evidence keeps (past it, the oldest fall out: the check cannot
    decide at this effect however long the traffic runs). ``*_per_s``: the versions' current
    rates of these samples, for a time estimate (0: unknown). ``computed``: False for a check
    that still lacks its minimum samples (``to_minimum``)."""
    if f is None:
        return "no estimate: the observed effect sits on the gate; more data decides either way"
    if f.canary == 0 and f.stable == 0:
        return "enough data at the observed effect: the next analysis should decide"
    parts = []
    if f.canary:
        parts.append(f"{_count(f.canary)} more canary")
    if f.stable:
        parts.append(f"{_count(f.stable)} more stable")
    text = f"about {' and '.join(parts)} {unit}"
    text += " (its minimum)" if not computed else " at the observed effect"
    if window and max(n_canary + f.canary, n_stable + f.stable) > window:
        need = max(n_canary + f.canary, n_stable + f.stable)
        return (text + f"; more than the evidence window keeps ({_count(window)} per version, {_count(need)} "
                       "needed): it will not decide at this effect unless --window is raised")
    waits = [more / rate for more, rate in ((f.canary, canary_per_s), (f.stable, stable_per_s)) if more and rate > 0]
    if waits and len(waits) == sum(1 for more in (f.canary, f.stable) if more):
        text += f", ~{_duration(max(waits))} at the current traffic"
    return text
