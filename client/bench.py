"""What ``verso bench`` sends: inputs generated from a signature, or a dataset cut into
requests. How it sends them and what it reports is ``client/stress.py``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from client.types import Signature


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
