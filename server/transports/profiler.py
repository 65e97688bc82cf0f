"""``--enable_profiler``: TensorFlow's profiler service, ``tensorflow.ProfilerService``, on the
gRPC port, as TF Serving serves it, so that TensorBoard's "Capture profile" and
``tf.profiler.experimental.client.trace('grpc://HOST:PORT', logdir, duration_ms)`` work.

Upstream is ``ProfilerServiceImpl`` (xla/tsl/profiler/rpc/profiler_service_impl.cc) of the
TensorFlow release Verso pins; this module answers the same way:

- ``Profile`` runs a TensorFlow ``ProfilerSession`` for ``opts.duration_ms`` (or until a
  ``Terminate`` for its ``session_id``), then writes the XSpace to
  ``repository_root/session_id/<host>.xplane.pb`` (``<host>`` is ``opts.override_hostname`` or
  ``host_name``, ``:`` made ``_``) or, with ``emit_xspace``, returns it in the response;
  ``empty_trace`` says whether any event was recorded. A failure to start or to collect or save
  is INTERNAL with TensorFlow's message; only one session runs at a time in a process, so a
  second one gets INTERNAL "Another profiling session active.".
- ``Terminate`` records a stop signal for ``session_id``; the ``Profile`` of that session ends
  early and still answers OK with what was collected.
- ``Monitor`` answers UNIMPLEMENTED "unimplemented.", as upstream now does.
- ``StartContinuousProfiling`` / ``GetSnapshot`` / ``StopContinuousProfiling`` (in the
  installed TensorFlow's service definition): one continuous session; a snapshot returns the
  XSpace so far in the response and restarts the session.

TensorFlow's Python wheel ships no ``*_pb2`` for profiler_service.proto, so its messages are
declared here field by field in a private descriptor pool (never the default pool, where a
copy TensorFlow may register one day would clash), on top of the wheel's own
``profiler_options.proto`` and ``xplane.proto``. The session is TensorFlow's Python binding
(``_pywrap_profiler.ProfilerSession``), which offers less than the C++ ``ProfileOptions``:
only the three tracer levels, and ``start_timestamp_ns`` (honoured by sleeping before the
start), take effect; the rest of ``opts`` (``include_dataset_ops``, ``trace_options``,
``advanced_configuration``...) is TensorFlow's defaults.

The profile is of this process only: with ``--num_workers``, of the worker whose port
accepted the connection.

Where Verso differs from upstream, for safety: the service is off unless ``--enable_profiler``
(TF Serving: on); every call passes the admin rule of the other control calls
(server/dataplane/admin.py: the ``authorization`` bearer token with ``--admin_token_file``,
else this machine or a mutual-TLS client only); and ``Profile`` writes only under one
directory, ``--profiler_log_dir``, which lies outside every model base path (upstream writes
wherever ``repository_root`` says). A relative ``repository_root`` is taken below that
directory, an absolute one must lie in it; a ``..`` component, a separator in ``session_id``
or the host name, a NUL, or a target inside a model's base path is INVALID_ARGUMENT before
any session starts.

The handlers run on the server's event loop; every call into TensorFlow's profiler (which
blocks) runs on one private worker thread, in order. TensorFlow is imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Optional

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from protos.errors import ServingError
from protos.private_protos import add_fields
from server.dataplane import admin

log = logging.getLogger("verso.profiler")

SERVICE = "tensorflow.ProfilerService"
# tsl/profiler/lib/profiler_lock.h: kProfilerLockContention.
LOCK_CONTENTION = "Another profiling session active."
_XPLANE_SUFFIX = ".xplane.pb"

# tsl/profiler/protobuf/profiler_service_monitor_result.proto (no pb2 in the wheel either).
_MONITOR_RESULT = {
    "ProfilerServiceMonitorResult": [
        ("response_type", 1, "enum", ".tensorflow.ProfilerServiceMonitorResult.ResponseType"),
        ("device_idle_time_percent", 2, "double"),
        ("matrix_unit_utilization_percent", 3, "double"),
        ("step_time_ms_avg", 4, "double"),
        ("step_time_ms_min", 5, "double"),
        ("step_time_ms_max", 6, "double"),
        ("infeed_percent_avg", 7, "double"),
        ("infeed_percent_min", 8, "double"),
        ("infeed_percent_max", 9, "double"),
    ],
}
# tsl/profiler/protobuf/profiler_service.proto as the installed TensorFlow's
# include/tensorflow/tsl/profiler/protobuf/profiler_service.pb.h declares it, in its order
# (tests/integration/test_profiler.py compares the result with the descriptor compiled into
# TensorFlow's own binary).
_SERVICE_MESSAGES = {
    "ToolRequestOptions": [("output_formats", 2, "string"), ("save_to_repo", 3, "bool")],
    "ProfileRequest": [
        ("duration_ms", 1, "uint64"),
        ("max_events", 2, "uint64"),
        ("tools", 3, "string", "repeated"),
        ("tool_options", 8, "map", ".tensorflow.ToolRequestOptions"),
        ("opts", 4, ".tensorflow.ProfileOptions"),
        ("repository_root", 5, "string"),
        ("session_id", 6, "string"),
        ("host_name", 7, "string"),
        ("emit_xspace", 9, "bool"),
    ],
    "ProfileToolData": [("name", 1, "string"), ("data", 2, "bytes")],
    "ProfileResponse": [
        ("tool_data", 6, ".tensorflow.ProfileToolData", "repeated"),
        ("empty_trace", 7, "bool"),
        ("xspace", 8, ".tensorflow.profiler.XSpace"),
    ],
    "TerminateRequest": [("session_id", 1, "string")],
    "TerminateResponse": [],
    "GetSnapshotRequest": [],
    "ContinuousProfilingResponse": [],
    "StopContinuousProfilingRequest": [],
    "StopContinuousProfilingResponse": [],
    "MonitorRequest": [("duration_ms", 1, "uint64"), ("monitoring_level", 2, "int32"),
                       ("timestamp", 3, "bool")],
    "MonitorResponse": [("data", 1, "string"),
                        ("monitor_result", 10, ".tensorflow.ProfilerServiceMonitorResult")],
}
_RESERVED = {"ProfileResponse": range(1, 6), "MonitorResponse": range(2, 10)}
METHODS = {  # name: (request, response), in the service's order
    "Profile": ("ProfileRequest", "ProfileResponse"),
    "Terminate": ("TerminateRequest", "TerminateResponse"),
    "Monitor": ("MonitorRequest", "MonitorResponse"),
    "StartContinuousProfiling": ("ProfileRequest", "ContinuousProfilingResponse"),
    "StopContinuousProfiling": ("StopContinuousProfilingRequest", "StopContinuousProfilingResponse"),
    "GetSnapshot": ("GetSnapshotRequest", "ProfileResponse"),
}


@functools.lru_cache(maxsize=None)
def messages() -> dict[str, type]:
    """The service's message classes by short name (``ProfileRequest``, ...) and the
    ``ProfileOptions`` and ``XSpace`` they use, all from one private descriptor pool. Imports
    TensorFlow's generated profiler_options and xplane modules (and so TensorFlow)."""
    from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

    pool = descriptor_pool.DescriptorPool()
    for dep in (profiler_options_pb2, xplane_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)

    monitor = descriptor_pb2.FileDescriptorProto(
        name="tsl/profiler/protobuf/profiler_service_monitor_result.proto", package="tensorflow",
        syntax="proto3")
    for name, fields in _MONITOR_RESULT.items():
        m = monitor.message_type.add(name=name)
        enum = m.enum_type.add(name="ResponseType")
        for value, number in (("EMPTY_RESULT", 0), ("UTIL_ONLY", 1), ("UTIL_IDLE", 2), ("UTIL_IDLE_STEP", 3)):
            enum.value.add(name=value, number=number)
        add_fields(m, fields, "tensorflow")
    pool.Add(monitor)

    service = descriptor_pb2.FileDescriptorProto(
        name="tsl/profiler/protobuf/profiler_service.proto", package="tensorflow", syntax="proto3",
        dependency=[profiler_options_pb2.DESCRIPTOR.name, monitor.name, xplane_pb2.DESCRIPTOR.name])
    for name, fields in _SERVICE_MESSAGES.items():
        m = service.message_type.add(name=name)
        add_fields(m, fields, "tensorflow")
        for number in _RESERVED.get(name, ()):  # one range per number, as protoc writes them
            m.reserved_range.add(start=number, end=number + 1)
    s = service.service.add(name="ProfilerService")
    for method, (req, resp) in METHODS.items():
        s.method.add(name=method, input_type=f".tensorflow.{req}", output_type=f".tensorflow.{resp}")
    pool.Add(service)

    names = list(_SERVICE_MESSAGES) + ["ProfileOptions", "profiler.XSpace"]
    return {n.rsplit(".", 1)[-1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}"))
            for n in names}


class _Level(int):
    """A tracer level for ``ProfilerSession.start()``'s option dict. The installed wheel's
    binding converts each value with ``cast<bool>`` before ``cast<int>``, so a plain int arrives
    as a bool and TensorFlow drops it ("host_tracer_level expects an i value"); an int that
    refuses to be a bool reaches the int branch."""

    def __bool__(self):
        raise TypeError("a tracer level is not a bool")


class ProfilerError(Exception):
    """A profiler RPC's error status: ``code`` and TensorFlow's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _tf_message(e: BaseException) -> str:
    return getattr(e, "message", None) or str(e) or type(e).__name__


def _join_path(*parts: str) -> str:
    """tsl::io::JoinPath: empty parts skipped, one ``/`` between parts."""
    out = ""
    for part in parts:
        if not part:
            continue
        if not out:
            out = part
            continue
        if part.startswith("/"):
            part = part[1:]
        out += part if out.endswith("/") else "/" + part
    return out


def _is_empty(space) -> bool:
    """xplane_utils IsEmpty(): no line of any plane has an event."""
    return not any(line.events for plane in space.planes for line in plane.lines)


class _Session:
    """One TensorFlow ProfilerSession, recording from construction until ``collect()`` or
    ``discard()``; it holds TensorFlow's process-wide profiler lock until then. Every method
    blocks: call them on the profiler thread only. The session writes its XSpace into a
    private temporary directory (the binding's only way out for an XSpace); ``collect()``
    returns the bytes and removes the directory."""

    def __init__(self, opts):
        from tensorflow.python.profiler.internal import _pywrap_profiler

        self._dir = tempfile.mkdtemp(prefix="verso-profile-")
        self._session: Any = _pywrap_profiler.ProfilerSession()
        # ProfilerSession::Create's GetOptions(): options of version 0 mean the defaults.
        options = {} if not opts.version else {
            "host_tracer_level": _Level(opts.host_tracer_level),
            "device_tracer_level": _Level(opts.device_tracer_level),
            "python_tracer_level": _Level(opts.python_tracer_level),
        }
        try:
            self._session.start(self._dir, options)
        except BaseException:
            # A session that failed to start must not be exported: it would write an XSpace.
            self._session = None
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def collect(self) -> bytes:
        """Stop recording; the serialized XSpace (TensorFlow's own serialization)."""
        session, self._session = self._session, None
        try:
            if session is None:
                raise RuntimeError("the profiler session was already collected")
            session.export_to_tb()
            files = glob.glob(os.path.join(self._dir, "plugins", "profile", "*", "*" + _XPLANE_SUFFIX))
            if len(files) != 1:
                raise RuntimeError(f"TensorFlow's profiler wrote {len(files)} XSpace files")
            with open(files[0], "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def discard(self) -> None:
        """Stop recording and drop the data (a no-op after ``collect()``)."""
        session, self._session = self._session, None
        try:
            if session is not None:
                session.stop()
        except Exception:  # the session ends either way; nothing to tell a client that left
            log.exception("Could not stop the profiler session")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _is_url(path: str) -> bool:
    return "://" in path


def _shown(value: str) -> str:
    return repr(value[:200] + ("..." if len(value) > 200 else ""))


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalized the same way)."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def _real(path: str) -> str:
    return path.rstrip("/") if _is_url(path) else os.path.realpath(path)


def prepare_log_dir(log_dir: str, base_paths: Iterable[str]) -> str:
    """``--profiler_log_dir`` made ready at start-up: created (0700) when missing, or a new
    private temporary directory when empty; returns its real path (a URL as it is). Raises
    ValueError (one line for the operator) when it overlaps a model base path: a profile
    written inside one would look like a version directory to the model's source."""
    if not log_dir:
        return os.path.realpath(tempfile.mkdtemp(prefix="verso-profiles-"))
    real = _real(log_dir)
    for base in base_paths:  # checked first: nothing is made inside a base path
        if _is_url(base) != _is_url(real):
            continue
        base_real = _real(base)
        if _within(real, base_real) or _within(base_real, real):
            raise ValueError(f"--profiler_log_dir {log_dir} overlaps the model base path {base}: profiles must be "
                             f"written outside every model base path")
    if not _is_url(log_dir):
        try:
            os.makedirs(log_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ValueError(f"Cannot make --profiler_log_dir {log_dir}: {e.strerror or e}") from None
    return real


def _name_part(value: str, what: str) -> str:
    if "/" in value or "\\" in value or "\0" in value or value in (".", "..") or len(value) > 255:
        raise ProfilerError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"Invalid {what} {_shown(value)}: a single file name is expected (no '/', '\\', "
                            f"'.' or '..', at most 255 characters)")
    return value


def profile_path(log_dir: str, request, base_paths: Iterable[str]) -> str:
    """Where ``Profile`` saves the XSpace of ``request``: ``repository_root/session_id/<host>.xplane.pb``
    (``<host>``: ``opts.override_hostname`` or ``host_name``, ``:`` made ``_``), the root taken
    below ``log_dir`` when relative. Raises ProfilerError(INVALID_ARGUMENT) for a path that
    would leave ``log_dir`` (``..``, another absolute path, a link out of it) or enter a model
    base path."""
    root = request.repository_root
    if "\0" in root or "\\" in root or ".." in root.split("/"):
        raise ProfilerError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"Invalid repository_root {_shown(root)}: no '..' component, '\\' or NUL")
    run = _name_part(request.session_id, "session_id")
    host = _name_part((request.opts.override_hostname or request.host_name).replace(":", "_"), "host name")
    if root.startswith("/") or _is_url(root):
        if not _within(root.rstrip("/") or "/", log_dir):
            raise ProfilerError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"repository_root {_shown(root)} is outside the server's profile directory "
                                f"{log_dir} (--profiler_log_dir); send a path in it or relative to it")
        directory = _join_path(root, run)
    else:
        directory = _join_path(log_dir, root, run)
    target = _real(directory)
    if not _within(target, log_dir):  # a link inside the profile directory that leads out of it
        raise ProfilerError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"repository_root {_shown(root)} with session_id {_shown(run)} leads outside the "
                            f"server's profile directory {log_dir}")
    for base in base_paths:
        if _is_url(base) == _is_url(target) and _within(target, _real(base)):
            raise ProfilerError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"A profile may not be written into the model base path {base}")
    return _join_path(directory, host + _XPLANE_SUFFIX)


def _save_xspace(path: str, data: bytes) -> None:
    """tsl::profiler::SaveXSpace through TensorFlow's file systems (gs:// and the like)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    log.info("Collecting XSpace to repository: %s", path)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


class ProfilerService:
    """The service's state: stop signals by session id, the continuous session, and whether a
    session is held. Owned by the event loop that runs the server; TensorFlow's profiler is
    called on ``self._thread`` only, so its calls keep their order."""

    def __init__(self, log_dir: str, *, admin_token: Optional[str] = None,
                 base_paths: Callable[[], Iterable[str]] = tuple):
        """``log_dir``: ``prepare_log_dir``'s answer; ``admin_token``: --admin_token_file's token
        (None: the loopback rule); ``base_paths``: the served models' base paths now."""
        self._m = messages()
        self.log_dir = log_dir
        self._admin_token = admin_token
        self._base_paths = base_paths
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verso-profiler")
        self._stop_signals: set[str] = set()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._continuous: Optional[tuple[Any, _Session]] = None  # (ProfileRequest, session)
        self._continuous_lock = asyncio.Lock()
        # True from the start of a session's delay until it is collected or discarded: the
        # C++ session takes TensorFlow's lock before sleeping until start_timestamp_ns, so a
        # second one fails at once rather than after the delay.
        self._held = False

    @property
    def busy(self) -> bool:
        """Whether a session (Profile or continuous) is starting or recording. Any thread."""
        return self._held

    def _run(self, fn, *args) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _start(self, opts) -> _Session:
        """A recording session for ``opts``. Raises ProfilerError(INTERNAL) with TensorFlow's
        message when it cannot start (another session is active, profiling is disabled)."""
        if self._held:
            raise ProfilerError(grpc.StatusCode.INTERNAL, LOCK_CONTENTION)
        self._held = True
        try:
            # ProfilerSession's constructor sleeps until start_timestamp_ns (set by a client
            # asking for delay_ms, or by multi-host captures to start together).
            delay_ns = opts.start_timestamp_ns - time.time_ns() if opts.version else 0
            if delay_ns > 0:
                await asyncio.sleep(delay_ns / 1e9)
        except BaseException:
            self._held = False
            raise
        future = self._thread.submit(_Session, opts)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller left while the session was starting: it may still start, and must
            # then be discarded before the service counts as free.
            future.add_done_callback(self._late_start(asyncio.get_running_loop()))
            raise
        except Exception as e:
            self._held = False
            raise ProfilerError(grpc.StatusCode.INTERNAL, _tf_message(e)) from e

    def _late_start(self, loop: asyncio.AbstractEventLoop):
        def unhold():
            self._held = False

        def discard(future) -> None:  # on the profiler thread
            try:
                if not future.cancelled() and future.exception() is None:
                    future.result().discard()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                    loop.call_soon_threadsafe(unhold)

        return lambda future: self._thread.submit(discard, future)

    def _release(self, session: _Session) -> None:
        # Queued behind any collect() of the same session, where it is a no-op; a later start
        # is queued behind it, so TensorFlow's lock is free by then.
        self._thread.submit(session.discard)
        self._held = False

    async def _wait(self, session_id: str, duration_ms: int) -> None:
        """Sleep ``duration_ms`` or until a Terminate for ``session_id``, which it consumes."""
        if duration_ms <= 0:
            return
        event = asyncio.Event()
        waiters = self._waiters.setdefault(session_id, set())
        waiters.add(event)
        try:
            if session_id in self._stop_signals:  # a Terminate that came first
                event.set()
            try:
                await asyncio.wait_for(event.wait(), duration_ms / 1000)
            except asyncio.TimeoutError:
                return
            self._stop_signals.discard(session_id)
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(session_id, None)

    def _collect(self, session: _Session, request):
        """CollectData(): the response for ``request`` from ``session`` (profiler thread)."""
        data = session.collect()
        space = self._m["XSpace"].FromString(data)
        response = self._m["ProfileResponse"](empty_trace=_is_empty(space))
        if request.emit_xspace:
            response.xspace.CopyFrom(space)
            return response
        # Checked again: the models' base paths may have changed while the session recorded.
        _save_xspace(profile_path(self.log_dir, request, self._base_paths()), data)
        return response

    async def profile(self, request, context):
        log.info("Profile request: session %r, %d ms, repository %r", request.session_id,
                 request.opts.duration_ms, request.repository_root)
        if not request.emit_xspace:  # a bad path is refused before the caller waits for a session
            profile_path(self.log_dir, request, self._base_paths())
        session = await self._start(request.opts)
        try:
            # Upstream waits opts.duration_ms, not the request's older duration_ms field.
            await self._wait(request.session_id, request.opts.duration_ms)
            try:
                return await self._run(self._collect, session, request)
            except ProfilerError:
                raise
            except Exception as e:
                log.error("Failed to collect profile data: %s", _tf_message(e))
                raise ProfilerError(grpc.StatusCode.INTERNAL, _tf_message(e)) from e
        finally:
            self._release(session)

    async def terminate(self, request, context):
        self._stop_signals.add(request.session_id)
        for event in self._waiters.get(request.session_id, ()):
            event.set()
        return self._m["TerminateResponse"]()

    async def monitor(self, request, context):
        raise ProfilerError(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")

    # The continuous-profiling calls run under one lock, as upstream's run under its mutex,
    # and finish even if their caller leaves (upstream's synchronous handlers do).

    async def _start_continuous(self, request):
        async with self._continuous_lock:
            if self._continuous is not None:
                raise ProfilerError(grpc.StatusCode.ALREADY_EXISTS, "A profiling session is already running.")
            try:
                session = await self._start(request.opts)
            except ProfilerError as e:
                raise ProfilerError(e.code, "Failed to create profiler session: " + e.message) from e
            kept = self._m["ProfileRequest"]()
            kept.CopyFrom(request)
            kept.emit_xspace = True
            self._continuous = (kept, session)
            return self._m["ContinuousProfilingResponse"]()

    async def _stop_continuous(self, request):
        async with self._continuous_lock:
            if self._continuous is None:
                raise ProfilerError(grpc.StatusCode.NOT_FOUND, "No continuous profiling session found.")
            _, session = self._continuous
            self._continuous = None
            self._release(session)
            return self._m["StopContinuousProfilingResponse"]()

    async def _get_snapshot(self, request):
        """The XSpace so far in the response; the session restarts under a new session id.
        A failure ends continuous profiling (INTERNAL)."""
        async with self._continuous_lock:
            if self._continuous is None:
                raise ProfilerError(grpc.StatusCode.NOT_FOUND, "No continuous profiling session found.")
            kept, session = self._continuous
            self._continuous = None
            try:
                response = await self._run(self._collect, session, kept)
            except Exception as e:
                log.error("Failed to collect profile data: %s", _tf_message(e))
                raise ProfilerError(grpc.StatusCode.INTERNAL, _tf_message(e)) from e
            finally:
                self._release(session)
            new_id = str(time.time_ns())
            kept.session_id = new_id
            kept.opts.session_id = new_id
            self._continuous = (kept, await self._start(kept.opts))
            return response

    @staticmethod
    async def _to_the_end(coro):
        task = asyncio.ensure_future(coro)
        # Fetch the outcome even when nobody awaits it any more, so it is not logged as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    def handler(self) -> grpc.GenericRpcHandler:
        calls = {"Profile": self.profile, "Terminate": self.terminate, "Monitor": self.monitor,
                 "StartContinuousProfiling": lambda r, c: self._to_the_end(self._start_continuous(r)),
                 "StopContinuousProfiling": lambda r, c: self._to_the_end(self._stop_continuous(r)),
                 "GetSnapshot": lambda r, c: self._to_the_end(self._get_snapshot(r))}
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: self._method(name, calls[name], *(self._m[n] for n in METHODS[name])) for name in METHODS})

    def _check_admin(self, name: str, context: grpc.aio.ServicerContext) -> None:
        """The admin rule of every control call (server/dataplane/admin.py), from the call's
        ``authorization`` metadata, peer and client certificate."""
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = admin.bearer_token(value if isinstance(value, str) else value.decode("utf-8", "replace"))
        try:
            admin.check(f"ProfilerService/{name}", expected_token=self._admin_token, token=token,
                        local=admin.is_local(context.peer() or ""),
                        verified_client=bool((context.auth_context() or {}).get("x509_subject")))
        except ServingError as e:
            code = next(c for c in grpc.StatusCode if c.value[0] == int(e.code))
            raise ProfilerError(code, e.message) from None

    def _method(self, name, call, request_cls, response_cls) -> grpc.RpcMethodHandler:
        def parse(data: bytes):
            try:
                return request_cls.FromString(data)
            except Exception:
                return None

        async def behaviour(request, context: grpc.aio.ServicerContext):
            try:
                self._check_admin(name, context)
                if request is None:
                    raise ProfilerError(grpc.StatusCode.INTERNAL,
                                        f"Failed to parse {request_cls.DESCRIPTOR.full_name}")
                return await call(request, context)
            except ProfilerError as e:
                err = e
            except Exception as e:  # a bug in Verso: a status, never a traceback, to the client
                log.exception("Unexpected error in ProfilerService/%s", name)
                err = ProfilerError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            await context.abort(err.code, err.message)

        return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=parse,
                                                   response_serializer=response_cls.SerializeToString)


def add_profiler_service(server: grpc.aio.Server, log_dir: str, *, admin_token: Optional[str] = None,
                         base_paths: Callable[[], Iterable[str]] = tuple) -> ProfilerService:
    """Serve ``tensorflow.ProfilerService`` on ``server`` (a grpc.aio server not yet started),
    writing under ``log_dir`` (``prepare_log_dir``'s answer) for callers that pass the admin
    rule with ``admin_token``. Call it on the thread that builds the server; the handlers then
    run on the server's event loop. Imports TensorFlow (its profiler protos); raises
    ImportError without it."""
    service = ProfilerService(log_dir, admin_token=admin_token, base_paths=base_paths)
    server.add_generic_rpc_handlers((service.handler(),))
    return service
