"""The profiler (issue 26, "What to build" 5). It was on by default, open to anyone, and wrote
``<hostname>.xplane.pb`` wherever the caller said (``repository_root``, ``session_id``,
``override_hostname``): a ``99999/`` planted in a model's base path froze that model's updates.
Now it is off unless --enable_profiler, passes the admin rule of every control call, and writes
only under --profiler_log_dir, which lies outside every model base path; traversal is
INVALID_ARGUMENT before any session starts. (A remote peer: tests/integration/test_admin.py;
TensorFlow's own client: tests/integration/test_profiler_server.py.)"""

from __future__ import annotations

import os

import grpc
import pytest

from server.app import StartupError
from server.transports.profiler import METHODS, SERVICE, messages
from tests.integration.test_profiler import _Server
from tests.server_proc import InProcessServer, wait_until

M = messages()
TOKEN = "s3cret-profiler-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _profile(channel: grpc.Channel, metadata=AUTH, **fields):
    request, response = METHODS["Profile"]
    call = channel.unary_unary(f"/{SERVICE}/Profile", request_serializer=M[request].SerializeToString,
                               response_deserializer=M[response].FromString)
    fields.setdefault("opts", dict(duration_ms=1))
    return call(M[request](**fields), metadata=metadata, timeout=30)


def _refused(channel, metadata=AUTH, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        _profile(channel, metadata, **fields)
    return e.value


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture
def service(tmp_path):
    """The service with an admin token, writing under tmp/profiles; a model's base path
    (tmp/profiles/models/m) reported inside it, as a reload could make one."""
    log_dir = tmp_path / "profiles"
    log_dir.mkdir()
    bases = [str(log_dir / "models" / "m")]
    srv = _Server(str(log_dir), admin_token=TOKEN, base_paths=lambda: bases)
    yield srv, tmp_path, log_dir
    srv.close()


def test_the_profiler_needs_the_admin_token(service):
    srv, tmp_path, log_dir = service
    for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        e = _refused(srv.channel, metadata, repository_root="runs", session_id="s")
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
        assert e.details().startswith("ProfilerService/Profile needs the server's admin token")
    for method in ("Terminate", "Monitor", "StartContinuousProfiling", "GetSnapshot", "StopContinuousProfiling"):
        with pytest.raises(grpc.RpcError) as e:
            srv.channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
    assert _files(log_dir) == [] and not srv.service.busy
    _profile(srv.channel, repository_root="runs", session_id="s", host_name="h:8500")
    assert _files(log_dir) == [os.path.join("runs", "s", "h_8500.xplane.pb")]


@pytest.mark.parametrize("fields, what", [
    (dict(repository_root="../escape", session_id="s"), "repository_root"),
    (dict(repository_root="runs/../../escape", session_id="s"), "repository_root"),
    (dict(repository_root="OUTSIDE", session_id="s"), "outside"),
    (dict(repository_root="/", session_id="etc"), "outside"),
    (dict(repository_root="runs\\..\\..", session_id="s"), "repository_root"),
    (dict(repository_root="runs\0", session_id="s"), "repository_root"),
    (dict(repository_root="runs", session_id="../../escape"), "session_id"),
    (dict(repository_root="runs", session_id="a/b"), "session_id"),
    (dict(repository_root="runs", session_id=".."), "session_id"),
    (dict(repository_root="runs", session_id="x" * 300), "session_id"),
    (dict(repository_root="runs", session_id="s", host_name="../../../escape"), "host name"),
    (dict(repository_root="runs", session_id="s", opts=dict(duration_ms=1, override_hostname="/etc/passwd")),
     "host name"),
    (dict(repository_root="LINK", session_id="s"), "leads outside"),
    (dict(repository_root="models/m", session_id="99999"), "model base path"),
    (dict(repository_root="models", session_id="m"), "model base path"),
])
def test_traversal_is_refused_before_a_session_starts(service, fields, what):
    srv, tmp_path, log_dir = service
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, log_dir / "link")
    fields = dict(fields)
    fields["repository_root"] = fields["repository_root"].replace("OUTSIDE", str(outside)).replace(
        "LINK", "link")
    e = _refused(srv.channel, **fields)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and what in e.details(), e.details()
    assert _files(tmp_path) == [] and not srv.service.busy


def test_an_absolute_root_inside_the_profile_directory_is_accepted(service):
    srv, tmp_path, log_dir = service
    _profile(srv.channel, repository_root=str(log_dir / "tb" / "plugins" / "profile"), session_id="run1",
             host_name="127.0.0.1:8500")
    assert _files(log_dir) == [os.path.join("tb", "plugins", "profile", "run1", "127.0.0.1_8500.xplane.pb")]


def test_a_planted_version_directory_cannot_freeze_a_model(repo, tmp_path):
    """The attack: Profile into the model's base path with session_id 99999. Refused; the model
    keeps taking new versions."""
    repo.put("hp", 1, "hp1")
    srv = InProcessServer([f"--model_base_path={repo.path('hp')}", "--model_name=hp", "--enable_profiler",
                           f"--profiler_log_dir={tmp_path / 'profiles'}", "--file_system_poll_wait_seconds=1",
                           "--version_settle_seconds=0"]).start()
    try:
        for root in (repo.path("hp"), os.path.relpath(repo.path("hp"), tmp_path / "profiles")):
            e = _refused(srv.channel, metadata=None, repository_root=root, session_id="99999", host_name="h")
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, root
        assert sorted(os.listdir(repo.path("hp"))) == ["1"]
        repo.put("hp", 2, "hp2")
        wait_until(lambda: any(s.version == 2 and s.state == 30 for s in _status(srv)), timeout=60,
                   what="hp v2 AVAILABLE")
    finally:
        srv.stop()


def _status(srv):
    from tensorflow_serving.apis import get_model_status_pb2, model_pb2
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="hp"))
    return srv.model_stub.GetModelStatus(request, timeout=30).model_version_status


@pytest.mark.parametrize("where", ["inside", "same", "above"])
def test_a_profile_directory_overlapping_a_base_path_stops_the_start(repo, where):
    repo.put("hp", 1, "hp1")
    base = repo.path("hp")
    log_dir = {"inside": os.path.join(base, "profiles"), "same": base, "above": os.path.dirname(base)}[where]
    with pytest.raises(StartupError, match=r"--profiler_log_dir .* overlaps the model base path"):
        InProcessServer([f"--model_base_path={base}", "--model_name=hp", "--enable_profiler",
                         f"--profiler_log_dir={log_dir}"]).start()
    assert sorted(os.listdir(base)) == ["1"]


def test_the_profiler_is_off_by_default():
    from server.settings import parse_flags
    assert parse_flags([]).enable_profiler is False  # TF Serving: true (a deliberate difference)
