"""The batch scheduler stepped by hand with a fake clock, and BatchingParameters parsing."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batching.params import BatchingOptions, parse_batching_parameters
from server.batching.scheduler import QUEUE_FULL, BatchQueue, BatchScheduler
from protos.errors import Code, ServingError


class Model:
    """y = 2x; records the batch sizes it was called with."""

    def __init__(self):
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.calls.append(x.shape[0])
        return {"y": x * 2}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(body, threads=2):
    async def main():
        with ThreadPoolExecutor(threads) as pool:
            clock = Clock()
            sched = BatchScheduler(pool, threads, clock=clock, auto=False)
            await body(sched, clock)
            await sched.drain()
    asyncio.run(main())


def rows(start, n, width=3):
    return {"x": np.arange(start * width, (start + n) * width, dtype=np.float32).reshape(n, width)}


async def results(sched, futures):
    await sched.drain()
    return [await f for f in futures]


def test_batch_closes_on_size_before_the_timeout():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=4, batch_timeout_micros=1_000_000))
        futs = [q.submit(rows(0, 2)), q.submit(rows(2, 2)), q.submit(rows(4, 1))]
        assert sched.step() == 1  # the full batch of 4; the open batch of 1 waits for its timeout
        outs = await results(sched, futs[:2])
        np.testing.assert_array_equal(outs[0]["y"], rows(0, 2)["x"] * 2)
        np.testing.assert_array_equal(outs[1]["y"], rows(2, 2)["x"] * 2)
        assert model.calls == [4] and not futs[2].done()
        clock.t = 0.5
        assert sched.step() == 0
        clock.t = 1.0
        assert sched.step() == 1
        (out,) = await results(sched, futs[2:])
        np.testing.assert_array_equal(out["y"], rows(4, 1)["x"] * 2)
        assert model.calls == [4, 1]

    run(body)


def test_zero_timeout_runs_when_a_thread_is_free_and_slots_bound_concurrency():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=2, batch_timeout_micros=0))
        futs = [q.submit(rows(i, 2)) for i in range(3)] + [q.submit(rows(9, 1))]
        assert sched.step() == 1  # one thread: one batch at a time
        await futs[0]
        assert sched.step() == 1
        await futs[1]
        assert sched.step() == 1
        await futs[2]
        assert sched.step() == 1  # the open batch of 1 goes at once: timeout 0
        await futs[3]
        assert model.calls == [2, 2, 2, 1]

    run(body, threads=1)


def test_a_submit_while_every_thread_is_busy_waits_for_the_running_batch():
    """Automatic stepping (as the server runs it): with the one thread busy a submit starts
    nothing and arms no timer; the finishing batch starts what queued meanwhile, in one batch."""
    release = threading.Event()
    calls = []

    def slow(inputs):
        calls.append(len(inputs["x"]))
        release.wait(5)
        return {"y": inputs["x"] * 2}

    async def main():
        with ThreadPoolExecutor(1) as pool:
            sched = BatchScheduler(pool, 1, auto=True)
            q = BatchQueue(sched, slow, BatchingOptions(max_batch_size=8, batch_timeout_micros=0))
            first = q.submit(rows(0, 1))          # starts at once: a thread was free
            later = [q.submit(rows(i, 1)) for i in range(1, 4)]
            assert len(calls) <= 1 and sched._timer is None  # the first may not have reached the model yet
            assert not any(f.done() for f in later)
            release.set()
            outs = [await first] + [await f for f in later]
            await sched.drain()
            return outs

    outs = asyncio.run(main())
    assert [o["y"][0, 0] for o in outs] == [rows(i, 1)["x"][0, 0] * 2 for i in range(4)]
    assert calls == [1, 3]  # the three that waited ran together


def test_padding_to_allowed_batch_sizes_never_reaches_callers():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)))
        futs = [q.submit(rows(0, 2)), q.submit(rows(2, 1))]
        sched.step()
        a, b = await results(sched, futs)
        assert model.calls == [4]  # 3 rows padded up to 4
        np.testing.assert_array_equal(a["y"], rows(0, 2)["x"] * 2)
        np.testing.assert_array_equal(b["y"], rows(2, 1)["x"] * 2)

    run(body)


def test_large_batch_splitting():
    model = Model()

    async def body(sched, clock):
        opts = BatchingOptions(max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=4,
                               allowed_batch_sizes=(2, 4))
        q = BatchQueue(sched, model, opts)
        small = q.submit(rows(100, 1))
        big = q.submit(rows(0, 10))
        while sched.step():
            await sched.drain()
        s, b = await small, await big
        np.testing.assert_array_equal(b["y"], rows(0, 10)["x"] * 2)
        np.testing.assert_array_equal(s["y"], rows(100, 1)["x"] * 2)
        assert sorted(model.calls) == [4, 4, 4]  # 1+3 | 4 | 3 -> padded to 4

    run(body)


def test_queue_full_and_too_large_and_malformed_inputs():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=2, max_enqueued_batches=2,
                                                     batch_timeout_micros=10**6))
        futs = [q.submit(rows(0, 2)), q.submit(rows(2, 1))]
        with pytest.raises(ServingError) as e:
            q.submit(rows(3, 2))  # would need a third batch
        assert (e.value.code, e.value.message) == (Code.UNAVAILABLE, QUEUE_FULL)
        futs.append(q.submit(rows(5, 1)))  # still fits the open batch
        with pytest.raises(ServingError) as e:
            q.submit(rows(0, 3))
        assert (e.value.code, e.value.message) == (Code.INVALID_ARGUMENT,
                                                   "Task size 3 is larger than maximum input batch size 2")
        with pytest.raises(ServingError) as e:
            q.submit({"x": np.float32(1.0) * np.ones(())})
        assert e.value.message == "Batching Run() input tensors must have at least one dimension"
        with pytest.raises(ServingError) as e:
            q.submit({"x": np.ones((2, 3)), "z": np.ones((1, 3))})
        assert e.value.message == "Batching Run() input tensors must have equal 0th-dimension size"
        clock.t = 2.0
        while sched.step():
            await sched.drain()
        assert [f.result()["y"].shape[0] for f in futs] == [2, 1, 1]

    run(body)


def test_different_trailing_shapes_batch_apart_unless_padding():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=8, batch_timeout_micros=10**6))
        a = q.submit({"x": np.ones((1, 3), np.float32)})
        b = q.submit({"x": np.ones((2, 5), np.float32)})
        clock.t = 2.0
        while sched.step():
            await sched.drain()
        assert (await a)["y"].shape == (1, 3) and (await b)["y"].shape == (2, 5)
        assert sorted(model.calls) == [1, 2]
        padded = BatchQueue(sched, model, BatchingOptions(max_batch_size=8, batch_timeout_micros=10**6,
                                                          pad_variable_length_inputs=True))
        c = padded.submit({"x": np.full((1, 2), 7, np.float32)})
        d = padded.submit({"x": np.ones((2, 4), np.float32)})
        clock.t = 4.0
        sched.step()
        await sched.drain()
        assert model.calls[-1] == 3
        np.testing.assert_array_equal((await c)["y"], [[14, 14, 14, 14]])  # padded with its first element
        assert (await d)["y"].shape == (2, 4)

    run(body)


def test_adaptive_growth_and_back_off():
    async def body(sched, clock):
        opts = BatchingOptions(max_batch_size=64, latency_objective_ms=10.0)
        q = BatchQueue(sched, Model(), opts)
        assert q.cap == 1
        for _ in range(20):
            q._adapt(q.cap, 0.002)  # full batches well within half the objective: +1 each
        assert q.cap == 21
        q._adapt(5, 0.002)  # a batch that was not full: no growth
        assert q.cap == 21
        q._adapt(21, 0.006)  # over half the objective (5 ms): -10 %
        assert q.cap == 18
        for _ in range(200):
            q._adapt(q.cap, 0.001)
        assert q.cap == 64  # never above max_batch_size
        for _ in range(100):
            q._adapt(q.cap, 1.0)
        assert q.cap == 1

    run(body)


def test_failed_batch_fails_each_caller_and_queue_keeps_working():
    calls = []

    def flaky(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise ServingError(Code.INVALID_ARGUMENT, "boom")
        return {"y": inputs["x"]}

    async def body(sched, clock):
        q = BatchQueue(sched, flaky, BatchingOptions(max_batch_size=4))
        f1, f2 = q.submit(rows(0, 1)), q.submit(rows(1, 1))
        sched.step()
        await sched.drain()
        for f in (f1, f2):
            with pytest.raises(ServingError, match="boom"):
                f.result()
        f3 = q.submit(rows(2, 1))
        sched.step()
        await sched.drain()
        assert f3.result()["y"].shape == (1, 3)

    run(body)


def test_batching_parameters_defaults_and_validation():
    o = parse_batching_parameters("")
    assert (o.max_batch_size, o.batch_timeout_micros, o.max_enqueued_batches) == (1000, 0, 10)
    assert o.thread_pool_name == "batch_threads" and o.execution_batch_size == 1000
    o = parse_batching_parameters("max_batch_size { value: 128 } batch_timeout_micros { value: 500 } "
                                  "max_enqueued_batches { value: 3 } num_batch_threads { value: 2 } "
                                  "allowed_batch_sizes: 32 allowed_batch_sizes: 64 allowed_batch_sizes: 128 "
                                  "pad_variable_length_inputs: true")
    assert (o.max_batch_size, o.batch_timeout_micros, o.max_enqueued_batches, o.num_batch_threads) == (128, 500, 3, 2)
    assert o.allowed_batch_sizes == (32, 64, 128) and o.pad_variable_length_inputs
    o = parse_batching_parameters("max_batch_size { value: 100 } enable_large_batch_splitting { value: true } "
                                  "max_execution_batch_size { value: 16 } allowed_batch_sizes: 8 "
                                  "allowed_batch_sizes: 16")
    assert o.execution_batch_size == 16
    for text, message in [
        ("max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16",
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; expected 32"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: 16 allowed_batch_sizes: 8 allowed_batch_sizes: 32",
         "allowed_batch_sizes entries must be monotonically increasing"),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        ("max_batch_size { value: ", "Invalid protobuf file"),
    ]:
        with pytest.raises(ServingError) as e:
            parse_batching_parameters(text)
        assert message in e.value.message


def test_callers_that_went_away_are_not_run_and_an_emptied_batch_never_runs():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=8, batch_timeout_micros=1_000_000))
        gone, kept, gone2 = q.submit(rows(0, 2)), q.submit(rows(2, 3)), q.submit(rows(5, 1))
        # What a gRPC deadline does: the handler's task is cancelled, and with it the future it awaits.
        gone.cancel()
        gone2.cancel()
        clock.t = 1.0
        assert sched.step() == 1
        (out,) = await results(sched, [kept])
        np.testing.assert_array_equal(out["y"], rows(2, 3)["x"] * 2)
        assert model.calls == [3] and q.rows_cancelled == 3 and q.rows_run == 3
        # A batch whose every caller has gone is dropped: the model is not called at all.
        lone = q.submit(rows(0, 4))
        lone.cancel()
        clock.t = 2.0
        assert sched.step() == 0 and not q.has_work()
        assert model.calls == [3] and q.rows_cancelled == 7

    run(body)


def test_a_split_task_cancelled_between_its_batches_runs_no_further_part():
    model = Model()

    async def body(sched, clock):
        q = BatchQueue(sched, model, BatchingOptions(max_batch_size=8, max_execution_batch_size=2,
                                                     enable_large_batch_splitting=True, max_enqueued_batches=10))
        fut = q.submit(rows(0, 6))  # three batches of 2 rows
        assert sched.step() == 2  # two threads: two parts run
        await sched.drain()
        fut.cancel()
        assert sched.step() == 0 and model.calls == [2, 2] and q.rows_cancelled == 2

    run(body)
