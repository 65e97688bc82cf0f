"""Safety fails closed (issue 26, item 6), in process: the rollout manager with a real
RolloutStore on a small tmpfs of the test's own, filled to the last block.

- a rollout change (SetRollout, the config file, an automatic step forward) on a full disk is
  refused and nothing changes in memory (before: the split changed in memory, a restart
  silently reverted it);
- an automatic ROLLBACK on a full disk takes effect in memory (before: persisting raised before
  the step: the canary kept its share and its shadow), with an alarm in the status, a metric, a
  log line, and a retry that writes it once the disk has room;
- prediction-log drops are refused when the answer is logged, so the answer carries no request
  id, and counted (status alarm, metric) (before: ids were handed out for rows the writer then
  dropped, counted nowhere);
- the state file, its -wal and -shm are 0600, a directory Verso creates 0700 (before: 0644);
- a restart at the 100 % step resumes one step lower, so stable's evidence refills and the
  rollout can promote (before: HOLD for good)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat

import pytest

from protos import rollout_pb2
from protos.errors import Code, ServingError
from server.rollout.manager import RolloutManager
from server.rollout.store import RolloutStore
from server.transports.metrics import Metrics
from tests.tmpfs import small_tmpfs
from tests.unit.test_rollout_manager import (AUTO_GATES, CLASSES, Clock, FakeManager, FakeServable, Seq,
                                             bad_canary_evidence, fb, good_evidence, mr_of)


def manager(path, clock=None, wall=None) -> RolloutManager:
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}})
    return RolloutManager(fm, clock=clock or Clock(0.0), wall=wall or Clock(1000.0), rand=Seq(0.5),
                          store=RolloutStore(str(path)))


def auto(**kw):
    return mr_of(gates=AUTO_GATES, auto=dict(enabled=True, interval_seconds=10), **kw)


def saved_percent(path) -> float:
    """The canary's share as the state file has it, read by a connection of the test's own."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (config,) = db.execute("SELECT config FROM rollouts WHERE model = 'm'").fetchone()
    return rollout_pb2.ModelRollout.FromString(config).canary_percent


def metrics_text(rm: RolloutManager) -> str:
    m = Metrics()
    m.add_rollout_safety(rm.safety)
    return m.render().decode()


@pytest.fixture
def fs():
    with small_tmpfs() as fs:
        yield fs


def test_a_rollout_change_on_a_full_disk_is_refused_and_changes_nothing(fs):
    path = fs.path("state.sqlite")
    rm = manager(path)
    rm.apply({"m": mr_of(canary_percent=10)}, source="rollouts.config")
    fs.fill()
    # SetRollout: UNAVAILABLE, and the split in memory is the one the file has.
    with pytest.raises(ServingError) as e:
        rm.set(mr_of(canary_percent=90))
    assert e.value.code == Code.UNAVAILABLE and "cannot be written" in e.value.message
    assert rm.configs["m"].canary_percent == 10.0 == saved_percent(path)
    assert {rm.route("m", None, "", f"key{i}") for i in range(200)} != {2}  # still mostly stable
    # An edited rollout config file: not applied, and tried again every round.
    with pytest.raises(ServingError) as e:
        rm.apply({"m": mr_of(canary_percent=50)}, source="rollouts.config")
    assert e.value.code == Code.UNAVAILABLE and "m" in e.value.message
    assert rm.configs["m"].canary_percent == 10.0
    rm.retry_unsaved()
    assert rm.configs["m"].canary_percent == 10.0
    assert rm.write_failures >= 3 and "verso_rollout_state_write_failures_total" in metrics_text(rm)
    fs.free()
    rm.retry_unsaved()  # the disk has room again: the file's entry is applied, durably
    assert rm.configs["m"].canary_percent == 50.0 == saved_percent(path)
    assert rm.set(mr_of(canary_percent=90)).config.canary_percent == 90.0 == saved_percent(path)


def test_an_automatic_step_forward_on_a_full_disk_is_not_taken(fs):
    path = fs.path("state.sqlite")
    clock = Clock(0.0)
    rm = manager(path, clock)
    rm.apply({"m": auto(canary_percent=10)}, source="rollouts.config")
    good_evidence(rm)
    rm.log.flush()
    fs.fill()
    clock.t = 10.0
    assert rm.verdict("m").decision == "PROMOTE"
    assert rm.tick() == []
    assert rm.configs["m"].canary_percent == 10.0 == saved_percent(path)
    assert any(a.startswith("automatic step not taken") for a in rm.status("m").alarms)
    fs.free()
    clock.t = 20.0
    [(_, text)] = rm.tick()
    assert text.startswith("PROMOTE: canary v2 10 % -> 25 %")
    assert rm.configs["m"].canary_percent == 25.0 == saved_percent(path)
    assert not any(a.startswith("automatic step not taken") for a in rm.status("m").alarms)


def test_a_rollback_on_a_full_disk_takes_effect_alarms_and_is_written_once_it_can(fs, caplog):
    path = fs.path("state.sqlite")
    clock = Clock(0.0)
    rm = manager(path, clock)
    rm.apply({"m": auto(canary_percent=10, shadow_percent=5)}, source="rollouts.config")
    fs.fill()
    bad_canary_evidence(rm)
    clock.t = 10.0
    with caplog.at_level(logging.ERROR, logger="verso.rollout"):
        [(_, text)] = rm.tick()
    assert text.startswith("ROLLBACK: canary v2 10 % -> 0 %")
    # In memory at once: the canary gets nothing, its shadow is off.
    mr = rm.configs["m"]
    assert (mr.canary_percent, mr.shadow_percent) == (0.0, 0.0)
    assert {rm.route("m", None, "", f"key{i}") for i in range(200)} == {1}
    st = rm.status("m")
    assert st.verdict.decision == "ROLLBACK" and st.verdict.final
    assert any("holds in memory only" in a for a in st.alarms)
    assert "verso_rollout_state_unsaved 1" in metrics_text(rm)
    assert any("holds in memory only" in r.getMessage() for r in caplog.records)
    assert saved_percent(path) == 10.0  # not written yet
    rm.retry_unsaved()
    assert saved_percent(path) == 10.0 and rm.safety()["unsaved"] == 1
    fs.free()
    rm.retry_unsaved()
    assert saved_percent(path) == 0.0 and rm.safety()["unsaved"] == 0
    assert not any("holds in memory only" in a for a in rm.status("m").alarms)
    assert "verso_rollout_state_unsaved 0" in metrics_text(rm)
    # Written with its decision: a restart keeps the final ROLLBACK.
    rm.store.close()
    again = manager(path)
    again.restore()
    again.apply({"m": auto(canary_percent=10, shadow_percent=5)}, source="rollouts.config")
    assert again.verdict("m").final and again.configs["m"].canary_percent == 0.0
    assert any(t.startswith("ROLLBACK: canary v2 10 % -> 0 %") for _, _, t in again.store.decisions("m"))


def test_under_workers_a_full_disk_still_rolls_back(fs):
    """No worker can hold the automatic lease when the file cannot be written: each takes
    ROLLBACKs itself (and nothing else)."""
    path = fs.path("state.sqlite")
    clock = Clock(0.0)
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}})
    rm = RolloutManager(fm, clock=clock, wall=Clock(1000.0), rand=Seq(0.5), store=RolloutStore(path), workers=True)
    rm.apply({"m": auto(canary_percent=10)}, source="rollouts.config")
    fs.fill()
    bad_canary_evidence(rm)
    rm.sync()  # its evidence cannot be published: logged, not raised
    clock.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("ROLLBACK") and rm.configs["m"].canary_percent == 0.0
    rm.sync()  # the file's older row does not undo the ROLLBACK memory holds
    assert rm.configs["m"].canary_percent == 0.0


def test_prediction_log_drops_get_no_request_id_and_are_counted(fs):
    path = fs.path("state.sqlite")
    rm = manager(path)
    rm.apply({"m": mr_of(canary_percent=10)}, source="rollouts.config")
    rm.log.capacity = 3
    fs.fill()
    kept = [rm.observe("m", 1, 0.01, "OK", CLASSES) for _ in range(3)]
    assert all(kept)
    rm.log.flush()  # the write fails: the rows stay in memory, within the bound
    refused = [rm.observe("m", 1, 0.01, "OK", CLASSES) for _ in range(4)]
    assert refused == [None] * 4  # no room left: the answers carry no request id
    assert rm.log.failing is not None and rm.log.waiting == 3
    assert rm.log.dropped_by == {"queue full": 4}
    alarms = rm.status("m").alarms
    assert any(a.startswith("the prediction log cannot be written") for a in alarms)
    assert any("4 answers were not logged and got no request id (queue full: 4)" in a for a in alarms)
    text = metrics_text(rm)
    assert 'verso_prediction_log_dropped_total{reason="queue full"} 4' in text
    assert "verso_prediction_log_failing 1" in text and "verso_prediction_log_waiting 3" in text
    with pytest.raises(ServingError) as e:  # an id that was given: not lost, not yet judgeable
        fb(rm, kept[0], ["3"])
    assert e.value.code == Code.UNAVAILABLE
    fs.free()
    rm.log._retry_at = 0.0  # the writer's next retry is due now (it waits RETRY_S between tries)
    rm.log.flush()
    assert rm.log.failing is None and rm.log.waiting == 0
    assert [fb(rm, rid, ["3"]).correct for rid in kept] == [1, 1, 1]  # every id handed out was written
    rm.log.close()


def test_the_state_file_and_its_directory_are_private(tmp_path):
    path = tmp_path / "new" / "state.sqlite"
    rm = manager(path)
    rm.apply({"m": mr_of()}, source="rollouts.config")
    rm.observe("m", 1, 0.01, "OK", CLASSES)
    rm.log.flush()
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "new") == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert mode(f"{path}{suffix}") == 0o600, suffix
    rm.log.close()
    rm.store.close()
    # A file an older server left readable by others is narrowed when it opens.
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.chmod(f"{path}{suffix}", 0o644)
    RolloutStore(str(path)).close()
    assert mode(path) == 0o600


def test_a_restart_at_100_percent_resumes_lower_and_promotes(tmp_path):
    path = tmp_path / "state.sqlite"
    file = {"m": auto(canary_percent=100)}
    rm = manager(path)
    rm.apply(file, source="rollouts.config")
    rm.store.close()
    clock = Clock(0.0)
    rm = manager(path, clock)
    rm.restore()
    rm.apply(file, source="rollouts.config")  # unchanged: the state file's rollout stands
    assert rm.configs["m"].canary_percent == 50.0  # stable gets traffic again: its evidence refills
    assert any(t.startswith("RESUME: canary v2 100 % -> 50 %") for _, _, t in rm.store.decisions("m"))
    good_evidence(rm)
    clock.t = 10.0
    [(_, text)] = rm.tick()
    assert text.startswith("PROMOTE: canary v2 50 % -> 100 %")
    clock.t = 20.0
    [(_, text)] = rm.tick()
    assert text.startswith("PROMOTE: v2 is now stable")
    assert (rm.configs["m"].stable, rm.configs["m"].canary) == (2, 0)


def test_a_rollback_still_unwritten_at_exit_is_tried_once_more_and_its_loss_logged(fs, caplog):
    path = fs.path("state.sqlite")
    clock = Clock(0.0)
    rm = manager(path, clock)
    rm.apply({"m": auto(canary_percent=10)}, source="rollouts.config")
    fs.fill()
    bad_canary_evidence(rm)
    clock.t = 10.0
    rm.tick()
    with caplog.at_level(logging.ERROR, logger="verso.rollout"):
        asyncio.run(rm.close())
    assert any("is lost at exit" in r.getMessage() and "ROLLBACK" in r.getMessage() for r in caplog.records)
