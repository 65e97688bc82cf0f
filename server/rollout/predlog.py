"""The prediction log: every answer given under a rollout, kept in the rollout state file so
that feedback can name it hours later, from any worker process, once.

A row per answer: its request id (128 random bits, unguessable), model, version, role, time,
the evidence output as it was (its alias, dtype, shape and bytes: the top-1 answers are taken
from it when feedback comes), class scores (float32 ``[rows, classes]`` where an output is a
score matrix), an optional slice key; later the feedback (time, labels, correct rows). Rows
are raw bytes so that logging costs the serving process as little as it can.

Writes happen off the request path: ``append`` puts the answer on a bounded deque and returns
at once (no lock, no wake-up: a thread switch per answer would cost the loop more than the
write); one writer thread wakes every ``interval_s``, turns what it finds into rows (top-1
bytes) and writes them in one transaction. ``feedback`` and ``flush`` wake the writer at once
and are handled after every answer appended before them. Rows older than ``retention_s``, and
the oldest beyond ``max_rows``, are deleted by the writer once a minute.

Each row carries the load identity of the servable that answered (``Answer.load``,
``server.lifecycle.manager.load_identity``), and ``Judged.load`` gives it back with the
feedback, so that feedback for an answer of an earlier build of a version (removed and
re-created since) is never counted for the build loaded now (the rollout manager refuses it).

Drops are decided when an answer is appended, so that the request path knows in time whether
to hand out a request id: ``append`` refuses (False: the answer gets no id) when ``capacity``
answers wait already, counting the answers waiting for the writer and those a failing write
kept. A write that fails (disk full, read-only, locked) loses nothing: its rows stay in memory
(``backlog``, bytes only) and are written again every ``RETRY_S`` until a write succeeds;
meanwhile ``failing`` says why, and once the backlog fills the room every later answer is
refused at ``append``. So an answer that carries a request id has its row written, or waiting
in memory within the bound; only a process that stops while the file still cannot be written
loses the backlog (counted under "lost at exit", logged). ``dropped_by`` counts every refused
or lost answer by reason, for the metrics and the rollout status alarms.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from collections import deque
from typing import Callable, Mapping, NamedTuple, Optional, Sequence

import ml_dtypes
import numpy as np

from protos.errors import Code, ServingError, invalid_argument
from server.rollout.evidence import FeedbackRow, class_scores, top1
from server.rollout.quality import classification_losses, regression_errors
from server.rollout.store import RolloutStore

log = logging.getLogger("verso.rollout")

CAPACITY = 10_000
INTERVAL_S = 0.05
RETENTION_S = 7 * 86400.0
MAX_ROWS = 1_000_000
PRUNE_EVERY_S = 60.0
RETRY_S = 1.0            # a failing write is tried again this often
DROP_LOG_S = 60.0        # a burst of drops is logged once, when the last drop is older than this
QUEUE_FULL, LOST_AT_EXIT = "queue full", "lost at exit"

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    role TEXT NOT NULL,
    unix_time REAL NOT NULL,
    output TEXT,            -- the evidence output's alias (NULL: the answer had no outputs)
    dtype TEXT,             -- its numpy dtype ("<i8", "<f4" ...; "json": text values as a JSON list)
    shape TEXT,             -- its shape, "2,10"
    data BLOB,              -- its bytes
    scores BLOB,            -- float32 [rows, classes] class scores (NULL: none)
    classes INTEGER,
    slice TEXT,
    feedback_time REAL,     -- NULL until feedback
    labels TEXT,            -- JSON list of the feedback's labels
    correct INTEGER,        -- correct rows
    load_id TEXT            -- the load identity of the servable that answered (NULL: not known)
);
"""


class Answer(NamedTuple):
    """One answer to log. ``outputs`` (the response's arrays, never changed after the answer)
    and ``alias`` (the rollout's evidence output) are turned into bytes by the writer thread,
    not on the request path."""

    request_id: str
    model: str
    version: int
    role: str
    unix_time: float
    outputs: Mapping
    alias: Optional[str]
    slice: Optional[str] = None
    scores_alias: Optional[str] = None   # the rollout's scores_output (None: detected)
    load: Optional[str] = None           # the answering servable's load identity (None: not known)


@dataclass(frozen=True)
class Judged:
    """A feedback's outcome: which answer it was for, and each row joined with its truth."""

    model: str
    version: int
    rows: tuple[FeedbackRow, ...]
    load: Optional[str] = None  # the load identity of the servable that gave the answer

    @property
    def correct(self) -> tuple[bool, ...]:
        return tuple(bool(r.correct) for r in self.rows if r.correct is not None)


class _Feedback:
    def __init__(self, request_id: str, labels: list[str], targets: list[float], future: Future):
        self.request_id, self.labels, self.targets, self.future = request_id, labels, targets, future


class PredictionLog:
    def __init__(self, store: RolloutStore, *, capacity: int = CAPACITY, interval_s: float = INTERVAL_S,
                 retention_s: float = RETENTION_S, max_rows: int = MAX_ROWS,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.capacity, self.interval_s = capacity, interval_s
        self.retention_s, self.max_rows = retention_s, max_rows
        self.clock = clock
        self.dropped_by: collections.Counter = collections.Counter()  # reason -> answers refused or lost
        self.last_drop: Optional[float] = None  # when (``clock``) the last answer was refused or lost
        self.written = 0
        self.failing: Optional[str] = None   # why the last write failed; None once one succeeds
        self.failing_since: Optional[float] = None
        self.disabled: Optional[str] = None  # set: every answer refused, uncounted (rollouts unavailable)
        self._backlog: list[tuple] = []      # rows a failing write kept (writer thread only; len read anywhere)
        self._writing = 0                    # rows in the write under way (counted against capacity too)
        self._retry_at = 0.0
        self._answers: deque = deque()
        self._control: queue.Queue = queue.Queue()  # feedback, flush and stop, in order
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pruned_at = 0.0
        with store.lock:
            store.db.executescript(SCHEMA)
            columns = {row[1] for row in store.db.execute("PRAGMA table_info(predictions)")}
            if "load_id" not in columns:  # a state file of an earlier Verso: its rows' loads are not known
                try:
                    store.db.execute("ALTER TABLE predictions ADD COLUMN load_id TEXT")
                except sqlite3.OperationalError as e:  # read-only: the first write fails and says so
                    log.error("Prediction log: the state file %s cannot take the load_id column: %s", store.path, e)

    # ---- the loop's side ------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by.values())

    @property
    def waiting(self) -> int:
        """Answers not written yet: queued for the writer, or kept by a failing write."""
        return len(self._answers) + len(self._backlog) + self._writing

    def append(self, answer: Answer) -> bool:
        """Keep one answer for the writer; False (dropped, counted) when ``capacity`` answers
        wait already (queued, or kept by a failing write): the caller must then not hand out
        the answer's request id. Never blocks."""
        if self.disabled is not None:
            return False
        if len(self._answers) + len(self._backlog) + self._writing >= self.capacity:
            now = self.clock()
            if self.last_drop is None or now - self.last_drop > DROP_LOG_S:
                log.warning("Prediction log: %d answers wait already (%s): answers are not logged and get no request "
                            "id (counted in verso_prediction_log_dropped_total)", self.capacity,
                            f"the state file cannot be written: {self.failing}" if self.failing else "the writer is "
                            "behind")
            self.last_drop = now
            self.dropped_by[QUEUE_FULL] += 1
            return False
        self._answers.append(answer)
        if self._thread is None:
            self._start()
        return True

    def feedback(self, request_id: str, labels: Sequence[str], targets: Sequence[float] = ()) -> Future:
        """Judge ``labels`` (against the top-1 answers; with class scores, the log-loss and
        Brier score) and/or numeric ``targets`` (against the answer's value per row: squared
        and absolute error) against the logged answer ``request_id``. A Future of ``Judged``
        or a ServingError: NOT_FOUND (unknown or expired), ALREADY_EXISTS (feedback given
        before), INVALID_ARGUMENT (neither labels nor targets, a count that differs from the
        answer's rows, a target that is not finite, labels for an answer with no top-1, targets
        for an answer that is not one number per row: the id is not used up)."""
        future: Future = Future()
        self._send(_Feedback(request_id, [_text(x) for x in labels], [float(t) for t in targets], future))
        return future

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until every answer appended before this call is written, or kept by a failing
        write (tests, shutdown)."""
        if self._thread is None:
            return
        done: Future = Future()
        self._send(done)
        done.result(timeout_s)

    def close(self) -> None:
        if self._thread is not None:
            self._retry_at = 0.0  # one last try, now
            self.flush()
            self._send(None)
            self._thread.join(10)
            self._thread = None
            lost = len(self._backlog)
            if lost:
                self.last_drop = self.clock()
                self.dropped_by[LOST_AT_EXIT] += lost
                self._backlog = []
                log.error("Prediction log: %d answers that were given request ids are lost: the rollout state file "
                          "%s still cannot be written (%s)", lost, self.store.path, self.failing)

    def _send(self, item) -> None:
        if self._thread is None:
            self._start()
        self._control.put(item)
        self._wake.set()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="verso-prediction-log", daemon=True)
        self._thread.start()

    # ---- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            control = []
            while True:
                try:
                    control.append(self._control.get_nowait())
                except queue.Empty:
                    break
            # Every answer appended before these control items is in the deque now.
            popleft = self._answers.popleft
            n = len(self._answers)
            self._writing = n  # before they leave the deque: ``append`` never counts fewer than there are
            rows = [popleft() for _ in range(n)]
            self._write(rows)
            for item in control:
                if item is None:
                    return
                if isinstance(item, _Feedback):
                    self._judge(item)
                else:
                    item.set_result(None)
            if self.clock() - self._pruned_at > PRUNE_EVERY_S:
                self.prune()

    def _write(self, rows: list[Answer]) -> None:
        """Write ``rows`` after the backlog; a failed write keeps them all (see the module).
        ``_writing`` counts ``rows`` on entry and the rows of the write under way (up to the busy
        timeout); each move between it and the backlog counts twice for a moment, never zero
        times, so that ``append`` keeps the bound."""
        args = [_row(a) for a in rows]
        if self._backlog:
            # Bytes only from here on (the answers' other outputs are let go); retried when due.
            self._backlog.extend(args)
            self._writing = 0
            if time.monotonic() < self._retry_at:
                return
            self._writing = len(self._backlog)
            args, self._backlog = self._backlog, []
        if not args:
            self._writing = 0
            return
        try:
            with self.store.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO predictions (request_id, model, version, role, unix_time, output, "
                               "dtype, shape, data, scores, classes, slice, load_id) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", args)
        except sqlite3.Error as e:  # disk full, read-only, locked past the busy timeout
            self._backlog = args + self._backlog
            self._writing = 0
            self._retry_at = time.monotonic() + RETRY_S
            if self.failing is None:
                self.failing_since = self.clock()
                log.error("Prediction log: the rollout state file %s cannot be written (%s): %d answers wait in "
                          "memory and are written again every %g s; past %d, answers get no request id",
                          self.store.path, e, len(self._backlog), RETRY_S, self.capacity)
            self.failing = str(e)
            return
        self._writing = 0
        self.written += len(args)
        if self.failing is not None:
            log.warning("Prediction log: written again (%d answers that waited)", len(args))
            self.failing = self.failing_since = None

    def _judge(self, fb: _Feedback) -> None:
        try:
            fb.future.set_result(self._judged(fb))
        except ServingError as e:
            fb.future.set_exception(e)
        except sqlite3.Error as e:
            fb.future.set_exception(ServingError(Code.UNAVAILABLE, f"The prediction log cannot be read: {e}"))

    def _judged(self, fb: _Feedback) -> Judged:
        with self.store.lock:
            db = self.store.db
            row = db.execute("SELECT model, version, output, dtype, shape, data, feedback_time, unix_time, scores, "
                             "classes, slice, load_id FROM predictions WHERE request_id = ?", (fb.request_id,)).fetchone()
            if row is None and any(r[0] == fb.request_id for r in self._backlog):
                raise ServingError(Code.UNAVAILABLE, f"The answer {fb.request_id} is not written to the prediction "
                                                     f"log yet (the rollout state file cannot be written: "
                                                     f"{self.failing}); try again later")
            if row is None or row[7] < self.clock() - self.retention_s:
                raise ServingError(Code.NOT_FOUND, f"Unknown or expired request id: {fb.request_id}")
            model, version, alias, dtype, shape, data, given, _, scores, classes, key, load = row
            if given is not None:
                raise ServingError(Code.ALREADY_EXISTS, f"Feedback for request id {fb.request_id} was already given")
            rows = _joined(model, fb, _array(dtype, shape, data) if alias is not None else None, alias,
                           np.frombuffer(scores, "<f4").reshape(-1, classes) if scores is not None else None, key)
            correct = sum(1 for r in rows if r.correct)
            # Another worker may have judged it since the SELECT: only one UPDATE wins (autocommit).
            done = db.execute("UPDATE predictions SET feedback_time = ?, labels = ?, correct = ? "
                              "WHERE request_id = ? AND feedback_time IS NULL",
                              (self.clock(), json.dumps(fb.labels or fb.targets), correct, fb.request_id)).rowcount
            if not done:
                raise ServingError(Code.ALREADY_EXISTS, f"Feedback for request id {fb.request_id} was already given")
            return Judged(model, int(version), rows, load)

    def prune(self) -> int:
        """Delete rows past the retention age and the oldest beyond ``max_rows``; the count."""
        self._pruned_at = self.clock()
        try:
            with self.store.transaction() as db:
                n = db.execute("DELETE FROM predictions WHERE unix_time < ?", (self.clock() - self.retention_s,)).rowcount
                n += db.execute("DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions "
                                "ORDER BY rowid DESC LIMIT -1 OFFSET ?)", (self.max_rows,)).rowcount
            return n
        except sqlite3.Error as e:
            log.error("Prediction log: pruning failed: %s", e)
            return 0


def _joined(model: str, fb: _Feedback, answer: Optional[np.ndarray], alias: Optional[str],
            scores: Optional[np.ndarray], key: Optional[str]) -> tuple[FeedbackRow, ...]:
    """The feedback's rows joined with the logged answer (see ``PredictionLog.feedback``): a
    column per ``FeedbackRow`` field the feedback gives, one value per row."""
    if not fb.labels and not fb.targets:
        raise invalid_argument("Feedback needs labels (classifiers) or targets (regressors), one per row")
    columns: dict[str, list] = {}
    if fb.labels:
        answers = top1({alias: answer}, alias) if answer is not None else None
        if answers is None:
            raise invalid_argument(f"Answers of {model} have no top-1 output to compare feedback with")
        predicted = [_text(x) for x in answers.tolist()]
        if len(fb.labels) != len(predicted):
            raise invalid_argument(f"Feedback has {len(fb.labels)} labels for an answer of {len(predicted)} rows")
        columns.update(label=fb.labels, predicted=predicted,
                       correct=[p == label for p, label in zip(predicted, fb.labels)])
        if scores is not None and len(scores) == len(fb.labels):
            columns["log_loss"], columns["brier"] = map(list, zip(*classification_losses(scores, fb.labels)))
    if fb.targets:
        if not all(np.isfinite(fb.targets)):
            raise invalid_argument("Feedback targets must be finite numbers")
        if answer is None or not answer.ndim or answer.dtype.kind not in "biuf" or answer[0:1].size > 1:
            raise invalid_argument(f"Feedback targets need an answer with one number per row; the answer of {model} "
                                   f"({alias or 'no output'}) is {answer.dtype if answer is not None else 'none'} "
                                   f"{list(answer.shape) if answer is not None else ''}")
        values = answer.reshape(len(answer), -1)[:, 0].astype(np.float64) if answer.size else answer
        if len(fb.targets) != len(values):
            raise invalid_argument(f"Feedback has {len(fb.targets)} targets for an answer of {len(values)} rows")
        columns["sq_error"], columns["abs_error"] = map(list, zip(*regression_errors(values, fb.targets)))
    rows = len(fb.labels or fb.targets)
    return tuple(FeedbackRow(slice=key, **{field: values[i] for field, values in columns.items()})
                 for i in range(rows))


def _text(x) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


_SCORES: dict[tuple, Optional[str]] = {}  # output aliases -> the alias holding class scores (per signature)
_SCORES_KEPT = 1024


def _row(a: Answer) -> tuple:
    """An answer as a row: bytes, no per-row numpy work beyond ``tobytes``."""
    outputs = a.outputs
    alias = a.alias if a.alias in outputs else (min(outputs) if outputs else None)
    output = dtype = shape = data = scores = classes = None
    if alias is not None:
        arr = np.asarray(outputs[alias])
        output, shape = alias, ",".join(map(str, arr.shape))
        if arr.dtype.kind in "OSU":  # text and bytes: JSON of their text
            dtype, data = "json", json.dumps([_text(x) for x in arr.ravel().tolist()]).encode()
        else:
            dtype, data = arr.dtype.str, arr.tobytes()
    key = (a.scores_alias or a.alias, *outputs)
    if key not in _SCORES:
        if len(_SCORES) >= _SCORES_KEPT:  # the aliases (and their order) follow a caller's output_filter
            _SCORES.clear()
        found = class_scores(outputs, a.scores_alias or a.alias)
        _SCORES[key] = next((k for k in outputs if outputs[k] is found), None) if found is not None else None
    score_alias = _SCORES[key]
    if score_alias is not None:
        arr = np.asarray(outputs[score_alias])
        if arr.ndim == 2 and arr.dtype.kind == "f":
            scores, classes = np.asarray(arr, "<f4").tobytes(), arr.shape[1]
    return (a.request_id, a.model, a.version, a.role, a.unix_time, output, dtype, shape, data, scores, classes,
            a.slice, a.load)


def _array(dtype: str, shape: str, data: bytes) -> np.ndarray:
    dims = tuple(int(d) for d in shape.split(",")) if shape else ()
    if dtype == "json":
        return np.array(json.loads(data), dtype=object).reshape(dims)
    if dtype == np.dtype(ml_dtypes.bfloat16).str:  # bfloat16 from the tensor codec ("<V2")
        return np.frombuffer(data, ml_dtypes.bfloat16).reshape(dims)
    return np.frombuffer(data, np.dtype(dtype)).reshape(dims)
