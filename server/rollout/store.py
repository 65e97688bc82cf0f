"""Rollout state that survives restarts: an SQLite database (Python's sqlite3, WAL mode).

What is kept, per model under rollout: the rollout as it stands now (after automatic steps),
the rollout config file's entry it last took from the file (so that an unchanged file does
not undo automatic decisions, and an edited one is a newer operator decision), a final
ROLLBACK's text, the consecutive failed analyses; and the decision log (when, who, what).

``--rollout_state_file``: a path, or ``:memory:`` (nothing survives the process). Each write is
its own transaction, so a process killed mid-write (SIGKILL) leaves the last committed state
(SQLite's journal). A database that another process holds locked is retried for
``BUSY_TIMEOUT_S`` (sqlite3's busy handler backs off), then ``StoreError``.

Owned by the event loop that owns the rollout manager; the writes are small (one row) and
synchronous. The prediction log's writer thread shares the connection: every use holds
``lock``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from protos import rollout_pb2
from protos.errors import Code, ServingError

MEMORY = ":memory:"
BUSY_TIMEOUT_S = 5.0
DECISIONS_KEPT = 100  # per model, in the answers; the table keeps every one

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    model TEXT PRIMARY KEY,
    config BLOB NOT NULL,          -- verso.rollout.ModelRollout as it stands now
    file_entry BLOB,               -- the rollout config file's entry last applied (NULL: set by a call)
    final_rollback TEXT,           -- a final ROLLBACK's decision text (NULL: none)
    failed_analyses INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    unix_time REAL NOT NULL,
    who TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_model ON decisions (model, id);
CREATE TABLE IF NOT EXISTS evidence (  -- under --num_workers: each worker's windows, for the others
    worker TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (worker, model, version)
);
CREATE TABLE IF NOT EXISTS leases (    -- under --num_workers: which worker takes the automatic steps
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
);
"""


class StoreError(Exception):
    """The state file cannot be used; ``str()`` is one line for the operator."""


@dataclass
class Saved:
    config: rollout_pb2.ModelRollout
    file_entry: Optional[bytes]
    final_rollback: Optional[str]
    failed_analyses: int


def entry_bytes(mr: rollout_pb2.ModelRollout) -> bytes:
    """A rollout's bytes for comparing file entries (deterministic serialization)."""
    return mr.SerializeToString(deterministic=True)


class RolloutStore:
    def __init__(self, path: str = MEMORY):
        self.path = path
        self.lock = threading.Lock()
        try:
            if path != MEMORY:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            if path != MEMORY:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"--rollout_state_file {path} is corrupt: {check}")
            self._db.executescript(_SCHEMA)
            self.load()  # every row must parse
        except sqlite3.Error as e:
            raise StoreError(f"--rollout_state_file {path} cannot be used: {e}") from None
        except OSError as e:
            raise StoreError(f"--rollout_state_file {path} cannot be used: {e.strerror}") from None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection (autocommit); hold ``lock`` while using it, ``transaction()`` for several
        statements at once."""
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``lock`` held, one write transaction (committed at the end, rolled back on error)."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def _write(self, sql: str, args: tuple) -> None:
        try:
            with self.lock:
                self._db.execute(sql, args)
        except sqlite3.OperationalError as e:  # locked past the busy timeout, disk full, read-only ...
            raise ServingError(Code.UNAVAILABLE, f"The rollout state file {self.path} cannot be written: {e}") from None

    def load(self) -> dict[str, Saved]:
        """Every saved rollout by model. Raises StoreError on a row that does not parse."""
        out = {}
        with self.lock:
            rows = self._db.execute("SELECT model, config, file_entry, final_rollback, failed_analyses "
                                    "FROM rollouts").fetchall()
        for model, config, file_entry, final, failed in rows:
            mr = rollout_pb2.ModelRollout()
            try:
                mr.ParseFromString(config)
            except Exception:
                raise StoreError(f"--rollout_state_file {self.path} is corrupt: the rollout of {model} does not "
                                 f"parse") from None
            out[model] = Saved(mr, file_entry, final, int(failed))
        return out

    def save(self, name: str, config: rollout_pb2.ModelRollout, *, file_entry: Optional[bytes],
             final_rollback: Optional[str], failed_analyses: int, now: float) -> None:
        self._write("INSERT INTO rollouts (model, config, file_entry, final_rollback, failed_analyses, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET config = excluded.config, "
                    "file_entry = excluded.file_entry, final_rollback = excluded.final_rollback, "
                    "failed_analyses = excluded.failed_analyses, updated = excluded.updated",
                    (name, config.SerializeToString(), file_entry, final_rollback, failed_analyses, now))

    def delete(self, name: str) -> None:
        self._write("DELETE FROM rollouts WHERE model = ?", (name,))

    def log(self, name: str, unix_time: float, who: str, text: str) -> None:
        self._write("INSERT INTO decisions (model, unix_time, who, text) VALUES (?, ?, ?, ?)",
                    (name, unix_time, who, text))

    # ---- shared by worker processes -------------------------------------------------------

    def put_evidence(self, worker: str, rows: list[tuple[str, int, str]], now: float) -> None:
        """``worker``'s evidence windows now, (model, version, JSON) each, replacing its last."""
        try:
            with self.transaction() as db:
                db.execute("DELETE FROM evidence WHERE worker = ?", (worker,))
                db.executemany("INSERT INTO evidence (worker, model, version, updated, data) VALUES (?, ?, ?, ?, ?)",
                               [(worker, m, v, now, data) for m, v, data in rows])
        except sqlite3.OperationalError as e:
            raise ServingError(Code.UNAVAILABLE, f"The rollout state file {self.path} cannot be written: {e}") from None

    def evidence_of(self, model: str, version: int, *, exclude: str, since: float) -> list[tuple[float, str]]:
        """The other workers' windows of ``version`` published since ``since``: (when, JSON)."""
        with self.lock:
            return self._db.execute("SELECT updated, data FROM evidence WHERE model = ? AND version = ? AND "
                                    "worker != ? AND updated >= ?", (model, version, exclude, since)).fetchall()

    def take_lease(self, name: str, holder: str, now: float, ttl_s: float) -> bool:
        """Hold the lease ``name`` for ``ttl_s`` more seconds if it is free, expired or already
        ``holder``'s; True when ``holder`` holds it now. One statement: two workers cannot both win."""
        try:
            with self.lock:
                self._db.execute("INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO "
                                 "UPDATE SET holder = excluded.holder, until = excluded.until "
                                 "WHERE leases.until < ? OR leases.holder = excluded.holder",
                                 (name, holder, now + ttl_s, now))
                row = self._db.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError:
            return False  # locked: another worker is writing; try at the next round
        return row is not None and row[0] == holder

    # ---- routing salts (server/rollout/routing.py) ----------------------------------------

    _SALTS = ("CREATE TABLE IF NOT EXISTS salts (model TEXT NOT NULL, canary INTEGER NOT NULL, salt BLOB NOT NULL, "
              "PRIMARY KEY (model, canary))")

    def salt(self, model: str, canary: int, new: bytes) -> Optional[bytes]:
        """The routing salt of ``model``'s rollout of ``canary``: the one kept, else ``new``
        kept from now on (the first writer wins, so every worker gets the same salt); the salts
        of the model's earlier canaries go. None when none is kept and the file cannot be
        written."""
        with self.lock:
            try:
                self._db.execute(self._SALTS)
                if self._db.execute("INSERT OR IGNORE INTO salts (model, canary, salt) VALUES (?, ?, ?)",
                                    (model, canary, new)).rowcount:
                    self._db.execute("DELETE FROM salts WHERE model = ? AND canary != ?", (model, canary))
            except sqlite3.OperationalError:
                pass  # read-only or full: a salt kept earlier may still be read
            try:
                row = self._db.execute("SELECT salt FROM salts WHERE model = ? AND canary = ?",
                                       (model, canary)).fetchone()
            except sqlite3.OperationalError:
                return None
        return bytes(row[0]) if row is not None else None

    def forget_salts(self, model: str) -> None:
        """A rollout removed: its salts go (a later rollout of the model draws a new one)."""
        try:
            with self.lock:
                self._db.execute(self._SALTS)
                self._db.execute("DELETE FROM salts WHERE model = ?", (model,))
        except sqlite3.OperationalError:
            pass  # kept: harmless, a new canary draws a new salt anyway

    def decisions(self, name: str, limit: int = DECISIONS_KEPT) -> list[tuple[float, str, str]]:
        """The newest ``limit`` decisions of ``name``, oldest first: (unix time, who, text)."""
        with self.lock:
            rows = self._db.execute("SELECT unix_time, who, text FROM decisions WHERE model = ? ORDER BY id DESC "
                                    "LIMIT ?", (name, limit)).fetchall()
        return [(float(t), who, text) for t, who, text in reversed(rows)]
