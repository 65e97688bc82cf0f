"""Faults in a model's base path against the real server: each affects only its own entry.

Before issue 26: a symlink loop among the version entries made the whole scan fail, so the
model froze (no version change ever again) and the log said its base path "does not exist",
every poll; a symlink cycle inside a version directory (``a -> .``) hung the source's thread
(every model froze); and a planted ``99999/`` that is no model, once its load had failed,
stayed the policy's "latest" for good, so no newer good version was ever loaded."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from server.lifecycle.policy import State
from tests.helpers import predict_request, states, y_of
from tests.server_proc import InProcessServer, wait_until

X = np.array([2.0], np.float32)


@pytest.fixture
def server(repo):
    started = []

    def start(*args):
        srv = InProcessServer([f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                               "--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.3",
                               "--max_num_load_retries=0", *args])
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


def _answer(srv) -> tuple[float, int]:
    resp = srv.predict_stub.Predict(predict_request("hp", {"x": X}), timeout=30)
    return float(y_of(resp)[0]), resp.model_spec.version.value


def test_broken_entries_affect_only_themselves_and_are_logged_once(repo, server, tmp_path, built_models):
    repo.put("hp", 1, "hp1")
    base = repo.root / "hp"
    os.symlink("7", base / "7")  # a symlink loop named like a version
    os.symlink(tmp_path / "nowhere", base / "8")  # a dangling one
    srv = server()
    assert _answer(srv) == (2.0, 1)

    # A new version with a symlink cycle inside it still settles and loads.
    staged = tmp_path / "v2"
    shutil.copytree(built_models["hp2"], staged)
    for name in ("a", "b", "c"):
        os.symlink(".", staged / name)
    os.rename(staged, base / "2")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, timeout=30, what="v2 AVAILABLE")
    assert _answer(srv) == (3.0, 2)

    time.sleep(3.0)  # three more polls: nothing is logged again
    log = srv.output()
    assert log.count(f"Version entry {str(base / '7')!r} of model hp is a symlink loop") == 1, log
    assert log.count(f"Version entry {str(base / '8')!r} of model hp is a dangling symlink") == 1, log
    assert f"Base path {base} of model hp does not exist" not in log

    os.unlink(base / "7")  # mended: said once
    wait_until(lambda: f"Version entry {str(base / '7')!r} of model hp no longer is a symlink loop" in srv.output(),
               timeout=10, what="the loop's end logged")


def test_a_planted_version_that_is_no_model_does_not_freeze_updates(repo, server):
    repo.put("hp", 1, "hp1")
    srv = server()
    assert _answer(srv) == (2.0, 1)
    # What the profiler wrote into a model's base path before issue 26: a numeric directory
    # holding no model.
    planted = repo.root / "hp" / "99999" / "plugins" / "profile" / "2026_01_01"
    planted.mkdir(parents=True)
    (planted / "host.xplane.pb").write_bytes(b"\x00" * 64)
    wait_until(lambda: states(srv, "hp").get(99999) == State.END, timeout=30, what="99999 failed")
    assert _answer(srv) == (2.0, 1)  # what served keeps serving
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp").get(2) == State.AVAILABLE, timeout=30, what="v2 loaded beside 99999")
    wait_until(lambda: _answer(srv) == (3.0, 2), timeout=10, what="v2 serving latest")
    assert states(srv, "hp")[99999] == State.END
    assert srv.output().count("Version 99999 of servable hp failed to load; the version policy passes it over") == 1
