"""Evidence about one model version, gathered in bounded memory, and the pure helpers that
turn a pair of responses (primary and shadow) into a comparison.

Nothing here does I/O, imports TensorFlow or touches the event loop: the serving path feeds a
``Window`` per version, and ``summary()`` freezes what it holds into an ``Evidence`` that
``verdict.decide`` judges.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Union

import ml_dtypes
import numpy as np

from server.rollout.faults import CALLER, fault
from server.rollout.quality import ClassRow, SliceRow, class_table, slice_table

OK = "OK"
ACCURACY_POINTS = 10

# bfloat16 arrives from the tensor codec with numpy kind 'V'; without this it would count as
# neither a float (for top-1) nor numeric (for the difference).
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

# Kinds whose 1-D values are already the answer: integer and bool labels, byte/str/object classes.
_LABEL_KINDS = "iubSUO"
_NUMERIC_KINDS = "biuf"


class FeedbackRow(NamedTuple):
    """One row's ground truth joined with the answer the version gave (None: not known)."""

    correct: Optional[bool] = None      # the label against the top-1 answer
    label: Optional[str] = None
    predicted: Optional[str] = None     # the top-1 answer, as text
    slice: Optional[str] = None
    log_loss: Optional[float] = None    # classifiers with class scores
    brier: Optional[float] = None
    sq_error: Optional[float] = None    # a numeric target against the answer's value
    abs_error: Optional[float] = None

    @property
    def loss(self) -> Optional[float]:
        """The loss the gate compares: log-loss for classifiers, else squared error."""
        return self.log_loss if self.log_loss is not None else self.sq_error


def _mean(values: list) -> Optional[float]:
    return sum(values) / len(values) if values else None


def input_elements(inputs: Mapping) -> int:
    """A request's size: the elements of all its inputs together (rows times a row's elements;
    a list of serialized examples counts one per example)."""
    return sum(int(np.size(a)) if hasattr(a, "shape") else len(a) for a in inputs.values())


UNKNOWN_SIZE = -1  # the size class of a call whose size was not given


def size_class(size: Optional[int]) -> int:
    """The size class of a call of ``size`` input elements (every input's elements together:
    rows times the elements of a row): ``k`` for sizes in [2**k, 2**(k+1)), 0 for 0 and 1,
    ``UNKNOWN_SIZE`` for None. Latency is compared only between calls of one class."""
    if size is None:
        return UNKNOWN_SIZE
    return max(int(size), 1).bit_length() - 1


@dataclass(frozen=True)
class Evidence:
    """What a ``Window`` held when ``summary()`` was called. Rates and ratios are fractions (0..1)."""

    requests: int                    # judged calls in the window (OK + the version's own errors)
    errors: dict[str, int]           # the version's (server-side) errors by gRPC code name, sorted by key
    error_rate: float                # errors / requests (0.0 when no requests)
    p50_ms: Optional[float]          # latency percentiles of the OK calls in the window; None if none
    p99_ms: Optional[float]
    requests_per_second: float       # calls in the window / seconds since the oldest of them; 0.0 with < 2
    shadow_compared: int             # shadow comparisons (requests) in the shadow window
    max_abs_diff: Optional[float]    # max of the per-comparison max abs differences; None if none numeric
    top1_agreement: Optional[float]  # agreeing rows / compared rows over the shadow window; None if no rows
    feedback: int                    # rows with ground truth in the feedback window
    accuracy: Optional[float]        # correct rows / feedback rows; None if none
    # p0, p10 .. p100 of the OK calls' latency in the window (empty if none): the distribution.
    latency_deciles_ms: tuple[float, ...] = ()
    # Per output alias over the shadow window: (max abs difference or None, top-1 agreement or None).
    by_output: dict[str, tuple[Optional[float], Optional[float]]] = field(default_factory=dict)
    # Accuracy over time: the feedback window cut into up to ACCURACY_POINTS consecutive slices,
    # oldest first, each (seconds before summary() of its last row, accuracy or None, rows,
    # mean loss or None).
    accuracy_history: tuple[tuple[float, Optional[float], int, Optional[float]], ...] = ()
    # The samples the verdict's statistics need: OK latencies (ms) past the version's warmup
    # calls, oldest first; correct feedback rows; agreeing and compared top-1 rows of the shadow.
    latencies_ms: tuple[float, ...] = ()
    correct: int = 0
    agreeing_rows: int = 0
    compared_rows: int = 0
    # Loss over the feedback window's rows that give one (means; None: no such row); ``losses``
    # the per-row samples of the gated loss (log-loss, else squared error), oldest first.
    loss_rows: int = 0
    log_loss: Optional[float] = None
    brier: Optional[float] = None
    mse: Optional[float] = None
    mae: Optional[float] = None
    losses: tuple[float, ...] = ()
    # Bias: per class (by label) and the confusion counts {(true, answer): rows}; per slice.
    classes: tuple[ClassRow, ...] = ()
    confusion: dict = field(default_factory=dict)
    slices: tuple[SliceRow, ...] = ()
    # Cost: CPU seconds per prediction of the version's last model calls (the rollout manager
    # adds them from its CostMeter; a Window knows nothing of CPU).
    cost_samples: tuple[float, ...] = ()
    # Calls that failed by the caller's fault (server/rollout/faults.py), by gRPC code name, over
    # the last ``size`` of them: shown, never judged, and not in ``requests``.
    caller_errors: dict[str, int] = field(default_factory=dict)
    # The size class (``size_class``) of each of ``latencies_ms``; empty: all unknown.
    latency_sizes: tuple[int, ...] = ()
    # The servable measured: its load identity (None: not known) and the Unix time its evidence
    # began (the window's ``since``; the earliest worker's under --num_workers).
    load: Optional[str] = None
    since: Optional[float] = None
    # When each of ``latencies_ms`` was recorded, on the window's clock (seconds, monotonic;
    # the rollout manager gives every window its one clock); empty: not known. The latency
    # check compares two versions over the span both windows cover (``common_span``).
    latency_times: tuple[float, ...] = ()

    @property
    def caller_error_count(self) -> int:
        return sum(self.caller_errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def common_span(a: Evidence, b: Evidence) -> tuple[float, float]:
    """(start, end) on the windows' clock of the span both versions' timed calls cover: from the
    younger of the two oldest timed calls to the older of the two newest. ``(-inf, inf)`` when
    either does not know when its calls were made; empty (start > end) when the windows do not
    overlap. Both Evidences must come from windows on one clock.

    Each window holds a number of calls, not a time: at a 10 % canary, the stable version's
    window fills nine times as fast and covers a ninth of the canary's span; at 100 % the stable
    version gets no calls at all. Comparing only calls made within the common span compares the
    versions on the same minutes, under the same load on the process (both answer the same
    traffic at once); the longer window's other calls are left out of the latency comparison,
    not of its other checks."""
    starts, ends = [], []
    for e in (a, b):
        if len(e.latency_times) != len(e.latencies_ms):
            return -math.inf, math.inf
        starts.append(min(e.latency_times, default=math.inf))
        ends.append(max(e.latency_times, default=-math.inf))
    return max(starts), min(ends)


def timed_within(e: Evidence, start: float = -math.inf, end: float = math.inf) -> tuple[list[float], list[int]]:
    """``e``'s timed latencies (ms) recorded within [``start``, ``end``] (window clock), and their
    size classes (``UNKNOWN_SIZE`` where not known); every one when its times are not known."""
    n = len(e.latencies_ms)
    sizes = e.latency_sizes if len(e.latency_sizes) == n else (UNKNOWN_SIZE,) * n
    if len(e.latency_times) != n:
        return list(e.latencies_ms), list(sizes)
    kept = [(ms, k) for ms, k, t in zip(e.latencies_ms, sizes, e.latency_times) if start <= t <= end]
    return [ms for ms, _ in kept], [k for _, k in kept]


class Window:
    """Evidence about one model version in bounded memory: the last ``size`` calls, the last
    ``size`` shadow comparisons, the last ``size`` feedback rows (three deques with
    ``maxlen=size``, so old entries fall out as new ones arrive).

    Only the calls the version is judged by enter the calls' deque: successes and failures of
    the server's making. A call that failed by the caller's fault (INVALID_ARGUMENT, ... see
    server/rollout/faults.py) goes to a deque of its own (the last ``size`` of them), so that a
    caller cannot move a version's error rate, nor push its evidence out of the window, with
    requests that fail.

    The first ``warmup_calls`` calls the window records are counted (requests, errors) but their
    latency is left out: a version's first calls after it loads are slow for reasons that say
    nothing about its steady state (graph pruning, caches).

    Not thread-safe: one owner (an asyncio loop) calls it. ``clock`` returns seconds (monotonic);
    each call is stamped with ``clock()`` when it is recorded.

    ``load``: the load identity of the servable the window measures (``server.lifecycle.manager.
    load_identity``; None: not known), and ``since`` the Unix time its evidence began: both go
    with ``export``, and ``merged`` takes only other processes' windows of the same load.
    """

    def __init__(self, size: int = 1000, clock: Callable[[], float] = time.monotonic, warmup_calls: int = 0,
                 load: Optional[str] = None, since: Optional[float] = None):
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.size = size
        self.load, self.since = load, since
        self._clock = clock
        self._warmup_left = max(0, warmup_calls)
        # (recorded at, latency ms or None for a warmup call, code, size class)
        self._calls: deque[tuple[float, Optional[float], str, int]] = deque(maxlen=size)
        self._caller: deque[tuple[float, str]] = deque(maxlen=size)  # (recorded at, code)
        self._shadow: deque[tuple[Optional[float], int, int, Mapping]] = deque(maxlen=size)
        self._feedback: deque[tuple[float, FeedbackRow]] = deque(maxlen=size)  # (recorded at, row)

    def record_call(self, latency_s: float, code: str = OK, *, caller: Optional[bool] = None,
                    size: Optional[int] = None) -> None:
        """One finished call: its latency in seconds, its gRPC code name ("OK" or an error name
        such as "INTERNAL"), whether it failed by the caller's fault (None: as ``faults.fault``
        says from the code alone) and its size in input elements (None: unknown). Only OK calls
        past the warmup count towards latency; a caller's failure is counted apart and does not
        use up the warmup (the version did not run)."""
        if code != OK and (caller if caller is not None else fault(code) == CALLER):
            self._caller.append((self._clock(), code))
            return
        if self._warmup_left:
            self._warmup_left -= 1
            self._calls.append((self._clock(), None, code, size_class(size)))
        else:
            self._calls.append((self._clock(), latency_s * 1000.0, code, size_class(size)))

    def record_shadow(self, max_abs_diff: Optional[float], agreeing_rows: int, compared_rows: int,
                      by_output: Optional[Mapping[str, tuple[Optional[float], int, int]]] = None) -> None:
        """One shadow comparison, as returned by ``divergence()`` (and, optionally, the same per
        output alias from ``per_output()``). Raises ValueError on counts that cannot come from a
        comparison (negative, or more agreeing rows than compared)."""
        if agreeing_rows < 0 or compared_rows < 0 or agreeing_rows > compared_rows:
            raise ValueError(f"invalid shadow rows: {agreeing_rows} agreeing of {compared_rows} compared")
        self._shadow.append((max_abs_diff, agreeing_rows, compared_rows, dict(by_output or {})))

    def record_feedback(self, rows: Sequence[Union[FeedbackRow, bool]]) -> None:
        """Ground truth for some rows: a ``FeedbackRow`` per row (or just whether the answer was
        right). Each row is one entry of the feedback window."""
        now = self._clock()
        self._feedback.extend((now, r if isinstance(r, FeedbackRow) else FeedbackRow(correct=bool(r)))
                              for r in rows)

    def export(self) -> dict:
        """The window's samples as JSON-able data, times as ages in seconds (for another process,
        whose clock differs: ``merged``)."""
        now = self._clock()
        return {"size": self.size, "load": self.load, "since": self.since,
                "calls": [(now - t, ms, code, k) for t, ms, code, k in self._calls],
                "caller": [(now - t, code) for t, code in self._caller],
                "shadow": [(d, a, c, {k: list(v) for k, v in by.items()}) for d, a, c, by in self._shadow],
                "feedback": [(now - t, list(row)) for t, row in self._feedback]}

    def merged(self, parts: Sequence[tuple[float, dict]]) -> "Window":
        """A window holding this one's samples and those of ``parts`` (other processes'
        ``export()`` data, each with how many seconds ago it was taken), in time order: the
        evidence of every worker together. A part of another load than this window's (another
        worker still serving the version's earlier build, or already a newer one) is left out;
        ``since`` is the earliest of the windows taken."""
        now = self._clock()
        parts = [(ago, data) for ago, data in parts if data.get("load") == self.load]
        starts = [t for t in [self.since] + [data.get("since") for _, data in parts] if t is not None]
        w = Window(self.size * (1 + len(parts)), clock=self._clock, load=self.load,
                   since=min(starts) if starts else None)
        calls = list(self._calls)
        caller = list(self._caller)
        feedback = list(self._feedback)
        shadow = list(self._shadow)
        for ago, data in parts:
            for age, ms, code, *k in data["calls"]:
                # A worker of an older Verso published (age, ms, code): no size, and its caller
                # errors among the calls.
                if k or code == OK or fault(code) != CALLER:
                    calls.append((now - ago - age, ms, code, k[0] if k else UNKNOWN_SIZE))
                else:
                    caller.append((now - ago - age, code))
            caller += [(now - ago - age, code) for age, code in data.get("caller", ())]
            # A worker of an older Verso published bare booleans (correct or not).
            feedback += [(now - ago - age, FeedbackRow(*row) if isinstance(row, list) else FeedbackRow(bool(row)))
                         for age, row in data["feedback"]]
            shadow += [(d, a, c, {k: tuple(v) for k, v in by.items()}) for d, a, c, by in data["shadow"]]
        w._calls.extend(sorted(calls, key=lambda e: e[0]))
        w._caller.extend(sorted(caller, key=lambda e: e[0]))
        w._feedback.extend(sorted(feedback, key=lambda e: e[0]))
        w._shadow.extend(shadow)
        return w

    def summary(self) -> Evidence:
        """Freeze the window into an ``Evidence``; ``requests_per_second`` uses ``clock()`` now."""
        requests = len(self._calls)
        codes = Counter(code for _, _, code, _ in self._calls if code != OK)
        errors = {code: codes[code] for code in sorted(codes)}
        n_errors = sum(errors.values())
        by_caller = Counter(code for _, code in self._caller)

        timed = [(ms, k, t) for t, ms, code, k in self._calls if code == OK and ms is not None]
        ok_ms = [ms for ms, _, _ in timed]
        p50 = p99 = None
        deciles: tuple[float, ...] = ()
        if ok_ms:
            lat = np.asarray(ok_ms, dtype=np.float64)
            p50, p99 = (float(p) for p in np.percentile(lat, [50, 99]))
            deciles = tuple(float(p) for p in np.percentile(lat, range(0, 101, 10)))

        rps = 0.0
        if requests >= 2:
            span = self._clock() - self._calls[0][0]
            if span > 0:
                rps = requests / span

        # A comparison with no numeric output carries None; NaN is dropped too, because max()
        # with a NaN depends on where it sits in the sequence.
        diffs = [d for d, _, _, _ in self._shadow if d is not None and not math.isnan(d)]
        agreeing = sum(a for _, a, _, _ in self._shadow)
        compared = sum(c for _, _, c, _ in self._shadow)
        by_output = _by_output(entry[3] for entry in self._shadow)

        rows = [r for _, r in self._feedback]
        labelled = [r for r in rows if r.correct is not None]
        feedback = len(labelled)
        correct = sum(r.correct for r in labelled)
        lossy = [r for r in rows if r.loss is not None]
        classes, confusion = class_table((r.label, r.predicted) for r in labelled
                                         if r.label is not None and r.predicted is not None)
        slices = slice_table((r.slice, r.correct, r.loss) for r in rows if r.slice is not None)
        return Evidence(
            requests=requests,
            errors=errors,
            error_rate=n_errors / requests if requests else 0.0,
            p50_ms=p50,
            p99_ms=p99,
            requests_per_second=rps,
            shadow_compared=len(self._shadow),
            max_abs_diff=max(diffs) if diffs else None,
            top1_agreement=agreeing / compared if compared else None,
            feedback=feedback,
            accuracy=correct / feedback if feedback else None,
            latency_deciles_ms=deciles,
            by_output=by_output,
            accuracy_history=self._accuracy_history(),
            latencies_ms=tuple(ok_ms),
            correct=correct,
            agreeing_rows=agreeing,
            compared_rows=compared,
            loss_rows=len(lossy),
            log_loss=_mean([r.log_loss for r in rows if r.log_loss is not None]),
            brier=_mean([r.brier for r in rows if r.brier is not None]),
            mse=_mean([r.sq_error for r in rows if r.sq_error is not None]),
            mae=_mean([r.abs_error for r in rows if r.abs_error is not None]),
            losses=tuple(r.loss for r in lossy),
            classes=tuple(classes),
            confusion=confusion,
            slices=tuple(slices),
            caller_errors={code: by_caller[code] for code in sorted(by_caller)},
            latency_sizes=tuple(k for _, k, _ in timed),
            latency_times=tuple(t for _, _, t in timed),
            load=self.load,
            since=self.since,
        )

    def _accuracy_history(self) -> tuple[tuple[float, Optional[float], int, Optional[float]], ...]:
        rows = list(self._feedback)
        if not rows:
            return ()
        now = self._clock()
        slices = min(ACCURACY_POINTS, len(rows))
        bounds = np.linspace(0, len(rows), slices + 1).astype(int)
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            chunk = rows[lo:hi]
            labelled = [r.correct for _, r in chunk if r.correct is not None]
            losses = [r.loss for _, r in chunk if r.loss is not None]
            out.append((max(0.0, now - chunk[-1][0]), _mean(labelled), len(chunk), _mean(losses)))
        return tuple(out)


def _by_output(entries) -> dict[str, tuple[Optional[float], Optional[float]]]:
    worst: dict[str, Optional[float]] = {}
    agree: dict[str, list[int]] = {}
    for by in entries:
        for alias, (diff, agreeing, compared) in by.items():
            if diff is not None and not math.isnan(diff):
                worst[alias] = diff if worst.get(alias) is None else max(worst[alias], diff)
            else:
                worst.setdefault(alias, None)
            a = agree.setdefault(alias, [0, 0])
            a[0] += agreeing
            a[1] += compared
    return {alias: (worst[alias], agree[alias][0] / agree[alias][1] if agree[alias][1] else None)
            for alias in sorted(worst)}


def _normalized(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == _BFLOAT16 else a


def _select(outputs: Mapping[str, np.ndarray], alias: Optional[str]) -> Optional[np.ndarray]:
    if alias is None:
        if not outputs:
            return None
        alias = min(outputs)
    if alias not in outputs:
        return None
    return _normalized(np.asarray(outputs[alias]))


def top1(outputs: Mapping[str, np.ndarray], alias: Optional[str]) -> Optional[np.ndarray]:
    """Per-row top-1 answers of a response, or None when the output cannot give one.

    ``alias``: the output to use; None -> the first alias in sorted order. On that output ``a``:

    * float (kind 'f', bfloat16 included) with ndim >= 2 and a last dimension of at least 2 ->
      argmax over the last axis: shape ``[rows]`` for ``[rows, classes]`` (for higher ranks,
      ``a.shape[:-1]``: one answer per position of each row);
    * integer, bool, bytes, str or object with ndim 1 -> the values themselves;
    * those kinds with shape ``[rows, 1]`` -> ``a[:, 0]``;
    * anything else -> None: a missing alias, ndim 0, float with ndim <= 1, and float with a last
      dimension of 1 or 0 (the argmax of one score is always 0, so two versions would always
      "agree" however different their scores).
    """
    a = _select(outputs, alias)
    if a is None or a.ndim == 0:
        return None
    kind = a.dtype.kind
    if kind == "f":
        if a.ndim >= 2 and a.shape[-1] >= 2:
            return np.argmax(a, axis=-1)
        return None
    if kind in _LABEL_KINDS:
        if a.ndim == 1:
            return a
        if a.ndim == 2 and a.shape[1] == 1:
            return a[:, 0]
    return None


def class_scores(outputs: Mapping[str, np.ndarray], alias: Optional[str]) -> Optional[np.ndarray]:
    """A response's class scores: ``alias`` when it is a float ``[rows, classes]`` output
    (classes >= 2), else the first such output in sorted order; None when there is none."""
    for name in ([alias] if alias else []) + sorted(outputs):
        a = outputs.get(name)
        if a is None:
            continue
        a = _normalized(np.asarray(a))
        if a.dtype.kind == "f" and a.ndim == 2 and a.shape[1] >= 2:
            return a
    return None


def _equal(x: object, y: object) -> bool:
    try:
        return bool(x == y)
    except (TypeError, ValueError):  # e.g. array-valued elements: equality is not a single bool
        return False


def _agreeing_rows(p: np.ndarray, s: np.ndarray) -> int:
    try:
        equal = np.asarray(p == s)
    except (TypeError, ValueError):
        equal = None
    if equal is None or equal.shape != p.shape:
        # Incomparable answers (e.g. str labels against int labels, or object elements that do
        # not compare to a bool) agree where Python equality says so, row by row.
        return sum(1 for x, y in zip(p.tolist(), s.tolist()) if _equal(x, y))
    if equal.ndim > 1:
        equal = equal.reshape(equal.shape[0], -1).all(axis=1)
    return int(np.count_nonzero(equal))


def divergence(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray], alias: Optional[str]
               ) -> tuple[Optional[float], int, int]:
    """How a shadow (candidate) answer differs from the primary one.

    Returns ``(max_abs_diff, agreeing_rows, compared_rows)``:

    * ``max_abs_diff``: the largest absolute difference over every numeric output (kind in
      'biuf', bfloat16 included) present in both responses with the same shape; outputs whose
      shapes differ are skipped. NaN positions are ignored (NaN-aware max); an output whose
      differences are all NaN, or that is empty, contributes nothing. None when nothing
      contributed.
    * ``agreeing_rows``, ``compared_rows``: from ``top1()`` of both responses on ``alias``; a
      row agrees when its answers are equal. ``(0, 0)`` when either ``top1()`` is None or
      their shapes differ.
    """
    worst: Optional[float] = None
    for name in sorted(primary.keys() & shadow.keys()):
        m = _max_abs_diff(primary[name], shadow[name])
        if m is not None:
            worst = m if worst is None else max(worst, m)
    return (worst, *_agreement(primary, shadow, alias))


def per_output(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]
               ) -> dict[str, tuple[Optional[float], int, int]]:
    """``divergence`` output by output: for each alias in both answers, (its max abs difference
    or None, agreeing rows, compared rows) with top-1 taken on that output alone."""
    return {name: (_max_abs_diff(primary[name], shadow[name]), *_agreement(primary, shadow, name))
            for name in sorted(primary.keys() & shadow.keys())}


def _max_abs_diff(p, s) -> Optional[float]:
    p, s = _normalized(np.asarray(p)), _normalized(np.asarray(s))
    if p.shape != s.shape or p.dtype.kind not in _NUMERIC_KINDS or s.dtype.kind not in _NUMERIC_KINDS:
        return None
    # float64 first: bools cannot be subtracted and unsigned integers would wrap around.
    diff = np.abs(p.astype(np.float64) - s.astype(np.float64))
    diff = diff[~np.isnan(diff)]
    return float(diff.max()) if diff.size else None


def _agreement(primary, shadow, alias) -> tuple[int, int]:
    tp, ts = top1(primary, alias), top1(shadow, alias)
    if tp is None or ts is None or tp.shape != ts.shape:
        return 0, 0
    return _agreeing_rows(tp, ts), int(tp.shape[0])
