"""`verso serve` makes an admin token by default (issue 26, "What to build" 3), so that being on
this machine is not the only defence of the control plane: a random token in a 0600 file under
$XDG_STATE_HOME/verso, its path printed at start-up, read from there by the ``verso`` command
line for a server on this machine (and never sent to another). ``tensorflow_model_server``
keeps TF Serving's flags: no token unless --admin_token_file."""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import grpc
import pytest

from client import Client, VersoError
from server.settings import (SettingsError, default_admin_token, default_admin_token_file, parse_flags,
                             server_config, verso_serve_defaults)
from tests.e2e.conftest import script
from tests.server_proc import ServerProcess


@pytest.fixture
def state(tmp_path, monkeypatch):
    """$XDG_STATE_HOME of this test's own (servers and command lines started here inherit it)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "verso"


def test_the_default_token_is_random_private_and_kept(state):
    path = default_admin_token_file()
    assert path == str(state / "admin.token")
    token = default_admin_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert default_admin_token(path) == token  # a restart keeps it: the command line's copy stays valid
    os.remove(path)
    assert default_admin_token(path) != token


def test_workers_starting_together_share_one_token(state):
    path = default_admin_token_file()
    tokens, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        tokens.append(default_admin_token(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert os.listdir(state) == ["admin.token"]  # no temporary file left


@pytest.mark.parametrize("spoil", ["readable", "link", "empty"])
def test_a_default_token_file_others_could_read_or_plant_stops_the_start(state, tmp_path, spoil):
    path = default_admin_token_file()
    state.mkdir(parents=True)
    if spoil == "readable":
        default_admin_token(path)
        os.chmod(path, 0o644)
    elif spoil == "link":
        (tmp_path / "planted").write_text("attacker-known-token\n")
        os.symlink(tmp_path / "planted", path)
    else:
        open(path, "w").close()
    with pytest.raises(SettingsError, match="admin token file"):
        server_config(parse_flags(["--model_base_path=/nonexistent"]), bundled_default=True)


def test_verso_serve_defaults_and_tensorflow_model_server_keeps_tf_servings(state):
    served, _ = verso_serve_defaults(parse_flags([]), None)
    assert served.admin_token_file == default_admin_token_file()
    opted_out, _ = verso_serve_defaults(parse_flags(["--admin_token_file="]), None)
    assert opted_out.admin_token_file == ""  # explicit: the loopback rule alone
    assert server_config(parse_flags(["--model_base_path=/m"])).admin_token is None  # tensorflow_model_server
    assert not os.path.exists(default_admin_token_file())


def test_the_command_line_sends_the_default_token_only_to_this_machine(state):
    from client.cli import _parser, _token
    default_admin_token(default_admin_token_file())
    token = open(default_admin_token_file()).read().strip()

    def token_for(*argv):
        return _token(_parser().parse_args(["status", "m", *argv]))

    for local in (["--target", "localhost:8500"], ["--target", "127.0.0.1:1,[::1]:2"], ["--target", "unix:/s"],
                  ["--rest", "http://localhost:8501"], ["--rest", "127.0.0.1:8501"]):
        assert token_for(*local) == token, local
    for remote in (["--target", "10.0.0.1:8500"], ["--target", "127.0.0.1:1,server.example:8500"],
                   ["--rest", "https://server.example:8501"], ["--target", "localhost.evil.example:8500"]):
        assert token_for(*remote) is None, remote
    other = state.parent / "other.token"
    other.write_text("explicit\n")
    assert token_for("--target", "10.0.0.1:8500", "--token-file", str(other)) == "explicit"


def test_verso_serve_makes_prints_and_requires_its_token(state, repo):
    repo.put("hp", 1, "hp1")
    srv = ServerProcess([f"--model_base_path={repo.path('hp')}", "--model_name=hp"],
                        entry=[script("verso"), "serve"], rest=True)
    srv.start()
    try:
        path = default_admin_token_file()
        assert f"Admin token: {path} " in srv.output()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        token = open(path).read().strip()
        # This machine without the token: refused on both transports (loopback is not enough).
        with Client(f"127.0.0.1:{srv.port}") as anonymous:
            e = pytest.raises(VersoError, anonymous.set_rollout, "hp", stable=1).value
            assert e.code == grpc.StatusCode.UNAUTHENTICATED
            e = pytest.raises(VersoError, anonymous.feedback, "no-such-id", [1]).value
            assert e.code == grpc.StatusCode.UNAUTHENTICATED
        json_body = {"Content-Type": "application/json"}
        status, doc = srv.rest_json("POST", "/v1/rollouts/hp", {"stable": 1}, headers=json_body)
        assert status == 401 and doc["error"].startswith("SetRollout needs the server's admin token")
        status, doc = srv.rest_json("POST", "/v1/feedback", {"request_id": "x", "labels": ["1"]}, headers=json_body)
        assert status == 401 and doc["error"].startswith("Feedback needs the server's admin token")
        # With it (as curl -H "Authorization: Bearer $(cat PATH)" sends it).
        status, doc = srv.rest_json("POST", "/v1/rollouts/hp", {"stable": 1},
                                    headers={**json_body, "Authorization": f"Bearer {token}"})
        assert status == 200 and doc["config"]["stable"] == "1"
        # The command line finds it by itself for a server on this machine.
        env = dict(os.environ, VERSO_TARGET=f"127.0.0.1:{srv.port}")
        env.pop("VERSO_TOKEN_FILE", None)
        r = subprocess.run([script("verso"), "rollout", "set", "hp", "--stable", "1"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
    finally:
        srv.stop()
