"""``tensorflow.ProfilerService`` (server/transports/profiler.py) on an in-process grpc.aio server,
driven by TensorFlow's own profiler client and by raw calls for what that client cannot send.

The server runs on its own event loop in a background thread, as Verso's does in its process;
the TensorFlow work being profiled runs in another thread of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import mmap
import os
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool
from tensorflow.python.profiler.internal import _pywrap_profiler_plugin
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from server.transports.profiler import LOCK_CONTENTION, METHODS, SERVICE, ProfilerService, add_profiler_service, messages

M = messages()


class _Server:
    """A grpc.aio server with only the profiler service, on 127.0.0.1, in a thread, writing
    under ``log_dir``."""

    def __init__(self, log_dir: str, public: bool = False, **kw):
        self.public = public
        self.log_dir = log_dir
        self.kw = kw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-loop", daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        if self.public:
            add_profiler_service(self.server, self.log_dir, **self.kw)
        else:  # what add_profiler_service does, keeping the instance to watch ``busy``
            self.service = ProfilerService(self.log_dir, **self.kw)
            self.server.add_generic_rpc_handlers((self.service.handler(),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def rpc(self, method: str):
        request, response = METHODS[method]
        return self.channel.unary_unary(f"/{SERVICE}/{method}",
                                        request_serializer=M[request].SerializeToString,
                                        response_deserializer=M[response].FromString)

    def wait_busy(self, busy: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.service.busy != busy:
            assert time.monotonic() < deadline, f"the service never became busy={busy}"
            time.sleep(0.01)

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def log_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("profiles").resolve())


@pytest.fixture
def tmp_path(log_root):
    """A fresh directory inside the service's profile directory (the only place it writes)."""
    return Path(tempfile.mkdtemp(dir=log_root))


@pytest.fixture(scope="module")
def srv(log_root):
    s = _Server(log_root)
    yield s
    s.close()


@contextlib.contextmanager
def tensorflow_busy():
    """Eager TensorFlow ops in a thread, as a serving model would run: events to record."""
    stop = threading.Event()

    def work():
        x = tf.ones((16, 16))
        while not stop.is_set():
            tf.linalg.matmul(x, x)

    t = threading.Thread(target=work, name="test-tf-work", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(10)


def events(space) -> int:
    return sum(len(line.events) for plane in space.planes for line in plane.lines)


def request(**kw):
    return M["ProfileRequest"](**kw)


def _embedded_descriptor(name: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto protoc compiled into TensorFlow's profiler binding: the bytes
    after the file's name, up to where they re-serialize exactly."""
    path = _pywrap_profiler_plugin.__file__
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        start = blob.find(b"\n" + bytes([len(name)]) + name.encode())
        assert start >= 0, f"{name} is not compiled into {path}"
        chunk = blob[start:start + 16384]
    found = None
    for end in range(len(name) + 2, len(chunk) + 1):
        try:
            fd = descriptor_pb2.FileDescriptorProto.FromString(chunk[:end])
        except Exception:
            continue
        if fd.SerializeToString() == chunk[:end]:
            found = fd
    assert found is not None
    return found


def _normalized(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    for message in list(fd.message_type) + [n for m in fd.message_type for n in m.nested_type]:
        for field in message.field:
            field.ClearField("json_name")  # derived; Python's pool fills it in
    for service in fd.service:
        for method in service.method:
            method.ClearField("options")  # protoc writes an empty one
    return fd


def test_messages_are_tensorflows_and_stay_out_of_the_default_pool():
    files = {"tsl/profiler/protobuf/profiler_service.proto": M["ProfileRequest"].DESCRIPTOR.file,
             "tsl/profiler/protobuf/profiler_service_monitor_result.proto":
                 M["MonitorResponse"].DESCRIPTOR.fields_by_name["monitor_result"].message_type.file}
    for name, file in files.items():
        ours = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(ours)
        assert _normalized(ours) == _normalized(_embedded_descriptor(name)), name
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("tensorflow.ProfileRequest")


def test_tensorflow_client_trace_writes_an_xspace(srv, tmp_path):
    logdir = str(tmp_path / "logdir")
    with tensorflow_busy():
        tf.profiler.experimental.client.trace(f"grpc://127.0.0.1:{srv.port}", logdir, duration_ms=300)
    # The client names the run and asks for repository_root = logdir/plugins/profile and
    # host_name = the address; the server writes <root>/<run>/<host_port>.xplane.pb.
    files = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    assert [os.path.basename(f) for f in files] == [f"127.0.0.1_{srv.port}.xplane.pb"]
    with open(files[0], "rb") as f:
        space = xplane_pb2.XSpace.FromString(f.read())
    assert "/host:CPU" in [p.name for p in space.planes]
    assert events(space) > 0
    assert not srv.service.busy


def test_monitor_is_unimplemented_as_upstream(log_root):
    public = _Server(log_root, public=True)  # as the app adds it
    try:
        # TensorFlow's binding raises the status as "CODE: message".
        with pytest.raises(RuntimeError, match=r"^UNIMPLEMENTED: unimplemented\.$"):
            tf.profiler.experimental.client.monitor(f"grpc://127.0.0.1:{public.port}", 100)
        public.rpc("Terminate")(M["TerminateRequest"](session_id="any"))  # and the rest is there
    finally:
        public.close()


def test_one_session_at_a_time_and_terminate_ends_it_early(srv, tmp_path):
    root = str(tmp_path / "repo")
    t0 = time.monotonic()
    first = srv.rpc("Profile").future(request(repository_root=root, session_id="first", host_name="h",
                                              opts=dict(duration_ms=20000)))
    srv.wait_busy(True)
    with pytest.raises(grpc.RpcError) as e:
        srv.rpc("Profile")(request(repository_root=root, session_id="second", opts=dict(duration_ms=1)))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, LOCK_CONTENTION)

    srv.rpc("Terminate")(M["TerminateRequest"](session_id="first"))
    assert isinstance(first.result(timeout=10), M["ProfileResponse"])
    assert time.monotonic() - t0 < 10
    assert os.path.isfile(os.path.join(root, "first", "h.xplane.pb"))
    assert not os.path.exists(os.path.join(root, "second"))
    srv.wait_busy(False)


def test_a_session_outside_the_service_holds_tensorflows_lock(srv, tmp_path):
    tf.profiler.experimental.start(str(tmp_path / "local"))
    try:
        with pytest.raises(grpc.RpcError) as e:
            srv.rpc("Profile")(request(repository_root=str(tmp_path), session_id="s", opts=dict(duration_ms=1)))
    finally:
        tf.profiler.experimental.stop(save=False)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, LOCK_CONTENTION)
    assert not srv.service.busy


def test_zero_duration_bad_root_and_garbage_get_clean_statuses(srv, tmp_path):
    root = tmp_path / "repo"
    srv.rpc("Profile")(request(repository_root=str(root), session_id="zero", host_name="h:8500"))
    # ':' in the host becomes '_', as SaveXSpace writes it.
    with open(root / "zero" / "h_8500.xplane.pb", "rb") as f:
        xplane_pb2.XSpace.FromString(f.read())

    (tmp_path / "file").write_text("")
    with pytest.raises(grpc.RpcError) as e:
        srv.rpc("Profile")(request(repository_root=str(tmp_path / "file"), session_id="s", opts=dict(duration_ms=1)))
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "not a directory" in e.value.details()

    garbage = srv.channel.unary_unary(f"/{SERVICE}/Profile")
    with pytest.raises(grpc.RpcError) as e:
        garbage(b"\xff\xff\xff")
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL,
                                                   "Failed to parse tensorflow.ProfileRequest")
    # Each failure let go of the session: the next one runs.
    srv.rpc("Profile")(request(repository_root=str(root), session_id="after", opts=dict(duration_ms=1)))
    assert os.path.isfile(root / "after" / ".xplane.pb")


def test_tracer_levels_and_emit_xspace(srv, tmp_path):
    off = dict(version=1, duration_ms=200, host_tracer_level=0, device_tracer_level=0, python_tracer_level=0)
    on = dict(off, host_tracer_level=2)
    with tensorflow_busy():
        quiet = srv.rpc("Profile")(request(repository_root=str(tmp_path), session_id="off", emit_xspace=True,
                                           opts=off))
        loud = srv.rpc("Profile")(request(repository_root=str(tmp_path), session_id="on", emit_xspace=True,
                                          opts=on))
    assert quiet.empty_trace and quiet.HasField("xspace") and events(quiet.xspace) == 0
    assert not loud.empty_trace and events(loud.xspace) > 0
    assert os.listdir(tmp_path) == []  # emit_xspace: in the response, not the repository


def test_continuous_profiling(srv):
    start, stop, snapshot = srv.rpc("StartContinuousProfiling"), srv.rpc("StopContinuousProfiling"), \
        srv.rpc("GetSnapshot")
    start(request(opts=dict(version=1, host_tracer_level=2)))
    try:
        with pytest.raises(grpc.RpcError) as e:
            start(request())
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as e:
            srv.rpc("Profile")(request(opts=dict(duration_ms=1)))
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, LOCK_CONTENTION)
        with tensorflow_busy():
            time.sleep(0.2)
            first = snapshot(M["GetSnapshotRequest"]())
            time.sleep(0.2)
            second = snapshot(M["GetSnapshotRequest"]())  # the session restarted after the first
        assert not first.empty_trace and events(first.xspace) > 0
        assert not second.empty_trace and events(second.xspace) > 0
    finally:
        stop(M["StopContinuousProfilingRequest"]())
    for call, req in ((stop, M["StopContinuousProfilingRequest"]()), (snapshot, M["GetSnapshotRequest"]())):
        with pytest.raises(grpc.RpcError) as e:
            call(req)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND,
                                                       "No continuous profiling session found.")
    srv.wait_busy(False)


def test_a_client_that_leaves_releases_the_session(srv, tmp_path):
    call = srv.rpc("Profile").future(request(repository_root=str(tmp_path), session_id="gone",
                                             opts=dict(duration_ms=20000)))
    srv.wait_busy(True)
    call.cancel()
    srv.wait_busy(False)
    srv.rpc("Profile")(request(repository_root=str(tmp_path), session_id="next", opts=dict(duration_ms=1)))
    assert os.listdir(tmp_path) == ["next"]


def test_start_timestamp_delays_the_start_and_holds_the_service(srv, tmp_path):
    def delayed(seconds: float, session_id: str):
        opts = dict(version=1, host_tracer_level=2, duration_ms=1,
                    start_timestamp_ns=time.time_ns() + int(seconds * 1e9))
        return srv.rpc("Profile").future(request(repository_root=str(tmp_path), session_id=session_id,
                                                 opts=opts))

    t0 = time.monotonic()
    late = delayed(0.5, "late")
    srv.wait_busy(True)
    with pytest.raises(grpc.RpcError) as e:  # as upstream, which sleeps holding the lock
        srv.rpc("Profile")(request(repository_root=str(tmp_path), session_id="x", opts=dict(duration_ms=1)))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, LOCK_CONTENTION)
    late.result(timeout=10)
    assert time.monotonic() - t0 >= 0.45
    srv.wait_busy(False)

    gone = delayed(20.0, "gone")
    srv.wait_busy(True)
    gone.cancel()
    srv.wait_busy(False)
    assert os.listdir(tmp_path) == ["late"]
