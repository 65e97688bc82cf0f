"""Rollout state in SQLite (server/rollout/store.py) across restarts of the rollout manager: a
final ROLLBACK and a promotion stand, an unchanged config file undoes nothing and an edited one
is a newer decision, the decision log keeps who and why; bad files stop with one line; a locked
database is retried, then refused with one line."""

from __future__ import annotations

import sqlite3

import pytest

from protos import rollout_pb2
from protos.errors import Code, ServingError
from server.rollout import store as store_module
from server.rollout.manager import RolloutManager
from server.rollout.store import RolloutStore, StoreError
from tests.unit.test_rollout_manager import (AUTO_GATES, CLASSES, Clock, FakeManager, FakeServable, Seq,
                                             bad_canary_evidence, good_evidence, mr_of)


def manager(path, clock, wall=None) -> RolloutManager:
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}})
    return RolloutManager(fm, clock=clock, wall=wall or Clock(1000.0), rand=Seq(0.5), store=RolloutStore(str(path)))


def auto(**kw):
    return mr_of(gates=AUTO_GATES, auto=dict(enabled=True, interval_seconds=10), **kw)


def restart(rm: RolloutManager, path, file_configs, clock=None) -> RolloutManager:
    rm.store.close()
    again = manager(path, clock or Clock(0.0))
    again.restore()
    again.apply(file_configs, source="rollouts.config")
    return again


def test_a_final_rollback_survives_a_restart_and_an_unchanged_file(tmp_path):
    path = tmp_path / "state.sqlite"
    clock = Clock(0.0)
    rm = manager(path, clock)
    rm.restore()
    file = {"m": auto()}
    rm.apply(file, source="rollouts.config")
    bad_canary_evidence(rm)
    clock.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("ROLLBACK: canary v2 10 % -> 0 %")
    rm = restart(rm, path, file)
    assert rm.configs["m"].canary_percent == 0.0
    v = rm.verdict("m")
    assert (v.decision, v.final) == ("ROLLBACK", True)
    assert rm.route("m", None, "", None) == 1  # v2 gets nothing
    whos = [(who, text.split(":")[0]) for _, who, text in rm.store.decisions("m")]
    assert whos == [("rollouts.config", "stable v1, canary v2 at 10 % (rollouts.config)"), ("automatic", "ROLLBACK")]
    # An edited file is a newer operator decision: it lifts the rollback.
    rm = restart(rm, path, {"m": auto(canary_percent=5)})
    assert rm.configs["m"].canary_percent == 5.0 and not rm.verdict("m").final


def test_a_promotion_survives_a_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    clock = Clock(0.0)
    rm = manager(path, clock)
    file = {"m": auto(canary_percent=100)}
    rm.apply(file, source="rollouts.config")
    good_evidence(rm)
    clock.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("PROMOTE: v2 is now stable (was v1)")
    rm = restart(rm, path, file)
    mr = rm.configs["m"]
    assert (mr.stable, mr.canary, mr.canary_percent) == (2, 0, 0.0)
    assert rm.route("m", None, "", None) == 2


def test_set_rollout_is_kept_and_a_file_removal_is_logged(tmp_path):
    path = tmp_path / "state.sqlite"
    rm = manager(path, Clock(0.0))
    rm.apply({"m": mr_of()}, source="rollouts.config")
    rm.set(rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=40), who="gRPC ipv4:127.0.0.1:5")
    rm.set(rollout_pb2.ModelRollout(model="x", stable=1), who="REST 127.0.0.1")
    rm = restart(rm, path, {"m": mr_of()})  # the file is unchanged: the call's 40 % stands
    assert rm.configs["m"].canary_percent == 40.0 and "x" in rm.configs
    st = rm.status("m")
    assert [(d.who, d.text) for d in st.decisions][-1] == ("gRPC ipv4:127.0.0.1:5",
                                                            "stable v1, canary v2 at 40 % (SetRollout)")
    rm = restart(rm, path, {})  # the file drops m; x was set by a call and stays
    assert list(rm.configs) == ["x"]
    assert rm.store.decisions("m")[-1][1:] == ("rollouts.config",
                                               "rollout removed: no longer in the rollout config file")
    assert rm.store.load().keys() == {"x"}


def test_failed_analyses_are_counted_across_a_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    clock = Clock(0.0)
    rm = manager(path, clock)
    file = {"m": mr_of(gates={**AUTO_GATES, "failure_threshold": 2}, auto=dict(enabled=True, interval_seconds=10))}
    rm.apply(file, source="rollouts.config")
    bad_canary_evidence(rm)
    clock.t = 10.0
    assert rm.tick() == []  # failed analysis 1 of 2
    clock2 = Clock(0.0)
    rm = restart(rm, path, file, clock2)
    bad_canary_evidence(rm)
    clock2.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("ROLLBACK") and "failed analysis 2 of 2" in text


def test_a_corrupt_or_unusable_state_file_is_one_line(tmp_path):
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as e:
        RolloutStore(str(bad))
    assert str(e.value).startswith(f"--rollout_state_file {bad} cannot be used: ") and "\n" not in str(e.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as e:
        RolloutStore(str(blocker / "state.sqlite"))  # its directory is a file
    assert str(e.value).startswith(f"--rollout_state_file {blocker}/state.sqlite cannot be used: ")
    # A row that does not parse.
    good = tmp_path / "state.sqlite"
    RolloutStore(str(good)).close()
    with sqlite3.connect(good) as db:
        db.execute("INSERT INTO rollouts VALUES ('m', x'ffff', NULL, NULL, 0, 0)")
    with pytest.raises(StoreError) as e:
        RolloutStore(str(good))
    assert str(e.value) == f"--rollout_state_file {good} is corrupt: the rollout of m does not parse"


def test_a_locked_database_is_retried_then_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "state.sqlite"
    store = RolloutStore(str(path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ServingError) as e:
            store.log("m", 1.0, "automatic", "x")
        assert e.value.code == Code.UNAVAILABLE
        assert e.value.message == f"The rollout state file {path} cannot be written: database is locked"
    finally:
        other.execute("ROLLBACK")
    store.log("m", 1.0, "automatic", "x")  # free again: written
    assert store.decisions("m") == [(1.0, "automatic", "x")]


def test_in_memory_by_default():
    rm = RolloutManager(FakeManager({"m": {1: FakeServable()}}), clock=Clock(0.0), wall=Clock(5.0))
    rm.apply({"m": mr_of(canary=0, canary_percent=0)})
    assert rm.store.path == ":memory:" and rm.store.load().keys() == {"m"}
    assert rm.observe("m", 1, 0.01, "OK", CLASSES)


# ---- fail closed when the file cannot be written (tests/security/test_safety.py fills a real
# disk; here SQLite's query_only makes every write fail, without root)


def read_only(rm: RolloutManager, on: bool = True) -> None:
    with rm.store.lock:
        rm.store.db.execute(f"PRAGMA query_only = {int(on)}")


def test_a_change_that_cannot_be_written_is_refused_and_a_rollback_is_not(tmp_path):
    clock = Clock(0.0)
    rm = manager(tmp_path / "state.sqlite", clock)
    rm.apply({"m": auto(canary_percent=10)}, source="rollouts.config")
    read_only(rm)
    with pytest.raises(ServingError) as e:
        rm.set(auto(canary_percent=50))
    assert e.value.code == Code.UNAVAILABLE and rm.configs["m"].canary_percent == 10.0
    bad_canary_evidence(rm)
    clock.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("ROLLBACK") and rm.configs["m"].canary_percent == 0.0
    assert rm.safety()["unsaved"] == 1 and rm.store.load()["m"].config.canary_percent == 10.0
    read_only(rm, False)
    rm.retry_unsaved()
    saved = rm.store.load()["m"]
    assert rm.safety()["unsaved"] == 0 and saved.config.canary_percent == 0.0 and saved.final_rollback == text
    assert [t.split(":")[0] for _, _, t in rm.store.decisions("m")][-1] == "ROLLBACK"


def test_a_refused_write_leaves_no_transaction_open_and_writes_nothing(tmp_path):
    store = RolloutStore(str(tmp_path / "state.sqlite"))
    with store.lock:
        store.db.execute("PRAGMA query_only = 1")
    with pytest.raises(ServingError):
        store.save("m", mr_of(), file_entry=None, final_rollback=None, failed_analyses=0, now=1.0,
                   decisions=((1.0, "who", "text"),))
    assert not store.db.in_transaction and store.load() == {} and store.decisions("m") == []
    with store.lock:
        store.db.execute("PRAGMA query_only = 0")
    store.save("m", mr_of(), file_entry=None, final_rollback=None, failed_analyses=0, now=1.0,
               decisions=((1.0, "who", "text"),))
    assert store.decisions("m") == [(1.0, "who", "text")]
