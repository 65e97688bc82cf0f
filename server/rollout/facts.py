"""What a version says about itself, read once when it loads (in the load thread).

``assets.extra/verso_model.json`` (optional)::

    {"trained_at": "2026-11-20T00:00:00Z",   # ISO 8601 (no zone: UTC) or Unix seconds
     "data_until": "2026-11-18T00:00:00Z",   # the newest data it was trained on; same forms
     "metrics": {"holdout_accuracy": 0.9778}, # name -> number, shown as given
     "description": "..."}

Every key is optional. A version's **age** counts from ``trained_at`` when the file gives it,
else from the newest of the model's own files (``saved_model.pb``, ``variables/``, the
``.onnx``/``.keras``/``.tflite`` file), never from the directory's time. (A copy made without
keeping times, e.g. ``cp -r`` without ``-p``, resets file times too: ship ``verso_model.json``.)

``assets.extra/reference.npz`` (optional): a sample of the training inputs, one array per
input alias, a row per example (at most ``MAX_REFERENCE_ROWS`` are kept); live inputs are
compared with it (``server/rollout/drift.py``).

A malformed file never stops the load: the version loads, the problem is logged once (at the
load) and listed in ``problems`` (status, dashboard).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

log = logging.getLogger("verso.rollout")

INFO_FILE = os.path.join("assets.extra", "verso_model.json")
REFERENCE_FILE = os.path.join("assets.extra", "reference.npz")
MAX_INFO_BYTES = 1 << 20
MAX_REFERENCE_BYTES = 256 << 20
MAX_REFERENCE_ROWS = 5000
_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables")
_MODEL_SUFFIXES = (".onnx", ".keras", ".tflite")

AGE_FROM_INFO = "verso_model.json trained_at"
AGE_FROM_FILES = "model files"


@dataclass(frozen=True)
class VersionFacts:
    trained_at: Optional[float] = None
    data_until: Optional[float] = None
    metrics: dict = field(default_factory=dict)
    description: str = ""
    files_time: Optional[float] = None
    reference: Optional[dict] = None           # input alias -> rows (numeric)
    problems: tuple[str, ...] = ()
    resident_bytes: Optional[int] = None       # what the load added to the process's RSS
    reference_problem: str = ""                # why reference.npz was left out (one of ``problems``)

    @property
    def born_at(self) -> Optional[float]:
        return self.trained_at if self.trained_at is not None else self.files_time

    @property
    def age_source(self) -> str:
        return AGE_FROM_INFO if self.trained_at is not None else (AGE_FROM_FILES if self.files_time is not None else "")


def _time(value, key: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{key} must be an ISO 8601 time or Unix seconds, not {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite")
        return float(value)
    if isinstance(value, str):
        try:
            t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{key} {value!r} is not an ISO 8601 time") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.timestamp()
    raise ValueError(f"{key} must be an ISO 8601 time or Unix seconds, not {type(value).__name__}")


def read_info(path: str) -> tuple[dict, list[str]]:
    """``verso_model.json`` of the version at ``path``: (fields, problems); {} when absent."""
    file = os.path.join(path, INFO_FILE)
    if not os.path.isfile(file):
        return {}, []
    try:
        if os.path.getsize(file) > MAX_INFO_BYTES:
            raise ValueError(f"larger than {MAX_INFO_BYTES} bytes")
        with open(file, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            raise ValueError("the top level must be a JSON object")
        out: dict = {}
        for key in ("trained_at", "data_until"):
            if key in doc:
                out[key] = _time(doc[key], key)
        metrics = doc.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()):
            raise ValueError("metrics must be an object of names to finite numbers")
        out["metrics"] = {str(k): float(v) for k, v in metrics.items()}
        if not isinstance(doc.get("description", ""), str):
            raise ValueError("description must be a string")
        out["description"] = doc.get("description", "")
        return out, []
    except (OSError, ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        return {}, [f"{INFO_FILE}: {e}"]


def read_reference(path: str) -> tuple[Optional[dict], list[str]]:
    """``reference.npz`` of the version at ``path``: (arrays by input alias, problems)."""
    file = os.path.join(path, REFERENCE_FILE)
    if not os.path.isfile(file):
        return None, []
    try:
        if os.path.getsize(file) > MAX_REFERENCE_BYTES:
            raise ValueError(f"larger than {MAX_REFERENCE_BYTES} bytes")
        with open(file, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # np.load would take other bytes for a pickle
                raise ValueError("not an .npz file (numpy.savez's zip of arrays)")
        out = {}
        with np.load(file, allow_pickle=False) as npz:
            for alias in npz.files:
                a = npz[alias]
                if a.ndim < 1 or len(a) == 0 or a.dtype.kind not in "biuf":
                    raise ValueError(f"array {alias!r} must be numeric with at least one row "
                                     f"(it is {a.dtype} {list(a.shape)})")
                if len(a) > MAX_REFERENCE_ROWS:
                    a = a[np.sort(np.random.default_rng(0).choice(len(a), MAX_REFERENCE_ROWS, replace=False))]
                out[alias] = a
        if not out:
            raise ValueError("it holds no arrays")
        return out, []
    except Exception as e:  # np.load raises many kinds on a corrupt file (zipfile, pickle refused ...)
        return None, [f"{REFERENCE_FILE}: {type(e).__name__}: {e}"]


def files_time(path: str) -> Optional[float]:
    """The newest modification time of the model's own files under ``path`` (not the
    directory's own time, nor assets)."""
    newest = None
    try:
        entries = list(os.scandir(path))
    except OSError:
        return None
    for e in entries:
        if e.name in _MODEL_FILES or e.name.endswith(_MODEL_SUFFIXES):
            paths = [e.path]
            if e.is_dir():
                paths = [os.path.join(d, f) for d, _, fs in os.walk(e.path) for f in fs]
            for p in paths:
                try:
                    t = os.stat(p).st_mtime
                except OSError:
                    continue
                newest = t if newest is None else max(newest, t)
    return newest


def read_facts(path: str, resident_bytes: Optional[int] = None) -> VersionFacts:
    """Everything above for the version at ``path``; problems are logged here, once."""
    info, problems = read_info(path)
    reference, reference_problems = read_reference(path)
    problems += reference_problems
    for p in problems:
        log.warning("Version at %s: %s (the version loads; this is left out)", path, p)
    return VersionFacts(trained_at=info.get("trained_at"), data_until=info.get("data_until"),
                        metrics=info.get("metrics", {}), description=info.get("description", ""),
                        files_time=files_time(path), reference=reference, problems=tuple(problems),
                        resident_bytes=resident_bytes, reference_problem="".join(reference_problems))
