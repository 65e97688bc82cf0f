"""What a rollout's status says about what happens next: pure helpers of the rollout manager's
``status`` (server/rollout/manager.py), each filling part of a ``RolloutStatus``.

- ``next_step``: automatic mode's next step in one line ("canary 25 % if the analysis passes;
  ..."), or what nothing moves without (manual mode, a final ROLLBACK, a promotion);
- ``fill_forecasts``: per INCONCLUSIVE check, the samples still needed (server/rollout/forecast.py);
- ``fill_history``: which decisions belong to this rollout (``earlier_rollout`` on the others),
  when it began, and a promotion said as such (``promoted_version`` ...);
- ``fill_latency``: the latency distribution up to p99.9.

The decision texts read here are the manager's own (``_set``, ``tick``).
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

from protos import rollout_pb2
from server.rollout import forecast
from server.rollout.verdict import INCONCLUSIVE, MIN_COST_SAMPLES, PROMOTE, Gates, next_percent

FINAL_CHECKS = ("the final ROLLBACK's checks, on the evidence as it stands now (the canary gets no traffic "
                "since the ROLLBACK, so its side is what the ROLLBACK judged)")
LATENCY_LEVELS = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0)

# The manager's decision texts: an operator's rollout (SetRollout, the config file) and the
# automatic steps that end one.
_SET = re.compile(r"^stable v(\d+), canary (?:none|v(\d+) at )")
_AUTO_PROMOTE = re.compile(r"^PROMOTE: v(\d+) is now stable \(was v(\d+)\)")
_ENDS = ("PROMOTE: ", "ROLLBACK: ", "rollout removed")


def next_step(mr: rollout_pb2.ModelRollout, final: bool, failures: int, threshold: int) -> str:
    """What the next automatic analysis does with each outcome, or why nothing is due."""
    if final:
        return "nothing moves: the final ROLLBACK stands until an operator sets a new rollout (verso rollout set)"
    if not mr.canary:
        return "nothing moves: no canary; `verso rollout set --canary N` starts a rollout"
    if not mr.auto.enabled:
        return ("manual mode: nothing moves by itself; `verso rollout set` moves the canary (with --auto the "
                "verdicts do)")
    percent = mr.canary_percent
    if percent >= 100:
        passes = f"PROMOTE (v{mr.canary} becomes stable)"
    else:
        passes = f"canary {next_percent(percent, PROMOTE, list(mr.auto.steps) or [10, 25, 50, 100]):g} %"
    failed = failures + 1
    fails = ("ROLLBACK to 0 % (final)" if failed >= threshold else
             f"HOLD at {percent:g} % (failed analyses {failed} of {threshold})")
    return (f"{passes} if the analysis passes; {fails} if it fails; stays at {percent:g} % while it is "
            "inconclusive")


# check name -> (samples' unit, whether the evidence window bounds them, higher is worse)
_UNITS = {"errors": ("calls", True, True), "latency": ("timed calls of one size class", True, True),
          "accuracy": ("feedback rows", True, True), "quality": ("feedback rows", True, True),
          "agreement": ("shadow-compared rows", False, False), "loss": ("feedback rows with a loss", True, True),
          "bias": ("feedback rows", True, True), "cost": ("model calls", False, True)}


def _minimum(name: str, gates: Gates) -> int:
    """The samples of each version a check needs before it can be computed at all."""
    if name == "bias":
        return gates.min_class_samples
    if name == "cost":
        return MIN_COST_SAMPLES
    if name in ("latency", "loss"):
        return max(gates.min_samples, 2)
    return max(gates.min_samples, 1)


def fill_forecasts(checks: Sequence[rollout_pb2.Check], gates: Gates, window: int, canary, stable) -> None:
    """Each INCONCLUSIVE check of ``checks`` gets its forecast (the others -1 and no text).
    ``canary``/``stable``: the versions' ``Evidence`` (their call rates give a time estimate
    for checks on calls)."""
    for c in checks:
        c.more_canary_samples = c.more_stable_samples = -1
        if c.result != INCONCLUSIVE:
            continue
        unit, windowed, worse_up = _UNITS.get(c.name, ("samples", False, True))
        if c.name == "bias" and c.subject:
            unit = f"feedback rows of {c.subject}"
        computed = math.isfinite(c.statistic)
        if computed:
            f = forecast.more_samples(c.statistic, c.low, c.high, c.limit, c.canary_samples, c.stable_samples,
                                      higher_is_worse=worse_up)
        else:
            f = forecast.to_minimum(_minimum(c.name, gates), c.canary_samples, c.stable_samples)
            if c.name == "bias":
                unit = "feedback rows of one class or slice"
        per_call = c.name in ("errors", "latency")
        c.samples_unit = unit
        if f is not None:
            c.more_canary_samples, c.more_stable_samples = f.canary, f.stable
        c.forecast = forecast.describe(f, unit, c.canary_samples, c.stable_samples,
                                       window=window if windowed else None,
                                       canary_per_s=canary.requests_per_second if per_call else 0.0,
                                       stable_per_s=stable.requests_per_second if per_call else 0.0,
                                       computed=computed)


def _set_pair(text: str) -> Optional[tuple[int, int]]:
    m = _SET.match(text)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def fill_history(st: rollout_pb2.RolloutStatus, mr: rollout_pb2.ModelRollout) -> None:
    """Mark the decisions of earlier rollouts of the model, set when this one began, and say a
    promotion as such. This rollout began at the newest operator decision that set another
    stable/canary pair than the operator decision before it, or that came after a decision
    ending a rollout (PROMOTE, ROLLBACK, removal); without one among the kept decisions, every
    decision is taken as this rollout's."""
    decisions = st.decisions
    start, pair, ended = None, None, False
    for i, d in enumerate(decisions):
        if d.who != "automatic":
            p = _set_pair(d.text)
            if p is not None:
                if p != pair or ended:
                    start = i
                pair, ended = p, False
                continue
        if d.text.startswith(_ENDS):
            ended = True
    if start is not None:
        st.rollout_started_unix_time = decisions[start].unix_time
        for d in decisions[:start]:
            d.earlier_rollout = True
    if mr.canary:
        return
    # A promotion: automatic mode's (the newest PROMOTE made the current stable), or an
    # operator's (the newest rollout set stable to the canary of the one before, no canary).
    for i in range(len(decisions) - 1, -1, -1):
        d = decisions[i]
        m = _AUTO_PROMOTE.match(d.text) if d.who == "automatic" else None
        if m and int(m.group(1)) == mr.stable:
            _promoted(st.verdict, mr.stable, int(m.group(2)), d)
            return
        p = _set_pair(d.text) if d.who != "automatic" else None
        if p is None:
            continue
        if p != (mr.stable, 0):
            return  # the rollout as set is not this one: no promotion to speak of
        before = next((_set_pair(e.text) for e in reversed(decisions[:i])
                       if e.who != "automatic" and _set_pair(e.text)), None)
        if before is not None and before[1] == mr.stable and before[0] != mr.stable:
            _promoted(st.verdict, mr.stable, before[0], d)
        return


def _promoted(out: rollout_pb2.Verdict, version: int, previous: int, d: rollout_pb2.Decision) -> None:
    out.promoted_version, out.promoted_from = version, previous
    out.promoted_unix_time, out.promoted_by = d.unix_time, d.who
    out.next_step = (f"nothing moves: v{version} was promoted and is the stable version; `verso rollout set --canary N` "
                     "starts the next rollout")


def fill_latency(entry: rollout_pb2.VersionEvidence, latencies_ms: Sequence[float]) -> None:
    """The latency at ``LATENCY_LEVELS`` of the timed successful calls in the window."""
    if not latencies_ms:
        return
    values = np.percentile(np.asarray(latencies_ms, dtype=np.float64), LATENCY_LEVELS)
    entry.latency_quantile_levels.extend(LATENCY_LEVELS)
    entry.latency_quantiles_ms.extend(float(v) for v in values)
