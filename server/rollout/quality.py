"""Loss and bias from feedback: per-row losses, per-class and per-slice tables. Pure.

A feedback row joins the ground truth (a label, a numeric target, or both) with the answer the
prediction log kept: the evidence output's top-1 answer and, where the version has a float
``[rows, classes]`` output, its class scores.

- **Log-loss** (cross-entropy) of a row: ``-ln p(true class)``, p clipped to ``[1e-15, 1]``;
  **Brier score**: ``sum_k (p_k - [k == true])^2`` (0 perfect, 2 worst). ``p`` is the row's
  scores when they already are probabilities (every row within [0, 1] summing to 1 within
  1e-3), else their softmax (logits). The true class is the label read as a class index
  (``"7"`` -> column 7); a label that is not an index within the scores' width gives no loss.
- **Squared and absolute error** of a row: the answer's value against a numeric target
  (regressors: the evidence output's one value per row).
- **Per class**: support (rows whose true label it is), answers (rows answered with it),
  recall and precision; the confusion matrix. **Per slice**: rows, accuracy, mean loss.

Bounds (callers choose slice keys and feedback labels, and a model may echo what a caller
sent): a slice key over ``MAX_SLICE_CHARS`` characters, or a new one past the first
``MAX_SLICES`` of a model, counts as slice ``OTHER``; a class (a feedback label or an answer)
over ``MAX_LABEL_CHARS`` characters, or a new one past the first ``MAX_CLASSES`` of a model,
counts as class ``OTHER`` (accuracy still compares the full label with the full answer); each
such change is reported in the rollout's alarms. One feedback call carries at most
``MAX_FEEDBACK_ROWS`` labels and targets, each label at most ``MAX_LABEL_CHARS`` characters
(``feedback_problem``: INVALID_ARGUMENT beyond).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

CLIP = 1e-15
OTHER = "other"
MAX_SLICE_CHARS = 64     # a longer slice key counts as OTHER
MAX_SLICES = 50          # distinct slice keys per model; further ones count as OTHER
MAX_LABEL_CHARS = 256    # a longer feedback label is refused; a longer answer counts as class OTHER
MAX_CLASSES = 50         # distinct classes per model in the class tables; further ones count as OTHER
MAX_FEEDBACK_ROWS = 10_000  # labels or targets in one feedback call


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of class probabilities from a ``[rows, classes]`` score matrix: as they are when
    they already are probabilities, else softmax (scores taken as logits)."""
    s = np.asarray(scores, dtype=np.float64)
    if np.all(np.isfinite(s)) and s.min(initial=0) >= 0 and s.max(initial=0) <= 1 \
            and np.allclose(s.sum(axis=1), 1.0, atol=1e-3):
        return s
    z = s - np.max(s, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_index(label: str, classes: int) -> Optional[int]:
    """The score column a label names: its integer value when within ``[0, classes)``."""
    try:
        i = int(label)
    except (TypeError, ValueError):
        return None
    return i if 0 <= i < classes else None


def classification_losses(scores: np.ndarray, labels: Sequence[Optional[str]]
                          ) -> list[tuple[Optional[float], Optional[float]]]:
    """(log-loss, Brier score) per row; (None, None) where the label names no column."""
    p = probabilities(scores)
    out: list[tuple[Optional[float], Optional[float]]] = []
    for row, label in zip(p, labels):
        k = class_index(label, p.shape[1]) if label is not None else None
        if k is None:
            out.append((None, None))
            continue
        onehot = np.zeros(p.shape[1])
        onehot[k] = 1.0
        out.append((-math.log(min(1.0, max(CLIP, float(row[k])))), float(np.sum((row - onehot) ** 2))))
    return out


def regression_errors(values: Sequence[float], targets: Sequence[float]) -> list[tuple[float, float]]:
    """(squared error, absolute error) per row."""
    return [((float(v) - float(t)) ** 2, abs(float(v) - float(t))) for v, t in zip(values, targets)]


@dataclass(frozen=True)
class ClassRow:
    label: str
    support: int            # rows whose true label is this class
    predicted: int          # rows answered with this class
    correct: int            # rows of this class answered right
    recall: Optional[float]
    precision: Optional[float]


def _natural(label: str):
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


def class_table(pairs: Iterable[tuple[str, str]]) -> tuple[list[ClassRow], dict[tuple[str, str], int]]:
    """Per-class rows (by label, numbers in numeric order) and the confusion counts
    ``{(true, predicted): rows}`` from (true label, answer) pairs."""
    confusion = Counter(pairs)
    support: Counter = Counter()
    predicted: Counter = Counter()
    for (t, p), n in confusion.items():
        support[t] += n
        predicted[p] += n
    rows = []
    for label in sorted(set(support) | set(predicted), key=_natural):
        hit = confusion.get((label, label), 0)
        rows.append(ClassRow(label, support[label], predicted[label], hit,
                             hit / support[label] if support[label] else None,
                             hit / predicted[label] if predicted[label] else None))
    return rows, dict(sorted(confusion.items(), key=lambda kv: (_natural(kv[0][0]), _natural(kv[0][1]))))


@dataclass(frozen=True)
class SliceRow:
    slice: str
    rows: int
    labelled: int           # rows with a label (accuracy counts these)
    correct: int
    accuracy: Optional[float]
    loss: Optional[float]   # mean of the rows' losses that are known


def slice_table(rows: Iterable[tuple[str, Optional[bool], Optional[float]]]) -> list[SliceRow]:
    """Per-slice rows from (slice, correct or None, loss or None) per feedback row, by slice."""
    acc: dict[str, list] = {}
    for key, correct, loss in rows:
        a = acc.setdefault(key, [0, 0, 0, 0.0, 0])
        a[0] += 1
        if correct is not None:
            a[1] += 1
            a[2] += bool(correct)
        if loss is not None:
            a[3] += loss
            a[4] += 1
    return [SliceRow(k, n, lab, ok, ok / lab if lab else None, tot / nl if nl else None)
            for k, (n, lab, ok, tot, nl) in sorted(acc.items())]


def _bounded(raw: Optional[str], known: set[str], chars: int, most: int, what: str) -> tuple[Optional[str], str]:
    if raw is None:
        return None, ""
    if len(raw) > chars:
        # The reason names no length: it is a key of the alarms, which a caller must not multiply.
        return OTHER, f"{what}s over {chars} characters"
    if raw in known:
        return raw, ""
    if len(known) >= most:
        return OTHER, f"{what}s past the first {most}"
    known.add(raw)
    return raw, ""


def slice_key(raw: Optional[str], known: set[str]) -> tuple[Optional[str], str]:
    """The slice a request's key counts under, and why it was changed ("" if it was not):
    None stays None; a key over ``MAX_SLICE_CHARS`` characters, or a new key once ``known``
    (the model's keys so far, updated here) holds ``MAX_SLICES``, counts as ``OTHER``."""
    return _bounded(raw or None, known, MAX_SLICE_CHARS, MAX_SLICES, "slice key")


def class_key(raw: Optional[str], known: set[str]) -> tuple[Optional[str], str]:
    """The class a feedback label or an answer counts under in the class tables, and why it was
    changed ("" if it was not): as ``slice_key`` (an empty label is a class of its own), with
    ``MAX_LABEL_CHARS`` and ``MAX_CLASSES``."""
    return _bounded(raw, known, MAX_LABEL_CHARS, MAX_CLASSES, "class label")


def feedback_problem(labels: Sequence, targets: Sequence) -> Optional[str]:
    """Why a feedback call is refused before anything is looked up (INVALID_ARGUMENT), or
    None: more than ``MAX_FEEDBACK_ROWS`` labels or targets, a label over ``MAX_LABEL_CHARS``."""
    for what, values in (("labels", labels), ("targets", targets)):
        if len(values) > MAX_FEEDBACK_ROWS:
            return f"Feedback has {len(values)} {what}; at most {MAX_FEEDBACK_ROWS} are taken in one call"
    for i, label in enumerate(labels):
        n = len(label) if isinstance(label, (str, bytes)) else len(str(label))
        if n > MAX_LABEL_CHARS:
            return f"Feedback label {i} has {n} characters; at most {MAX_LABEL_CHARS} are taken"
    return None
