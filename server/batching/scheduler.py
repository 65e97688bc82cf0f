"""A shared batch scheduler in TF Serving's manner, on the event loop.

* ``BatchQueue``: one bounded queue per (model version, signature, output set). ``submit``
  validates a request's inputs, places its rows into the open batch (splitting it across
  batches when ``enable_large_batch_splitting``), and returns a future for the caller's own
  output rows. A full queue answers UNAVAILABLE at once; nothing blocks.
* ``BatchScheduler``: the shared pool of ``num_batch_threads`` slots over every queue. A
  batch runs when it is full, when its ``batch_timeout_micros`` has passed, or at once when
  the timeout is 0 and a slot is free. The merge (concatenate, pad), the model call and the
  timing run in the executor; the split back to callers runs on the loop.
* Cancellation: a caller that goes away while queued (a gRPC deadline or a cancelled call
  cancels its awaiting task, and so its future) has its rows taken out of the batch when the
  batch is dispatched; a batch left empty never runs.
* Adaptive mode (Verso): with a latency objective, each queue's batch cap grows by one while
  full batches run within half the objective and shrinks by 10 % when one does not
  (Clipper's AIMD with Nexus' half-objective rule).

Ownership: everything here lives on one event loop; only ``BatchQueue._execute`` runs in the
executor and it reads nothing that the loop mutates. ``step()`` is the whole dispatch
decision; with ``auto=False`` tests call it by hand with a fake clock.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import Executor
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from server.batching.params import BatchingOptions
from protos.errors import Code, ServingError, invalid_argument

log = logging.getLogger("verso.batching")

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"

RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class _Task:
    __slots__ = ("inputs", "size", "future", "parts", "pending", "enqueued")

    def __init__(self, inputs, size, future, pieces, enqueued):
        self.enqueued = enqueued
        self.inputs = inputs
        self.size = size
        self.future = future
        self.parts: list = [None] * pieces
        self.pending = pieces


class _Batch:
    __slots__ = ("pieces", "size", "created", "key", "started")

    def __init__(self, created: float, key):
        self.pieces: list[tuple[_Task, int, int, int]] = []  # (task, part index, start row, stop row)
        self.size = 0
        self.created = created
        self.started = created
        self.key = key


class BatchQueue:
    def __init__(self, scheduler: "BatchScheduler", run: RunFn, options: BatchingOptions, name: str = "",
                 cpu=None, on_cost: Optional[Callable[[float, int], None]] = None):
        """``cpu`` (an object with ``timed(fn, *args) -> (result, seconds)``: the version's
        ``server.rollout.cost.CpuShare.keyed``, which may run the batch alone to measure it) and
        ``on_cost(cpu_seconds, rows)``: each batch's CPU share and its real rows (padding
        excluded: the padding's cost is the real rows'), reported from the executor thread."""
        self._scheduler = scheduler
        self._run = run
        self._cpu = cpu
        self._on_cost = on_cost
        self.options = options
        self.name = name
        self._open: Optional[_Batch] = None
        self._closed: collections.deque[_Batch] = collections.deque()
        # Adaptive mode starts small (the first allowed size, else 1) and grows; otherwise the cap
        # is simply the execution batch size.
        self.cap = options.execution_batch_size
        if options.latency_objective_ms is not None:
            self.cap = min(self.cap, options.allowed_batch_sizes[0] if options.allowed_batch_sizes else 1)
        self.batches_run = 0
        self.rows_run = 0
        self.rows_cancelled = 0  # rows dropped before running because their callers had gone

    # ---- submit (loop) -------------------------------------------------------------------------

    def submit(self, inputs: Mapping[str, np.ndarray]) -> asyncio.Future:
        """Queue one request; the future resolves to {alias: its own output rows}."""
        size = None
        for arr in inputs.values():
            if arr.ndim == 0:
                raise invalid_argument("Batching Run() input tensors must have at least one dimension")
            if size is None:
                size = arr.shape[0]
            elif arr.shape[0] != size:
                raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        size = size or 0
        o = self.options
        if size > o.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {o.max_batch_size}")
        # Without padding, only tensors of equal trailing shapes and dtypes can be concatenated:
        # a request that differs starts a batch of its own (TF Serving would fail the batch).
        key = None if o.pad_variable_length_inputs else tuple(
            sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        now = self._scheduler.clock()
        cap = self.cap
        has_open = self._open is not None and bool(self._open.pieces)
        joinable = has_open and self._open.key == key
        if o.enable_large_batch_splitting and size > 0:
            first = min(cap - self._open.size, size) if joinable else 0
            rest = size - first
            cuts = ([first] if first else []) + [cap] * (rest // cap) + ([rest % cap] if rest % cap else [])
            new_batches = len(cuts) - (1 if first else 0)
        else:
            cuts = [size]
            new_batches = 0 if joinable and self._open.size + size <= cap else 1
        if len(self._closed) + (1 if has_open else 0) + new_batches > o.max_enqueued_batches:
            raise ServingError(Code.UNAVAILABLE, QUEUE_FULL)
        future = asyncio.get_running_loop().create_future()
        task = _Task(inputs, size, future, len(cuts), now)
        start = 0
        for part, n in enumerate(cuts):
            if self._open is None or self._open.key != key or self._open.size + n > cap:
                self._close_open()
                self._open = _Batch(now, key)
            self._open.pieces.append((task, part, start, start + n))
            self._open.size += n
            start += n
            if self._open.size >= cap:
                self._close_open()
        self._scheduler.notify(self)
        return future

    def _close_open(self) -> None:
        if self._open is not None and self._open.pieces:
            self._closed.append(self._open)
        self._open = None

    # ---- scheduling (loop) ---------------------------------------------------------------------

    def take_ready(self, now: float) -> Optional[_Batch]:
        """The next batch to run now, if any (full ones first, then a timed-out open one),
        without the tasks whose callers have gone: a batch left empty is dropped unrun."""
        while True:
            b = None
            if self._closed:
                b = self._closed.popleft()
            elif self._open is not None and self._open.pieces:
                timeout = self.options.batch_timeout_micros / 1e6
                if timeout == 0 or now - self._open.created >= timeout:
                    b, self._open = self._open, None
            if b is None or self._drop_cancelled(b):
                return b

    def _drop_cancelled(self, batch: _Batch) -> bool:
        # A caller whose deadline passed (or who cancelled) has its future cancelled by its
        # awaiting task: its rows are not run. Returns whether anything is left to run.
        if any(t.future.cancelled() for t, _, _, _ in batch.pieces):
            kept = [p for p in batch.pieces if not p[0].future.cancelled()]
            self.rows_cancelled += batch.size - sum(b - a for _, _, a, b in kept)
            batch.pieces = kept
            batch.size = sum(b - a for _, _, a, b in kept)
        return bool(batch.pieces)

    def next_deadline(self) -> Optional[float]:
        if self._closed:
            return None
        b = self._open
        if b is None or not b.pieces:
            return None
        return b.created + self.options.batch_timeout_micros / 1e6

    def has_work(self) -> bool:
        return bool(self._closed) or (self._open is not None and bool(self._open.pieces))

    # ---- execution (executor thread) ------------------------------------------------------------

    def _execute(self, batch: _Batch):
        o = self.options
        aliases = list(batch.pieces[0][0].inputs)
        merged = {}
        for alias in aliases:
            parts = [t.inputs[alias][a:b] for (t, _, a, b) in batch.pieces]
            if o.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts, alias)
            merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        target = batch.size
        if o.allowed_batch_sizes:
            target = next((s for s in o.allowed_batch_sizes if s >= batch.size), batch.size)
        if target > batch.size:
            # TF Serving pads with copies of the first row of the last task; callers never see them.
            _, _, a, b = batch.pieces[-1]
            row = batch.size - (b - a)
            for alias in aliases:
                filler = np.repeat(merged[alias][row:row + 1], target - batch.size, axis=0)
                merged[alias] = np.concatenate([merged[alias], filler])
        t0 = time.perf_counter()
        if self._cpu is not None and self._on_cost is not None:
            outputs, cpu = self._cpu.timed(self._run, merged)
            self._on_cost(cpu, batch.size)
        else:
            outputs = self._run(merged)
        return outputs, target, time.perf_counter() - t0

    # ---- completion (loop) ----------------------------------------------------------------------

    def _finish(self, batch: _Batch, result, error: Optional[BaseException]) -> None:
        if error is None:
            outputs, padded, elapsed = result
            for alias, arr in outputs.items():
                if np.ndim(arr) == 0 or arr.shape[0] != padded:
                    error = ServingError(Code.FAILED_PRECONDITION,
                                         "Batched output tensor's 0th dimension does not equal the sum of "
                                         "the 0th dimension sizes of the input tensors")
                    break
        if error is not None:
            err = error if isinstance(error, ServingError) else ServingError(
                Code.INTERNAL, f"{type(error).__name__}: {error}")
            for task, _, _, _ in batch.pieces:
                if not task.future.done():
                    task.future.set_exception(err)
            return
        self.batches_run += 1
        self.rows_run += batch.size
        if self.batches_run % 1000 == 0:
            log.info("Batching %s: %d batches, mean batch size %.1f rows, cap %d", self.name,
                     self.batches_run, self.rows_run / self.batches_run, self.cap)
        self._adapt(batch.size, elapsed)
        observer = self._scheduler.observer
        if observer is not None:
            observer(self.name, self.options.thread_pool_name, [b - a for (_, _, a, b) in batch.pieces],
                     [batch.started - t.enqueued for (t, _, _, _) in batch.pieces], batch.size, padded, self.cap)
        offset = 0
        for task, part, a, b in batch.pieces:
            n = b - a
            task.parts[part] = {k: v[offset:offset + n] for k, v in outputs.items()}
            offset += n
            task.pending -= 1
            if task.pending == 0 and not task.future.done():
                if len(task.parts) == 1:
                    task.future.set_result(task.parts[0])
                else:
                    task.future.set_result({k: np.concatenate([p[k] for p in task.parts]) for k in outputs})

    def _adapt(self, size: int, elapsed: float) -> None:
        objective = self.options.latency_objective_ms
        if objective is None:
            return
        budget = objective / 2e3  # Nexus: one batch may take at most half the objective
        old = self.cap
        if elapsed > budget:
            self.cap = max(1, math.floor(self.cap * 0.9)) if self.cap > 1 else 1
        elif size >= self.cap:
            self.cap = min(self.cap + 1, self.options.execution_batch_size)
        if self.cap != old and (self.cap % 8 == 0 or self.cap < old):
            log.info("Adaptive batching %s: batch size %d -> %d (last batch %.2f ms, budget %.2f ms)",
                     self.name, old, self.cap, elapsed * 1e3, budget * 1e3)


def _pad_to_common_shape(parts: Sequence[np.ndarray], alias: str) -> list[np.ndarray]:
    """TF Serving's pad_variable_length_inputs: pad every dim after the 0th up to the largest,
    with the tensor's own first element."""
    ranks = {p.ndim for p in parts}
    if len(ranks) != 1:
        raise ServingError(Code.FAILED_PRECONDITION,
                           f"Tensors with name '{alias}' from different tasks have different ranks")
    target = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
    out = []
    for p in parts:
        if p.shape[1:] == target:
            out.append(p)
            continue
        if not 1 <= p.ndim <= 6:
            raise ServingError(Code.FAILED_PRECONDITION, "Only tensors with rank from 1 to 6 can be padded.")
        pad = [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target)]
        fill = p.flat[0] if p.size else 0
        out.append(np.pad(p, pad, mode="constant", constant_values=fill) if p.dtype != object
                   else _pad_object(p, pad, fill))
    return out


def _pad_object(p: np.ndarray, pad, fill) -> np.ndarray:
    out = np.empty(tuple(s + b for s, (_, b) in zip(p.shape, pad)), dtype=object)
    out[...] = fill
    out[tuple(slice(0, s) for s in p.shape)] = p
    return out


class BatchScheduler:
    """The shared pool: ``num_batch_threads`` model calls at a time over every queue."""

    def __init__(self, executor: Executor, num_threads: int, *, clock: Callable[[], float] = time.monotonic,
                 auto: bool = True, observer: Optional[Callable[..., None]] = None):
        """``observer(queue, thread_pool_name, task_rows, task_waits_s, rows, padded_rows, cap)`` is
        called on the loop after each successful batch (metrics)."""
        self._executor = executor
        self.observer = observer
        self._free = num_threads
        self.clock = clock
        self._auto = auto
        self._queues: collections.OrderedDict[int, BatchQueue] = collections.OrderedDict()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._running: set = set()  # concurrent.futures.Future of the batches running

    def notify(self, queue: BatchQueue) -> None:
        self._queues[id(queue)] = queue
        # With every thread busy nothing can start, and a finishing batch steps again: under
        # load most submits stop here (no scan of the queues, no timer re-armed).
        if self._auto and self._free > 0:
            self.step()

    def step(self) -> int:
        """Start every batch that may run now; returns how many started."""
        started = 0
        now = self.clock()
        while self._free > 0 and self._queues:
            picked = None
            for key, q in list(self._queues.items()):
                if not q.has_work():
                    del self._queues[key]
                    continue
                batch = q.take_ready(now)
                if batch is not None:
                    picked = (q, batch)
                    self._queues.move_to_end(key)  # round robin across queues
                    break
            if picked is None:
                break
            self._start(*picked)
            started += 1
        if self._auto:
            self._arm_timer(now)
        return started

    def _start(self, q: BatchQueue, batch: _Batch) -> None:
        self._free -= 1
        batch.started = self.clock()
        loop = asyncio.get_running_loop()
        # One wake-up of the loop per batch: the executor's future calls back into the loop
        # directly (run_in_executor would chain an asyncio future and wake the loop twice).
        fut = self._executor.submit(q._execute, batch)
        self._running.add(fut)

        def done(f) -> None:
            self._running.discard(f)
            self._free += 1
            exc = f.exception()
            q._finish(batch, None if exc else f.result(), exc)
            if self._auto:
                self.step()

        def finished(f) -> None:  # an executor thread
            try:
                loop.call_soon_threadsafe(done, f)
            except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits
                pass

        fut.add_done_callback(finished)

    def _arm_timer(self, now: float) -> None:
        deadlines = [d for d in (q.next_deadline() for q in self._queues.values()) if d is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines and self._free > 0:
            delay = max(0.0, min(deadlines) - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self.step)

    async def drain(self) -> None:
        """Wait for every running batch and its completion on the loop (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._running)), return_exceptions=True)
            await asyncio.sleep(0)
