"""Loss, bias and cost figures on constructed data, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.rollout import quality
from server.rollout.cost import CostMeter, CpuShare, money_per_1000
from server.rollout.evidence import FeedbackRow, Window


def test_log_loss_and_brier_of_probability_rows():
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    (l0, b0), (l1, b1) = quality.classification_losses(scores, ["0", "2"])
    assert l0 == pytest.approx(-math.log(0.7), rel=1e-6)
    assert b0 == pytest.approx(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2, rel=1e-6)   # 0.14
    assert l1 == pytest.approx(-math.log(0.1), rel=1e-6)
    assert b1 == pytest.approx(0.1 ** 2 + 0.8 ** 2 + 0.9 ** 2, rel=1e-6)   # 1.46


def test_logits_are_turned_into_probabilities_and_certainty_is_clipped():
    (loss, brier), = quality.classification_losses(np.array([[0.0, math.log(3.0)]]), ["1"])
    assert loss == pytest.approx(-math.log(0.75))     # softmax [0.25, 0.75]
    assert brier == pytest.approx(0.25 ** 2 + 0.25 ** 2)
    (loss, brier), = quality.classification_losses(np.array([[1.0, 0.0]]), ["1"])
    assert loss == pytest.approx(-math.log(1e-15))     # a certain wrong answer: finite, clipped
    assert brier == pytest.approx(2.0)


def test_labels_that_name_no_column_give_no_loss():
    rows = quality.classification_losses(np.array([[0.5, 0.5]] * 3), ["cat", "2", "-1"])
    assert rows == [(None, None)] * 3


def test_regression_errors():
    assert quality.regression_errors([2.5, 3.0], [3.0, 1.0]) == [(0.25, 0.5), (4.0, 2.0)]


def test_per_class_recall_precision_and_confusion():
    pairs = [("7", "7")] * 8 + [("7", "1")] * 2 + [("1", "1")] * 5 + [("0", "0")] * 3 + [("0", "7")]
    rows, confusion = quality.class_table(pairs)
    by = {r.label: r for r in rows}
    assert [r.label for r in rows] == ["0", "1", "7"]  # numeric order
    assert (by["7"].support, by["7"].predicted, by["7"].recall, by["7"].precision) == (10, 9, 0.8, 8 / 9)
    assert (by["1"].support, by["1"].predicted, by["1"].recall, by["1"].precision) == (5, 7, 1.0, 5 / 7)
    assert (by["0"].recall, by["0"].precision) == (0.75, 1.0)
    assert confusion == {("0", "0"): 3, ("0", "7"): 1, ("1", "1"): 5, ("7", "1"): 2, ("7", "7"): 8}


def test_per_slice_accuracy_and_loss():
    rows = quality.slice_table([("eu", True, 0.1), ("eu", False, 0.5), ("us", True, None), ("us", None, 0.3)])
    assert [(r.slice, r.rows, r.labelled, r.accuracy) for r in rows] == [("eu", 2, 2, 0.5), ("us", 2, 1, 1.0)]
    assert rows[0].loss == pytest.approx(0.3) and rows[1].loss == pytest.approx(0.3)


def test_slice_keys_are_bounded_in_length_and_number():
    known: set[str] = set()
    assert quality.slice_key(None, known) == (None, "")
    assert quality.slice_key("x" * 65, known)[0] == quality.OTHER
    for i in range(quality.MAX_SLICES):
        assert quality.slice_key(f"s{i}", known) == (f"s{i}", "")
    key, why = quality.slice_key("one more", known)
    assert key == quality.OTHER and "past the first 50" in why
    assert quality.slice_key("s3", known) == ("s3", "")  # a known one still counts as itself


def test_window_summarizes_loss_classes_and_slices():
    w = Window(100)
    w.record_feedback([FeedbackRow(True, "7", "7", "eu", 0.2, 0.1), FeedbackRow(False, "7", "1", "eu", 1.0, 0.9),
                       FeedbackRow(None, None, None, "us", sq_error=4.0, abs_error=2.0)])
    e = w.summary()
    assert (e.feedback, e.correct, e.accuracy) == (2, 1, 0.5)
    assert (e.loss_rows, e.log_loss, e.brier, e.mse, e.mae) == (3, pytest.approx(0.6), pytest.approx(0.5), 4.0, 2.0)
    assert e.losses == (0.2, 1.0, 4.0)
    assert [(c.label, c.recall) for c in e.classes] == [("1", None), ("7", 0.5)]
    assert [(s.slice, s.rows, s.accuracy) for s in e.slices] == [("eu", 2, 0.5), ("us", 1, None)]
    # Workers exchange windows as JSON: the rows survive the trip.
    merged = Window(100).merged([(0.0, w.export())]).summary()
    assert (merged.losses, merged.confusion) == (e.losses, e.confusion)
    # ... and a worker of an older Verso, which published whether each row was right, still counts.
    old = Window(100).merged([(0.0, {"size": 100, "calls": [], "shadow": [], "feedback": [(1.0, True), (1.0, False)]})])
    assert (old.summary().feedback, old.summary().correct) == (2, 1)


class FakeCpu:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_cpu_is_shared_among_the_calls_running_at_once():
    cpu = FakeCpu()
    share = CpuShare(cpu)
    a = share.start()           # t=0: A alone until 1
    cpu.t = 1.0
    b = share.start()           # 1..3: A and B share 2 s
    cpu.t = 3.0
    assert share.stop(a) == pytest.approx(1.0 + 1.0)
    cpu.t = 4.0                 # 3..4: B alone
    assert share.stop(b) == pytest.approx(1.0 + 1.0)
    cpu.t = 9.0                 # nothing running: counted to nobody
    c = share.start()
    cpu.t = 9.5
    assert share.stop(c) == pytest.approx(0.5)


def test_a_batchs_cpu_is_shared_by_its_rows_and_padding_costs_the_real_rows():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from server.batching.params import BatchingOptions
    from server.batching.scheduler import BatchQueue, BatchScheduler

    cpu = FakeCpu()
    meter = CostMeter(CpuShare(cpu))

    def model(inputs):
        cpu.t += 0.8  # the batch costs 0.8 CPU seconds, whatever its size
        return {"y": inputs["x"] * 2}

    async def main():
        with ThreadPoolExecutor(1) as pool:
            sched = BatchScheduler(pool, 1, clock=lambda: 0.0, auto=False)
            q = BatchQueue(sched, model, BatchingOptions(max_batch_size=16, batch_timeout_micros=0,
                                                         allowed_batch_sizes=(16,)),
                           cpu=meter.share, on_cost=lambda s, n: meter.add("m", 1, s, n))
            futs = [q.submit({"x": np.ones((n, 2), np.float32)}) for n in (1, 2, 5)]
            sched.step()
            await sched.drain()
            return [len((await f)["y"]) for f in futs]

    assert asyncio.run(main()) == [1, 2, 5]
    assert meter.totals("m", 1) == (pytest.approx(0.8), 8)           # 8 real rows, padded to 16
    assert meter.samples("m", 1) == (pytest.approx(0.1),)            # 0.8 s / 8 rows
    assert meter.totals("m", 1, "shadow") == (0.0, 0)


def test_money_per_1000_predictions():
    # 2 CPU s per 1000 at 0.36 per CPU hour: 0.0002; 1 GiB held for 1000 / 100 = 10 s at 3.6 per GiB-hour: 0.01.
    assert money_per_1000(2.0, 2 ** 30, 100.0, 0.36, 3.6) == pytest.approx(0.0002 + 0.01)
    assert money_per_1000(2.0, None, 0.0, 0.36, 0.0) == pytest.approx(0.0002)
    assert money_per_1000(2.0, None, 0.0, 0.0, 0.0) is None
    assert money_per_1000(None, 2 ** 30, 100.0, 0.36, 0.0) is None


def test_class_labels_are_bounded_in_length_and_number_and_reasons_do_not_multiply():
    known: set[str] = set()
    assert quality.class_key(None, known) == (None, "")
    assert quality.class_key("", known) == ("", "")  # an empty answer is a class of its own
    reasons = {quality.class_key("x" * n, known)[1] for n in range(257, 400)}
    assert reasons == {"class labels over 256 characters"}
    for i in range(quality.MAX_CLASSES - 1):
        assert quality.class_key(f"c{i}", known) == (f"c{i}", "")
    assert quality.class_key("one more", known) == (quality.OTHER, "class labels past the first 50")
    assert quality.class_key("c3", known) == ("c3", "")
    assert {quality.slice_key("k" * n, set())[1] for n in range(65, 200)} == {"slice keys over 64 characters"}


def test_feedback_problems():
    assert quality.feedback_problem(["a"] * 10, []) is None
    assert quality.feedback_problem(["a"] * 10_001, []) == \
        "Feedback has 10001 labels; at most 10000 are taken in one call"
    assert quality.feedback_problem([], [1.0] * 10_001) == \
        "Feedback has 10001 targets; at most 10000 are taken in one call"
    assert quality.feedback_problem(["a", "b" * 257], []) == \
        "Feedback label 1 has 257 characters; at most 256 are taken"
    assert quality.feedback_problem([b"b" * 256, 7], []) is None


def test_a_call_alone_is_charged_exactly_and_sets_its_versions_draw_rate():
    """A version whose calls draw on the pools at twice the rate of another's gets twice the share
    of an interval they run in together, once each has been measured alone (an even split would
    give them the same)."""
    cpu, wall = FakeCpu(), FakeCpu()
    share = CpuShare(cpu, monotonic=wall)
    share.SAMPLE_EVERY_S, share.MAX_SAMPLE_GAP_S = 0.0, 0.0
    for key, rate in (("cheap", 1.0), ("dear", 2.0)):
        def call(rate=rate):
            cpu.t += rate * 0.1
            wall.t += 0.1
        for _ in range(2):  # the first call of a version is never a sample (lazy set-up)
            _, spent = share.timed(call, key=key)
        assert getattr(spent, "alone", False) and spent == pytest.approx(rate * 0.1)
        assert share.rate(key) == pytest.approx(rate)
    a, b = share.start("cheap"), share.start("dear")
    cpu.t += 3.0
    assert (share.stop(a), share.stop(b)) == (pytest.approx(1.0), pytest.approx(2.0))


def test_only_versions_of_a_model_under_rollout_ever_run_alone():
    """Sampling makes calls wait now and then: a model nobody compares never pays for it."""
    from server.rollout.manager import RolloutManager

    cpu, wall = FakeCpu(), FakeCpu()
    share = CpuShare(cpu, monotonic=wall)
    share.SAMPLE_EVERY_S, share.MAX_SAMPLE_GAP_S = 0.0, 0.0
    rm = RolloutManager(None, costs=CostMeter(share))

    def call():
        cpu.t += 0.1
        wall.t += 0.1

    for _ in range(5):
        _, spent = share.timed(call, key=("plain", 1))
        assert not getattr(spent, "alone", False)
    rm.configs["compared"] = object()  # a model under rollout (only its name is read)
    alone = [getattr(share.timed(call, key=("compared", 2))[1], "alone", False) for _ in range(3)]
    assert alone == [False, True, True]  # its first call is never a sample (lazy set-up)
    assert share.rate(("plain", 1)) is None


def test_a_call_due_alone_waits_for_the_calls_in_flight_and_holds_new_ones():
    import threading
    cpu, wall = FakeCpu(), FakeCpu()
    share = CpuShare(cpu, monotonic=wall)
    share.SAMPLE_EVERY_S, share._typical = 0.0, 30.0
    share.timed(lambda: None, key="v")      # first call: not a sample; the next one is due
    other = share.start("w")
    order, done = [], threading.Event()

    def alone():
        share.timed(lambda: order.append("alone"), key="v")
        done.set()

    t = threading.Thread(target=alone)
    t.start()
    assert not done.wait(0.2)               # waits for the call in flight
    late = []
    t2 = threading.Thread(target=lambda: late.append(share.start("w")))
    share.stop(other)
    t.join(5)
    t2.start()
    t2.join(5)
    assert order == ["alone"] and done.is_set() and late
    share.stop(late[0])


def test_the_meter_prefers_calls_measured_alone():
    from server.rollout.cost import CallCpu
    meter = CostMeter(CpuShare(FakeCpu()))
    for _ in range(10):
        meter.add("m", 1, 0.5, 10)             # shared: 0.05 s a row
    assert meter.per_prediction("m", 1) == (pytest.approx(0.05), 0)
    for _ in range(CostMeter.MIN_ALONE):
        meter.add("m", 1, CallCpu(0.2), 10)    # alone: 0.02 s a row
    meter.add("m", 1, 0.3, 0)                  # hooks: 0.3 s over the 150 rows served
    per_row, n = meter.per_prediction("m", 1)
    assert n == CostMeter.MIN_ALONE and per_row == pytest.approx(0.02 + 0.3 / 150)
    assert meter.samples("m", 1) == pytest.approx((0.02 + 0.3 / 150,) * CostMeter.MIN_ALONE)
    meter.forget(lambda name, version: False)
    assert meter.per_prediction("m", 1) == (None, 0)


def test_native_threads_count_a_runtime_pool_not_python_threads():
    import threading
    import time

    import tensorflow as tf

    from server.rollout.cost import NativeThreads
    if not NativeThreads.available():
        pytest.skip("per-thread CPU clocks are Linux's")
    x = tf.random.uniform((600, 600))
    tf.linalg.matmul(x, x).numpy()             # TF's pools exist from here on
    pools = NativeThreads()
    pools.REFRESH_S = 0.0
    pools(), pools()                           # every thread there now is sighted twice
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(10000))

    t = threading.Thread(target=spin)          # a Python thread: request handling, not a model
    t.start()
    try:
        pools(), pools()
        time.sleep(0.3)
        assert pools() < 0.05
    finally:
        stop.set()
        t.join()
    for _ in range(20):
        tf.linalg.matmul(x, x).numpy()         # the work runs on TF's pool threads
    assert pools() > 0.01


def test_a_hanging_call_never_holds_up_the_others_for_long():
    import threading
    cpu, wall = FakeCpu(), FakeCpu()
    share = CpuShare(cpu, monotonic=wall)
    share.SAMPLE_EVERY_S, share.FAILED_BACKOFF_S = 0.0, 0.0
    share.timed(lambda: None, key="v")
    stuck = share.start("w")                   # a call in flight that does not end
    _, spent = share.timed(lambda: None, key="v")
    assert not getattr(spent, "alone", False)  # it gave up waiting to run alone: shared, no sample
    share.stop(stuck)
    assert share._wait_s() == 0.05             # typical calls take no time here: the floor
    release = threading.Event()
    results = []
    t = threading.Thread(target=lambda: results.append(share.timed(release.wait, 30, key="v")))
    t.start()                                  # due alone, and then hangs
    for _ in range(100):
        if share._alone is not None:
            break
        threading.Event().wait(0.01)
    other = share.start("w")                   # held _wait_s() at most, then runs beside it
    release.set()
    t.join(5)
    share.stop(other)
    assert results and not getattr(results[0][1], "alone", False)  # not alone throughout: no sample


def test_the_per_row_figure_is_a_trimmed_mean_of_the_calls_measured_alone():
    from server.rollout.cost import CallCpu, trimmed_mean
    assert trimmed_mean([1, 2, 3, 4, 100], 0.2) == pytest.approx(3.0)     # 1 and 100 left out
    assert trimmed_mean([5.0], 0.2) == 5.0 and trimmed_mean([1, 3], 0.2) == 2.0
    meter = CostMeter(CpuShare(FakeCpu()))
    for x in (0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5.0):         # one call preempted mid-way
        meter.add("m", 1, CallCpu(x), 1)
    assert meter.per_prediction("m", 1) == (pytest.approx(0.1), 10)
