"""What a rollout's status says about what happens next (issue 27, friction 6): the forecast of
the samples an INCONCLUSIVE check still needs (server/rollout/forecast.py), the next step, this
rollout's decisions apart from earlier ones, a promotion said as such, the latency quantiles
(server/rollout/outlook.py)."""

from __future__ import annotations

import math

import pytest

from protos import rollout_pb2
from server.rollout import forecast, outlook, stats
from server.rollout.evidence import Evidence
from server.rollout.verdict import Gates


# ---- forecast -----------------------------------------------------------------------------------

def test_a_check_on_the_passing_side_needs_its_high_end_brought_down_to_the_gate():
    # estimate 0.5 points, interval [-1, 2] points, gate 1 point: the high end is 1.5 above the
    # estimate, the gate 0.5 above it: (1.5 / 0.5)^2 = 9 times the samples, 8 times more.
    f = forecast.more_samples(0.005, -0.01, 0.02, 0.01, 200, 1800)
    assert f.factor == pytest.approx(9.0)
    assert (f.canary, f.stable) == (1600, 14400)


def test_a_check_on_the_failing_side_needs_its_low_end_raised_past_the_gate():
    f = forecast.more_samples(2.0, 1.0, 3.0, 1.5, 100, 100)  # low 1 below, gate 0.5 below: 4x
    assert (f.canary, f.stable, f.factor) == (300, 300, pytest.approx(4.0))


def test_a_measure_that_must_stay_above_its_limit_is_mirrored():
    # top-1 agreement 0.96 [0.94, 0.98] against at least 0.97: on the failing side, the high end
    # (0.02 above) must come below 0.97 (0.01 above): 4x.
    f = forecast.more_samples(0.96, 0.94, 0.98, 0.97, 500, 500, higher_is_worse=False)
    assert (f.canary, f.factor) == (1500, pytest.approx(4.0))


def test_no_estimate_on_the_gate_nor_without_samples_and_nothing_when_already_decided():
    assert forecast.more_samples(0.01, 0.0, 0.02, 0.01, 100, 100) is None
    assert forecast.more_samples(float("nan"), 0, 1, 0.5, 100, 100) is None
    assert forecast.more_samples(0.0, -1, 1, 0.5, 0, 100) is None
    assert forecast.more_samples(0.0, -0.1, 0.2, 0.5, 100, 100) == forecast.Forecast(0, 0, 1.0)


def test_the_forecast_comes_true_for_a_difference_of_proportions_at_the_observed_effect():
    # canary 97 % against stable 98 % accuracy, gate: at most 2 points lower. At 300 rows each
    # the interval straddles the gate; at the forecast's counts (same proportions) it is PASS.
    def interval(n):
        return stats.proportion_difference(round(0.98 * n), n, round(0.97 * n), n, 0.95)
    now = interval(300)
    assert now.low < 0.02 < now.high  # INCONCLUSIVE today
    f = forecast.more_samples(now.estimate, now.low, now.high, 0.02, 300, 300)
    assert f is not None and f.canary > 0
    later = interval(300 + f.canary)
    assert later.high <= 0.02 * 1.03  # within rounding of 1/sqrt(n): the gate is excluded or nearly
    earlier = interval(300 + f.canary // 2)
    assert earlier.high > 0.02  # and half of it would not have been enough


def test_a_check_without_its_minimum_samples_needs_the_rest():
    assert forecast.to_minimum(100, 30, 120) == forecast.Forecast(70, 0, pytest.approx(100 / 30))


def test_the_forecast_line_says_when_the_window_is_too_small_and_how_long_at_the_current_rate():
    f = forecast.Forecast(1600, 14400, 9.0)
    text = forecast.describe(f, "calls", 200, 1800, window=1000)
    assert "1 600 more canary and 14 400 more stable calls" in text and "--window" in text
    text = forecast.describe(forecast.Forecast(300, 100, 2.0), "calls", 300, 900, window=10_000,
                             canary_per_s=10, stable_per_s=50)
    assert text == "about 300 more canary and 100 more stable calls at the observed effect, ~30 s at the current traffic"
    assert "next analysis should decide" in forecast.describe(forecast.Forecast(0, 0, 1.0), "calls", 1, 1)
    assert "sits on the gate" in forecast.describe(None, "calls", 1, 1)
    assert "(its minimum)" in forecast.describe(forecast.to_minimum(100, 30, 120), "feedback rows", 30, 120,
                                                computed=False)


def test_only_inconclusive_checks_get_a_forecast():
    checks = [rollout_pb2.Check(name="errors", result="PASS", statistic=0, low=-0.01, high=0.001, limit=0.005,
                                canary_samples=500, stable_samples=500),
              rollout_pb2.Check(name="latency", result="INCONCLUSIVE", statistic=1.0, low=0.9, high=1.4, limit=1.2,
                                canary_samples=100, stable_samples=900),
              rollout_pb2.Check(name="quality", result="INCONCLUSIVE", statistic=math.nan, low=math.nan,
                                high=math.nan, limit=0.01, canary_samples=40, stable_samples=130)]
    ev = Evidence(requests=100, errors={}, error_rate=0, p50_ms=None, p99_ms=None, requests_per_second=5.0,
                  shadow_compared=0, max_abs_diff=None, top1_agreement=None, feedback=0, accuracy=None)
    outlook.fill_forecasts(checks, Gates(), 1000, ev, ev)
    assert (checks[0].more_canary_samples, checks[0].forecast) == (-1, "")
    assert (checks[1].more_canary_samples, checks[1].more_stable_samples) == (300, 2700)  # (0.4 / 0.2)^2 = 4x
    assert checks[1].samples_unit == "timed calls of one size class" and "--window" in checks[1].forecast
    assert (checks[2].more_canary_samples, checks[2].more_stable_samples) == (60, 0)
    assert checks[2].forecast.startswith("about 60 more canary feedback rows (its minimum)")


# ---- the next step ------------------------------------------------------------------------------

def _rollout(**kw) -> rollout_pb2.ModelRollout:
    mr = rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=10)
    mr.auto.enabled = True
    for k, v in kw.items():
        setattr(mr, k, v)
    return mr


def test_the_next_step_of_each_outcome():
    assert outlook.next_step(_rollout(), False, 0, 3) == (
        "canary 25 % if the analysis passes; HOLD at 10 % (failed analyses 1 of 3) if it fails; stays at 10 % "
        "while it is inconclusive")
    assert "ROLLBACK to 0 % (final) if it fails" in outlook.next_step(_rollout(), False, 2, 3)
    assert outlook.next_step(_rollout(canary_percent=100), False, 0, 3).startswith(
        "PROMOTE (v2 becomes stable) if the analysis passes")
    assert outlook.next_step(_rollout(), True, 0, 3).startswith("nothing moves: the final ROLLBACK stands")
    manual = _rollout()
    manual.auto.enabled = False
    assert outlook.next_step(manual, False, 0, 3).startswith("manual mode")
    assert outlook.next_step(_rollout(canary=0), False, 0, 3).startswith("nothing moves: no canary")


# ---- this rollout's decisions, a promotion ------------------------------------------------------

def _status(mr, decisions) -> rollout_pb2.RolloutStatus:
    st = rollout_pb2.RolloutStatus(config=mr)
    for t, who, text in decisions:
        st.decisions.add(unix_time=t, who=who, text=text)
    outlook.fill_history(st, mr)
    return st


EARLIER = [(1.0, "gRPC ipv4:127.0.0.1:1", "stable v1, canary v2 at 10 % (SetRollout)"),
           (2.0, "automatic", "PROMOTE: canary v2 10 % -> 100 %; ..."),
           (3.0, "automatic", "PROMOTE: v2 is now stable (was v1); ...")]


def test_the_decisions_of_earlier_rollouts_are_marked_and_this_ones_start_is_known():
    now = EARLIER + [(4.0, "gRPC ipv4:127.0.0.1:1", "stable v2, canary v3 at 10 % (SetRollout)"),
                     (5.0, "gRPC ipv4:127.0.0.1:1", "stable v2, canary v3 at 50 % (SetRollout)"),  # same rollout
                     (6.0, "automatic", "HOLD: canary v3 stays at 50 %; ...")]
    st = _status(_rollout(stable=2, canary=3, canary_percent=50), now)
    assert [d.earlier_rollout for d in st.decisions] == [True, True, True, False, False, False]
    assert st.rollout_started_unix_time == 4.0
    assert st.verdict.promoted_version == 0  # a canary is under test: no promotion to speak of


def test_a_rollout_set_again_after_its_rollback_is_a_new_rollout():
    st = _status(_rollout(), [(1.0, "op", "stable v1, canary v2 at 10 % (SetRollout)"),
                              (2.0, "automatic", "ROLLBACK: canary v2 10 % -> 0 %; ..."),
                              (3.0, "op", "stable v1, canary v2 at 10 % (SetRollout)")])
    assert [d.earlier_rollout for d in st.decisions] == [True, True, False]


def test_without_an_operator_decision_every_decision_is_this_rollouts():
    st = _status(_rollout(), [(2.0, "automatic", "HOLD: ...")])
    assert not st.decisions[0].earlier_rollout and st.rollout_started_unix_time == 0


def test_an_automatic_promotion_is_said_as_such():
    st = _status(_rollout(stable=2, canary=0, canary_percent=0), EARLIER)
    v = st.verdict
    assert (v.promoted_version, v.promoted_from, v.promoted_unix_time, v.promoted_by) == (2, 1, 3.0, "automatic")
    assert v.next_step.startswith("nothing moves: v2 was promoted")


def test_an_operators_promotion_is_said_as_such():
    st = _status(_rollout(stable=2, canary=0, canary_percent=0),
                 [(1.0, "op", "stable v1, canary v2 at 50 % (SetRollout)"),
                  (2.0, "op", "stable v2, canary none (SetRollout)")])
    assert (st.verdict.promoted_version, st.verdict.promoted_from, st.verdict.promoted_by) == (2, 1, "op")
    st = _status(_rollout(stable=1, canary=0), [(1.0, "op", "stable v1, canary none (SetRollout)")])
    assert st.verdict.promoted_version == 0


def test_the_latency_distribution_reaches_p99_9():
    entry = rollout_pb2.VersionEvidence()
    outlook.fill_latency(entry, [float(i) for i in range(1, 1001)])
    levels = dict(zip(entry.latency_quantile_levels, entry.latency_quantiles_ms))
    assert levels[99.0] == pytest.approx(990.01) and levels[99.9] == pytest.approx(999.001) and levels[100.0] == 1000
    empty = rollout_pb2.VersionEvidence()
    outlook.fill_latency(empty, [])
    assert not empty.latency_quantiles_ms
