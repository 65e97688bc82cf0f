"""What answering costs, per model version: CPU seconds per prediction, resident memory, money.

TensorFlow runs a model's ops on its own thread pools, so the CPU time of the thread that
calls the model misses most of the work (measured here on digits v2, batch 1: 80 us on the
calling thread, 210 us for the process). ``CpuShare`` therefore shares the *process's* CPU
time among the model calls in flight: at every call's start and end the CPU used since the
last such event is split evenly among the calls running then. A batch's share is then split
among its rows (padding rows cost the real rows), and pre/post-processing hooks are model
calls of their own with no rows. CPU used while no model call runs (decoding, the network)
is not counted to any version.

``CostMeter`` keeps per (model, version, kind) totals ("serve" or "shadow") and a bounded
window of per-call samples (CPU seconds per row) for the cost gate, until ``forget`` drops an
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


class CpuShare:
    """Shares ``clock()`` (process CPU seconds) among the calls between ``start`` and ``stop``."""

    def __init__(self, clock: Callable[[], float] = time.process_time):
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._running: dict[int, float] = {}
        self._ids = itertools.count()

    def _advance(self) -> None:
        now = self._clock()
        spent, self._last = now - self._last, now
        if self._running and spent > 0:
            share = spent / len(self._running)
            for k in self._running:
                self._running[k] += share

    def start(self) -> int:
        with self._lock:
            self._advance()
            token = next(self._ids)
            self._running[token] = 0.0
            return token

    def stop(self, token: int) -> float:
        """The CPU seconds this call was given since its ``start``."""
        with self._lock:
            self._advance()
            return self._running.pop(token, 0.0)

    def timed(self, fn, *args):
        """``fn(*args)`` and its CPU share: (result, seconds)."""
        token = self.start()
        try:
            result = fn(*args)
        finally:
            spent = self.stop(token)
        return result, spent


class CostMeter:
    def __init__(self, share: Optional[CpuShare] = None):
        self.share = share or CpuShare()
        self._lock = threading.Lock()
        self._cpu: dict[tuple, float] = collections.defaultdict(float)
        self._rows: dict[tuple, int] = collections.defaultdict(int)
        self._samples: dict[tuple, collections.deque] = {}

    def add(self, name: str, version: int, cpu_s: float, rows: int, kind: str = SERVE) -> None:
        """One model call of ``rows`` predictions (0: a hook's share of a call already counted)."""
        key = (name, version, kind)
        with self._lock:
            self._cpu[key] += cpu_s
            self._rows[key] += rows
            if rows > 0:
                q = self._samples.get(key)
                if q is None:
                    q = self._samples[key] = collections.deque(maxlen=SAMPLES_KEPT)
                q.append(cpu_s / rows)

    def totals(self, name: str, version: int, kind: str = SERVE) -> tuple[float, int]:
        """(CPU seconds, predictions) of a version since it was first served."""
        key = (name, version, kind)
        with self._lock:
            return self._cpu.get(key, 0.0), self._rows.get(key, 0)

    def samples(self, name: str, version: int, kind: str = SERVE) -> tuple[float, ...]:
        """CPU seconds per prediction of the last calls (oldest first)."""
        with self._lock:
            return tuple(self._samples.get((name, version, kind), ()))

    def forget(self, keep: Callable[[str, int], bool]) -> None:
        """Drop the totals and samples of every version for which ``keep(name, version)`` is
        false (versions unloaded past their grace period: server/transports/metrics.py)."""
        with self._lock:
            for key in [k for k in self._cpu if not keep(k[0], k[1])]:
                self._cpu.pop(key, None)
                self._rows.pop(key, None)
                self._samples.pop(key, None)

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


def resident_bytes() -> Optional[int]:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
