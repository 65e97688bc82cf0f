"""Rollout state that survives restarts: an SQLite database (Python's sqlite3, WAL mode).

What is kept, per model under rollout: the rollout as it stands now (after automatic steps),
the rollout config file's entry it last took from the file (so that an unchanged file does
not undo automatic decisions, and an edited one is a newer operator decision), a final
ROLLBACK's text, the consecutive failed analyses; and the decision log (when, who, what).

``--rollout_state_file``: a path, or ``:memory:`` (nothing survives the process). Each write is
its own transaction, so a process killed mid-write (SIGKILL) leaves the last committed state
(SQLite's journal). A database that another process holds locked is retried for
``BUSY_TIMEOUT_S`` (sqlite3's busy handler backs off), then ``StoreError``.

The file holds answers and request ids: it is created 0600 (SQLite gives its ``-wal`` and
``-shm`` files the database file's mode), a directory Verso creates for it 0700, and an
existing file readable by others is narrowed to 0600 (logged). A file that cannot be opened
for writing (read-only mount, no permission) is a ``StoreError`` at once, not at the first write.

A write that fails (disk full, read-only, locked past the busy timeout) raises
``StoreWriteError`` (a ``ServingError``, UNAVAILABLE) and leaves the file as it was: a rollout
and its decision are written in one transaction (``save``/``delete`` with ``decision``).

Owned by the event loop that owns the rollout manager; the writes are small (one row) and
synchronous. The prediction log's writer thread shares the connection: every use holds
``lock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sqlite3
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from protos import rollout_pb2
from protos.errors import Code, ServingError

log = logging.getLogger("verso.rollout")

MEMORY = ":memory:"
FILE_MODE, DIR_MODE = 0o600, 0o700
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


class StoreWriteError(ServingError):
    """A write of the state file failed (UNAVAILABLE); nothing of it was written."""

    def __init__(self, path: str, e: Exception):
        super().__init__(Code.UNAVAILABLE, f"The rollout state file {path} cannot be written: {e}")


def _locked(e: sqlite3.Error) -> bool:
    """Another process holds the database (busy or locked): waiting may help."""
    return getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
        or "locked" in str(e)


def _private(path: str) -> None:
    """Create the state file 0600 (its directory 0700 when Verso makes it), narrow an existing
    one (and its -wal, -shm) that others may read, and make sure it opens for writing: a
    read-only file system or a file without write permission is an OSError here."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    os.close(fd)
    for p in (path, path + "-wal", path + "-shm"):
        try:
            mode = stat.S_IMODE(os.stat(p).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(p, mode & ~0o077)
            except OSError as e:  # another user's file: usable still, but say so
                log.warning("Rollout state file %s is open to others (mode %o) and cannot be narrowed: %s", p, mode,
                            e.strerror)
                continue
            log.warning("Rollout state file %s was open to others (mode %o): now %o", p, mode, mode & ~0o077)


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
                _private(path)
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
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back itself after some errors (SQLITE_FULL at COMMIT): only an
                # open transaction is rolled back, and a failing ROLLBACK does not hide the cause.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def _write(self, sql: str, args: tuple) -> None:
        try:
            with self.lock:
                self._db.execute(sql, args)
        except sqlite3.Error as e:  # locked past the busy timeout, disk full, read-only ...
            raise StoreWriteError(self.path, e) from None

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

    def _writes(self, statements: list[tuple[str, tuple]]) -> None:
        """``statements`` in one transaction: all written, or none and ``StoreWriteError``."""
        try:
            with self.transaction() as db:
                for sql, args in statements:
                    db.execute(sql, args)
        except sqlite3.Error as e:
            raise StoreWriteError(self.path, e) from None

    def save(self, name: str, config: rollout_pb2.ModelRollout, *, file_entry: Optional[bytes],
             final_rollback: Optional[str], failed_analyses: int, now: float,
             decisions: tuple[tuple[float, str, str], ...] = ()) -> None:
        """The rollout of ``name`` as it stands, with ``decisions`` ((unix time, who, text) each)
        for the log, in one transaction (``StoreWriteError``: none of it is written)."""
        self._writes([("INSERT INTO rollouts (model, config, file_entry, final_rollback, failed_analyses, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET config = excluded.config, "
                       "file_entry = excluded.file_entry, final_rollback = excluded.final_rollback, "
                       "failed_analyses = excluded.failed_analyses, updated = excluded.updated",
                       (name, config.SerializeToString(), file_entry, final_rollback, failed_analyses, now))]
                     + [_decision(name, d) for d in decisions])

    def delete(self, name: str, decisions: tuple[tuple[float, str, str], ...] = ()) -> None:
        """Remove the rollout of ``name``, with ``decisions`` for the log, in one transaction."""
        self._writes([("DELETE FROM rollouts WHERE model = ?", (name,))] + [_decision(name, d) for d in decisions])

    def log(self, name: str, unix_time: float, who: str, text: str) -> None:
        self._write(*_decision(name, (unix_time, who, text)))

    # ---- shared by worker processes -------------------------------------------------------

    def put_evidence(self, worker: str, rows: list[tuple[str, int, str]], now: float) -> None:
        """``worker``'s evidence windows now, (model, version, JSON) each, replacing its last."""
        try:
            with self.transaction() as db:
                db.execute("DELETE FROM evidence WHERE worker = ?", (worker,))
                db.executemany("INSERT INTO evidence (worker, model, version, updated, data) VALUES (?, ?, ?, ?, ?)",
                               [(worker, m, v, now, data) for m, v, data in rows])
        except sqlite3.Error as e:
            raise StoreWriteError(self.path, e) from None

    def evidence_of(self, model: str, version: int, *, exclude: str, since: float) -> list[tuple[float, str]]:
        """The other workers' windows of ``version`` published since ``since``: (when, JSON)."""
        with self.lock:
            return self._db.execute("SELECT updated, data FROM evidence WHERE model = ? AND version = ? AND "
                                    "worker != ? AND updated >= ?", (model, version, exclude, since)).fetchall()

    def take_lease(self, name: str, holder: str, now: float, ttl_s: float) -> bool:
        """Hold the lease ``name`` for ``ttl_s`` more seconds if it is free, expired or already
        ``holder``'s; True when ``holder`` holds it now. One statement: two workers cannot both win.
        False when another worker holds the database locked; ``StoreWriteError`` when the file
        cannot be written at all (disk full, read-only): no worker can hold the lease then."""
        try:
            with self.lock:
                self._db.execute("INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO "
                                 "UPDATE SET holder = excluded.holder, until = excluded.until "
                                 "WHERE leases.until < ? OR leases.holder = excluded.holder",
                                 (name, holder, now + ttl_s, now))
                row = self._db.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as e:
            if _locked(e):
                return False  # another worker is writing; try at the next round
            raise StoreWriteError(self.path, e) from None
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


def _decision(name: str, d: tuple[float, str, str]) -> tuple[str, tuple]:
    return "INSERT INTO decisions (model, unix_time, who, text) VALUES (?, ?, ?, ?)", (name, *d)
