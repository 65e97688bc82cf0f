"""The file-system source: which version directories exist, which have settled, which
are aspired.

Split in three so each part can be tested alone:
* ``scan_base_path`` (blocking I/O, run in an executor): lists a model's base path and
  fingerprints the version directories not yet known to be settled;
* ``SettleTracker`` (pure, given a clock value): a version directory becomes a candidate
  only after its fingerprint (file count, total size, newest mtime/ctime) stood unchanged
  for ``settle_seconds``. TF Serving loads half-copied directories (#1086); Verso doesn't.
  Directories present at a model's first scan are trusted at once (nothing was watching
  them being written), so start-up is not delayed;
* ``FileSystemSource`` (owned by the event loop): one ``poll()`` scans every model, applies
  its version policy to the settled versions and hands the full aspired set to the sink.

Faults are kept to the entry they concern: a version entry that is a symlink loop, a dangling
symlink or cannot be read is left out (the model's other versions still load and update), and
what is wrong with which path is logged once, again only when it changes or is mended. A
symlink cycle inside a version directory is walked once. A version whose load failed for good
is left out of the version policy until its directory changes, so a planted or broken
``99999/`` does not hold the model's updates back for ever (TF Serving's policy keeps aspiring
it, and the model never moves to a newer good version below it).

Wake-ups come from watchdog events (fast pickup) and from a periodic poll (the fallback
that always works); both only *trigger* ``poll()``, which is the single place that decides.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import stat
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterator, Mapping, Optional

from server.lifecycle.policy import Specific, VersionPolicy, aspired_versions

log = logging.getLogger("verso.source")

_VERSION_RE = re.compile(r"^[0-9]+$")
_MAX_VERSION = 2**63 - 1
_PROBLEM_LINES = 20  # per model and poll: a base path full of broken links is not a flood

Fingerprint = tuple[int, int, int]  # (entries, total bytes, newest mtime/ctime in ns)


@dataclass(frozen=True)
class ServableConfig:
    """What the source watches for one model."""

    name: str
    base_path: str
    policy: VersionPolicy


# (st_dev, st_ino, st_ctime_ns) of a version directory: a directory replaced by another (even
# one that reuses the inode) or changed at its top level gets a new identity.
Identity = tuple[int, int, int]


@dataclass(frozen=True)
class ScanResult:
    exists: bool
    versions: Mapping[int, str]                  # version -> directory
    identities: Mapping[int, Identity]           # version -> directory identity
    fingerprints: Mapping[int, Fingerprint]      # only for versions not skipped
    # Version entries left out, path -> what is wrong with it ("is a symlink loop", ...).
    problems: Mapping[str, str] = field(default_factory=dict)
    # Why the base path itself cannot be listed ("does not exist", ...); "" when it can.
    error: str = ""


def describe_error(path: str, e: OSError) -> str:
    """What is wrong with ``path``, from the error that touching it raised, in words an operator
    can act on (the base path's or a version entry's log line)."""
    if e.errno == errno.ELOOP:
        return "is a symlink loop (too many levels of symbolic links)"
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        try:
            target = os.readlink(path)
        except OSError:  # not a symlink
            return "is not a directory" if e.errno == errno.ENOTDIR and os.path.lexists(path) else "does not exist"
        if os.path.exists(path):
            return f"is not a directory (a symlink to {target!r})"
        return f"is a dangling symlink (to {target!r}, which does not exist)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)"
    return f"cannot be read ({e.strerror or e})"


def walk_once(path: str) -> Iterator[tuple[str, Optional[os.stat_result], bool]]:
    """Every entry under the directory ``path``: (its path, its stat with symlinks followed, or
    None when that fails, whether it is a directory). Symlinks are followed, but each directory
    is walked once: a link back up the tree (``a -> .``) would otherwise make the walk
    exponential and hold the calling thread for good. A directory that cannot be listed is
    skipped. Never raises."""
    stack = [path]
    seen: set[tuple[int, int]] = set()
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                for e in it:
                    try:
                        est, is_dir = e.stat(follow_symlinks=True), e.is_dir(follow_symlinks=True)
                    except OSError:
                        yield e.path, None, False
                        continue
                    if is_dir:
                        stack.append(e.path)
                    yield e.path, est, is_dir
        except OSError:
            continue


def fingerprint(path: str) -> Fingerprint:
    """A cheap summary of a directory tree that changes whenever anything under it is written:
    (entries, bytes of its files, newest mtime or ctime of the tree)."""
    entries = size = newest = 0
    try:
        st = os.stat(path)
    except OSError:
        return entries, size, newest
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    for _, st, is_dir in walk_once(path):
        entries += 1
        if st is None:
            continue
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        if not is_dir:
            size += st.st_size
    return entries, size, newest


LOAD_IDENTITY_ENTRIES = 100_000  # entries of a version directory that its identity hashes, at most


def load_identity(path: str) -> str:
    """The identity of the version directory ``path`` as it is now (16 hex digits): a hash of
    the directory's inode and ctime (a directory removed and re-created gets a new ctime, even
    on a reused inode, and ``cp -p``/``tar`` cannot set ctime) and of each entry under it
    (relative path, size, mtime; ``walk_once``). The same files give the same identity in
    every process and across restarts; a rebuild, a re-creation or a changed file gives a new
    one. Never raises (an unreadable part counts as missing). Blocking: call it in a load
    thread."""
    h = hashlib.sha256()
    try:
        st = os.stat(path)
        h.update(f"{st.st_ino}:{st.st_ctime_ns}\n".encode())
    except OSError:
        h.update(b"missing\n")
    entries = []
    for entry, st, is_dir in walk_once(path):
        if st is None:
            continue
        entries.append((os.path.relpath(entry, path), 0 if is_dir else st.st_size, st.st_mtime_ns))
        if len(entries) >= LOAD_IDENTITY_ENTRIES:
            break
    for rel, size, mtime in sorted(entries):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def scan_base_path(base_path: str, skip: Mapping[int, Identity] = {}) -> ScanResult:
    """List the numeric version directories of a model; fingerprint each one unless it is in
    ``skip`` with the same identity (settled and not replaced since).

    Never raises and never logs (the source logs, once per problem). A base path that cannot
    be listed gives ``exists=False`` and the reason in ``error``; a numeric entry that cannot be
    followed or read (a symlink loop, a dangling symlink, no permission) is left out with the
    reason in ``problems``, and the other versions are listed as usual. Files named like a
    version are not versions, and neither are other names (as before: silently)."""
    candidates: list[tuple[str, str]] = []
    try:
        with os.scandir(base_path) as it:
            for e in it:
                if _VERSION_RE.match(e.name):
                    candidates.append((e.name, e.path))
    except OSError as e:
        return ScanResult(False, {}, {}, {}, error=describe_error(base_path, e))
    versions: dict[int, str] = {}
    identities: dict[int, Identity] = {}
    problems: dict[str, str] = {}
    for name, path in sorted(candidates):
        v = int(name)
        if v > _MAX_VERSION or v in versions:
            continue
        try:
            st = os.stat(path)
        except OSError as e:
            problems[path] = describe_error(path, e)
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            problems[path] = describe_error(path, PermissionError(errno.EACCES, "Permission denied"))
            continue
        versions[v] = path
        identities[v] = (st.st_dev, st.st_ino, st.st_ctime_ns)
    fps = {v: fingerprint(p) for v, p in versions.items() if skip.get(v) != identities[v]}
    return ScanResult(True, versions, identities, fps, problems)


@dataclass(frozen=True)
class Observation:
    settled: frozenset[int]      # candidates for the version policy
    replaced: frozenset[int]     # settled once, replaced by a new directory, settling again
    wait: Optional[float]        # seconds until a pending directory could settle; None if none
    settling: frozenset[int] = frozenset()  # present, not settled yet (new or replaced)


class SettleTracker:
    """Decides when a version directory has stopped changing. Pure: the caller passes ``now``.

    A settled directory that is replaced by a new one (``rm -r 2; cp -r new 2``) or changed at
    its top level counts as having left and come back: it settles again, and meanwhile is
    reported as ``replaced`` so the version policy still counts it (no older version is loaded
    instead). Only directories seen by the source's very first scan (``trust_existing``) are
    trusted without settling: a base path that appears later may still be being copied.
    A base path that is missing changes nothing: when it returns, unchanged versions are still
    settled.
    """

    def __init__(self, settle_seconds: float):
        self.settle_seconds = settle_seconds
        self._settled: dict[tuple[str, int], Identity] = {}
        self._pending: dict[tuple[str, int], tuple[Fingerprint, float]] = {}
        self._replaced: set[tuple[str, int]] = set()
        self._known_models: set[str] = set()

    def settled_identities(self, name: str) -> dict[int, Identity]:
        return {v: ident for (n, v), ident in self._settled.items() if n == name}

    def observe(self, name: str, scan: ScanResult, now: float, trust_existing: bool = False) -> Observation:
        """Feed one scan of ``name``; ``trust_existing`` on the server's start-up scan."""
        if not scan.exists:
            return Observation(frozenset(), frozenset(), None)
        first_scan = trust_existing and name not in self._known_models
        self._known_models.add(name)
        present = set(scan.versions)
        # Forget directories that went away: if they come back they must settle again.
        for table in (self._settled, self._pending):
            for key in [k for k in table if k[0] == name and k[1] not in present]:
                del table[key]
        self._replaced = {k for k in self._replaced if k[0] != name or k[1] in present}
        wait: Optional[float] = None
        for v, fp in scan.fingerprints.items():
            key = (name, v)
            identity = scan.identities[v]
            if key in self._settled:
                if self._settled[key] == identity:
                    continue
                del self._settled[key]
                self._replaced.add(key)
            if first_scan or self.settle_seconds <= 0:
                self._settle(key, identity)
                continue
            prev = self._pending.get(key)
            if prev is None or prev[0] != fp:
                self._pending[key] = (fp, now)
                since = now
            else:
                since = prev[1]
            remaining = since + self.settle_seconds - now
            if remaining <= 0:
                self._settle(key, identity)
            else:
                wait = remaining if wait is None else min(wait, remaining)
        settled = frozenset(v for v in present if (name, v) in self._settled)
        replaced = frozenset(v for v in present if (name, v) in self._replaced)
        return Observation(settled, replaced, wait, frozenset(present) - settled)

    def forget(self, name: str) -> None:
        """Drop everything known about ``name`` (it is no longer configured)."""
        for table in (self._settled, self._pending):
            for key in [k for k in table if k[0] == name]:
                del table[key]
        self._replaced = {k for k in self._replaced if k[0] != name}
        self._known_models.discard(name)

    def _settle(self, key: tuple[str, int], identity: Identity) -> None:
        self._settled[key] = identity
        self._pending.pop(key, None)
        self._replaced.discard(key)


AspiredSink = Callable[[str, Mapping[int, str]], None]


class FileSystemSource:
    """Polls model base paths and emits aspired versions. Owned by the event loop.

    ``poll()`` is the one step; the background loop calls ``run_once()`` forever, which polls
    every ``poll_wait_seconds``, or sooner when ``trigger()`` is called or a directory is
    settling.

    ``failed(name)``, when given, names the versions of ``name`` whose load failed for good (the
    manager's END with an error). Such a version is no candidate for the version policy while
    its directory is the one that was aspired when it failed: the policy picks among the others
    (a new good version below a broken higher one still loads). When the directory is replaced
    it is a candidate again, and the manager makes a fresh attempt. Pinned versions (rollouts)
    stay aspired whatever happened to them.
    """

    def __init__(self, models: list[ServableConfig], sink: AspiredSink, *, settle_seconds: float,
                 executor: Executor, clock: Callable[[], float],
                 failed: Optional[Callable[[str], Collection[int]]] = None):
        self._models: dict[str, ServableConfig] = {}
        self._trust: set[str] = set()  # models whose next scan may trust existing directories
        self._sink = sink
        self._executor = executor
        self._clock = clock
        self._failed = failed
        self._tracker = SettleTracker(settle_seconds)
        self._emitted: dict[str, dict[int, str]] = {}
        # The identity of each emitted version's directory when it was last aspired: a failure
        # is held against that directory only.
        self._aspired_identity: dict[tuple[str, int], Identity] = {}
        self._missing_logged: dict[str, str] = {}  # model -> why its base path cannot be listed
        self._problems_logged: dict[str, dict[str, str]] = {}  # model -> {entry path: problem}
        self._failed_logged: set[tuple[str, int, Identity]] = set()
        self._empty_logged: set[str] = set()
        self._specific_missing_logged: set[tuple[str, int]] = set()
        self._pins: dict[str, frozenset[int]] = {}  # versions aspired whatever the policy (rollouts)
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()  # the background loop and a reload may both poll
        self.next_poll_in: Optional[float] = None
        self.set_models(models)

    @property
    def models(self) -> list[ServableConfig]:
        return list(self._models.values())

    def set_models(self, models: list[ServableConfig]) -> list[str]:
        """Watch exactly ``models`` from now on; returns the names no longer watched.

        A removed model gets an empty aspired set (its versions drain and unload). A newly
        added model's directories are trusted at its first scan if its base path exists then
        (the operator configured a model that is already there); one that appears later must
        settle like any new version.
        """
        new = {m.name: m for m in models}
        removed = [n for n in self._models if n not in new]
        for name in new:
            if name not in self._models:
                self._trust.add(name)
        self._models = new
        for name in removed:
            self._trust.discard(name)
            self._tracker.forget(name)
            self._missing_logged.pop(name, None)
            self._problems_logged.pop(name, None)
            self._empty_logged.discard(name)
            self._aspired_identity = {k: i for k, i in self._aspired_identity.items() if k[0] != name}
            if self._emitted.pop(name, None):
                self._sink(name, {})
        return removed

    def pin(self, name: str, versions) -> None:
        """Keep ``versions`` of model ``name`` aspired whatever its version policy, as long as
        they are on disk (a rollout's stable and canary); an empty set unpins. Takes effect at
        the next poll (``trigger``)."""
        if versions:
            self._pins[name] = frozenset(versions)
        else:
            self._pins.pop(name, None)
        self.trigger()

    def settled_versions(self, name: str) -> set[int]:
        """The versions of ``name`` on disk and settled at the last poll."""
        return set(self._tracker.settled_identities(name))

    def trigger(self) -> None:
        """Ask for a poll soon. Call on the loop; from another thread (watchdog) go through
        ``loop.call_soon_threadsafe``."""
        self._wake.set()

    async def poll(self) -> None:
        """Scan every model once and emit changed aspired sets (one poll at a time)."""
        async with self._poll_lock:
            await self._poll()

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake.clear()
        waits = []
        for m in list(self._models.values()):
            skip = self._tracker.settled_identities(m.name)
            scan = await loop.run_in_executor(self._executor, scan_base_path, m.base_path, skip)
            if m.name not in self._models:  # removed while we scanned
                continue
            seen = self._tracker.observe(m.name, scan, self._clock(), trust_existing=m.name in self._trust)
            self._trust.discard(m.name)
            if seen.wait is not None:
                waits.append(seen.wait)
            self._log_problems(m, scan)
            if not scan.exists:
                continue  # keep what was emitted: a vanished mount must not unload a serving model
            if not scan.versions:
                if m.name not in self._empty_logged:
                    self._empty_logged.add(m.name)
                    log.warning("No versions of servable %s found under base path %s. Did you forget to "
                                "name your leaf directory as a number (eg. '/1/')?", m.name, m.base_path)
            else:
                self._empty_logged.discard(m.name)
            # A replaced directory still counts for the policy, so that while it settles again
            # the policy does not fall back to an older version; it is just not aspired yet.
            wanted = aspired_versions((seen.settled | seen.replaced) - self._failed_here(m, scan), m.policy)
            wanted = (wanted | (self._pins.get(m.name, frozenset()) & seen.settled)) - seen.replaced
            if isinstance(m.policy, Specific):
                for v in sorted(m.policy.versions - set(scan.versions)):
                    if (m.name, v) not in self._specific_missing_logged:
                        self._specific_missing_logged.add((m.name, v))
                        log.warning("Version %d of servable %s, which was requested to be served as a "
                                    "'specific' version in the servable's version policy, was not found in "
                                    "the file system", v, m.name)
            aspired = {v: scan.versions[v] for v in sorted(wanted)}
            previous = self._emitted.get(m.name, {})
            if seen.settling - set(previous) and set(previous) - seen.settled:
                # An aspired version is going away (deleted, or changing while rm -r runs) while
                # a new one is still settling (an operator publishing v2 and deleting v1): the
                # policy's answer waits on the new one, so what serves keeps serving until then.
                # TF Serving, which does not settle, loads v2 before unloading v1; so does Verso,
                # a moment later.
                continue
            if previous != aspired:
                self._emitted[m.name] = aspired
                self._sink(m.name, aspired)
            for v in aspired:
                self._aspired_identity[(m.name, v)] = scan.identities[v]
        self.next_poll_in = min(waits) if waits else None

    def _failed_here(self, m: ServableConfig, scan: ScanResult) -> set[int]:
        """The versions of ``m`` that failed to load from the very directory now on disk."""
        if self._failed is None:
            return set()
        out = set()
        for v in self._failed(m.name):
            identity = self._aspired_identity.get((m.name, v))
            if identity is not None and identity == scan.identities.get(v):
                out.add(v)
                if (m.name, v, identity) not in self._failed_logged:
                    self._failed_logged.add((m.name, v, identity))
                    log.warning("Version %d of servable %s failed to load; the version policy passes it "
                                "over until its directory %s changes", v, m.name, scan.versions[v])
        return out

    def _log_problems(self, m: ServableConfig, scan: ScanResult) -> None:
        """Log what is wrong with ``m``'s base path and its version entries once per problem,
        again when it changes, and when it is mended (never every poll)."""
        was = self._missing_logged.get(m.name)
        if scan.error != (was or ""):
            if scan.error:
                self._missing_logged[m.name] = scan.error
                log.error("Base path %s of model %s %s; the model is NOT_FOUND until it can be listed "
                          "(what is loaded keeps serving)", m.base_path, m.name, scan.error)
            else:
                del self._missing_logged[m.name]
                log.info("Base path %s of model %s can be listed again", m.base_path, m.name)
        if not scan.exists:
            return  # the entries' problems stand until the base path can be listed again
        before = self._problems_logged.get(m.name, {})
        new = [(path, problem) for path, problem in sorted(scan.problems.items()) if before.get(path) != problem]
        for path, problem in new[:_PROBLEM_LINES]:
            log.error("Version entry %r of model %s %s; it is left out (the model's other versions are "
                      "not affected)", path, m.name, problem)
        if len(new) > _PROBLEM_LINES:
            log.error("... and %d more version entries of model %s that cannot be used", len(new) - _PROBLEM_LINES,
                      m.name)
        mended = sorted(set(before) - set(scan.problems))
        for path in mended[:_PROBLEM_LINES]:
            log.info("Version entry %r of model %s no longer %s", path, m.name, _mended(before[path]))
        if len(mended) > _PROBLEM_LINES:
            log.info("... and %d more version entries of model %s mended or gone", len(mended) - _PROBLEM_LINES,
                     m.name)
        if scan.problems:
            self._problems_logged[m.name] = dict(scan.problems)
        else:
            self._problems_logged.pop(m.name, None)

    async def run_once(self, poll_wait_seconds: float) -> None:
        """Wait for the next poll time (``poll_wait_seconds``, a trigger, or a settling
        directory), then poll. The background loop calls this forever."""
        timeout = poll_wait_seconds
        if self.next_poll_in is not None:
            timeout = min(timeout, self.next_poll_in)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.01))
        except asyncio.TimeoutError:
            pass
        await self.poll()


def _mended(problem: str) -> str:
    """"is a symlink loop (...)" -> "is a symlink loop" (the fix's log line: no stale detail)."""
    return problem.split(" (", 1)[0]


class DirectoryWatcher:
    """watchdog on every existing base path (recursive), for fast pickup.

    ``on_change`` is called from watchdog's thread for every event; pass something
    thread-safe (``loop.call_soon_threadsafe(source.trigger)``). If watchdog cannot watch
    (no inotify, watch limit reached) the failure is logged once and polling carries on.
    """

    def __init__(self, on_change: Callable[[], None]):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        # watchdog warns when a directory renamed into a watched tree (an operator's atomic
        # `mv .2.tmp 2`) gets its watch again; harmless, and not the operator's concern.
        warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning,
                                module="watchdog")

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # noqa: D401 - watchdog's callback name
                if event.event_type not in ("opened", "closed_no_write"):
                    on_change()

        self._handler = _Handler()
        self._observer = Observer()
        self._watches: dict[str, object] = {}
        self._failed: set[str] = set()
        self._started = False

    def sync(self, paths: list[str]) -> None:
        """Watch exactly those of ``paths`` that exist now (call after every poll)."""
        wanted = {p for p in paths if os.path.isdir(p)}
        for p in list(self._watches):
            if p not in wanted:
                try:
                    self._observer.unschedule(self._watches.pop(p))
                except Exception:  # already gone with its directory
                    pass
        for p in wanted - set(self._watches) - self._failed:
            try:
                self._watches[p] = self._observer.schedule(self._handler, p, recursive=True)
            except Exception as e:
                self._failed.add(p)
                log.warning("Cannot watch %s with watchdog (%s); relying on polling", p, e)
        if not self._started:
            self._observer.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=5)
