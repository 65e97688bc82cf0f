"""Rollout evidence on constructed cases with exact figures: bounded windows (warmup calls
left out of latency), top-1 and divergence rules, automatic-mode stepping and staleness. The
verdict's statistical checks: test_rollout_verdict.py."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from server.rollout.evidence import (UNKNOWN_SIZE, Evidence, Window, divergence, input_elements, per_output,
                                     size_class, top1)
from server.rollout.verdict import HOLD, PROMOTE, ROLLBACK, is_stale, next_percent


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------------------------
# Window


@pytest.mark.parametrize("size", [0, -1])
def test_window_size_below_one_is_rejected(size):
    with pytest.raises(ValueError):
        Window(size)


def test_empty_window_summary():
    assert Window(5, clock=Clock()).summary() == Evidence(
        requests=0, errors={}, error_rate=0.0, p50_ms=None, p99_ms=None, requests_per_second=0.0,
        shadow_compared=0, max_abs_diff=None, top1_agreement=None, feedback=0, accuracy=None)


def test_percentiles_exact_on_known_latencies():
    w = Window(1000, clock=Clock())
    for ms in range(1, 101):
        w.record_call(ms / 1000)
    e = w.summary()
    assert e.requests == 100
    assert e.p50_ms == pytest.approx(50.5)
    assert e.p99_ms == pytest.approx(99.01)


def test_failed_calls_count_as_requests_but_not_latency():
    w = Window(1000, clock=Clock())
    for ms in range(1, 101):
        w.record_call(ms / 1000)
    w.record_call(60.0, "DEADLINE_EXCEEDED")  # a huge latency that must not move the percentiles
    e = w.summary()
    assert e.requests == 101
    assert e.p50_ms == pytest.approx(50.5)
    assert e.p99_ms == pytest.approx(99.01)


def test_error_rate_and_errors_by_code_sorted():
    w = Window(100, clock=Clock())
    for code in ["UNAVAILABLE", "OK", "DATA_LOSS", "UNAVAILABLE", "OK", "OK", "INTERNAL", "OK"]:
        w.record_call(0.01, code)
    e = w.summary()
    assert e.requests == 8
    assert e.errors == {"DATA_LOSS": 1, "INTERNAL": 1, "UNAVAILABLE": 2}
    assert list(e.errors) == ["DATA_LOSS", "INTERNAL", "UNAVAILABLE"]
    assert e.error_rate == pytest.approx(4 / 8)
    assert e.p50_ms == pytest.approx(10.0)


def test_caller_errors_are_counted_apart_and_never_judged():
    """A caller's failures (by code, or flagged) neither enter the error rate nor push the
    version's calls out of the window, nor use up its warmup."""
    w = Window(10, clock=Clock(), warmup_calls=1)
    for _ in range(5):
        w.record_call(0.01)
    w.record_call(0.01, "INTERNAL")
    for code in ["INVALID_ARGUMENT"] * 30 + ["NOT_FOUND", "FAILED_PRECONDITION", "UNAUTHENTICATED"]:
        w.record_call(0.5, code)
    w.record_call(0.5, "RESOURCE_EXHAUSTED", caller=True)       # a request over a limit
    w.record_call(0.5, "INVALID_ARGUMENT", caller=False)         # the error said it is the server's
    e = w.summary()
    assert e.requests == 7 and e.errors == {"INTERNAL": 1, "INVALID_ARGUMENT": 1}
    assert e.error_rate == pytest.approx(2 / 7)
    # The last 10 caller failures (the window's size), by code.
    assert e.caller_errors == {"FAILED_PRECONDITION": 1, "INVALID_ARGUMENT": 6, "NOT_FOUND": 1,
                               "RESOURCE_EXHAUSTED": 1, "UNAUTHENTICATED": 1}
    assert e.caller_error_count == 10
    assert len(e.latencies_ms) == 4  # the first call was the warmup


def test_latency_carries_each_calls_size_class():
    w = Window(100, clock=Clock())
    for size in (None, 0, 1, 2, 3, 4, 784, 1023, 1024):
        w.record_call(0.01, size=size)
    w.record_call(0.02, "INTERNAL", size=5)  # not timed
    assert w.summary().latency_sizes == (-1, 0, 0, 1, 1, 2, 9, 9, 10)
    assert size_class(None) == UNKNOWN_SIZE and size_class(2 ** 40) == 40
    assert input_elements({"a": np.zeros((3, 4)), "b": np.zeros(3), "examples": [b"x", b"y"]}) == 17


def test_only_errors_gives_no_percentiles():
    w = Window(10, clock=Clock())
    w.record_call(0.5, "INTERNAL")
    w.record_call(0.5, "INTERNAL")
    e = w.summary()
    assert (e.error_rate, e.p50_ms, e.p99_ms) == (1.0, None, None)


def test_calls_window_is_bounded():
    w = Window(3, clock=Clock())
    w.record_call(1.0, "INTERNAL")   # falls out
    w.record_call(2.0)               # falls out
    for ms in (10, 20, 30):
        w.record_call(ms / 1000)
    e = w.summary()
    assert e.requests == 3
    assert e.errors == {}
    assert e.error_rate == 0.0
    assert e.p50_ms == pytest.approx(20.0)
    assert e.p99_ms == pytest.approx(29.8)


def test_requests_per_second_with_fake_clock():
    clock = Clock()
    w = Window(10, clock=clock)
    for t in (0.0, 1.0, 2.0, 3.0):
        clock.t = t
        w.record_call(0.001)
    clock.t = 4.0
    assert w.summary().requests_per_second == pytest.approx(4 / 4.0)
    clock.t = 8.0  # computed at summary() time: the same calls over a longer span
    assert w.summary().requests_per_second == pytest.approx(4 / 8.0)


def test_requests_per_second_span_starts_at_oldest_call_in_window():
    clock = Clock()
    w = Window(2, clock=clock)
    for t in (0.0, 10.0, 20.0):
        clock.t = t
        w.record_call(0.001)
    clock.t = 30.0
    assert w.summary().requests_per_second == pytest.approx(2 / 20.0)


def test_requests_per_second_zero_with_one_call_or_no_span():
    clock = Clock(5.0)
    w = Window(10, clock=clock)
    w.record_call(0.001)
    clock.t = 6.0
    assert w.summary().requests_per_second == 0.0
    w2 = Window(10, clock=Clock(5.0))
    w2.record_call(0.001)
    w2.record_call(0.001)
    assert w2.summary().requests_per_second == 0.0


def test_shadow_aggregation():
    w = Window(10, clock=Clock())
    w.record_shadow(float("nan"), 3, 4)  # first: max() starting from NaN would stay NaN
    w.record_shadow(0.5, 9, 10)
    w.record_shadow(None, 0, 0)          # a comparison with nothing numeric and no rows
    w.record_shadow(2.0, 5, 10)
    e = w.summary()
    assert e.shadow_compared == 4
    assert e.max_abs_diff == 2.0
    assert e.top1_agreement == pytest.approx(17 / 24)


def test_shadow_without_numbers_or_rows():
    w = Window(10, clock=Clock())
    w.record_shadow(None, 0, 0)
    e = w.summary()
    assert (e.shadow_compared, e.max_abs_diff, e.top1_agreement) == (1, None, None)


def test_shadow_window_is_bounded():
    w = Window(2, clock=Clock())
    w.record_shadow(100.0, 0, 10)    # falls out
    w.record_shadow(1.0, 10, 10)
    w.record_shadow(3.0, 5, 10)
    e = w.summary()
    assert (e.shadow_compared, e.max_abs_diff, e.top1_agreement) == (2, 3.0, pytest.approx(0.75))


@pytest.mark.parametrize("agreeing, compared", [(-1, 3), (2, -1), (4, 3)])
def test_shadow_rows_must_be_consistent(agreeing, compared):
    with pytest.raises(ValueError):
        Window(10).record_shadow(None, agreeing, compared)


def test_feedback_accuracy_and_bound():
    w = Window(4, clock=Clock())
    w.record_feedback([True, True, False, True])
    e = w.summary()
    assert (e.feedback, e.accuracy) == (4, pytest.approx(0.75))
    w.record_feedback([False, False])  # each row is one entry: the two oldest (True, True) fall out
    e = w.summary()
    assert (e.feedback, e.accuracy) == (4, pytest.approx(0.25))
    w.record_feedback(np.array([True, True, True, True, True]))  # more rows than the window holds
    assert (w.summary().feedback, w.summary().accuracy) == (4, 1.0)


def test_evidence_is_frozen():
    e = Window(3).summary()
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.requests = 5


# ---------------------------------------------------------------------------------------------
# top1


def test_top1_float_argmax_over_classes():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], dtype=np.float32)
    np.testing.assert_array_equal(top1({"p": probs}, "p"), [1, 0])


def test_top1_float_rank3_argmax_per_position():
    a = np.zeros((2, 3, 4))
    a[0, :, 1] = 1.0
    a[1, :, 3] = 1.0
    np.testing.assert_array_equal(top1({"p": a}, "p"), [[1, 1, 1], [3, 3, 3]])


def test_top1_bfloat16_is_a_float():
    a = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=ml_dtypes.bfloat16)
    np.testing.assert_array_equal(top1({"p": a}, "p"), [1, 0])


@pytest.mark.parametrize("a", [
    np.array([0.1, 0.9]),                         # float, ndim 1
    np.float32(0.5),                              # ndim 0
    np.array(3),                                  # integer ndim 0
    np.array([[0.2], [0.9]]),                     # float [rows, 1]: argmax would always be 0
    np.zeros((2, 0)),                             # float [rows, 0]: no class at all
    np.array([[1, 2], [3, 4]]),                   # integer [rows, 2]
    np.zeros((2, 1, 1), dtype=np.int64),          # integer ndim 3
    np.array([1 + 2j, 3 + 0j]),                   # complex
])
def test_top1_none_when_no_answer(a):
    assert top1({"y": a}, "y") is None


@pytest.mark.parametrize("values", [
    np.array([3, 1, 2], dtype=np.int64),
    np.array([3, 1, 2], dtype=np.uint8),
    np.array([True, False, True]),
    np.array([b"cat", b"dog", b"cat"], dtype=object),
    np.array([b"cat", b"dog", b"cat"]),
    np.array(["cat", "dog", "cat"]),
])
def test_top1_labels_are_the_values(values):
    np.testing.assert_array_equal(top1({"y": values}, "y"), values)
    np.testing.assert_array_equal(top1({"y": values[:, None]}, "y"), values)  # [rows, 1]


def test_top1_missing_alias():
    assert top1({"y": np.array([1, 2])}, "z") is None


def test_top1_default_alias_is_first_in_sorted_order():
    outputs = {"zeta": np.array([[0.9, 0.1]]), "alpha": np.array([7])}
    np.testing.assert_array_equal(top1(outputs, None), [7])
    assert top1({}, None) is None


def test_top1_accepts_array_likes():
    np.testing.assert_array_equal(top1({"p": [[0.1, 0.9], [0.6, 0.4]]}, "p"), [1, 0])


# ---------------------------------------------------------------------------------------------
# divergence

PRIMARY_PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
SHADOW_PROBS = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])


def test_divergence_max_abs_diff_and_agreement():
    diff, agreeing, compared = divergence({"p": PRIMARY_PROBS}, {"p": SHADOW_PROBS}, "p")
    assert diff == pytest.approx(0.2)
    assert isinstance(diff, float)
    assert (agreeing, compared) == (2, 3)


def test_divergence_max_over_every_shared_numeric_output():
    primary = {"p": PRIMARY_PROBS, "score": np.array([1.0, 2.0, 3.0]), "n": np.array([5, 5], dtype=np.int32),
               "label": np.array(["a", "b", "c"]), "only_primary": np.array([100.0])}
    shadow = {"p": SHADOW_PROBS, "score": np.array([1.0, 2.5, 3.0]), "n": np.array([5, 8], dtype=np.int64),
              "label": np.array(["a", "b", "x"]), "only_shadow": np.array([-100.0])}
    diff, agreeing, compared = divergence(primary, shadow, "p")
    assert diff == pytest.approx(3.0)  # from "n", across different integer dtypes
    assert (agreeing, compared) == (2, 3)


def test_divergence_unsigned_and_bool_do_not_wrap():
    diff, _, _ = divergence({"u": np.array([0], dtype=np.uint8)}, {"u": np.array([1], dtype=np.uint8)}, "u")
    assert diff == 1.0
    diff, _, _ = divergence({"b": np.array([True, False])}, {"b": np.array([True, True])}, "b")
    assert diff == 1.0


def test_divergence_skips_mismatched_shapes():
    primary = {"p": np.array([[0.9, 0.1]]), "v": np.array([1.0, 2.0])}
    shadow = {"p": np.array([[0.1, 0.8, 0.1]]), "v": np.array([1.0, 2.25])}
    diff, agreeing, compared = divergence(primary, shadow, "p")
    assert diff == 0.25  # only "v": "p" changed shape
    assert (agreeing, compared) == (0, 1)  # top-1 still compares: one row each, both answers differ


def test_divergence_rows_of_different_lengths_are_not_compared():
    diff, agreeing, compared = divergence({"y": np.array([1, 2, 3])}, {"y": np.array([1, 2])}, "y")
    assert (diff, agreeing, compared) == (None, 0, 0)


def test_divergence_nan_aware():
    diff, _, _ = divergence({"v": np.array([np.nan, 1.0, 5.0])}, {"v": np.array([np.nan, 3.0, np.nan])}, "v")
    assert diff == 2.0
    diff, _, _ = divergence({"v": np.array([np.nan, np.nan])}, {"v": np.array([1.0, np.nan])}, "v")
    assert diff is None


def test_divergence_infinite_difference_is_kept():
    diff, _, _ = divergence({"v": np.array([np.inf, 0.0])}, {"v": np.array([1.0, 0.0])}, "v")
    assert diff == np.inf


def test_divergence_missing_alias():
    diff, agreeing, compared = divergence({"p": PRIMARY_PROBS}, {"p": SHADOW_PROBS}, "nope")
    assert diff == pytest.approx(0.2)
    assert (agreeing, compared) == (0, 0)
    assert divergence({"p": PRIMARY_PROBS}, {"q": SHADOW_PROBS}, "p") == (None, 0, 0)


def test_divergence_no_top1_on_either_side():
    primary = {"y": np.array([0.5, 0.7])}
    shadow = {"y": np.array([0.5, 0.4])}
    diff, agreeing, compared = divergence(primary, shadow, "y")
    assert diff == pytest.approx(0.3)
    assert (agreeing, compared) == (0, 0)


def test_divergence_default_alias_and_string_labels():
    primary = {"classes": np.array([b"cat", b"dog", b"eel", b"cat"], dtype=object)}
    shadow = {"classes": np.array([b"cat", b"cow", b"eel", b"cat"], dtype=object)}
    assert divergence(primary, shadow, None) == (None, 3, 4)


def test_divergence_incomparable_labels_agree_nowhere():
    assert divergence({"y": np.array(["1", "2"])}, {"y": np.array([b"1", b"2"])}, "y") == (None, 0, 2)
    assert divergence({"y": np.array(["1", "2"])}, {"y": np.array([1, 2])}, "y") == (None, 0, 2)


def test_divergence_rank3_row_agrees_only_when_every_position_agrees():
    p = np.zeros((2, 2, 3))
    s = np.zeros((2, 2, 3))
    p[:, :, 0] = 1.0
    s[:, :, 0] = 1.0
    s[1, 1, :] = [0.0, 0.0, 1.0]  # one position of row 1 changes its answer
    assert divergence({"t": p}, {"t": s}, "t")[1:] == (1, 2)


def test_divergence_feeds_a_window():
    w = Window(10, clock=Clock())
    w.record_shadow(*divergence({"p": PRIMARY_PROBS}, {"p": SHADOW_PROBS}, "p"))
    w.record_shadow(*divergence({"p": PRIMARY_PROBS}, {"p": PRIMARY_PROBS}, "p"))
    e = w.summary()
    assert e.shadow_compared == 2
    assert e.max_abs_diff == pytest.approx(0.2)
    assert e.top1_agreement == pytest.approx(5 / 6)


# ---------------------------------------------------------------------------------------------
# decide

# ---------------------------------------------------------------------------------------------
# next_percent, is_stale


@pytest.mark.parametrize("current, expected", [(0, 10), (10, 25), (12, 25), (25, 50), (50, 100), (100, 100)])
def test_next_percent_promote_steps_up(current, expected):
    assert next_percent(current, PROMOTE) == expected


def test_next_percent_rollback_and_hold():
    assert next_percent(50, ROLLBACK) == 0
    assert next_percent(100, ROLLBACK) == 0
    assert next_percent(25, HOLD) == 25
    assert next_percent(12.5, HOLD) == 12.5


def test_next_percent_custom_steps():
    assert next_percent(5, PROMOTE, steps=(100, 50, 1)) == 50  # order of steps does not matter
    assert next_percent(0, PROMOTE, steps=(1, 50, 100)) == 1
    assert next_percent(60, PROMOTE, steps=(10, 50)) == 60  # no step above: stays


def test_next_percent_unknown_decision():
    with pytest.raises(ValueError):
        next_percent(10, "MAYBE")


@pytest.mark.parametrize("age_s, max_age_s, expected", [
    (None, 60.0, False),
    (61.0, 60.0, True),
    (60.0, 60.0, False),
    (10.0, 60.0, False),
    (1e9, 0.0, False),
    (1e9, -1.0, False),
])
def test_is_stale(age_s, max_age_s, expected):
    assert is_stale(age_s, max_age_s) is expected


# ---- distributions, per-output divergence, accuracy over time ---------------------------------------

def test_latency_deciles_describe_the_distribution_of_ok_calls():
    w = Window(size=200)
    for ms in range(101):
        w.record_call(ms / 1000.0)
    w.record_call(5.0, "INTERNAL")  # errors are not in the distribution
    assert w.summary().latency_deciles_ms == pytest.approx(tuple(float(x) for x in range(0, 101, 10)))
    assert Window().summary().latency_deciles_ms == ()


def test_per_output_divergence_is_kept_output_by_output():
    primary = {"classes": np.array([1, 2, 3, 4]), "scores": np.array([[0.9, 0.1], [0.2, 0.8]] * 2, np.float32),
               "names": np.array([b"a", b"b", b"c", b"d"], dtype=object)}
    shadow = {"classes": np.array([1, 2, 0, 4]), "scores": np.array([[0.6, 0.4], [0.7, 0.3]] * 2, np.float32),
              "names": np.array([b"a", b"x", b"c", b"d"], dtype=object)}
    by = per_output(primary, shadow)
    assert by["classes"] == (3.0, 3, 4)
    assert by["scores"][0] == pytest.approx(0.5) and by["scores"][1:] == (2, 4)  # argmax agrees on rows 0 and 2
    assert by["names"] == (None, 3, 4)  # not numeric: no difference, but a top-1
    w = Window()
    w.record_shadow(*divergence(primary, shadow, "classes"), by_output=by)
    w.record_shadow(*divergence(primary, primary, "classes"), by_output=per_output(primary, primary))
    e = w.summary()
    assert e.by_output["classes"] == (3.0, 7 / 8)
    assert e.by_output["names"] == (None, 7 / 8)
    assert e.by_output["scores"][0] == pytest.approx(0.5) and e.by_output["scores"][1] == 6 / 8
    assert (e.max_abs_diff, e.top1_agreement) == (pytest.approx(3.0), 7 / 8)


def test_accuracy_history_cuts_the_feedback_window_into_time_ordered_slices():
    clock = Clock()
    w = Window(size=100, clock=clock)
    for i in range(20):  # right for the first 10 rows, wrong after: a version going bad
        clock.t = float(i)
        w.record_feedback([i < 10])
    clock.t = 30.0
    history = w.summary().accuracy_history
    assert [acc for _, acc, _, _ in history] == [1.0] * 5 + [0.0] * 5
    assert [rows for _, _, rows, _ in history] == [2] * 10
    assert [ago for ago, _, _, _ in history] == [29.0, 27.0, 25.0, 23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0]
    assert [loss for _, _, _, loss in history] == [None] * 10  # rows without scores or targets give no loss
    few = Window(clock=clock)
    few.record_feedback([True, False, True])
    assert few.summary().accuracy_history == ((0.0, 1.0, 1, None), (0.0, 0.0, 1, None), (0.0, 1.0, 1, None))
