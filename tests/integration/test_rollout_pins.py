"""Rollouts fail closed, against the real server in process: a rollout pins its stable and
canary whatever the version policy; a newer version on disk takes no unversioned traffic;
SetRollout refuses versions that are not on disk or do not load; a pinned version that
vanishes sends its traffic to the other one, with an alarm in the status and in Prometheus."""

from __future__ import annotations

import collections
import shutil

import grpc
import pytest

from client import Client, VersoError
from tests.helpers import hp_answer, scrape, states
from tests.server_proc import wait_until
from server.lifecycle.policy import State


@pytest.fixture
def server(repo, server_factory, tmp_path, built_models):
    repo.put("hp", 1, "hp1")
    repo.put("hp", 2, "hp2")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    # The default policy (latest 1): only v2 loads.
    return server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--file_system_poll_wait_seconds=1",
                          "--version_settle_seconds=0", "--max_num_load_retries=0",
                          f"--monitoring_config_file={monitoring}", rest=True)


def _versions_answering(srv, n=60) -> collections.Counter:
    return collections.Counter(hp_answer(srv)[0] for _ in range(n))


def test_a_rollout_pins_its_versions_and_fails_closed(server, repo, built_models):
    assert states(server, "hp") == {2: State.AVAILABLE}
    with Client(f"127.0.0.1:{server.port}") as c:
        st = c.set_rollout("hp", stable=1, canary=2, canary_percent=50)  # v1 loads again for it
        assert {v.version: (v.role, v.available) for v in st.versions} == {1: ("stable", True), 2: ("canary", True)}
        assert set(_versions_answering(server)) == {1, 2}

        # A newer version arrives under the latest policy: it loads, but takes no routed traffic.
        repo.put("hp", 3, "hp3")
        wait_until(lambda: states(server, "hp").get(3) == State.AVAILABLE, what="v3 loads")
        assert set(_versions_answering(server)) == {1, 2}
        assert hp_answer(server, version=3)[0] == 3  # asked for by number, it answers
        roles = {v.version: v.role for v in c.rollout("hp").versions}
        assert roles == {1: "stable", 2: "canary", 3: "not in rollout"}

        # Versions that are not on disk, or do not load, are refused; nothing changes.
        e = pytest.raises(VersoError, c.set_rollout, "hp", stable=1, canary=7, canary_percent=10).value
        assert (e.code, e.message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Rollout of model hp: version 7 is not on disk under the model's base path "
                                       "(or not settled yet)")
        shutil.copytree(built_models["corrupt"], f"{repo.path('hp')}/9")
        e = pytest.raises(VersoError, c.set_rollout, "hp", stable=1, canary=9, canary_percent=10).value
        assert e.code == grpc.StatusCode.FAILED_PRECONDITION
        assert e.message.startswith("Rollout of model hp: version 9 is not available (END: "), e.message
        cfg = c.rollout("hp").config
        assert (cfg.stable, cfg.canary, cfg.canary_percent) == (1, 2, 50.0)

        # The canary vanishes: its traffic goes to stable, never to v3, and the alarm is raised.
        shutil.rmtree(f"{repo.path('hp')}/9")
        repo.remove("hp", 2)
        wait_until(lambda: 2 not in states(server, "hp") or states(server, "hp")[2] != State.AVAILABLE,
                   what="v2 unloads")
        assert _versions_answering(server) == {1: 60}
        st = c.rollout("hp")
        assert list(st.alarms) == ["canary v2 is not available: its traffic goes to stable v1"]
        samples, _ = scrape(server)
        assert samples[("verso_rollout_available", frozenset({"model_name": "hp", "version": "2",
                                                              "role": "canary"}.items()))] == 0
        assert samples[("verso_rollout_alarms", frozenset({"model_name": "hp"}.items()))] == 1
