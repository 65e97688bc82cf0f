"""`verso serve`'s default rollout state file is one per served configuration (issue 27): two
servers on one machine, each with its own model config file, never take up each other's
rollouts, even for a model of the same name; the same configuration restarted takes its own
back. Start-up logs the file, and the rollout status names it."""

from __future__ import annotations

import grpc
import pytest

from client import Client, VersoError
from server.settings import default_admin_token_file
from tests.helpers import config_text, model_block
from tests.server_proc import InProcessServer


def _config(tmp_path, name: str, repo) -> str:
    path = tmp_path / name
    path.write_text(config_text(model_block("hp", repo.path("hp"), "model_version_policy { all {} }")))
    return str(path)


def _serve(config: str) -> InProcessServer:
    # `verso serve`'s defaults (bundled=True): the default state file and admin token.
    return InProcessServer([f"--model_config_file={config}"], rest=True, bundled=True).start()


def test_two_configurations_keep_their_own_rollouts(repo, tmp_path):
    repo.put("hp", 1, "hp1")
    repo.put("hp", 2, "hp2")
    first, second = _config(tmp_path, "first.config", repo), _config(tmp_path, "second.config", repo)
    srv = _serve(first)
    try:
        token = open(default_admin_token_file()).read().strip()
        with Client(f"127.0.0.1:{srv.port}", token=token) as c:
            status = c.set_rollout("hp", stable=1, canary=2, canary_percent=10)
        state_file = status.state_file
        assert state_file.endswith(".sqlite") and "rollouts-" in state_file, state_file
        assert f"Rollout state file: {state_file} (this configuration's own" in srv.output()
    finally:
        srv.stop()
    other = _serve(second)  # the same models, another configuration: none of the first's rollout
    try:
        with Client(f"127.0.0.1:{other.port}") as c:
            e = pytest.raises(VersoError, c.rollout, "hp").value
            assert e.code == grpc.StatusCode.NOT_FOUND, e
        assert "Rollout state file: " in other.output() and state_file not in other.output()
    finally:
        other.stop()
    again = _serve(first)  # the first configuration restarted: its rollout stands
    try:
        with Client(f"127.0.0.1:{again.port}") as c:
            status = c.rollout("hp")
        assert (status.config.stable, status.config.canary, status.config.canary_percent) == (1, 2, 10.0)
        assert status.state_file == state_file
    finally:
        again.stop()
