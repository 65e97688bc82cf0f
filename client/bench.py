"""``verso bench``: a bounded stress test of one model against any TF Serving API server.

``run`` keeps ``concurrency`` Predict calls in flight on one asyncio client until ``requests``
calls are done or ``duration`` seconds have passed (whichever is given; both bound the run).
The request is encoded once before the run, so the loop measures the server and the
transport, not the client's tensor encoding. ``summarize`` is a pure function of what was
measured. Errors are counted by status code and never stop the run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import numpy as np

from client.errors import VersoError
from client.types import Signature

MAX_REQUESTS = 10_000_000  # a duration run still stops by count, so nothing runs unbounded


def generated_inputs(signature: Signature, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every input of ``signature``, ``rows`` rows each: the first unknown
    dimension is the batch (``rows``), other unknown dimensions are 1, an unknown rank is
    ``(rows,)``. Floats are standard normal, integers in [0, 10), strings ``b"verso"``."""
    rng = np.random.default_rng(seed)
    out = {}
    for alias, spec in signature.inputs.items():
        if spec.shape is None:
            shape = (rows,)
        else:
            shape = tuple(rows if (d < 0 and i == 0) else (1 if d < 0 else d) for i, d in enumerate(spec.shape))
        dt = spec.np_dtype
        if spec.dtype == "string":
            arr = np.full(shape, b"verso", dtype=object)
        elif dt.kind == "f" or dt.kind == "V":  # V: bfloat16
            arr = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "c":
            arr = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
        elif dt.kind == "b":
            arr = rng.random(shape) < 0.5
        else:
            arr = rng.integers(0, 10, shape).astype(dt)
        out[alias] = arr
    return out


class Batch(NamedTuple):
    """One request of a dataset run: its inputs, and what feedback and the slice key carry."""

    inputs: dict
    labels: Optional[np.ndarray] = None   # classifiers: one per row
    targets: Optional[np.ndarray] = None  # regressors: one number per row
    slice: Optional[str] = None           # the request's slice key (``verso-slice``)


def dataset_batches(data: dict, aliases, rows: int) -> list[Batch]:
    """A dataset cut into requests: ``data`` maps each input alias (and optionally ``labels``,
    numeric ``targets`` and ``slices``, one per row) to an array of the same length. With
    ``slices``, rows are grouped by slice first so that each request carries one slice key
    (its rows'); trailing rows that do not fill a batch (per slice) are left out."""
    missing = [a for a in aliases if a not in data]
    if missing:
        raise ValueError(f"the dataset has no array for input {missing[0]} (it has {', '.join(sorted(data))})")
    n = len(data[aliases[0]])
    extra = [k for k in ("labels", "targets", "slices") if k in data]
    if any(len(data[a]) != n for a in list(aliases) + extra):
        raise ValueError("the dataset's arrays differ in length")
    if n < rows:
        raise ValueError(f"the dataset has {n} rows, fewer than --rows {rows}")
    labels, targets = data.get("labels"), data.get("targets")
    if targets is not None and targets.dtype.kind not in "biuf":
        raise ValueError(f"the dataset's targets must be numbers, not {targets.dtype}")
    if "slices" in data:
        keys = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in data["slices"].tolist()]
        groups = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        order = [(k, np.asarray(idx)) for k, idx in sorted(groups.items())]
    else:
        order = [(None, np.arange(n))]
    out = []
    for key, idx in order:
        for i in range(0, len(idx) - rows + 1, rows):
            sel = idx[i:i + rows]
            out.append(Batch({a: data[a][sel] for a in aliases}, None if labels is None else labels[sel],
                             None if targets is None else targets[sel], key))
    if not out:
        raise ValueError(f"no slice of the dataset has --rows {rows} rows")
    return out


@dataclass
class Measured:
    """What a run recorded: successful latencies (seconds), error counts by code name, the
    first error message of each code, wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def summarize(m: Measured, *, rows: int, concurrency: int, target: str, model: str) -> dict:
    """The run's report (JSON-ready): counts, throughput, latency percentiles in ms."""
    ok = len(m.latencies)
    failed = sum(m.errors.values())
    total = ok + failed
    wall = max(m.wall_s, 1e-9)
    lat = np.asarray(m.latencies, dtype=np.float64) * 1e3
    if ok:
        p50, p90, p99 = (float(x) for x in np.percentile(lat, [50, 90, 99]))
        latency = {"p50": p50, "p90": p90, "p99": p99, "mean": float(lat.mean()),
                   "min": float(lat.min()), "max": float(lat.max())}
    else:
        latency = {k: None for k in ("p50", "p90", "p99", "mean", "min", "max")}
    return {
        "target": target, "model": model, "concurrency": concurrency, "rows_per_request": rows,
        "requests": total, "ok": ok, "errors": dict(sorted(m.errors.items())),
        "error_examples": dict(sorted(m.first_error.items())),
        "duration_s": m.wall_s, "requests_per_s": total / wall, "ok_per_s": ok / wall,
        "rows_per_s": ok * rows / wall, "latency_ms": latency,
    }


async def run(send: Callable, *, concurrency: int, requests: Optional[int] = None,
              duration: Optional[float] = None, on_done: Optional[Callable[[], None]] = None,
              clock: Callable[[], float] = time.perf_counter) -> Measured:
    """Call ``await send()`` with ``concurrency`` calls in flight until ``requests`` calls have
    completed or ``duration`` seconds have passed. ``send`` raises VersoError on a failed call.
    ``on_done`` is called on the loop after every call (progress display)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    budget = min(requests if requests is not None else MAX_REQUESTS, MAX_REQUESTS)
    m = Measured()
    started = clock()
    end = started + duration if duration is not None else float("inf")
    issued = 0

    async def worker():
        nonlocal issued
        while issued < budget and clock() < end:
            issued += 1
            t0 = clock()
            try:
                await send()
                m.latencies.append(clock() - t0)
            except VersoError as e:
                name = e.code.name
                m.errors[name] = m.errors.get(name, 0) + 1
                m.first_error.setdefault(name, e.message)
            if on_done is not None:
                on_done()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, budget))))
    m.wall_s = clock() - started
    return m
