"""The protected control plane on both transports, against the real server in process:
SetRollout, Feedback and ReloadConfig (and POST /v1/rollouts, /v1/feedback) need the admin
token when --admin_token_file is set (UNAUTHENTICATED / 401 otherwise), and without one are
refused from a non-loopback peer (a network namespace of the test's own: PERMISSION_DENIED /
403), the profiler too; read-only calls stay open; the client and the command line send the
token. Browser attacks on the control plane: tests/security/test_control*.py."""

from __future__ import annotations

import json
import os
import urllib.request

import grpc
import pytest

from client import Client, RestClient, VersoError
from tests.helpers import config_text, model_block, reload_request, run_verso


def _rest(port: int, method: str, path: str, body=None, token=None, host="127.0.0.1"):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def server(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    repo.put("hp", 2, "hp2")
    token = tmp_path / "admin.token"
    token.write_text("s3cret-token\n")
    rollouts = tmp_path / "rollouts.config"
    rollouts.write_text('models { model: "hp" stable: 1 }\n')
    srv = server_factory(f"--model_config_file={_models(repo, tmp_path)}", f"--admin_token_file={token}",
                         f"--rollout_config_file={rollouts}", rest=True)
    srv.token_file = token
    return srv


def _models(repo, tmp_path) -> str:
    path = tmp_path / "models.config"
    path.write_text(config_text(model_block("hp", repo.path("hp"), "model_version_policy { all {} }")))
    return str(path)


def test_the_token_is_required_on_both_transports(server, repo):
    with Client(f"127.0.0.1:{server.port}") as anonymous:
        assert anonymous.rollout("hp").config.stable == 1  # read-only: open
        for what, call in (("SetRollout", lambda: anonymous.set_rollout("hp", stable=1, canary=2, canary_percent=10)),
                           ("Feedback", lambda: anonymous.feedback("no-such-id", [1]))):
            e = pytest.raises(VersoError, call).value
            assert e.code == grpc.StatusCode.UNAUTHENTICATED
            assert e.message.startswith(f"{what} needs the server's admin token")
        e = pytest.raises(grpc.RpcError, server.model_stub.HandleReloadConfigRequest,
                          reload_request(config_text(model_block("hp", repo.path("hp")))), timeout=30).value
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
        assert e.details().startswith("HandleReloadConfigRequest needs the server's admin token")
    with Client(f"127.0.0.1:{server.port}", token="wrong") as wrong:
        e = pytest.raises(VersoError, wrong.set_rollout, "hp", stable=1, canary=2, canary_percent=10).value
        assert e.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(f"127.0.0.1:{server.port}", token="s3cret-token") as admin:
        st = admin.set_rollout("hp", stable=1, canary=2, canary_percent=10)
        assert st.config.canary == 2 and st.decisions[-1].who.startswith("gRPC ipv4:127.0.0.1:")
        e = pytest.raises(VersoError, admin.feedback, "no-such-id", [1]).value
        assert e.code == grpc.StatusCode.NOT_FOUND  # past the token check
    status, doc = _rest(server.rest_port, "POST", "/v1/rollouts/hp", {"stable": 1})
    assert status == 401 and doc["error"].startswith("SetRollout needs the server's admin token")
    status, doc = _rest(server.rest_port, "POST", "/v1/feedback", {"request_id": "x", "labels": ["1"]}, token="no")
    assert status == 401 and doc["error"].startswith("Feedback needs the server's admin token")
    status, doc = _rest(server.rest_port, "POST", "/v1/rollouts/hp", {"stable": 2}, token="s3cret-token")
    assert status == 200 and doc["config"]["stable"] == "2"
    assert doc["decisions"][-1]["who"] == "REST 127.0.0.1"
    assert _rest(server.rest_port, "GET", "/v1/rollouts/hp")[0] == 200
    with RestClient(f"http://127.0.0.1:{server.rest_port}", token="s3cret-token") as r:
        assert r.set_rollout("hp", stable=1).config.stable == 1


def test_the_command_line_reads_the_token_file(server, monkeypatch):
    target = ["--target", f"127.0.0.1:{server.port}"]
    r = run_verso("rollout", "set", "hp", "--stable", "2", *target)
    assert r.returncode == 1 and r.stderr.startswith("verso: error: UNAUTHENTICATED: SetRollout needs"), r.stderr
    r = run_verso("rollout", "set", "hp", "--stable", "2", "--token-file", str(server.token_file), *target)
    assert r.returncode == 0, r.stderr
    r = run_verso("rollout", "set", "hp", "--stable", "1", *target, env={"VERSO_TOKEN_FILE": str(server.token_file)})
    assert r.returncode == 0, r.stderr


_PEER_CODE = """
import json, sys, urllib.request, urllib.error
import grpc
from client import Client, VersoError
out = {}
with Client(f"{host}:{port}") as remote:
    out["status"] = remote.status("hp")[0].version
    try:
        remote.set_rollout("hp", stable=1)
        out["set_rollout"] = ["OK", ""]
    except VersoError as e:
        out["set_rollout"] = [e.code.name, e.message]
with grpc.insecure_channel(f"{host}:{port}") as channel:
    try:
        channel.unary_unary("/tensorflow.ProfilerService/Profile")(b"", timeout=30)
        out["profile"] = ["OK", ""]
    except grpc.RpcError as e:
        out["profile"] = [e.code().name, e.details()]
req = urllib.request.Request(f"http://{host}:{rest_port}/v1/rollouts/hp", method="POST", data=b'{"stable": 1}',
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        out["rest"] = [r.status, json.loads(r.read())]
except urllib.error.HTTPError as e:
    out["rest"] = [e.code, json.loads(e.read())]
print(json.dumps(out))
"""


def test_without_a_token_file_only_this_machine_may_change_things(repo, server_factory, tmp_path):
    """A peer host (a network namespace of the test's own, tests/netns.py) reads but may not
    change the server, nor profile it; this machine may."""
    from tests.netns import peer_namespace
    repo.put("hp", 1, "hp1")
    with peer_namespace() as peer:
        srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp", "--bind_address=0.0.0.0",
                             "--rollout_config_file=/dev/null", "--enable_profiler",
                             f"--profiler_log_dir={tmp_path / 'profiles'}", rest=True)
        r = peer.python(f"host, port, rest_port = {peer.host_ip!r}, {srv.port}, {srv.rest_port}\n" + _PEER_CODE,
                        timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
    assert out["status"] == 1  # read-only: open
    code, message = out["set_rollout"]
    assert code == "PERMISSION_DENIED" and "start it with --admin_token_file=FILE" in message
    code, message = out["profile"]
    assert code == "PERMISSION_DENIED"
    assert message.startswith("ProfilerService/Profile is accepted only from this machine")
    status, doc = out["rest"]
    assert status == 403 and doc["error"].startswith("SetRollout is accepted only from this machine")
    assert os.listdir(tmp_path / "profiles") == []
    with Client(f"127.0.0.1:{srv.port}") as local:
        assert local.set_rollout("hp", stable=1).config.stable == 1
    assert _rest(srv.rest_port, "POST", "/v1/rollouts/hp", {"stable": 1})[0] == 200

