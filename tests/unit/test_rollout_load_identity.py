"""Evidence belongs to a loaded servable (issue 27, friction 3): a version's load identity
(``server.lifecycle.manager.load_identity``), what the lifecycle manager gives each load, and
the rollout manager's windows, feedback, costs, drift and workers' evidence keyed by it. A
version removed and re-created starts from nothing; feedback for an answer of the earlier build
is refused and counted nowhere."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from protos.errors import Code, ServingError
from server.lifecycle.manager import Manager, load_identity
from server.rollout.facts import VersionFacts
from server.rollout.manager import RolloutManager
from server.rollout.predlog import PredictionLog
from server.rollout.store import RolloutStore
from tests.unit.test_rollout_manager import (
    AUTO_GATES,
    CLASSES,
    Clock,
    FakeManager,
    FakeServable,
    Seq,
    fb,
    make_rm,
    mr_of,
    versions_of,
)


def _version_dir(path, payload: bytes = b"weights") -> str:
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"graph")
    with open(os.path.join(path, "variables", "variables.data"), "wb") as f:
        f.write(payload)
    return str(path)


# ---- load_identity ---------------------------------------------------------------------------


def test_load_identity_is_the_same_for_the_same_files_and_new_for_a_re_created_directory(tmp_path):
    v2 = _version_dir(tmp_path / "2")
    first = load_identity(v2)
    assert first == load_identity(v2)  # every worker, every restart: the same files, the same identity
    assert len(first) == 16 and int(first, 16) >= 0
    # Removed and re-created from the very same files, times kept (cp -p, tar): still a new build.
    shutil.copytree(v2, tmp_path / "copy", copy_function=shutil.copy2)
    shutil.rmtree(v2)
    shutil.copytree(tmp_path / "copy", v2, copy_function=shutil.copy2)
    second = load_identity(v2)
    assert second != first
    # A file changed in place (same size, new time): a new identity too.
    data = os.path.join(v2, "variables", "variables.data")
    with open(data, "wb") as f:
        f.write(b"WEIGHTS")
    os.utime(data, ns=(os.stat(data).st_atime_ns, os.stat(data).st_mtime_ns + 1_000_000))
    assert load_identity(v2) not in (first, second)
    assert load_identity(str(tmp_path / "missing")) == load_identity(str(tmp_path / "missing"))


def test_the_lifecycle_manager_gives_each_load_its_identity_and_says_so(tmp_path):
    v1 = _version_dir(tmp_path / "1")
    loaded = []

    async def main():
        with ThreadPoolExecutor(1) as load, ThreadPoolExecutor(1) as unload:
            m = Manager(lambda name, version, path: FakeServable(), load_executor=load, unload_executor=unload,
                        on_loaded=lambda *args: loaded.append(args))
            m.set_aspired_versions("m", {1: v1})
            await m.run_until_idle()
            return m.snapshot["m"].versions[1].load_id

    load_id = asyncio.run(main())
    assert load_id == load_identity(v1)
    assert loaded == [("m", 1, load_id)]


# ---- the rollout manager ------------------------------------------------------------------------


def _swap(fm: FakeManager, version: int, load_id: str) -> None:
    """The version's directory removed and re-created: the same version, another load."""
    h = fm.snapshot["m"].versions[version]
    h.servable = FakeServable()
    h.load_id = load_id


def _loaded_fm() -> FakeManager:
    fm = FakeManager()
    for v, h in fm.snapshot["m"].versions.items():
        h.load_id = f"build-{v}-a"
    return fm


def _good(rm, n=6):
    ids = []
    for v in (1, 2):
        for _ in range(n):
            rid = rm.observe("m", v, 0.010, "OK", CLASSES, load=f"build-{v}-a")
            ids.append(rid)
    return ids


def test_a_re_created_canary_starts_from_nothing_and_is_held_not_promoted():
    fm = _loaded_fm()
    wall = Clock(1000.0)
    rm = make_rm(fm, mr_of(gates=AUTO_GATES), wall=wall)
    ids = _good(rm)
    for rid in ids[:-1]:  # the last answer keeps its feedback for later
        assert fb(rm, rid, ["3"]).correct == 1
    st = versions_of(rm.status("m"))
    assert (st[2].requests, st[2].feedback, st[2].load_id) == (6, 6 - 1, "build-2-a")
    assert st[2].evidence_since_unix_time == 1000.0
    assert rm.verdict("m").decision == "PROMOTE"
    rm.costs.add("m", 2, 0.5, 10)

    wall.t = 2000.0
    _swap(fm, 2, "build-2-b")  # rm -r 2 && build a new 2; the lifecycle manager says so at its load
    rm.loaded("m", 2, "build-2-b")
    st = versions_of(rm.status("m"))
    assert (st[2].requests, st[2].feedback, st[2].shadow_compared) == (0, 0, 0)
    assert (st[2].load_id, st[2].evidence_since_unix_time) == ("build-2-b", 2000.0)
    assert st[2].cost.predictions == 0 and rm.costs.samples("m", 2) == ()
    assert (st[1].requests, st[1].load_id) == (6, "build-1-a")  # stable untouched
    verdict = rm.verdict("m")
    assert verdict.decision == "HOLD", verdict.reasons  # need more data: never the old build's PROMOTE

    # The old build's last answer: its feedback is refused and counted nowhere.
    with pytest.raises(ServingError) as e:
        fb(rm, ids[-1], ["3"])
    assert e.value.code == Code.FAILED_PRECONDITION
    assert "earlier build of m version 2" in e.value.message
    assert rm.evidence("m", 2).feedback == 0
    # A call of the old build still in flight when the new one loaded: not counted either.
    assert rm.observe("m", 2, 0.010, "OK", CLASSES, load="build-2-a") is None
    assert rm.evidence("m", 2).requests == 0
    # The new build's calls and feedback count.
    rid = rm.observe("m", 2, 0.010, "OK", CLASSES, load="build-2-b")
    assert fb(rm, rid, ["3"]).correct == 1
    e2 = rm.evidence("m", 2)
    assert (e2.requests, e2.feedback, e2.load) == (1, 1, "build-2-b")


def test_a_new_build_is_noticed_without_the_load_hook():
    """The lifecycle manager's hook is not the only way: whatever looks at the version's state
    (a call, status, a verdict) compares the load it holds with the one serving now."""
    fm = _loaded_fm()
    rm = make_rm(fm, mr_of(gates=AUTO_GATES))
    _good(rm)
    assert rm.evidence("m", 2).requests == 6
    _swap(fm, 2, "build-2-b")
    assert rm.evidence("m", 2).requests == 0
    assert rm.verdict("m").decision == "HOLD"


def test_the_same_build_loaded_again_keeps_its_evidence():
    fm = _loaded_fm()
    rm = make_rm(fm, mr_of())
    _good(rm)
    rm.loaded("m", 2, "build-2-a")  # unloaded by the version policy and loaded again: the same files
    assert rm.evidence("m", 2).requests == 6


def test_a_deleted_version_keeps_its_last_evidence_until_a_new_build_loads():
    fm = _loaded_fm()
    rm = make_rm(fm, mr_of())
    ids = _good(rm)
    del fm.snapshot["m"].versions[2]  # rm -r 2: unloaded, not re-created yet
    assert rm.evidence("m", 2).requests == 6
    assert fb(rm, ids[-1], ["3"]).correct == 1  # its own answer, while it is the build last loaded
    fm.snapshot["m"].versions[2] = type(fm.snapshot["m"].versions[1])("m", 2, FakeServable())
    fm.snapshot["m"].versions[2].load_id = "build-2-b"
    assert rm.evidence("m", 2).requests == 0


def test_the_drift_reservoir_and_facts_of_the_old_build_go():
    fm = _loaded_fm()
    reference = {"x": np.random.default_rng(0).normal(size=(200, 1))}
    facts = {"build-2-a": VersionFacts(reference=reference), "build-2-b": VersionFacts(reference=reference)}
    rm = RolloutManager(fm, clock=Clock(), wall=Clock(1000.0), rand=Seq(0.5),
                        facts=lambda name, version: facts.get(getattr(fm.snapshot["m"].versions.get(version),
                                                                      "load_id", None)))
    rm.set(mr_of())
    for _ in range(150):  # far from the reference: drifting
        rm.observe_inputs("m", 2, {"x": np.full((1, 1), 50.0)})
    assert rm.drift("m", 2).drifting
    assert any("drift" in a for a in rm.alarms("m"))
    _swap(fm, 2, "build-2-b")
    rm.loaded("m", 2, "build-2-b")
    assert rm.drift("m", 2) is None
    assert not any("drift" in a for a in rm.alarms("m"))


def test_workers_merge_only_evidence_of_the_same_build(tmp_path):
    """--num_workers: each worker loads on its own. Worker a still serves the old build of v2
    while b has loaded the new one: neither's evidence enters the other's verdict."""
    path = str(tmp_path / "state.sqlite")
    clock, wall = Clock(0.0), Clock(1000.0)
    fa, fb_ = _loaded_fm(), _loaded_fm()

    def worker(fm, pid: int) -> RolloutManager:
        rm = RolloutManager(fm, clock=clock, wall=wall, rand=Seq(0.5), workers=True, store=RolloutStore(path))
        rm.worker_id = f"host:{pid}"
        return rm

    a, b = worker(fa, 1), worker(fb_, 2)
    a.set(mr_of(gates=AUTO_GATES))
    b.sync()
    _good(a)
    _good(b)
    a.sync()
    b.sync()
    assert a.evidence("m", 2).requests == 12  # the same build on both: merged
    wall.t = 1001.0
    _swap(fb_, 2, "build-2-b")
    b.loaded("m", 2, "build-2-b")
    b.sync()
    assert b.evidence("m", 2).requests == 0  # a's old-build calls stay out
    assert versions_of(b.status("m"))[2].evidence_since_unix_time == 1001.0
    assert a.evidence("m", 2).requests == 6  # and b's new-build window stays out of a's
    rid = b.observe("m", 2, 0.010, "OK", CLASSES, load="build-2-b")
    b.sync()
    assert b.evidence("m", 2).requests == 1
    _swap(fa, 2, "build-2-b")  # a loads the new build too: the two agree again
    a.loaded("m", 2, "build-2-b")
    assert a.evidence("m", 2).requests == 1
    assert fb(a, rid, ["3"]).correct == 1


def test_the_prediction_log_keeps_the_load_and_takes_up_an_older_state_file(tmp_path):
    path = str(tmp_path / "state.sqlite")
    db = sqlite3.connect(path)  # a prediction log written by an earlier Verso: no load_id column
    db.execute("CREATE TABLE predictions (request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT "
               "NULL, role TEXT NOT NULL, unix_time REAL NOT NULL, output TEXT, dtype TEXT, shape TEXT, data BLOB, "
               "scores BLOB, classes INTEGER, slice TEXT, feedback_time REAL, labels TEXT, correct INTEGER)")
    db.commit()
    db.close()
    store = RolloutStore(path)
    PredictionLog(store)  # takes the file up
    with store.lock:
        assert "load_id" in {row[1] for row in store.db.execute("PRAGMA table_info(predictions)")}
    store.close()
    fm = _loaded_fm()
    rm = RolloutManager(fm, clock=Clock(), wall=Clock(1000.0), rand=Seq(0.5), store=RolloutStore(path))
    rm.set(mr_of())
    rid = rm.observe("m", 2, 0.01, "OK", CLASSES)  # no load given: the one serving now
    rm.log.flush()
    with rm.store.lock:
        assert rm.store.db.execute("SELECT load_id FROM predictions WHERE request_id = ?",
                                   (rid,)).fetchone() == ("build-2-a",)
