"""The rollout verdict's statistical checks on constructed evidence: the intervals against
published values, each check passing, failing and inconclusive at its boundaries, and the
failure threshold that turns failed analyses into a ROLLBACK."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from server.rollout import stats
from server.rollout.evidence import Evidence, Window
from server.rollout.verdict import (FAIL, HOLD, INCONCLUSIVE, PASS, PROMOTE, ROLLBACK, Gates, check_errors,
                                    check_latency, check_quality, decide)

GATES = Gates()


def ev(requests=1000, errors=0, latencies=None, feedback=0, correct=0, shadow=0, agreeing=0, rows=0) -> Evidence:
    """Evidence with exact counts; ``latencies`` defaults to ``requests - errors`` calls of a
    fixed, gently spread distribution (the same for every version)."""
    if latencies is None:
        latencies = np.linspace(10.0, 20.0, max(requests - errors, 0))
    lat = tuple(float(x) for x in latencies)
    return Evidence(requests=requests, errors={"INTERNAL": errors} if errors else {},
                    error_rate=errors / requests if requests else 0.0,
                    p50_ms=float(np.percentile(lat, 50)) if lat else None,
                    p99_ms=float(np.percentile(lat, 99)) if lat else None,
                    requests_per_second=0.0, shadow_compared=shadow, max_abs_diff=None,
                    top1_agreement=agreeing / rows if rows else None, feedback=feedback,
                    accuracy=correct / feedback if feedback else None, latencies_ms=lat, correct=correct,
                    agreeing_rows=agreeing, compared_rows=rows)


# ---- the intervals ---------------------------------------------------------------------------

def test_wilson_matches_the_closed_form():
    # 0 of n: the upper end is z^2 / (n + z^2); one-sided 95 % is z = 1.6449.
    z = 1.6448536269514722
    i = stats.wilson(0, 100, 0.95)
    assert (i.estimate, i.low) == (0.0, 0.0)
    assert i.high == pytest.approx(z * z / (100 + z * z), rel=1e-9)


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10: 56/70 - 48/80 = 0.2000,
    # 95 % interval 0.0524 to 0.3339 (two-sided 95 % = each end one-sided at 97.5 %).
    i = stats.proportion_difference(56, 70, 48, 80, 0.975)
    assert i.estimate == pytest.approx(0.2)
    assert (round(i.low, 4), round(i.high, 4)) == (0.0524, 0.3339)


def test_p99_ratio_is_deterministic_and_its_low_end_holds_its_confidence():
    rng = np.random.default_rng(7)
    stable, same = rng.lognormal(2.5, 0.3, 1000), rng.lognormal(2.5, 0.3, 1000)
    a = stats.p99_ratio(same, stable, 0.95)
    assert a == stats.p99_ratio(same, stable, 0.95)  # a fixed seed: same evidence, same verdict
    slow = stats.p99_ratio(same * 2, stable, 0.95)
    assert slow.estimate == pytest.approx(2 * a.estimate) and slow.low > 1.6
    # Identical distributions: the low end (what a latency FAIL reads) exceeds the true ratio 1
    # in at most ~5 % of samples at 95 % confidence (measured: 3 of 100 for these seeds).
    above = 0
    for seed in range(100):
        g = np.random.default_rng(seed)
        above += stats.p99_ratio(g.lognormal(2.5, 0.3, 1000), g.lognormal(2.5, 0.3, 1000), 0.95).low > 1
    assert above <= 8


@pytest.mark.parametrize("confidence", [0.5, 1.0, 0.2])
def test_confidence_outside_its_range_is_refused(confidence):
    with pytest.raises(ValueError):
        stats.wilson(1, 2, confidence)


# ---- errors ------------------------------------------------------------------------------------

def test_errors_pass_fail_and_inconclusive():
    assert check_errors(ev(), ev(), GATES).result == PASS  # 0 of 1000 each: within 0.5 points
    assert check_errors(ev(100), ev(100), GATES).result == INCONCLUSIVE  # 0 of 100 each: cannot tell
    assert check_errors(ev(), ev(errors=50), GATES).result == FAIL  # 5 % more errors


def test_errors_boundary_is_where_the_interval_crosses_the_gate():
    # The fewest canary errors (of 1000, stable 0) that fail, and one fewer does not.
    results = {k: check_errors(ev(), ev(errors=k), GATES) for k in range(0, 40)}
    first_fail = min(k for k, c in results.items() if c.result == FAIL)
    assert results[first_fail].low > GATES.max_error_rate_increase >= results[first_fail - 1].low
    assert results[first_fail - 1].result == INCONCLUSIVE
    last_pass = max(k for k, c in results.items() if c.result == PASS)
    assert results[last_pass].high <= GATES.max_error_rate_increase < results[last_pass + 1].high
    assert 0 <= last_pass < first_fail - 1
    c = results[first_fail]
    assert (c.name, c.canary_samples, c.stable_samples, c.limit) == ("errors", 1000, 1000, 0.005)
    assert c.text.startswith("errors FAIL: canary - stable error rate +")


# ---- latency -----------------------------------------------------------------------------------

RATIO_ONLY = Gates(max_p99_increase_ms=0)


def test_latency_pass_fail_and_inconclusive():
    rng = np.random.default_rng(3)
    stable = ev(latencies=rng.lognormal(2.5, 0.2, 1000))
    assert check_latency(stable, ev(latencies=rng.lognormal(2.5, 0.2, 1000)), RATIO_ONLY).result == PASS
    assert check_latency(stable, ev(latencies=rng.lognormal(2.5, 0.2, 1000) * 1.6), RATIO_ONLY).result == FAIL
    # Slower by about the gate itself: the interval straddles 1.2.
    straddles = ev(latencies=rng.lognormal(2.5, 0.2, 1000) * 1.2)
    assert check_latency(stable, straddles, RATIO_ONLY).result == INCONCLUSIVE
    # The same ~4 ms more on a ~19 ms p99 is within the default 5 ms allowance.
    assert check_latency(stable, straddles, GATES).result == PASS
    few = check_latency(stable, ev(requests=150, latencies=rng.lognormal(2.5, 0.2, 80)), GATES)
    assert few.result == INCONCLUSIVE and few.canary_samples == 80
    assert "need 100 timed calls of each version, have 80 and 1000" in few.text


def test_a_first_slow_call_does_not_decide_latency():
    """The demo's old false rollback: a version's slow first call was its p99."""
    stable, canary = Window(1000, warmup_calls=20), Window(1000, warmup_calls=20)
    for i in range(300):
        first = i == 0
        stable.record_call(0.5 if first else 0.010 + (i % 7) / 1000)
        canary.record_call(0.9 if first else 0.010 + (i % 7) / 1000)
    s, c = stable.summary(), canary.summary()
    assert (s.requests, len(s.latencies_ms)) == (300, 280)  # counted, not timed
    assert check_latency(s, c, GATES).result == PASS


# ---- quality -----------------------------------------------------------------------------------

def test_accuracy_pass_fail_and_inconclusive():
    good = check_quality(ev(feedback=300, correct=261), ev(feedback=300, correct=294), GATES)  # 87 % -> 98 %
    assert (good.name, good.result) == ("accuracy", PASS)
    broken = check_quality(ev(feedback=300, correct=294), ev(feedback=300, correct=30), GATES)  # 98 % -> 10 %
    assert broken.result == FAIL and broken.statistic == pytest.approx(0.88)
    same = check_quality(ev(feedback=100, correct=97), ev(feedback=100, correct=97), GATES)
    assert same.result == INCONCLUSIVE  # equal, but 100 rows cannot show a drop under 1 point
    many = check_quality(ev(feedback=20000, correct=19400), ev(feedback=20000, correct=19400), GATES)
    assert many.result == PASS  # with enough rows they can


def test_agreement_when_there_is_no_feedback():
    assert check_quality(ev(), ev(shadow=500, agreeing=500, rows=500), GATES).result == PASS
    c = check_quality(ev(), ev(shadow=500, agreeing=400, rows=500), GATES)
    assert (c.name, c.result, c.statistic) == ("agreement", FAIL, 0.8)
    assert check_quality(ev(), ev(shadow=100, agreeing=97, rows=100), GATES).result == INCONCLUSIVE


def test_accuracy_wins_over_agreement():
    # Disagrees with stable on 20 % of answers, but is right more often: better, not worse.
    c = check_quality(ev(feedback=300, correct=261), ev(feedback=300, correct=294, shadow=500, agreeing=400,
                                                        rows=500), GATES)
    assert (c.name, c.result) == ("accuracy", PASS)


def test_quality_unknown_is_inconclusive():
    c = check_quality(ev(), ev(feedback=10, correct=10, shadow=5, agreeing=5, rows=5), GATES)
    assert (c.name, c.result) == ("quality", INCONCLUSIVE)


# ---- decide: analyses and the failure threshold -------------------------------------------------

GOOD = dict(feedback=300, correct=294)
STABLE = dict(feedback=300, correct=261)


def test_need_more_data_holds_without_judging():
    v = decide(ev(**STABLE), ev(requests=99, errors=99), GATES)
    assert v.decision == HOLD and not v.checks and not v.failed
    assert v.reasons == ("need more data: 100 calls of each version, have 99 (canary) and 1000 (stable)",)


def test_all_checks_pass_promotes():
    v = decide(ev(**STABLE), ev(**GOOD), GATES)
    assert v.decision == PROMOTE and [c.result for c in v.checks] == [PASS, PASS, PASS]
    assert [c.name for c in v.checks] == ["errors", "latency", "accuracy"]
    # No class tables in this evidence: bias is not judged, and the verdict says so.
    assert len(v.reasons) == 5 and v.reasons[3].startswith("bias not judged: no class or slice has 30")
    assert v.reasons[4] == v.worst_drop and v.worst_drop.startswith("worst class/slice: not known")


def test_inconclusive_holds():
    v = decide(ev(**STABLE), ev(), GATES)  # no feedback for the canary
    assert v.decision == HOLD and not v.failed and v.reasons[-1] == "inconclusive: need more data"


def test_a_failed_analysis_is_hold_until_the_threshold():
    stable, broken = ev(feedback=300, correct=294), ev(feedback=300, correct=30)
    first = decide(stable, broken, GATES)
    assert (first.decision, first.failed, first.failed_analyses) == (HOLD, True, 1)
    assert first.reasons[-1] == "failed analysis 1 of 3 in a row: HOLD until it fails again or recovers"
    assert decide(stable, broken, GATES, failed_before=1).decision == HOLD
    third = decide(stable, broken, GATES, failed_before=2)
    assert (third.decision, third.failed_analyses) == (ROLLBACK, 3)
    assert decide(stable, broken, Gates(failure_threshold=1)).decision == ROLLBACK


@pytest.mark.parametrize("kw", [dict(max_error_rate_increase=-0.1), dict(max_p99_ratio=0),
                                dict(min_top1_agreement=1.5), dict(max_accuracy_drop=-0.01),
                                dict(min_samples=-1), dict(confidence=1.0), dict(confidence=0.5),
                                dict(failure_threshold=0)])
def test_gates_reject_nonsense(kw):
    with pytest.raises(ValueError):
        Gates(**kw)


def test_gates_defaults():
    assert Gates() == Gates(max_error_rate_increase=0.005, max_p99_ratio=1.2, min_top1_agreement=0.97,
                            max_accuracy_drop=0.01, min_samples=100, confidence=0.95, failure_threshold=3,
                            warmup_calls=20)


# ---- latency judged like an engineer (issue 27): an absolute allowance, the same minutes ---------

FAST = np.linspace(0.5, 1.0, 1000)          # a ~1 ms model: p99 ~1.0 ms


def test_a_1ms_model_at_5ms_is_within_the_absolute_allowance():
    """The friction: v2 at p99 ~5 ms against v1's ~1 ms is 5x the ratio, but 4 ms: within the
    default 5 ms allowance, so not a latency failure; the ratio alone would fail it."""
    canary = ev(latencies=np.linspace(3.0, 5.15, 1000))
    c = check_latency(ev(latencies=FAST), canary, GATES)
    assert c.result == PASS and c.statistic > 4.5  # the ratio is still shown
    assert (round(c.canary_p99_ms, 1), round(c.stable_p99_ms, 1), c.allowance_ms) == (5.1, 1.0, 5.0)
    assert "vs at most 1.2x or +5 ms" in c.text
    assert check_latency(ev(latencies=FAST), canary, RATIO_ONLY).result == FAIL


@pytest.mark.parametrize("stable_ms, slower, why", [
    (FAST, 20.0, "a 1 ms model at 20 ms: over the ratio and 5 ms"),
    (np.linspace(60.0, 100.0, 1000), 1.5, "a 100 ms model at 150 ms: over 1.2x and 5 ms"),
])
def test_a_real_slowdown_still_fails(stable_ms, slower, why):
    c = check_latency(ev(latencies=stable_ms), ev(latencies=stable_ms * slower), GATES)
    assert c.result == FAIL, why


def test_the_allowance_and_the_ratio_combine_in_one_interval():
    """Within either limit with confidence is PASS; worse than both is FAIL; straddling the
    larger of the two is INCONCLUSIVE (a 100 ms model: 1.2x is the larger allowance)."""
    rng = np.random.default_rng(5)
    stable = rng.normal(100.0, 5.0, 1000)
    x = stats.p99_excess(stable * 1.2, stable, 1.2, 5.0, 0.95)
    assert x.low < 0 < x.high  # exactly at 1.2x: cannot tell
    assert stats.p99_excess(stable + 3.0, stable, 1.2, 5.0, 0.95).high < 0
    assert stats.p99_excess(stable * 2.0, stable, 1.2, 5.0, 0.95).low > 0
    # Constant samples: the excess is known exactly.
    assert stats.p99_excess([1.0] * 5, [1.0] * 5, 1.2, 5.0, 0.95) == stats.Interval(-5.0, -5.0, -5.0)


def spike_then_calm(window: int = 1000, calls: int = 20_000, share: int = 10):
    """A 10 % canary and its stable version answering the same traffic on one clock: a call every
    50 ms, both versions slow (30 ms) during a load spike in the first 15 000 calls, ~2 ms after.
    The stable version's window (the last 1 000 of its 18 000 calls) covers only the calm; the
    canary's (the last 1 000 of its 2 000) reaches back into the spike."""
    t = [0.0]
    stable = Window(window, clock=lambda: t[0])
    canary = Window(window, clock=lambda: t[0])
    for i in range(calls):
        t[0] += 0.05
        ms = 30.0 if i < calls - 5000 else 2.0 + (i % 7) * 0.05
        (canary if i % share == 0 else stable).record_call(ms / 1000)
    return stable, canary


def test_latency_compares_the_versions_over_the_same_minutes():
    stable, canary = spike_then_calm()
    s, c = stable.summary(), canary.summary()
    assert c.p99_ms == pytest.approx(30.0)  # the canary's window holds the spike ...
    assert s.p99_ms < 3  # ... the stable's does not: compared whole, the canary looks 10x slower
    check = check_latency(s, c, GATES)
    assert check.result == PASS, check.text
    # The canary's calls since the stable window's oldest; the stable's until the canary's newest.
    assert (check.canary_samples, check.stable_samples) == (111, 991)
    assert "over the 55.0 s both windows cover" in check.text
    # Without the times (an older worker's evidence), the whole windows are compared, spike and all.
    blind = check_latency(dataclasses.replace(s, latency_times=()), c, GATES)
    assert blind.result == FAIL and "over the whole windows" in blind.text


def test_the_same_minutes_survive_merging_windows_across_workers():
    """Under --num_workers each worker exports its window (times as ages) and one merges them:
    the merged evidence keeps when each call was made, so the span selection is the same."""
    stable, canary = spike_then_calm()
    merged = Window(1000, clock=stable._clock).merged([(0.0, stable.export())])  # an empty worker + this one
    s = merged.summary()
    assert len(s.latency_times) == len(s.latencies_ms) == 1000
    assert s.latency_times == pytest.approx(stable.summary().latency_times)
    assert check_latency(s, canary.summary(), GATES).result == PASS


# ---- an accuracy winner is not rolled back on latency without a word ------------------------------

def test_a_more_accurate_but_slower_canary_is_hold_with_the_tradeoff_said():
    stable = ev(latencies=FAST, feedback=300, correct=261)                    # 87 %
    canary = ev(latencies=FAST * 20, feedback=300, correct=294)               # 98 %, p99 ~20 ms
    v = decide(stable, canary, GATES, failed_before=2)  # the third failed analysis in a row
    assert [c.result for c in v.checks] == [PASS, FAIL, PASS]
    assert v.failed and v.failed_analyses == 3
    assert v.decision == HOLD  # not the automatic, final ROLLBACK
    assert v.tradeoff.startswith("canary is more accurate (+11.0 pts [") and "but slower (p99 19.9 ms vs 1.0 ms" \
        in v.tradeoff, v.tradeoff
    assert v.tradeoff in v.reasons and "an engineer decides" in v.tradeoff
    assert v.reasons[-1] == "failed analysis 3 of 3 in a row: HOLD while the canary is the more accurate"
    # As accurate and as slow: no trade-off to weigh, a ROLLBACK.
    same = decide(stable, ev(latencies=FAST * 20, feedback=300, correct=261), GATES, failed_before=2)
    assert (same.decision, same.tradeoff) == (ROLLBACK, "")
    # More accurate but failing on errors too: ROLLBACK as before.
    broken = decide(stable, ev(errors=100, latencies=FAST[:900] * 20, feedback=300, correct=294), GATES,
                    failed_before=2)
    assert (broken.decision, broken.tradeoff) == (ROLLBACK, "")


def test_at_100_percent_the_whole_windows_are_compared_and_said_so():
    """At 100 % the stable version gets no calls: the span both windows cover shrinks to
    nothing, and the latency check falls back to the whole windows rather than to no answer."""
    stable, canary = spike_then_calm()
    t = canary._clock() + 0.05
    canary._clock = lambda: t
    for i in range(1000):  # every call to the canary, on a later clock
        canary.record_call((2.0 + (i % 7) * 0.05) / 1000)
    check = check_latency(stable.summary(), canary.summary(), GATES)
    assert check.result == PASS and (check.canary_samples, check.stable_samples) == (1000, 1000)
    assert "over the whole windows: the span both cover (no time) holds fewer than 100 calls" in check.text
