"""Faults in a base path kept to the entry they concern, on real directories: symlink loops,
dangling symlinks, unreadable entries, symlink cycles inside a version, and a version that
failed to load for good (a planted ``99999/``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server.lifecycle.policy import Latest
from server.lifecycle.source import FileSystemSource, ServableConfig, describe_error, fingerprint, scan_base_path


def test_a_symlink_loop_or_dangling_link_affects_only_its_entry(tmp_path):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "2").mkdir()
    os.symlink("3", base / "3")  # a loop on itself
    os.symlink("5", base / "4")  # a loop of two
    os.symlink("4", base / "5")
    os.symlink(tmp_path / "nowhere", base / "6")
    os.symlink("loop", base / "loop")  # not a version name: ignored, as every other name
    os.mkfifo(base / "7")  # a FIFO named like a version: not a version, and no hang
    (base / "8").write_text("a file")
    os.symlink(base / "8", base / "9")
    scan = scan_base_path(str(base))
    assert scan.exists and scan.error == ""
    assert sorted(scan.versions) == [1, 2]
    assert scan.problems == {
        str(base / "3"): "is a symlink loop (too many levels of symbolic links)",
        str(base / "4"): "is a symlink loop (too many levels of symbolic links)",
        str(base / "5"): "is a symlink loop (too many levels of symbolic links)",
        str(base / "6"): f"is a dangling symlink (to {str(tmp_path / 'nowhere')!r}, which does not exist)",
    }


def test_a_base_path_that_cannot_be_listed_says_why(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    assert scan_base_path(str(tmp_path / "loop")).error == "is a symlink loop (too many levels of symbolic links)"
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert scan_base_path(str(tmp_path / "dangling")).error.startswith("is a dangling symlink (to ")
    (tmp_path / "file").write_text("x")
    assert scan_base_path(str(tmp_path / "file")).error == "is not a directory"
    assert scan_base_path(str(tmp_path / "missing")).error == "does not exist"
    assert not scan_base_path(str(tmp_path / "loop")).exists


def test_a_symlink_cycle_inside_a_version_is_walked_once(tmp_path):
    """``a -> .``, ``b -> .``, ``c -> .`` made the walk 3^40 directories long: the source's one
    thread (every model's polls) hung for good."""
    v = tmp_path / "1"
    (v / "variables").mkdir(parents=True)
    (v / "saved_model.pb").write_bytes(b"x" * 10)
    for name in ("a", "b", "c"):
        os.symlink(".", v / name)
    os.symlink("..", v / "variables" / "up")
    start = time.monotonic()
    entries, size, _ = fingerprint(str(v))
    assert time.monotonic() - start < 1.0
    assert size == 10 and entries == 6  # saved_model.pb, variables, a, b, c, variables/up


@pytest.fixture
def open_tmp():
    """A directory that another user can reach (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="verso-faults-"))
    path.chmod(0o755)
    yield path
    for d, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o755, follow_symlinks=False)
    shutil.rmtree(path)


def test_permission_denied_is_reported_not_fatal(open_tmp):
    """Root reads everything, so the scan runs in a forked child that has become nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    tmp_path = open_tmp
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "2").mkdir()
    (base / "3").mkdir()
    (base / "3").chmod(0)  # listed by the base path, but not readable
    (tmp_path / "private").mkdir()
    os.symlink(tmp_path / "private" / "x", base / "4")  # stat fails: EACCES on the way
    (tmp_path / "private").chmod(0)
    for p in (tmp_path, base, base / "1", base / "2"):
        p.chmod(0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as nobody (no capabilities), the scan, its result on the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            s = scan_base_path(str(base))
            os.write(write, json.dumps([sorted(s.versions), s.problems, s.error]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    versions, problems, error = json.loads(out)
    assert versions == [1, 2] and error == ""
    assert problems == {str(base / "3"): "cannot be read (permission denied)",
                        str(base / "4"): "cannot be read (permission denied)"}


def _source(base: Path, emitted: list, failed=None, clock=None):
    return FileSystemSource([ServableConfig("m", str(base), Latest(1))], lambda n, vs: emitted.append(dict(vs)),
                            settle_seconds=0, executor=ThreadPoolExecutor(1), clock=clock or (lambda: 0.0),
                            failed=failed)


def test_entry_problems_are_logged_once_again_when_changed_and_when_mended(tmp_path, caplog):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    os.symlink("3", base / "3")
    emitted: list = []
    src = _source(base, emitted)
    caplog.set_level(logging.INFO, logger="verso.source")

    def lines():
        out = [r.getMessage() for r in caplog.records if r.name == "verso.source"]
        caplog.clear()
        return out

    async def main():
        await src.poll()
        assert emitted == [{1: str(base / "1")}]
        (base / "2").mkdir()  # the model still updates beside the broken entry
        await src.poll()
        assert emitted[-1] == {2: str(base / "2")}
        for _ in range(5):
            await src.poll()
        loop_lines = [line for line in lines() if "symlink loop" in line]
        assert loop_lines == [f"Version entry {str(base / '3')!r} of model m is a symlink loop (too many levels of "
                              "symbolic links); it is left out (the model's other versions are not affected)"]
        os.unlink(base / "3")
        os.symlink(tmp_path / "nowhere", base / "3")  # a different problem: logged again
        await src.poll()
        await src.poll()
        assert [line for line in lines() if "dangling" in line] and len(caplog.records) == 0
        os.unlink(base / "3")  # mended
        await src.poll()
        await src.poll()
        assert lines() == [f"Version entry {str(base / '3')!r} of model m no longer is a dangling symlink"]

    asyncio.run(main())


def test_base_path_problem_is_precise_and_logged_once(tmp_path, caplog):
    base = tmp_path / "m"
    os.symlink("m", base)  # the base path is a loop
    emitted: list = []
    src = _source(base, emitted)
    caplog.set_level(logging.INFO, logger="verso.source")

    async def main():
        for _ in range(4):
            await src.poll()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [f"Base path {base} of model m is a symlink loop (too many levels of symbolic links); "
                          "the model is NOT_FOUND until it can be listed (what is loaded keeps serving)"]
        assert not any("does not exist" in r.getMessage() for r in caplog.records)
        os.unlink(base)
        (base / "1").mkdir(parents=True)
        await src.poll()
        assert emitted == [{1: str(base / "1")}]
        assert f"Base path {base} of model m can be listed again" in caplog.text

    asyncio.run(main())


def test_a_version_that_failed_for_good_no_longer_holds_updates_back(tmp_path):
    """A planted ``99999/`` that is no model: once its load has failed for good, the policy
    picks among the other versions, and a new good version still loads; when the planted
    directory is replaced, it gets a fresh attempt."""
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    emitted: list = []
    failed: set[int] = set()
    src = _source(base, emitted, failed=lambda name: set(failed))

    async def main():
        await src.poll()
        assert emitted == [{1: str(base / "1")}]
        (base / "99999" / "plugins").mkdir(parents=True)
        await src.poll()
        assert emitted[-1] == {99999: str(base / "99999")}  # tried, as TF Serving would
        await src.poll()
        assert len(emitted) == 2  # while its load is going on (or retried), nothing moves
        failed.add(99999)  # the manager: END with an error
        await src.poll()
        assert emitted[-1] == {1: str(base / "1")}
        (base / "2").mkdir()
        await src.poll()
        assert emitted[-1] == {2: str(base / "2")}  # updates go on
        n = len(emitted)
        await src.poll()
        assert len(emitted) == n
        # The directory is replaced (an operator mends it): a fresh attempt.
        os.rename(base / "99999", tmp_path / "old")
        (base / "99999").mkdir()
        await src.poll()
        assert emitted[-1] == {99999: str(base / "99999")}

    asyncio.run(main())


def test_many_broken_entries_are_summed_up_not_flooded(tmp_path, caplog):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    for v in range(100, 150):
        os.symlink(str(v), base / str(v))
    emitted: list = []
    src = _source(base, emitted)
    caplog.set_level(logging.INFO, logger="verso.source")

    async def main():
        await src.poll()
        await src.poll()

    asyncio.run(main())
    assert emitted == [{1: str(base / "1")}]
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "symlink loop" in line]) == 20
    assert "... and 30 more version entries of model m that cannot be used" in lines
