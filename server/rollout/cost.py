"""What answering costs, per model version: CPU seconds per prediction, resident memory, money;
and what training cost, spread over the predictions served (``amortised_per_1000``).

A model call's CPU is what the model's own threads used for it: the calling thread's CPU time
plus a share of the model runtimes' native thread pools (``NativeThreads``: TensorFlow runs a
graph's ops on its inter-op and intra-op pools, so the calling thread alone misses most of the
work). Request handling (decoding, the network, the event loop, other Python threads) is in no
version's cost: it is the same work whichever version answers.

Calls in flight at once draw on the same pools, so ``CpuShare`` splits the pools' CPU among
them in proportion to each version's *draw rate* (pool CPU per second of a call), measured on
calls that now and then run **alone** (no other model call in flight: at most every
``CpuShare.SAMPLE_EVERY_S`` per version and for at most ``SAMPLE_FRACTION`` of the time). Those
calls alone are exact; ``CostMeter.per_prediction`` (status's ``cpu_seconds_per_1000``) and the
cost gate's samples are theirs once a version has ``CostMeter.MIN_ALONE`` of them. Measured with
a version built to do twice the work per row of another, same answers (tests/integration/
test_cost.py): 1.8-1.9x under a 50/50 split, with and without batching, where process CPU
shared evenly among the calls in flight measured 1.4x (request handling and an in-process
client's CPU charged to whichever calls were running, and a graph running two branches at once
drawing on the pools faster than a single chain beside it). A batch's CPU is split among its
rows (padding rows cost the real rows); pre/post-processing hooks are calls of their own with no
rows, added per row to the calls measured alone.

``CostMeter`` keeps per (model, version, kind) totals ("serve" or "shadow"), a bounded window of
per-call samples (CPU seconds per row) and of samples measured alone, until ``forget`` drops an
unloaded version's. Thread-safe: calls end in executor threads.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from typing import Callable, Optional

SERVE, SHADOW = "serve", "shadow"
SAMPLES_KEPT = 1000


class NativeThreads:
    """CPU seconds used by the process's *native* threads: those Python did not start and gRPC
    does not own (by name). Those are the model runtimes' pools: TensorFlow's inter-op
    (``tf_Compute``) and intra-op (Eigen, unnamed) threads, onnxruntime's, BLAS's. Python threads
    (the event loop, the executors, an in-process client) and gRPC's own (``grpc_*``,
    ``event_engine``, ``lifeguard``) are left out: their work is request handling, not a model's.

    Linux only (per-thread CPU clocks of ``/proc/self/task``); ``available()`` says whether it
    works here. The thread list is re-read at most every ``REFRESH_S``; a thread is counted from
    its second sighting on (a Python thread can be seen in /proc before ``threading`` lists it),
    so a new pool thread's first ~``REFRESH_S`` of CPU is missed. Not thread-safe: ``CpuShare``
    calls it under its lock."""

    REFRESH_S = 0.5
    _NOT_MODEL = ("grpc", "event_engine", "lifeguard")

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._listed = -float("inf")
        self._counted: dict[int, list] = {}   # tid -> [clock id, CPU seconds last read]
        self._skipped: set[int] = set()
        self._seen: set[int] = set()           # sighted once, not yet classified

    @staticmethod
    def available() -> bool:
        try:
            time.clock_gettime(_thread_clock(threading.get_native_id()))
            return os.path.isdir("/proc/self/task")
        except (OSError, AttributeError, OverflowError):
            return False

    def _refresh(self) -> None:
        try:
            alive = {int(t) for t in os.listdir("/proc/self/task")}
        except OSError:
            return
        python = {t.native_id for t in threading.enumerate()}
        for tid in alive - self._counted.keys() - self._skipped:
            if tid not in self._seen:
                self._seen.add(tid)
                continue
            self._seen.discard(tid)
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f.read().strip()
                clock = _thread_clock(tid)
                now = time.clock_gettime(clock)
            except OSError:
                continue
            if tid in python or name.startswith(self._NOT_MODEL):
                self._skipped.add(tid)
            else:
                self._counted[tid] = [clock, now]
        self._skipped &= alive
        self._seen &= alive

    def __call__(self) -> float:
        """CPU seconds the counted threads used since the previous call (0.0 the first time)."""
        now = self._monotonic()
        if now - self._listed >= self.REFRESH_S:
            self._listed = now
            self._refresh()
        spent = 0.0
        for tid, entry in list(self._counted.items()):
            try:
                t = time.clock_gettime(entry[0])
            except OSError:  # the thread ended: what it used since the last read is lost
                del self._counted[tid]
                continue
            spent += t - entry[1]
            entry[1] = t
        return spent


def _thread_clock(tid: int) -> int:
    """Linux's CPU-time clock id of thread ``tid`` of this process (MAKE_THREAD_CPUCLOCK(tid,
    CPUCLOCK_SCHED)); Python's ``pthread_getcpuclockid`` takes only Python's own threads."""
    return ((~tid) << 3) | 6


class CallCpu(float):
    """CPU seconds of a call that ran alone (``CpuShare``): exact, shared with no other call."""

    alone: bool

    def __new__(cls, value: float, alone: bool = True):
        obj = super().__new__(cls, value)
        obj.alone = alone
        return obj


class CpuShare:
    """A model call's CPU: its calling thread's own CPU time, plus a share of the CPU the model
    runtimes' pools (``NativeThreads``) used while it ran.

    Calls in flight together use the same pools, so their CPU must be divided. At every call's
    start and end, the pools' CPU since the last such event is split among the calls running
    then **in proportion to their versions' draw rates**: the pool CPU per second of wall time a
    call of that version uses when it runs alone. A version whose graph runs two branches at
    once draws on the pools at twice the rate of one that runs a single chain; an even split
    would hand half of the cheap call's time to the expensive one (a 2x model measured 1.4x).
    The rates are measured, not guessed: every ``SAMPLE_EVERY_S`` at most, and for at most
    ``SAMPLE_FRACTION`` of the wall time, a call of a version runs **alone** (it waits for the
    calls in flight to end, and new calls wait for it: a readers-writer gate, each wait bounded by
    ``_wait_s``: past it the call runs beside the others and is no sample), and its pool CPU
    over its wall time updates the version's rate (a moving average). A call alone is also
    charged exactly what the pools used. Until a version has a rate it weighs 1.0. The price:
    calls that arrive while a call runs alone (or waits to) start when it ends, so now and then
    a call waits about one model call longer, for at most ``SAMPLE_FRACTION`` of each version's
    time.

    Request handling (decoding, the network, the event loop, an in-process client) is in no
    version's cost: it is the same whichever version answers, and charged to whichever calls
    happened to be running it would blur their difference.

    ``clock`` given (tests; the process's CPU time where per-thread clocks are missing) is the
    pools' cumulative CPU seconds, and the calling thread is counted through it. ``sample=False``
    never runs a call alone (every version weighs 1.0: an even split). ``sample_when(key)``
    (set by the rollout manager: only versions of a model under rollout) says which keys are
    ever sampled: a model nobody compares never makes its calls wait."""

    SAMPLE_EVERY_S = 0.02
    SAMPLE_FRACTION = 0.05
    RATE_WEIGHT = 0.2   # moving-average weight of a new sample
    MIN_RATE = 0.01
    MAX_SAMPLE_GAP_S = 1.0
    MAX_WAIT_S = 1.0          # the longest a call waits to run alone, or for a call alone
    FAILED_BACKOFF_S = 5.0    # the longest a version waits for its next try after failed ones

    def __init__(self, clock: Optional[Callable[[], float]] = None, *, sample: bool = True,
                 monotonic: Callable[[], float] = time.monotonic):
        if clock is None and NativeThreads.available():
            self._spent, self._own = NativeThreads(), time.thread_time
        else:
            clock = clock or time.process_time
            last = [clock()]

            def spent() -> float:
                now = clock()
                d, last[0] = now - last[0], now
                return d

            self._spent, self._own = spent, None
        self._monotonic = monotonic
        self._sample = sample
        self._lock = threading.Condition(threading.Lock())
        self._running: dict[int, list] = {}       # token -> [CPU so far, weight]
        self._ids = itertools.count()
        self._rates: dict = {}                    # key -> pool CPU per second alone
        self._next_sample: dict = {}              # key -> monotonic time of its next sample
        self._alone: Optional[int] = None         # the token running alone, if any
        self._waiting_alone = False
        self._spoiled = False                     # a call started beside the call alone
        self._typical = 0.0                       # moving average of a call's wall time
        self._backoff: dict = {}                  # key -> seconds to its next try, after a failed one
        self.sample_when: Optional[Callable[[object], bool]] = None  # None: every key
        with self._lock:
            self._spent()

    def rate(self, key) -> Optional[float]:
        """The pools' CPU per second of a call of ``key`` measured alone (None: not yet)."""
        with self._lock:
            return self._rates.get(key)

    def _advance(self) -> None:
        spent = self._spent()
        if self._running and spent > 0:
            total = sum(r[1] for r in self._running.values())
            for r in self._running.values():
                r[0] += spent * r[1] / total

    def _weight(self, key) -> float:
        rate = self._rates.get(key)
        # a call that used no pool CPU alone (a Python hook) still gets a sliver of a shared interval
        return 1.0 if rate is None else max(rate, self.MIN_RATE)

    def _wait_s(self) -> float:
        """How long a call waits for others to end (or for a call alone): three typical calls,
        between 50 ms and ``MAX_WAIT_S``, so that a model call that hangs never holds up the
        others for long."""
        return min(self.MAX_WAIT_S, max(0.05, 3 * self._typical))

    def _begin(self, key, alone: bool) -> tuple[int, bool]:
        """A call starts: (token, whether it runs alone). A call due alone waits ``_wait_s``
        at most for the calls in flight to end (else it runs beside them: no sample, and the
        version's next try is 0.1 s away, doubling to ``FAILED_BACKOFF_S`` while tries fail);
        other calls wait as long at most for a call alone (then they run beside it and it is no
        sample)."""
        with self._lock:
            if alone:
                self._waiting_alone = True
                try:
                    alone = self._lock.wait_for(lambda: not self._running, self._wait_s())
                finally:
                    self._waiting_alone = False
                    self._lock.notify_all()
                if not alone:  # backs off: 0.1 s, doubling to FAILED_BACKOFF_S while tries fail
                    backoff = self._backoff[key] = min(self.FAILED_BACKOFF_S, 2 * self._backoff.get(key, 0.05))
                    self._next_sample[key] = self._monotonic() + backoff
                else:
                    self._backoff.pop(key, None)
            elif not self._lock.wait_for(lambda: self._alone is None and not self._waiting_alone, self._wait_s()):
                self._spoiled = True
            self._advance()
            token = next(self._ids)
            self._running[token] = [0.0, self._weight(key)]
            if alone:
                self._alone, self._spoiled = token, False
            return token, alone

    def _end(self, token: int) -> tuple[float, bool]:
        """A call ends: (the pools' CPU seconds given to it, whether it ran alone throughout)."""
        with self._lock:
            self._advance()
            spent = self._running.pop(token, [0.0])[0]
            alone = False
            if self._alone == token:
                alone, self._alone = not self._spoiled, None
                self._lock.notify_all()
            elif not self._running:
                self._lock.notify_all()
            return spent, alone

    def start(self, key=None) -> int:
        return self._begin(key, False)[0]

    def stop(self, token: int) -> float:
        """The pools' CPU seconds given to this call since its ``start``."""
        return self._end(token)[0]

    def _due(self, key) -> bool:
        """Whether the next call of ``key`` runs alone (and if so, books the slot)."""
        if not self._sample or key is None or (self.sample_when is not None and not self.sample_when(key)):
            return False
        with self._lock:
            now = self._monotonic()
            due = self._next_sample.get(key)
            if due is None:  # a version's first calls pay for lazy set-up: never a sample
                self._next_sample[key] = now + self.SAMPLE_EVERY_S
                return False
            if self._waiting_alone or self._alone is not None or now < due:
                return False
            self._next_sample[key] = now + self.SAMPLE_EVERY_S  # pushed further once it has run
            return True

    def timed(self, fn, *args, key=None):
        """``fn(*args)`` in this thread and its CPU: (result, seconds). ``key`` (e.g. (model,
        version)) names whose draw rate weighs the call and is measured on it now and then."""
        due = self._due(key)
        own = self._own() if self._own is not None else 0.0
        token, alone = self._begin(key, due)
        t0 = self._monotonic()
        try:
            result = fn(*args)
        finally:
            pools, alone = self._end(token)
            spent = pools + (self._own() - own if self._own is not None else 0.0)
            wall = self._monotonic() - t0
            with self._lock:
                self._typical += self.RATE_WEIGHT * (wall - self._typical)
            if alone:
                with self._lock:
                    if wall > 0:
                        rate = pools / wall
                        old = self._rates.get(key)
                        self._rates[key] = rate if old is None else old + self.RATE_WEIGHT * (rate - old)
                    # at most SAMPLE_FRACTION of the time alone; one slow call delays the next sample
                    # by MAX_SAMPLE_GAP_S at most
                    self._next_sample[key] = self._monotonic() + min(
                        self.MAX_SAMPLE_GAP_S, max(self.SAMPLE_EVERY_S, wall / self.SAMPLE_FRACTION))
        return result, (CallCpu(spent, alone=True) if alone else spent)

    def keyed(self, key) -> "_Keyed":
        """This share with ``key`` bound: ``.timed(fn, *args)`` (for executors and batch queues)."""
        return _Keyed(self, key)

    def forget(self, keep: Callable) -> None:
        """Drop the rates of keys for which ``keep(key)`` is false."""
        with self._lock:
            for k in [k for k in self._rates if not keep(k)]:
                self._rates.pop(k, None)
                self._next_sample.pop(k, None)
                self._backoff.pop(k, None)


class _Keyed:
    def __init__(self, share: CpuShare, key):
        self.share, self.key = share, key

    def timed(self, fn, *args):
        return self.share.timed(fn, *args, key=self.key)


class CostMeter:
    """Per (model, version, kind) CPU: totals (every call's share, hooks included), the per-row
    CPU of the last calls, and apart from them the per-row CPU of the calls that ran alone
    (``CallCpu``), exact and so the basis of ``per_prediction`` and of the cost gate's samples
    once there are ``MIN_ALONE`` of them."""

    MIN_ALONE = 5
    # A call alone can still lose its CPU to other processes, and a runtime's pool threads then
    # spin waiting for each other: such calls read high. The top and bottom TRIM of the calls
    # measured alone are left out of the mean.
    TRIM = 0.2

    def __init__(self, share: Optional[CpuShare] = None):
        self.share = share or CpuShare()
        self._lock = threading.Lock()
        self._cpu: dict[tuple, float] = collections.defaultdict(float)
        self._rows: dict[tuple, int] = collections.defaultdict(int)
        self._hooks: dict[tuple, float] = collections.defaultdict(float)
        self._samples: dict[tuple, collections.deque] = {}
        self._alone: dict[tuple, collections.deque] = {}

    def add(self, name: str, version: int, cpu_s: float, rows: int, kind: str = SERVE) -> None:
        """One model call of ``rows`` predictions (0: a hook's share of a call already counted)."""
        key = (name, version, kind)
        with self._lock:
            self._cpu[key] += cpu_s
            self._rows[key] += rows
            if rows <= 0:
                self._hooks[key] += cpu_s
                return
            for store, wanted in ((self._samples, True), (self._alone, getattr(cpu_s, "alone", False))):
                if wanted:
                    q = store.get(key)
                    if q is None:
                        q = store[key] = collections.deque(maxlen=SAMPLES_KEPT)
                    q.append(float(cpu_s) / rows)

    def totals(self, name: str, version: int, kind: str = SERVE) -> tuple[float, int]:
        """(CPU seconds, predictions) of a version since it was first served."""
        key = (name, version, kind)
        with self._lock:
            return self._cpu.get(key, 0.0), self._rows.get(key, 0)

    def _alone_samples(self, key) -> Optional[tuple[float, ...]]:
        alone = self._alone.get(key, ())
        if len(alone) < self.MIN_ALONE:
            return None
        rows = self._rows.get(key, 0)
        hooks = self._hooks.get(key, 0.0) / rows if rows else 0.0  # hooks run per request, on no pool
        return tuple(x + hooks for x in alone)

    def samples(self, name: str, version: int, kind: str = SERVE) -> tuple[float, ...]:
        """CPU seconds per prediction of the last calls measured alone (oldest first), or of the
        last calls, shared, while fewer than ``MIN_ALONE`` ran alone."""
        key = (name, version, kind)
        with self._lock:
            alone = self._alone_samples(key)
            return alone if alone is not None else tuple(self._samples.get(key, ()))

    def per_prediction(self, name: str, version: int, kind: str = SERVE) -> tuple[Optional[float], int]:
        """(CPU seconds per prediction, calls measured alone it rests on): the trimmed mean of the
        calls measured alone once there are ``MIN_ALONE``, else (0 calls) the totals' ratio; None
        before the first prediction."""
        key = (name, version, kind)
        with self._lock:
            alone = self._alone_samples(key)
            if alone is not None:
                return trimmed_mean(alone, self.TRIM), len(alone)
            rows = self._rows.get(key, 0)
            return (self._cpu.get(key, 0.0) / rows if rows else None), 0

    def forget(self, keep: Callable[[str, int], bool]) -> None:
        """Drop the totals and samples of every version for which ``keep(name, version)`` is
        false (versions unloaded past their grace period: server/transports/metrics.py)."""
        with self._lock:
            for key in [k for k in self._cpu if not keep(k[0], k[1])]:
                self._cpu.pop(key, None)
                self._rows.pop(key, None)
                self._samples.pop(key, None)
                self._alone.pop(key, None)
                self._hooks.pop(key, None)
        self.share.forget(lambda key: not isinstance(key, tuple) or len(key) < 2 or keep(key[0], key[1]))

    def all_totals(self) -> list[tuple[str, int, str, float, int]]:
        with self._lock:
            return [(n, v, k, self._cpu[(n, v, k)], self._rows[(n, v, k)]) for (n, v, k) in sorted(self._cpu)]


def rows_of(inputs) -> int:
    """Predictions in a request: its first input's 0th dimension (1 for a scalar)."""
    for a in inputs.values():
        return int(a.shape[0]) if getattr(a, "ndim", 0) else 1
    return 0


def money_per_1000(cpu_s_per_1000: Optional[float], resident_bytes: Optional[int], predictions_per_s: float,
                   cost_per_cpu_hour: float, cost_per_gib_hour: float) -> Optional[float]:
    """Money per 1000 predictions: their CPU hours at ``cost_per_cpu_hour``, plus the version's
    resident memory held for the time 1000 predictions take at ``predictions_per_s``, at
    ``cost_per_gib_hour``. None when not priced or not known."""
    if not cost_per_cpu_hour and not cost_per_gib_hour:
        return None
    total = 0.0
    if cost_per_cpu_hour:
        if cpu_s_per_1000 is None:
            return None
        total += cpu_s_per_1000 / 3600.0 * cost_per_cpu_hour
    if cost_per_gib_hour:
        if resident_bytes is None or resident_bytes < 0 or predictions_per_s <= 0:
            return None
        total += resident_bytes / 2 ** 30 * (1000.0 / predictions_per_s) / 3600.0 * cost_per_gib_hour
    return total


def trimmed_mean(values, trim: float) -> float:
    """The mean of ``values`` without the lowest and the highest ``trim`` of them (rounded down)."""
    xs = sorted(values)
    k = int(len(xs) * trim)
    kept = xs[k:len(xs) - k] or xs
    return sum(kept) / len(kept)


def amortised_per_1000(money: Optional[float], served: int) -> Optional[float]:
    """A one-off cost (training) per 1000 predictions, spread over the ``served`` predictions so
    far: money / served x 1000. None when the money is not known or nothing was served (the
    figure falls as the version serves more)."""
    if money is None or served <= 0:
        return None
    return money / served * 1000.0


def resident_bytes() -> Optional[int]:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
