"""What a version says about itself, read once when it loads (in the load thread).

``assets.extra/verso_model.json`` (optional)::

    {"trained_at": "2026-11-20T00:00:00Z",   # ISO 8601 (no zone: UTC) or Unix seconds
     "data_until": "2026-11-18T00:00:00Z",   # the newest data it was trained on; same forms
     "metrics": {"holdout_accuracy": 0.9778}, # name -> number, shown as given
     "description": "...",
     "training_cost": {"cpu_hours": 12.5, "gpu_hours": 2, "money": 31.4, "currency": "USD"}}

``training_cost``: what training the version cost, every key optional (numbers finite and >= 0,
``currency`` an ISO 4217-style code of 3 letters, e.g. "USD"; without it, the money is taken to
be in the rollout's own currency). Status shows it beside the serving cost, with the training
money amortised over the predictions the version has served (``training_money_per_1000``). A
malformed ``training_cost`` is left out alone (listed in ``problems``): the file's other keys
still count.

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
class TrainingCost:
    """verso_model.json's ``training_cost`` (None: not given)."""
    cpu_hours: Optional[float] = None
    gpu_hours: Optional[float] = None
    money: Optional[float] = None
    currency: str = ""


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
    training_cost: Optional[TrainingCost] = None

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


TRAINING_KEYS = ("cpu_hours", "gpu_hours", "money", "currency")


def parse_training_cost(value) -> TrainingCost:
    """``training_cost`` as given in verso_model.json; ValueError (the message names the key and
    what it must be) for anything else."""
    if not isinstance(value, dict):
        raise ValueError(f"training_cost must be an object, not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in TRAINING_KEYS)
    if unknown:
        raise ValueError(f"training_cost has unknown keys {unknown[:5]!r} (known: {', '.join(TRAINING_KEYS)})")
    out = {}
    for key in ("cpu_hours", "gpu_hours", "money"):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"training_cost.{key} must be a finite number >= 0, not {_shown(v)}")
            out[key] = float(v)
    currency = value.get("currency", "")
    if not isinstance(currency, str) or not (currency == "" or (len(currency) == 3 and currency.isascii()
                                                                and currency.isalpha())):
        raise ValueError(f"training_cost.currency must be a 3-letter code such as \"USD\", not {_shown(currency)}")
    return TrainingCost(currency=currency.upper(), **out)


def _shown(value) -> str:
    """A caller's value in a problem message: its repr, cut short (problems are shown in views)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        problems = []
        if "training_cost" in doc:
            try:
                out["training_cost"] = parse_training_cost(doc["training_cost"])
            except ValueError as e:  # the rest of the file still counts
                problems.append(f"{INFO_FILE}: {e}")
        return out, problems
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
                        resident_bytes=resident_bytes, reference_problem="".join(reference_problems),
                        training_cost=info.get("training_cost"))
