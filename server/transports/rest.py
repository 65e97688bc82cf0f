"""The REST adapter: TF Serving's HTTP/JSON API over ``ServingCore``, on aiohttp.

Runs in the same event loop as grpc.aio and the manager. Each route only translates:
it parses the path as TF Serving does (``(?i)/v1/...``, names and labels URL-decoded),
converts JSON with ``protos.rest_json``, awaits the same core as gRPC and maps a
``ServingError`` to ``{"error": "..."}`` with TF Serving's HTTP status. A Verso bug is
logged with its traceback and the caller gets a one-line 500.

Beyond TF Serving (documented in the README): ``GET /v1/models`` lists every model with
its versions and states (TF Serving answers 400 there), and ``GET /readyz`` answers 200
when every configured model has an AVAILABLE version and the server is not draining, 503
otherwise, for load balancers that speak only HTTP.

Control routes (``POST /v1/rollouts/MODEL``, ``POST /v1/feedback``) must not be reachable by a
web page in an operator's browser: beyond the admin rule they need a JSON body, a ``Host`` that
names this server and no foreign ``Origin`` (``admin.check_browser``; 415 / 403), and CORS
never shares them, nor the ``Verso-Request-Id`` header, except with an origin listed in
``--rest_api_cors_allowed_origins``. ``--rest_api_enable_cors_support`` keeps TF Serving's
any-origin CORS for inference, status and metadata.

Large bodies: a body over ``OFFLOAD_BYTES`` is parsed and converted in the request
executor so the loop keeps serving; each body is parsed once, and a large answer is encoded
there too.

Bodies are read by ``read_body``, not by aiohttp (whose automatic decompression inflated a
1.9 MB gzip bomb to 1.9 GiB before any size check): ``Content-Encoding: gzip``/``deflate`` is
inflated here in bounded steps, at most ``--rest_api_max_body_bytes`` after decompression
(413 beyond, ``{"error": ...}``), a body that is not what its encoding says is 400, a body that
takes longer than ``--rest_api_body_timeout_seconds`` to arrive is 408 and its connection
closed; a connection that sends no complete request head for
``--rest_api_header_timeout_seconds`` is closed (slowloris). The body's bytes, its parse and
the answer are claimed from the in-flight budget (server/dataplane/limits.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import urllib.parse
import zlib
from typing import Callable, Optional

import orjson
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     regression_pb2)

from protos import rollout_pb2
from protos import rest_json
from server.dataplane import admin
from server.transports import dashboard
from server.dataplane.core import SIGNATURE_DEF_FIELD, CallInfo, ServingCore
from server.dataplane.limits import JSON_PARSE_FACTOR, LimitExceeded, Rejections, outputs_bytes
from protos.errors import Code, ServingError

log = logging.getLogger("verso.rest")

INT32_MAX = 2**31 - 1
OFFLOAD_BYTES = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 256 * 2**20  # when the server passes none (the server derives its own)
_READ_CHUNK = 64 * 1024
# aiohttp's keep-alive timeout is also how long a connection may take to send a request head
# (its timer is not reset by incoming bytes); 0 for the flag keeps aiohttp's default.
_AIOHTTP_KEEPALIVE_S = 3630.0
# How long a refused request's unread body is drained so the answer reaches the client.
_LINGER_S = 2.0

_V1 = re.compile(r"(?i)/v1/.*")
# Verso's rollout extension: /v1/rollouts/MODEL and /v1/feedback.
_ROLLOUT = re.compile(r"/v1/(?:rollouts/([^/:]+)|feedback)")
ROUTING_KEY_HEADER = "Verso-Routing-Key"
SLICE_HEADER = "Verso-Slice"
REQUEST_ID_HEADER = "Verso-Request-Id"
_INFER = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
_ORIGIN = re.compile(r"https?://.+")
# --rest_api_enable_cors_support: TF Serving's headers for any origin, on the inference,
# status and metadata routes only; the version header is readable, the request id (the key
# to feedback) is not.
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
         "Access-Control-Allow-Headers": "Content-Type, Verso-Routing-Key, Verso-Slice",
         "Access-Control-Expose-Headers": rest_json.VERSION_HEADER}
# --rest_api_cors_allowed_origins: an origin the operator trusts gets every route, the
# Authorization header and the request id.
_CORS_TRUSTED = {"Access-Control-Allow-Methods": "POST, GET",
                 "Access-Control-Allow-Headers": "Content-Type, Verso-Routing-Key, Verso-Slice, Authorization",
                 "Access-Control-Expose-Headers": f"{rest_json.VERSION_HEADER}, {REQUEST_ID_HEADER}",
                 "Vary": "Origin"}
_JSON = "application/json"


def _dump(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


def _proto_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class RestApi:
    """The aiohttp application. ``ready()`` says whether /readyz answers 200."""

    def __init__(self, core: ServingCore, *, timeout_ms: int = 30000, cors: bool = False, metrics=None,
                 metrics_path: Optional[str] = None, ready: Callable[[], bool] = lambda: True,
                 executor=None, cors_origins: tuple[str, ...] = (), allowed_hosts: tuple[str, ...] = (),
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, body_timeout_s: float = 60.0):
        self.core = core
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self.cors = cors
        # Browser rules of control routes (admin.check_browser): origins trusted with CORS and
        # the control routes, normalized; Host names meaning this server besides loopback ones.
        self.cors_origins = frozenset(admin.normalize_origin(o) for o in cors_origins)
        self.own_hosts = frozenset(h.lower().strip("[]") for h in (socket.gethostname(), *allowed_hosts) if h)
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.ready = ready
        self.executor = executor
        self.max_body_bytes = max_body_bytes  # --rest_api_max_body_bytes, after decompression
        self.body_timeout_s = body_timeout_s or None  # --rest_api_body_timeout_seconds (0: none)
        self.rejections = Rejections(metrics)

    def app(self) -> web.Application:
        # Bodies are read (and inflated) by ``read_body``; aiohttp's own limit is a backstop for
        # any other reader, and its automatic decompression is off (it had no bound).
        app = web.Application(client_max_size=min(self.max_body_bytes, INT32_MAX) + 1,
                              handler_args={"max_field_size": 65536, "auto_decompress": False,
                                            "lingering_time": _LINGER_S})
        # [\s\S]: a path with an encoded newline (%0A) must reach ``handle`` too, not aiohttp's 404.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        return app

    # ---- dispatch ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        method = request.method
        if self.metrics_path is not None and path == self.metrics_path and method == "GET":
            return web.Response(body=self.metrics.render(), content_type="text/plain")
        if path in (dashboard.PAGE_PATH, dashboard.DATA_PATH) and method == "GET":
            return self._dashboard(path)
        if path == "/readyz" and method in ("GET", "HEAD"):
            ok = self.ready()
            return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")
        if not _V1.fullmatch(path):
            return web.Response(status=404, text="404 Not Found\n")
        if method == "OPTIONS":
            return self._preflight(request, control=bool(_ROLLOUT.fullmatch(path)))
        version = None
        call = CallInfo("GetModelStatus", "REST", routing_key=request.headers.get(ROUTING_KEY_HEADER), tf_api="",
                        slice=request.headers.get(SLICE_HEADER))
        r = _ROLLOUT.fullmatch(path)
        try:
            m = _INFER.fullmatch(path)
            if method == "POST" and m:
                call.model, call.tf_api = urllib.parse.unquote(m.group(1)), m.group(4)
                call.api = call.tf_api.capitalize()
                if call.tf_api not in ("predict", "classify", "regress"):
                    raise self._malformed(request)
                spec = self._spec(call.model, m.group(2), m.group(3))
                body, version = await self._with_timeout(self._infer(call.tf_api, spec, request, call))
            elif r and self.core.rollouts is not None:
                body = await self._rollout(method, r, request)
            else:
                m = _STATUS.fullmatch(path)
                if method != "GET" or not m:
                    raise self._malformed(request)
                if m.group(1) is None:
                    if m.group(2) or m.group(3) or m.group(4):
                        raise self._malformed(request)
                    body = self._list_models()
                else:
                    call.model = urllib.parse.unquote(m.group(1))
                    spec = self._spec(call.model, m.group(2), m.group(3))
                    if m.group(4):
                        call.api, body = "GetModelMetadata", self._metadata(spec, call)
                    else:
                        body = self._status(spec, call)
            status, err = 200, None
        except ServingError as e:
            err = e
        except Exception as e:  # a bug in Verso: one line to the client, the traceback to the log
            log.exception("Unexpected error in %s %s", method, path)
            err = ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}")
        if err is not None:
            body, status = _dump({"error": err.message}), err.http_status
        if call.model:  # a call about a model (not the model list, a rollout call or a bad path)
            self.core.record(call, err)
        headers = self._cors_headers(request, control=bool(r))
        if version is not None and status == 200:
            # Verso's extension: which version answered (gRPC has it in the response's model_spec).
            headers[rest_json.VERSION_HEADER] = str(version)
            if call.request_id:
                headers[REQUEST_ID_HEADER] = call.request_id
        return web.Response(body=body, status=status, content_type=_JSON, headers=headers)

    def _preflight(self, request: web.Request, control: bool) -> web.Response:
        if not _ORIGIN.match(request.headers.get("Origin", "")):
            return web.Response(body=_dump({"error": "Origin header is missing in CORS preflight"}), status=400,
                                content_type=_JSON)
        headers = self._cors_headers(request, control)
        if control and not headers:  # a control route: only to an origin the operator trusts
            return web.Response(body=_dump({"error": "Control routes are not shared with other origins "
                                                     "(see --rest_api_cors_allowed_origins)"}),
                                status=403, content_type=_JSON)
        return web.Response(status=200, headers=headers or None)

    def _cors_headers(self, request: web.Request, control: bool) -> dict:
        """The CORS headers of an answer to ``request``: the trusted set for an origin of
        --rest_api_cors_allowed_origins, TF Serving's for any origin under
        --rest_api_enable_cors_support except on ``control`` routes, else none."""
        origin = request.headers.get("Origin")
        if origin is not None and self.cors_origins:
            try:
                if admin.normalize_origin(origin) in self.cors_origins:
                    return {"Access-Control-Allow-Origin": origin, **_CORS_TRUSTED}
            except ValueError:
                pass
        return dict(_CORS) if self.cors and not control else {}

    def _check_browser(self, request: web.Request, what: str) -> None:
        """``admin.check_browser`` for a REST control call: Host and Origin against this server,
        and a JSON body."""
        own = set(self.own_hosts)
        sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
        if isinstance(sock, tuple) and sock:  # the address this connection came in on
            address = str(sock[0]).lower().split("%")[0]
            own.add(address.removeprefix("::ffff:") if "." in address else address)
        admin.check_browser(what, content_type=request.content_type if request.headers.get("Content-Type") else "",
                            origin=request.headers.get("Origin"), host=request.headers.get("Host"),
                            scheme=request.scheme, own_hosts=own, allowed_origins=self.cors_origins)

    @staticmethod
    def _malformed(request: web.Request) -> ServingError:
        return ServingError(Code.INVALID_ARGUMENT, f"Malformed request: {request.method} {request.raw_path}")

    @staticmethod
    def _spec(name: str, version: Optional[str], label: Optional[str]) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            try:
                spec.version.value = int(version)
            except ValueError:  # more digits than an int64 holds
                raise ServingError(Code.INVALID_ARGUMENT, f"Failed to convert version: {version} to numeric.")
        elif label is not None:
            spec.version_label = urllib.parse.unquote(label)
        return spec

    async def _with_timeout(self, coro):
        # The work runs to its end (keeping its lease on the version); only the caller stops waiting.
        task = asyncio.ensure_future(coro)
        if self.timeout_s is None:
            return await task
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except asyncio.TimeoutError:
            task.add_done_callback(_drop_result)
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    # ---- inference -------------------------------------------------------------------------------

    async def _rollout(self, method: str, m: re.Match, request: web.Request) -> bytes:
        """Verso's rollout extension over REST: ``GET /v1/rollouts/MODEL`` (RolloutStatus),
        ``POST /v1/rollouts/MODEL`` (a ModelRollout, as SetRollout), ``POST /v1/feedback``
        (``{"request_id": ..., "labels": [...], "targets": [...]}``). Bodies and answers are the
        protos' JSON."""
        target = urllib.parse.unquote(m.group(1) or "")
        if method == "GET" and target:
            return _dump(_proto_dict(self.core.get_rollout(target)))
        if method != "POST":
            raise self._malformed(request)
        self._check_browser(request, "SetRollout" if target else "Feedback")
        doc = rest_json.parse_json(await self.read_body(request))
        if not isinstance(doc, dict):
            raise ServingError(Code.INVALID_ARGUMENT, "The body must be a JSON object")
        message = rollout_pb2.ModelRollout() if target else rollout_pb2.FeedbackRequest()
        try:
            json_format.ParseDict(doc, message)
        except json_format.ParseError as e:
            raise ServingError(Code.INVALID_ARGUMENT, f"Invalid body: {e}") from None
        if target:
            if message.model and message.model != target:
                raise ServingError(Code.INVALID_ARGUMENT, f"Body names model {message.model}, path {target}")
            message.model = target
            return _dump(_proto_dict(await self.core.set_rollout(message, _control(request))))
        return _dump(_proto_dict(await self.core.feedback(message.request_id, message.labels, _control(request),
                                                          message.targets)))

    async def read_body(self, request: web.Request, claim=None) -> bytes:
        """The request body, inflated when ``Content-Encoding`` says gzip or deflate, bounded:
        at most ``max_body_bytes`` after decompression (413), within ``body_timeout_s`` (and 90 %
        of the call's timeout; else 408 and the connection is closed), decompressed in steps of
        at most the bytes still allowed (a bomb never expands past the limit), each step's bytes
        taken from ``claim`` (the in-flight budget). A body that is not what its encoding says:
        400."""
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            inflate = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            inflate = _Inflater(encoding)
        else:
            raise ServingError(Code.INVALID_ARGUMENT, "Unsupported Content-Encoding of the request body "
                                                      "(gzip, deflate or identity)")
        limit = self.max_body_bytes
        if inflate is None and request.content_length is not None and request.content_length > limit:
            raise self._too_large()
        parts: list[bytes] = []
        size = raw = 0
        timeout = self.body_timeout_s
        if self.timeout_s is not None:
            # Inside --rest_api_timeout_in_ms: this read ends first (408), so no answer goes out
            # while it still reads (aiohttp would drain the body beside it).
            timeout = min(timeout or self.timeout_s, 0.9 * self.timeout_s)
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.content.iter_chunked(_READ_CHUNK):
                    raw += len(chunk)
                    if raw > limit:  # the compressed bytes too (empty gzip members inflate to nothing)
                        raise self._too_large()
                    for data in (inflate.feed(chunk, limit - size + 1) if inflate is not None else (chunk,)):
                        size += len(data)
                        if size > limit:
                            raise self._too_large()
                        if claim is not None:
                            claim.take(len(data), "The request body")
                        parts.append(data)
        except TimeoutError:
            # The answer goes out; aiohttp drains the body for _LINGER_S more, then closes.
            raise LimitExceeded(Code.DEADLINE_EXCEEDED, f"The request body did not arrive within "
                                                        f"{timeout:g} s (--rest_api_body_timeout_seconds)",
                                "body_timeout", http=408) from None
        if inflate is not None:
            inflate.finish()
        return b"".join(parts)

    def _too_large(self) -> LimitExceeded:
        return LimitExceeded(Code.RESOURCE_EXHAUSTED, f"The request body is larger than {self.max_body_bytes} "
                                                      f"bytes (--rest_api_max_body_bytes)", "body_size", http=413)

    async def _infer(self, verb: str, spec: model_pb2.ModelSpec, request: web.Request,
                     call: CallInfo) -> tuple[bytes, int]:
        """One inference call: its claim on the in-flight budget (body, parse, decoded inputs,
        outputs) is held until its answer is encoded, and given back however the call ends."""
        call.claim = self.core.limits.claim()
        try:
            return await self._infer_claimed(verb, spec, request, call)
        except LimitExceeded as e:
            self.rejections("REST", e)
            raise
        finally:
            call.claim.release()

    async def _infer_claimed(self, verb: str, spec: model_pb2.ModelSpec, request: web.Request,
                             call: CallInfo) -> tuple[bytes, int]:
        raw = await self.read_body(request, call.claim)
        call.claim.take(len(raw) * JSON_PARSE_FACTOR, "The request body's JSON")
        loop = asyncio.get_running_loop()
        offload = len(raw) > OFFLOAD_BYTES and self.executor is not None

        async def off_loop(fn, *args, large: bool = offload):
            return await loop.run_in_executor(self.executor, fn, *args) if large else fn(*args)

        # The parsed document is held in ``box`` alone, so that freeing a large one (millions of
        # Python objects) happens in the executor too, not on the loop.
        box = [await off_loop(rest_json.parse_json, raw)]
        del raw
        try:
            return await self._infer_parsed(verb, spec, box, call, off_loop, offload)
        finally:
            if offload:
                await off_loop(box.clear)

    async def _infer_parsed(self, verb: str, spec: model_pb2.ModelSpec, box: list, call: CallInfo, off_loop,
                            offload: bool) -> tuple[bytes, int]:
        sig_name = rest_json.signature_name(box[0])
        if verb == "predict":
            row_format = None

            def decode(signature):
                nonlocal row_format
                inputs, row_format = rest_json.decode_predict(box[0], signature.inputs)
                # The JSON was converted to each input's own dtype, so the dtype check passes by construction.
                dtypes = {alias: signature.inputs[alias].dtype for alias in inputs}
                return inputs, dtypes

            name, version, _, outputs = await self.core.predict_decoded(spec, sig_name, decode, call, offload)
            large = self.executor is not None and outputs_bytes(outputs) > OFFLOAD_BYTES
            return await off_loop(rest_json.encode_predict_response, outputs, row_format, large=large), version
        spec.signature_name = sig_name
        input_proto = await off_loop(rest_json.input_from_json, box[0], verb)
        if verb == "classify":
            response = await self.core.classify(classification_pb2.ClassificationRequest(
                model_spec=spec, input=input_proto), call)
            return rest_json.encode_classify_results(response.result), response.model_spec.version.value
        response = await self.core.regress(regression_pb2.RegressionRequest(model_spec=spec, input=input_proto),
                                           call)
        return rest_json.encode_regress_results(response.result), response.model_spec.version.value

    # ---- status, metadata, list --------------------------------------------------------------------

    def _status(self, spec: model_pb2.ModelSpec, call: CallInfo) -> bytes:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        return _dump(_proto_dict(self.core.get_model_status(request, call)))

    def _metadata(self, spec: model_pb2.ModelSpec, call: CallInfo) -> bytes:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec,
                                                                metadata_field=[SIGNATURE_DEF_FIELD])
        response = self.core.get_model_metadata(request, call)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(sig_map)
        return _dump({"model_spec": _proto_dict(response.model_spec),
                      "metadata": {SIGNATURE_DEF_FIELD: _proto_dict(sig_map)}})

    def _dashboard(self, path: str) -> web.Response:
        if path == dashboard.PAGE_PATH:
            return web.Response(body=dashboard.page(), content_type="text/html", charset="utf-8")
        try:
            return web.Response(body=_dump(dashboard.data(self.core)), content_type="application/json")
        except Exception as e:  # a bug in Verso: one line to the page, the traceback to the log
            log.exception("Dashboard data failed")
            return web.Response(status=500, body=_dump({"error": f"{type(e).__name__}: {e}"}),
                                content_type="application/json")

    def _list_models(self) -> bytes:
        return _dump({"models": [{"name": name, **_proto_dict(status)} for name, status in self.core.list_models()]})


def _control(request: web.Request) -> CallInfo:
    """A control-plane call's caller, for the admin rule and the decision log: "REST <peer
    address>" (and the client certificate's subject under mutual TLS), its bearer token,
    whether it is on this machine, whether mutual TLS verified it."""
    who = f"REST {request.remote}"
    cert = request.transport.get_extra_info("peercert") if request.transport is not None else None
    if cert and cert.get("subject"):
        who += " (" + ",".join(f"{k}={v}" for rdn in cert["subject"] for k, v in rdn) + ")"
    return CallInfo("", "REST", who=who, token=admin.bearer_token(request.headers.get("Authorization")),
                    local=admin.is_local(request.remote or ""), verified_client=bool(cert))


class _Inflater:
    """Streaming gzip/deflate decompression in bounded steps (``zlib.decompressobj`` with
    ``max_length``), gzip bodies of several members too. Invalid data: INVALID_ARGUMENT."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self.gzip = encoding != "deflate"
        self.d = None

    def _new(self, first: bytes):
        if self.gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # HTTP's "deflate" is zlib-wrapped; some clients send raw deflate (no 0x78 header byte).
        return zlib.decompressobj(zlib.MAX_WBITS if first[:1] == b"\x78" else -zlib.MAX_WBITS)

    def _bad(self) -> ServingError:
        return ServingError(Code.INVALID_ARGUMENT,
                            f"The request body is not valid {self.encoding} data (Content-Encoding: {self.encoding})")

    def feed(self, chunk: bytes, allowed: int):
        """Yield the inflated bytes of ``chunk``, each step at most ``allowed`` bytes (the
        caller stops once its total passes its limit, so nothing beyond is ever inflated)."""
        data = chunk
        while data:
            if self.d is None or (self.d.eof and self.gzip):
                if self.d is not None and not data.strip(b"\x00"):
                    return  # zero padding after the last gzip member (as gzip(1) accepts)
                self.d = self._new(data)
            elif self.d.eof:
                raise self._bad()  # data after the end of a deflate stream
            try:
                out = self.d.decompress(data, max(allowed, 1))
            except zlib.error:
                raise self._bad() from None
            rest = self.d.unconsumed_tail or self.d.unused_data
            if out:
                yield out
            elif len(rest) >= len(data):
                raise self._bad()  # no progress: cannot happen with valid zlib state
            data = rest

    def finish(self) -> None:
        """The body ended: it must have ended a complete stream."""
        if self.d is None or not self.d.eof:
            raise self._bad()


def _drop_result(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "never retrieved"


async def start(api: RestApi, host: str, port: int, reuse_port: bool = False,
                grace_s: float = 60.0, ssl_context=None, header_timeout_s: float = 30.0) -> web.AppRunner:
    """Serve ``api`` on host:port (shared with other worker processes with ``reuse_port``);
    ``runner.shutdown()`` then waits up to ``grace_s`` for requests in flight; ``ssl_context``
    serves HTTPS (``--ssl_config_file``). A connection that sends no complete request head for
    ``header_timeout_s`` (since it opened or since its last answer) is closed: aiohttp's
    keep-alive timer, which incoming bytes do not reset, so a trickled head is cut too (0:
    aiohttp's default). Raises OSError when the port cannot be bound."""
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False, shutdown_timeout=grace_s,
                           keepalive_timeout=header_timeout_s or _AIOHTTP_KEEPALIVE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None,
                       ssl_context=ssl_context)
    await site.start()
    return runner
