"""The file-system source: scanning, settling (manual clock) and aspired sets, stepped by hand."""

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from server.lifecycle.policy import All, Latest
from server.lifecycle.source import FileSystemSource, ScanResult, ServableConfig, SettleTracker, scan_base_path


def _scan(versions, fps, exists=True):
    return ScanResult(exists, {v: f"/b/{v}" for v in versions}, {v: (0, v, 0) for v in versions},
                      {v: fps[v] for v in fps})


def test_scan_lists_numeric_dirs_only(tmp_path):
    for name in ("1", "0002", "10", "abc", "-3", "3.5"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    scan = scan_base_path(str(tmp_path))
    assert scan.exists and sorted(scan.versions) == [1, 2, 10]
    assert set(scan.fingerprints) == {1, 2, 10}
    skip = {1: scan.identities[1]}
    assert set(scan_base_path(str(tmp_path), skip).fingerprints) == {2, 10}
    assert not scan_base_path(str(tmp_path / "missing")).exists


def test_first_scan_is_trusted_later_dirs_must_settle():
    t = SettleTracker(settle_seconds=2.0)
    seen = t.observe("m", _scan([1], {1: (1, 1, 1)}), now=0.0, trust_existing=True)
    assert seen.settled == {1} and seen.wait is None
    seen = t.observe("m", _scan([1, 2], {2: (1, 10, 5)}), now=1.0)
    assert seen.settled == {1} and seen.wait == 2.0
    seen = t.observe("m", _scan([1, 2], {2: (2, 20, 6)}), now=2.5)  # still being written
    assert seen.settled == {1} and seen.wait == 2.0
    seen = t.observe("m", _scan([1, 2], {2: (2, 20, 6)}), now=4.0)
    assert seen.settled == {1} and seen.wait == 0.5
    seen = t.observe("m", _scan([1, 2], {2: (2, 20, 6)}), now=4.5)
    assert seen.settled == {1, 2} and seen.wait is None


def test_removed_dir_must_settle_again_and_replaced_dir_is_reported():
    t = SettleTracker(settle_seconds=1.0)
    t.observe("m", _scan([1, 2], {1: (1, 1, 1), 2: (1, 1, 1)}), now=0.0, trust_existing=True)
    assert t.observe("m", _scan([1], {}), now=1.0).settled == {1}
    assert t.observe("m", _scan([1, 2], {2: (1, 1, 1)}), now=2.0).settled == {1}
    # Replaced in place by a new directory (new identity) while settled.
    t.observe("m", _scan([1, 2], {2: (1, 1, 1)}), now=3.0)
    scan = ScanResult(True, {1: "/b/1", 2: "/b/2"}, {1: (0, 1, 0), 2: (0, 2, 99)}, {2: (3, 3, 3)})
    seen = t.observe("m", scan, now=4.0)
    assert seen.settled == {1} and seen.replaced == {2}
    seen = t.observe("m", scan, now=5.0)
    assert seen.settled == {1, 2} and seen.replaced == frozenset()


def test_missing_base_path_forgets_nothing_and_late_base_paths_settle():
    t = SettleTracker(settle_seconds=1.0)
    t.observe("m", _scan([1, 2], {1: (1, 1, 1), 2: (1, 1, 1)}), now=0.0, trust_existing=True)
    assert t.observe("m", _scan([], {}, exists=False), now=1.0).settled == frozenset()
    assert t.observe("m", _scan([1, 2], {}), now=2.0).settled == {1, 2}  # back, unchanged: still settled
    # A model whose base path first appears after start-up is not trusted blindly.
    assert t.observe("late", _scan([], {}, exists=False), now=0.0, trust_existing=True).settled == frozenset()
    assert t.observe("late", _scan([3], {3: (1, 1, 1)}), now=1.0).settled == frozenset()
    assert t.observe("late", _scan([3], {3: (1, 1, 1)}), now=2.0).settled == {3}


def test_zero_settle_interval_settles_at_once():
    t = SettleTracker(settle_seconds=0)
    t.observe("m", _scan([], {}), now=0.0)
    assert t.observe("m", _scan([5], {5: (1, 1, 1)}), now=0.0).settled == {5}


def test_source_emits_full_aspired_sets(tmp_path):
    emitted = []
    clock = [0.0]
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "2").mkdir()

    async def main():
        with ThreadPoolExecutor(1) as pool:
            src = FileSystemSource([ServableConfig("m", str(base), Latest(1)),
                                    ServableConfig("all", str(base), All()),
                                    ServableConfig("gone", str(tmp_path / "nope"), Latest(1))],
                                   lambda n, vs: emitted.append((n, dict(vs))), settle_seconds=1.0,
                                   executor=pool, clock=lambda: clock[0])
            await src.poll()
            assert emitted == [("m", {2: str(base / "2")}), ("all", {1: str(base / "1"), 2: str(base / "2")})]
            emitted.clear()
            await src.poll()
            assert emitted == []  # unchanged sets are not re-emitted
            (base / "3").mkdir()
            await src.poll()
            assert emitted == [] and src.next_poll_in == 1.0
            clock[0] = 1.0
            await src.poll()
            assert emitted == [("m", {3: str(base / "3")}),
                               ("all", {1: str(base / "1"), 2: str(base / "2"), 3: str(base / "3")})]
            emitted.clear()
            shutil.rmtree(base)  # the base path vanishes: what was emitted stays
            await src.poll()
            assert emitted == []
            os.makedirs(base)  # back, but empty: every version is un-aspired
            await src.poll()
            assert emitted == [("m", {}), ("all", {})]

    asyncio.run(main())


def test_a_vanished_version_keeps_serving_while_its_successor_settles(tmp_path):
    """Publish v2 and delete v1 at once: v1 stays aspired until v2 has settled, then the set
    moves to v2 in one step (the manager loads v2 before unloading v1), never to nothing."""
    emitted = []
    clock = [0.0]
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            src = FileSystemSource([ServableConfig("m", str(base), Latest(1))],
                                   lambda n, vs: emitted.append(dict(vs)), settle_seconds=1.0,
                                   executor=pool, clock=lambda: clock[0])
            await src.poll()
            assert emitted == [{1: str(base / "1")}]
            (base / "2").mkdir()
            shutil.rmtree(base / "1")
            await src.poll()
            assert emitted == [{1: str(base / "1")}] and src.next_poll_in == 1.0
            clock[0] = 1.0
            await src.poll()
            assert emitted == [{1: str(base / "1")}, {2: str(base / "2")}]
            # Without a successor, deleting the serving version un-aspires it at once (as TF Serving).
            shutil.rmtree(base / "2")
            await src.poll()
            assert emitted[-1] == {}

    asyncio.run(main())


def test_a_version_being_deleted_while_its_successor_settles_keeps_serving(tmp_path):
    """A scan that catches ``rm -r 1`` half-way sees v1 changed (a "replaced" directory): it
    still stays aspired while the new v2 settles."""
    emitted = []
    clock = [0.0]
    base = tmp_path / "m"
    (base / "1" / "variables").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_text("x")

    async def main():
        with ThreadPoolExecutor(1) as pool:
            src = FileSystemSource([ServableConfig("m", str(base), Latest(1))],
                                   lambda n, vs: emitted.append(dict(vs)), settle_seconds=1.0,
                                   executor=pool, clock=lambda: clock[0])
            await src.poll()
            (base / "2").mkdir()
            os.remove(base / "1" / "saved_model.pb")  # rm -r in progress: v1's directory changes
            os.rmdir(base / "1" / "variables")
            await src.poll()
            assert emitted == [{1: str(base / "1")}]
            shutil.rmtree(base / "1")
            clock[0] = 1.0
            await src.poll()
            assert emitted == [{1: str(base / "1")}, {2: str(base / "2")}]

    asyncio.run(main())


def test_pinned_versions_stay_aspired_whatever_the_policy(tmp_path):
    """A rollout's pins: aspired while on disk and settled, on top of the policy's choice."""
    emitted = []
    base = tmp_path / "m"
    for v in (1, 2, 3):
        (base / str(v)).mkdir(parents=True)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            src = FileSystemSource([ServableConfig("m", str(base), Latest(1))],
                                   lambda n, vs: emitted.append(sorted(vs)), settle_seconds=0.0,
                                   executor=pool, clock=lambda: 0.0)
            await src.poll()
            assert emitted == [[3]] and src.settled_versions("m") == {1, 2, 3}
            src.pin("m", {1, 2})
            await src.poll()
            assert emitted[-1] == [1, 2, 3]
            src.pin("m", {1, 7})  # a pin that is not on disk aspires nothing
            await src.poll()
            assert emitted[-1] == [1, 3]
            shutil.rmtree(base / "1")  # a pinned version that vanishes is no longer aspired
            await src.poll()
            assert emitted[-1] == [3]
            src.pin("m", set())
            await src.poll()
            assert emitted[-1] == [3] and src.settled_versions("m") == {2, 3}

    asyncio.run(main())
