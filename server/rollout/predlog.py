"""The prediction log: every answer given under a rollout, kept in the rollout state file so
that feedback can name it hours later, from any worker process, once.

A row per answer: its request id (128 random bits, unguessable), model, version, role, time,
top-1 answers (JSON, one per row), class scores (float32 ``[rows, classes]`` where an output is
a score matrix), an optional slice key; later the feedback (time, labels, correct rows).

Writes happen off the request path: ``append`` puts a row on a bounded queue and returns at
once; one writer thread takes rows in batches (one transaction per batch). When the queue is
full the row is dropped and counted (``dropped``): an answer never waits for the log.
``feedback`` goes through the same queue, so it sees every row appended before it; it waits for
room rather than being dropped. Rows older than ``retention_s``, and the oldest beyond
``max_rows``, are deleted by the writer once a minute.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from protos.errors import Code, ServingError, invalid_argument
from server.rollout.store import RolloutStore

log = logging.getLogger("verso.rollout")

CAPACITY = 10_000
BATCH = 500
RETENTION_S = 7 * 86400.0
MAX_ROWS = 1_000_000
PRUNE_EVERY_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    role TEXT NOT NULL,
    unix_time REAL NOT NULL,
    top1 TEXT,              -- JSON list of the rows' top-1 answers as text (NULL: no top-1 output)
    scores BLOB,            -- float32 [rows, classes] class scores (NULL: none)
    classes INTEGER,
    slice TEXT,
    feedback_time REAL,     -- NULL until feedback
    labels TEXT,            -- JSON list of the feedback's labels
    correct INTEGER         -- correct rows
);
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (unix_time);
"""


@dataclass(frozen=True)
class Answer:
    request_id: str
    model: str
    version: int
    role: str
    unix_time: float
    top1: Optional[Sequence[str]]
    scores: Optional[bytes] = None
    classes: int = 0
    slice: Optional[str] = None


@dataclass(frozen=True)
class Judged:
    """A feedback's outcome: which answer it was for and which rows were right."""

    model: str
    version: int
    correct: tuple[bool, ...]


class _Feedback:
    def __init__(self, request_id: str, labels: list[str], future: Future):
        self.request_id, self.labels, self.future = request_id, labels, future


class PredictionLog:
    def __init__(self, store: RolloutStore, *, capacity: int = CAPACITY, batch: int = BATCH,
                 retention_s: float = RETENTION_S, max_rows: int = MAX_ROWS,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.retention_s, self.max_rows, self.batch = retention_s, max_rows, batch
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread: Optional[threading.Thread] = None
        self._pruned_at = 0.0
        with store.lock:
            store.db.executescript(SCHEMA)

    # ---- the loop's side ------------------------------------------------------------------

    def append(self, answer: Answer) -> bool:
        """Queue one answer; False (dropped, counted) when the queue is full. Never blocks."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(answer)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def feedback(self, request_id: str, labels: Sequence[str], timeout_s: float = 10.0) -> Future:
        """Judge ``labels`` against the logged answer ``request_id``; a Future of ``Judged`` or
        a ServingError: NOT_FOUND (unknown or expired), ALREADY_EXISTS (feedback given before),
        INVALID_ARGUMENT (no top-1 output, or a label count that differs from the answer's
        rows: the id is not used up). Blocks for room on the queue (call it off the loop)."""
        self._ensure_thread()
        future: Future = Future()
        try:
            self._queue.put(_Feedback(request_id, [str(x) for x in labels], future), timeout=timeout_s)
        except queue.Full:
            future.set_exception(ServingError(Code.UNAVAILABLE, "The prediction log is busy; try the feedback again"))
        return future

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until every answer queued before this call is written (tests, shutdown)."""
        if self._thread is None:
            return
        done: Future = Future()
        self._queue.put(done, timeout=timeout_s)
        done.result(timeout_s)

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="verso-prediction-log", daemon=True)
            self._thread.start()

    # ---- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            items = [item]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = []
            for it in items:
                if isinstance(it, Answer):
                    rows.append(it)
                    continue
                self._write(rows)
                rows = []
                if it is None:
                    return
                if isinstance(it, _Feedback):
                    self._judge(it)
                elif isinstance(it, Future):
                    it.set_result(None)
            self._write(rows)
            if self.clock() - self._pruned_at > PRUNE_EVERY_S:
                self.prune()

    def _write(self, rows: list[Answer]) -> None:
        if not rows:
            return
        args = [(a.request_id, a.model, a.version, a.role, a.unix_time,
                 json.dumps(list(a.top1)) if a.top1 is not None else None, a.scores, a.classes or None, a.slice)
                for a in rows]
        try:
            with self.store.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO predictions (request_id, model, version, role, unix_time, top1, "
                               "scores, classes, slice) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", args)
            self.written += len(rows)
        except sqlite3.Error as e:  # locked past the busy timeout, disk full: these rows are lost
            self.dropped += len(rows)
            log.error("Prediction log: %d answers not written: %s", len(rows), e)

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
            row = db.execute("SELECT model, version, top1, feedback_time, unix_time FROM predictions "
                             "WHERE request_id = ?", (fb.request_id,)).fetchone()
            if row is None or row[4] < self.clock() - self.retention_s:
                raise ServingError(Code.NOT_FOUND, f"Unknown or expired request id: {fb.request_id}")
            model, version, top1, given, _ = row
            if given is not None:
                raise ServingError(Code.ALREADY_EXISTS, f"Feedback for request id {fb.request_id} was already given")
            if top1 is None:
                raise invalid_argument(f"Answers of {model} have no top-1 output to compare feedback with")
            predicted = json.loads(top1)
            if len(fb.labels) != len(predicted):
                raise invalid_argument(f"Feedback has {len(fb.labels)} labels for an answer of {len(predicted)} rows")
            correct = tuple(p == label for p, label in zip(predicted, fb.labels))
            # Another worker may have judged it since the SELECT: only one UPDATE wins (autocommit).
            done = db.execute("UPDATE predictions SET feedback_time = ?, labels = ?, correct = ? "
                              "WHERE request_id = ? AND feedback_time IS NULL",
                              (self.clock(), json.dumps(fb.labels), sum(correct), fb.request_id)).rowcount
            if not done:
                raise ServingError(Code.ALREADY_EXISTS, f"Feedback for request id {fb.request_id} was already given")
            return Judged(model, int(version), correct)

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
