"""Stable against canary: PROMOTE, HOLD or ROLLBACK from two ``Evidence`` summaries.

One *analysis* (``decide``) runs a check per measure: errors, latency, quality (accuracy
from feedback, else top-1 agreement from shadow calls) and bias (per class and slice, on by
default). What a caller controls is never judged: errors count only when they are the server's
(server/rollout/faults.py), latency is compared only between calls of comparable size, over the
time span both versions' windows cover. Each check puts a confidence interval
on the difference between the versions (server/rollout/stats.py, scipy.stats) and reads it
against its gate: FAIL when the canary is worse than the gate with the configured confidence,
PASS when it is within the gate with that confidence, INCONCLUSIVE otherwise (not enough
data to tell). All checks PASS -> PROMOTE. A failed analysis is HOLD until
``failure_threshold`` analyses in a row have failed, then ROLLBACK (as Flagger counts failed
checks); anything else is HOLD. One exception: a canary more accurate than stable with
confidence that fails on latency alone is HOLD with the trade-off said in one line, never an
automatic ROLLBACK (an engineer weighs 11 points of accuracy against 4 ms). Whether a ROLLBACK
is final is the caller's state (the rollout manager's): this module is pure.

``next_percent`` and ``is_stale`` are the small policies automatic mode builds on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from server.rollout import stats
from server.rollout.evidence import UNKNOWN_SIZE, Evidence, common_span, timed_within

PROMOTE = "PROMOTE"
HOLD = "HOLD"
ROLLBACK = "ROLLBACK"
DECISIONS = (PROMOTE, HOLD, ROLLBACK)
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


@dataclass(frozen=True)
class Gates:
    """The limits a canary must stay within. Fractions, not percents (0.005 is 0.5 points)."""

    max_error_rate_increase: float = 0.005   # canary error rate may exceed stable's by this much
    max_p99_ratio: float = 1.2               # canary p99 <= ratio * stable p99, or within max_p99_increase_ms
    min_top1_agreement: float = 0.97         # used only when accuracy is not known for both
    max_accuracy_drop: float = 0.01          # canary accuracy >= stable accuracy - drop
    min_samples: int = 100                   # calls of each version; feedback rows of each; shadow comparisons
    confidence: float = 0.95                 # one-sided, per check
    failure_threshold: int = 3               # consecutive failed analyses before ROLLBACK
    warmup_calls: int = 20                   # first calls of a version left out of its latency
    max_loss_increase: float = 0.0           # canary mean loss - stable's at most this (0: no loss gate)
    max_class_drop: float = 0.05             # no class/slice may lose more than this (0: no bias gate)
    min_class_samples: int = 30              # feedback rows of a class/slice in each version to judge it
    max_cost_ratio: float = 0.0              # canary CPU per prediction / stable's at most this (0: no cost gate)
    max_p99_increase_ms: float = 5.0         # or canary p99 <= stable p99 + this many ms (0: the ratio alone)
    # False (the bias gate at its default): only a bias FAIL counts, an INCONCLUSIVE one does not
    # hold a promotion (it would need hundreds of rows per class); True (set by the operator): it does.
    bias_must_pass: bool = False

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
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be within (0.5, 1), got {self.confidence}")
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if min(self.max_loss_increase, self.max_class_drop, self.max_cost_ratio, self.max_p99_increase_ms) < 0 \
                or self.min_class_samples < 1:
            raise ValueError("max_loss_increase, max_class_drop, max_cost_ratio and max_p99_increase_ms must be "
                             ">= 0, min_class_samples >= 1")


@dataclass(frozen=True)
class Check:
    """One measure compared: see ``verso.rollout.Check``. ``text`` is its line for people."""

    name: str
    result: str
    statistic: float
    low: float
    high: float
    limit: float
    canary_samples: int
    stable_samples: int
    text: str
    subject: str = ""             # bias: the class or slice it is about
    # latency: the judged size class's p99 of each version (ms) and the absolute allowance used
    canary_p99_ms: float = float("nan")
    stable_p99_ms: float = float("nan")
    allowance_ms: float = float("nan")


@dataclass(frozen=True)
class Verdict:
    decision: str                 # PROMOTE, HOLD or ROLLBACK
    reasons: tuple[str, ...]      # a line per check, then why this decision
    checks: tuple[Check, ...] = ()
    failed_analyses: int = 0      # consecutive failed analyses, this one included
    final: bool = False           # a ROLLBACK that stands until a new rollout (set by the manager)
    tradeoff: str = ""            # a more accurate canary failing on latency alone, said in one line
    worst_drop: str = ""          # the worst class/slice drop, gate on or off ("" before an analysis)

    @property
    def failed(self) -> bool:
        return any(c.result == FAIL for c in self.checks)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f} %"


def _judge(worse_low: float, worse_high: float, limit: float) -> str:
    """A measure where higher is worse, with its interval: FAIL above the limit with
    confidence, PASS at or under it with confidence, else INCONCLUSIVE."""
    if worse_low > limit:
        return FAIL
    if worse_high <= limit:
        return PASS
    return INCONCLUSIVE


def _nan_check(name: str, limit: float, nc: int, ns: int, text: str, subject: str = "") -> Check:
    nan = float("nan")
    return Check(name, INCONCLUSIVE, nan, nan, nan, limit, nc, ns, f"{name} {INCONCLUSIVE}: {text}", subject)


def _interval(i: stats.Interval, unit: str = "points", scale: float = 100.0) -> str:
    return f"{i.estimate * scale:+.2f} {unit} [{i.low * scale:+.2f}, {i.high * scale:+.2f}]"


def _difference_check(name: str, what: str, worse: tuple[int, int], base: tuple[int, int], limit: float,
                      limit_text: str, samples: tuple[int, int], detail: str, confidence: float) -> Check:
    """A check on the difference of two proportions (``worse`` minus ``base``, each as
    (successes, n)), higher being worse, against ``limit``."""
    d = stats.proportion_difference(*worse, *base, confidence)
    result = _judge(d.low, d.high, limit)
    return Check(name, result, d.estimate, d.low, d.high, limit, *samples,
                 f"{name} {result}: {what} {_interval(d)} vs at most {limit_text} ({detail})")


def check_errors(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """Canary error rate minus stable's, against ``max_error_rate_increase``."""
    return _difference_check("errors", "canary - stable error rate", (canary.error_count, canary.requests),
                             (stable.error_count, stable.requests), gates.max_error_rate_increase,
                             f"+{gates.max_error_rate_increase * 100:.2f}", (canary.requests, stable.requests),
                             f"{canary.requests} and {stable.requests} calls", gates.confidence)


def _size_text(k: int) -> str:
    if k == UNKNOWN_SIZE:
        return "calls of unknown size"
    return f"calls of {2 ** k}-{2 ** (k + 1) - 1} input elements" if k else "calls of 0-1 input elements"


def _comparable(stable: Evidence, canary: Evidence, start: float, end: float, need: int):
    """Each version's timed calls within [start, end] by size class, and the classes with
    ``need`` of each (and a stable p99 above 0)."""
    by: list[dict[int, list[float]]] = []
    for e in (canary, stable):
        out: dict[int, list[float]] = {}
        for ms, k in zip(*timed_within(e, start, end)):
            out.setdefault(k, []).append(ms)
        by.append(out)
    by_c, by_s = by
    classes = sorted(k for k in by_c.keys() & by_s.keys()
                     if min(len(by_c[k]), len(by_s[k])) >= need and np.percentile(by_s[k], 99) > 0)
    return by_c, by_s, classes


def check_latency(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """The canary's p99 against the larger of ``max_p99_ratio`` x stable's p99 and stable's p99
    + ``max_p99_increase_ms`` (``stats.p99_excess``: one bootstrap interval of the canary's p99
    minus that allowance, so FAIL means worse than the ratio AND the absolute allowance with
    confidence, PASS within the ratio OR the allowance with confidence).

    Calls of the same minutes are compared: each version's timed calls within the span both
    windows cover (``evidence.common_span``: at a 10 % canary the stable version's window
    covers a ninth of the canary's time, and the canary's older calls are left out). Where that
    span holds too few calls to judge (at 100 % the stable version gets none, and the span
    shrinks to nothing), the whole windows are compared, and the check's text says which. And
    only calls of one size class (``evidence.size_class``: input elements within a power of
    two), so that heavy requests keyed onto one version cannot make it look slow (nor light ones
    fast). Every class with ``min_samples`` timed calls of each version is judged, each at a
    Bonferroni-corrected confidence (1 - (1 - c) / k for k classes): FAIL when one fails (the
    worst named), PASS when all pass, else INCONCLUSIVE; no such class is INCONCLUSIVE. The
    check's statistic and interval are the p99 ratio (shown); its result comes from the
    combined interval."""
    limit, allowance, need = gates.max_p99_ratio, gates.max_p99_increase_ms, max(gates.min_samples, 2)
    start, end = common_span(stable, canary)
    by_c, by_s, classes = _comparable(stable, canary, start, end, need)
    if math.isinf(start) and math.isinf(end):
        where = "over the whole windows"
    elif classes:
        where = f"over the {end - start:.1f} s both windows cover"
    else:
        span = f"{end - start:.1f} s" if end >= start else "no time"
        where = (f"over the whole windows: the span both cover ({span}) holds fewer than {need} calls of each "
                 "in any size class")
        by_c, by_s, classes = _comparable(stable, canary, -math.inf, math.inf, need)
    nc, ns = sum(map(len, by_c.values())), sum(map(len, by_s.values()))
    if not classes:
        common = by_c.keys() & by_s.keys()
        best = max(common, key=lambda k: min(len(by_c[k]), len(by_s[k])), default=None)
        have = (len(by_c[best]), len(by_s[best])) if best is not None else (0, 0)
        return _nan_check("latency", limit, nc, ns, f"need {need} timed calls of each version, have {have[0]} and "
                                                    f"{have[1]} of a comparable size (in one size class of input "
                                                    f"elements; {nc} and {ns} in all; the first {gates.warmup_calls} "
                                                    "calls of each are not timed)")
    confidence = 1 - (1 - gates.confidence) / len(classes)
    judged = []
    for k in classes:
        x = stats.p99_excess(by_c[k], by_s[k], limit, allowance, confidence)
        judged.append((_judge(x.low, x.high, 0.0), x, k))
    failed = [j for j in judged if j[0] == FAIL]
    if failed:
        result, x, k = max(failed, key=lambda j: j[1].low)
    elif all(j[0] == PASS for j in judged):
        result, x, k = max(judged, key=lambda j: j[1].estimate)
    else:
        result, x, k = max((j for j in judged if j[0] != PASS), key=lambda j: j[1].high)
    c_ms, s_ms = by_c[k], by_s[k]
    r = stats.p99_ratio(c_ms, s_ms, confidence)
    c99, s99 = float(np.percentile(c_ms, 99)), float(np.percentile(s_ms, 99))
    cn, sn = sum(len(by_c[j]) for j in classes), sum(len(by_s[j]) for j in classes)
    several = (f"; the worst of {len(classes)} size classes, each at {confidence * 100:.2f} % confidence"
               if len(classes) > 1 else "")
    gate = f"at most {limit:g}x or +{allowance:g} ms" if allowance > 0 else f"at most {limit:g}x"
    return Check("latency", result, r.estimate, r.low, r.high, limit, cn, sn,
                 f"latency {result}: canary p99 {c99:.2f} vs stable {s99:.2f} ms ({c99 - s99:+.2f} ms, "
                 f"{r.estimate:.2f}x [{r.low:.2f}, {r.high:.2f}]) vs {gate} (over the gate by {x.estimate:+.2f} ms "
                 f"[{x.low:+.2f}, {x.high:+.2f}]; {len(c_ms)} and {len(s_ms)} timed {_size_text(k)}, "
                 f"{where}{several})",
                 canary_p99_ms=c99, stable_p99_ms=s99, allowance_ms=allowance)


def _interval_check(name: str, r: stats.Interval, limit: float, samples: tuple[int, int], what: str) -> Check:
    """A check of a measure where higher is worse, from its interval: ``what`` says it for people."""
    result = _judge(r.low, r.high, limit)
    return Check(name, result, r.estimate, r.low, r.high, limit, *samples, f"{name} {result}: {what}")


def check_quality(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """Accuracy when both versions have ``min_samples`` feedback rows (the drop, stable minus
    canary, against ``max_accuracy_drop``); else the canary's top-1 agreement with stable over
    ``min_samples`` shadow comparisons (its shortfall below ``min_top1_agreement``); else
    INCONCLUSIVE. Accuracy wins: a canary that answers differently but more often right is
    better, not worse."""
    need = gates.min_samples
    if canary.feedback >= max(need, 1) and stable.feedback >= max(need, 1):
        return _difference_check("accuracy", "stable - canary accuracy", (stable.correct, stable.feedback),
                                 (canary.correct, canary.feedback), gates.max_accuracy_drop,
                                 f"{gates.max_accuracy_drop * 100:.2f}", (canary.feedback, stable.feedback),
                                 f"canary {_pct(canary.accuracy or 0)}, stable {_pct(stable.accuracy or 0)}; "
                                 f"{canary.feedback} and {stable.feedback} feedback rows", gates.confidence)
    if canary.shadow_compared >= max(need, 1) and canary.compared_rows:
        a = stats.wilson(canary.agreeing_rows, canary.compared_rows, gates.confidence)
        # Higher is worse for _judge: the shortfall below full agreement against the allowed one.
        result = _judge(1 - a.high, 1 - a.low, 1 - gates.min_top1_agreement)
        return Check("agreement", result, a.estimate, a.low, a.high, gates.min_top1_agreement,
                     canary.compared_rows, canary.compared_rows,
                     f"agreement {result}: canary agrees with stable on {_pct(a.estimate)} of top-1 answers "
                     f"[{_pct(a.low)}, {_pct(a.high)}] vs at least {_pct(gates.min_top1_agreement)} "
                     f"({canary.shadow_compared} shadow comparisons, {canary.compared_rows} rows)")
    return _nan_check("quality", gates.max_accuracy_drop, canary.feedback, stable.feedback,
                      f"need {need} feedback rows of each version (have {canary.feedback} and {stable.feedback}) "
                      f"or {need} shadow comparisons (have {canary.shadow_compared})")


MIN_COST_SAMPLES = 30  # model calls of each version the cost gate needs


def check_loss(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """Canary mean loss minus stable's (Welch's interval), against ``max_loss_increase``; the
    loss is log-loss where the rows have class scores, else squared error."""
    limit, need = gates.max_loss_increase, max(gates.min_samples, 2)
    nc, ns = len(canary.losses), len(stable.losses)
    if min(nc, ns) < need:
        return _nan_check("loss", limit, nc, ns, f"need {need} feedback rows with a loss of each version, "
                                                 f"have {nc} and {ns}")
    d = stats.mean_difference(canary.losses, stable.losses, gates.confidence)
    what = "log-loss" if canary.log_loss is not None else "squared error"
    return _interval_check("loss", d, limit, (nc, ns), f"canary - stable mean {what} {d.estimate:+.4f} "
                                                       f"[{d.low:+.4f}, {d.high:+.4f}] vs at most +{limit:g} "
                                                       f"({nc} and {ns} rows)")


def _subjects(stable: Evidence, canary: Evidence, need: int) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """(subject, stable (right, rows), canary (right, rows)) for each class (recall) and slice
    (accuracy) with ``need`` rows in both versions."""
    out = []
    cs = {c.label: c for c in canary.classes}
    for s in stable.classes:
        c = cs.get(s.label)
        if c is not None and min(s.support, c.support) >= need:
            out.append((f"class {s.label}", (s.correct, s.support), (c.correct, c.support)))
    cl = {c.slice: c for c in canary.slices}
    for s in stable.slices:
        c = cl.get(s.slice)
        if c is not None and min(s.labelled, c.labelled) >= need:
            out.append((f"slice {s.slice}", (s.correct, s.labelled), (c.correct, c.labelled)))
    return out


def check_bias(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """No class (recall) or slice (accuracy) with ``min_class_samples`` feedback rows in both
    versions may drop by more than ``max_class_drop``. Each subject's drop (stable minus
    canary) gets Newcombe's interval at a Bonferroni-corrected confidence (1 - (1 - c) / k for k
    subjects), so judging many classes at once does not multiply false alarms. FAIL names the
    subject that failed worst; PASS needs every subject within the gate; else INCONCLUSIVE,
    naming the subject closest to failing."""
    limit, need = gates.max_class_drop, gates.min_class_samples
    subjects = _subjects(stable, canary, need)
    if not subjects:
        return _nan_check("bias", limit, 0, 0, f"no class or slice has {need} feedback rows in both versions")
    confidence = 1 - (1 - gates.confidence) / len(subjects)
    judged = []
    for name, (sk, sn), (ck, cn) in subjects:
        d = stats.proportion_difference(sk, sn, ck, cn, confidence)
        judged.append((_judge(d.low, d.high, limit), d, name, cn, sn))
    failed = [j for j in judged if j[0] == FAIL]
    if failed:
        result, d, name, cn, sn = max(failed, key=lambda j: j[1].low)
    elif all(j[0] == PASS for j in judged):
        result, d, name, cn, sn = max(judged, key=lambda j: j[1].estimate)
    else:
        result, d, name, cn, sn = max((j for j in judged if j[0] != PASS), key=lambda j: j[1].high)
    return Check("bias", result, d.estimate, d.low, d.high, limit, cn, sn,
                 f"bias {result}: {name} drops {_interval(d)} vs at most {limit * 100:.2f} points (worst of "
                 f"{len(subjects)} classes and slices with {need} rows, each at {confidence * 100:.2f} % confidence; "
                 f"{cn} and {sn} rows)", subject=name)


def worst_drop(stable: Evidence, canary: Evidence, gates: Gates) -> str:
    """One line: the class (recall) or slice (accuracy) with ``min_class_samples`` feedback rows
    in both versions that lost most (stable minus canary), whether the bias gate is on or not,
    so that no verdict hides a class that got worse."""
    need = gates.min_class_samples
    subjects = _subjects(stable, canary, need)
    off = "" if gates.max_class_drop > 0 else "; the bias gate is off"
    if not subjects:
        return f"worst class/slice: not known (no class or slice has {need} feedback rows in both versions){off}"

    def rates(sub):
        _, (sk, sn), (ck, cn) = sub
        return sk / sn, ck / cn

    name, (_, sn), (_, cn) = sub = max(subjects, key=lambda x: rates(x)[0] - rates(x)[1])
    before, after = rates(sub)
    measure = "recall" if name.startswith("class ") else "accuracy"
    what = "drops" if after < before else "the least gain" if after > before else "unchanged"
    return (f"worst class/slice: {name} {measure} {_pct(before)} -> {_pct(after)} ({(after - before) * 100:+.1f} "
            f"points, {what}; of {len(subjects)} with {need} rows in both versions; {sn} and {cn} rows){off}")


def check_cost(stable: Evidence, canary: Evidence, gates: Gates) -> Check:
    """Canary CPU seconds per prediction / stable's (bootstrap of the ratio of means over the
    last model calls), against ``max_cost_ratio``."""
    limit = gates.max_cost_ratio
    nc, ns = len(canary.cost_samples), len(stable.cost_samples)
    if min(nc, ns) < MIN_COST_SAMPLES or not sum(stable.cost_samples) > 0:
        return _nan_check("cost", limit, nc, ns, f"need {MIN_COST_SAMPLES} model calls of each version with CPU "
                                                 f"time, have {nc} and {ns}")
    r = stats.mean_ratio(canary.cost_samples, stable.cost_samples, gates.confidence)
    return _interval_check("cost", r, limit, (nc, ns), f"canary / stable CPU per prediction {r.estimate:.2f}x "
                                                       f"[{r.low:.2f}, {r.high:.2f}] vs at most {limit:g}x "
                                                       f"({nc} and {ns} model calls)")


def _tradeoff(checks: Sequence[Check]) -> str:
    """The one line for a canary that is more accurate than stable with confidence (the drop's
    high end below 0) and fails on latency alone; "" for any other analysis."""
    failed = [c for c in checks if c.result == FAIL]
    quality = next((c for c in checks if c.name == "accuracy"), None)
    if not failed or any(c.name != "latency" for c in failed) or quality is None or not quality.high < 0:
        return ""
    lat = failed[0]
    return (f"canary is more accurate ({-quality.statistic * 100:+.1f} pts [{-quality.high * 100:+.1f}, "
            f"{-quality.low * 100:+.1f}]) but slower (p99 {lat.canary_p99_ms:.1f} ms vs {lat.stable_p99_ms:.1f} ms, "
            f"over both {lat.limit:g}x and +{lat.allowance_ms:g} ms): HOLD, not ROLLBACK: an engineer decides "
            "(promote it with `verso rollout set` or set its share to 0)")


def decide(stable: Evidence, canary: Evidence, gates: Gates, failed_before: int = 0,
           holds: Sequence[str] = ()) -> Verdict:
    """One analysis of the canary against the stable version.

    ``failed_before``: consecutive failed analyses before this one. Fewer than ``min_samples``
    calls of either version -> HOLD at once ("need more data", with the counts; not a failed
    analysis). Otherwise the checks: errors, latency, quality, bias (unless its gate is 0; not
    run when no class or slice has ``min_class_samples`` rows in both versions), and loss and
    cost where their gates are set; any FAIL makes the analysis failed, and the
    ``failure_threshold``-th failed analysis in a row is ROLLBACK (before it: HOLD), except
    when the canary is more accurate with confidence and only latency failed: then HOLD with
    ``tradeoff`` said (the analysis still counts as failed). All PASS is PROMOTE unless
    ``holds`` (reasons to wait that are not checks: an older or drifting canary) says HOLD;
    a bias check INCONCLUSIVE at the gate's default (``bias_must_pass`` False) does not hold
    it; else HOLD (inconclusive). Every analysed verdict says the worst class/slice drop
    (``worst_drop``), the bias gate on or off."""
    need = gates.min_samples
    if canary.requests < max(need, 1) or stable.requests < max(need, 1):
        return Verdict(HOLD, (f"need more data: {need} calls of each version, have {canary.requests} (canary) "
                              f"and {stable.requests} (stable)", *(f"hold: {h}" for h in holds)))
    checks = (check_errors(stable, canary, gates), check_latency(stable, canary, gates),
              check_quality(stable, canary, gates))
    if gates.max_loss_increase > 0:
        checks += (check_loss(stable, canary, gates),)
    notes = []
    if gates.max_class_drop > 0:
        if _subjects(stable, canary, gates.min_class_samples):
            checks += (check_bias(stable, canary, gates),)
        else:
            notes.append(f"bias not judged: no class or slice has {gates.min_class_samples} feedback rows in both "
                         "versions")
    if gates.max_cost_ratio > 0:
        checks += (check_cost(stable, canary, gates),)
    worst = worst_drop(stable, canary, gates)
    reasons = [c.text for c in checks] + notes + [worst]
    if any(c.result == FAIL for c in checks):
        failed = failed_before + 1
        tradeoff = _tradeoff(checks)
        decision = ROLLBACK if failed >= gates.failure_threshold and not tradeoff else HOLD
        if tradeoff:
            reasons.append(tradeoff)
        reasons.append(f"failed analysis {failed} of {gates.failure_threshold} in a row"
                       + ("" if decision == ROLLBACK else ": HOLD until it fails again or recovers"
                          if not tradeoff else ": HOLD while the canary is the more accurate"))
        return Verdict(decision, tuple(reasons), checks, failed, tradeoff=tradeoff, worst_drop=worst)
    waiting = [c for c in checks if c.result != PASS
               and not (c.name == "bias" and c.result == INCONCLUSIVE and not gates.bias_must_pass)]
    if not waiting:
        if holds:
            return Verdict(HOLD, tuple(reasons) + tuple(f"hold: {h}" for h in holds), checks, worst_drop=worst)
        return Verdict(PROMOTE, tuple(reasons), checks, worst_drop=worst)
    reasons.append("inconclusive: need more data")
    return Verdict(HOLD, tuple(reasons) + tuple(f"hold: {h}" for h in holds), checks, worst_drop=worst)


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
