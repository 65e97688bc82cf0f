"""The gRPC adapter: TF Serving's PredictionService and ModelService over ``ServingCore``.

Runs on grpc.aio in the event loop that owns the manager. Each method only translates:
it awaits the core and maps ``ServingError`` to a gRPC status (message cut at 1024
characters + ``...TRUNCATED`` as TF Serving does). A request that does not parse gets
INTERNAL, as from TF Serving's C++ gRPC, not a Python exception text. Any other exception
is a Verso bug: it is logged with its traceback and the caller gets INTERNAL in one line.

The services are registered from a method table with the official request/response
classes, so the wire format is TF Serving's byte for byte.

Overload is never silent: gRPC core cancels calls (CANCELLED, nothing logged) once more than
``grpc.server.max_pending_requests`` wait for the Python loop to take them, which a burst of
~1 000 calls reached. That queue is raised far above any burst, and calls beyond
``--grpc_max_concurrent_rpcs`` in progress get RESOURCE_EXHAUSTED here instead, counted in
``verso_requests_rejected_total`` and logged (rate-limited), as are calls refused by the
request limits (server/dataplane/limits.py). A data-plane call holds its claim on the in-flight
budget until its answer is serialized; a large answer is serialized in the request executor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, predict_pb2, regression_pb2)

from protos import rollout_pb2
from server.dataplane import admin
from server.dataplane.core import CallInfo, ServingCore
from server.dataplane.limits import OFFLOAD_BYTES, LimitExceeded, Rejections
from protos.errors import Code, ServingError

log = logging.getLogger("verso.grpc")

_STATUS = {sc.value[0]: sc for sc in grpc.StatusCode}
_MAX_MESSAGE = 1024
INT32_MAX = 2**31 - 1
# Calls gRPC core may hold for the Python loop to take before it cancels them silently (its
# default is 1 000, with random rejections between that and 3 000). Far above any burst: our
# own limit (--grpc_max_concurrent_rpcs) answers RESOURCE_EXHAUSTED once the loop takes them.
MAX_PENDING_REQUESTS = 1 << 16
DEFAULT_MAX_CONCURRENT_RPCS = 4096


class _Unparsable:
    """Stands for a request whose bytes are not a valid message."""


UNPARSABLE = _Unparsable()


def grpc_message(message: str) -> str:
    if len(message) > _MAX_MESSAGE:
        return message[:_MAX_MESSAGE] + "...TRUNCATED"
    return message


def _parser(message_cls):
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except Exception:
            return UNPARSABLE
    return parse


ROUTING_KEY = "verso-routing-key"
REQUEST_ID = "verso-request-id"
SLICE = "verso-slice"


def _rollout_keys(info: CallInfo, context: grpc.aio.ServicerContext) -> None:
    """The rollout's routing key and slice key from the call's metadata, into ``info``."""
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY or key == SLICE:
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if key == ROUTING_KEY:
                info.routing_key = text
            else:
                info.slice = text


def _who(context: grpc.aio.ServicerContext) -> str:
    """The caller of a control-plane call: "gRPC <peer>", and the client certificate's subject
    under mutual TLS."""
    who = f"gRPC {context.peer()}"
    subject = (context.auth_context() or {}).get("x509_subject")
    if subject:
        who += f" ({subject[0].decode('utf-8', 'replace')})"
    return who


def _control(info: CallInfo, context: grpc.aio.ServicerContext) -> None:
    """What the admin rule needs of a control-plane call: who, the bearer token, whether the
    peer is on this machine, whether mutual TLS verified its certificate."""
    info.who = _who(context)
    info.local = admin.is_local(context.peer() or "")
    info.verified_client = bool((context.auth_context() or {}).get("x509_subject"))
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            info.token = admin.bearer_token(value if isinstance(value, str) else value.decode("utf-8", "replace"))


class _Gate:
    """The calls in progress on one server, at most ``limit`` (0: no limit); shared by every
    method. Owned by the event loop."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    def refuse(self) -> Optional[LimitExceeded]:
        if self.limit and self.active >= self.limit:
            return LimitExceeded(Code.RESOURCE_EXHAUSTED,
                                 f"Too many concurrent requests: {self.active} in progress, the limit is "
                                 f"{self.limit} (--grpc_max_concurrent_rpcs); retry later", "concurrency")
        return None


def _serialized(response, claim) -> bytes:
    claim.take(response.ByteSize(), "The serialized response")
    return response.SerializeToString()


def _serialize(response) -> bytes:
    """The response serializer: a large answer arrives already serialized (off the loop)."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def _method(name: str, call: Callable[..., Any], request_cls, response_cls, core: Optional[ServingCore] = None,
            counted: bool = False, routed: bool = False, control: bool = False, gate: Optional[_Gate] = None,
            rejections: Optional[Rejections] = None, data: bool = False) -> grpc.RpcMethodHandler:
    """A unary handler over ``call(request, CallInfo)``. With ``core``, every finished call is
    recorded by ``core.record`` (the request metrics, as for REST); a ``counted`` API (Predict,
    Classify, Regress) also feeds TF Serving's request count and latency. ``routed``: the
    ``verso-routing-key`` metadata goes into the CallInfo, and the answer's request id comes
    back as ``verso-request-id`` trailing metadata (rollouts). ``control``: a call that changes
    the server; the CallInfo names its caller (``who``). ``gate``: the server's concurrency
    limit; ``rejections`` counts and logs calls refused by a limit. ``data``: a data-plane call,
    which holds a claim on the in-flight budget until its answer is serialized."""
    gate = gate or _Gate(0)

    async def behaviour(request, context: grpc.aio.ServicerContext):
        info = CallInfo(name, "GRPC", counted=counted)
        result = None
        refused = gate.refuse()
        gate.active += 1
        if data and core is not None:
            info.claim = core.limits.claim()
        try:
            if refused is not None:
                raise refused
            if request is UNPARSABLE:
                raise ServingError(Code.INTERNAL, f"Failed to parse {request_cls.DESCRIPTOR.full_name}")
            if routed and core.rollouts.configs:  # routed: only built when rollouts exist
                _rollout_keys(info, context)
            if control:
                _control(info, context)
            answer = call(request, info)
            if isinstance(answer, Awaitable):
                answer = await answer
            if data and core is not None and info.claim.held > OFFLOAD_BYTES:
                # A call holding this much may have a large answer: sized (varints are counted
                # one by one), claimed and serialized off the loop.
                answer = await asyncio.get_running_loop().run_in_executor(core.executor, _serialized, answer,
                                                                          info.claim)
            if info.request_id:
                context.set_trailing_metadata(((REQUEST_ID, info.request_id),))
            result, err = answer, None
        except ServingError as e:
            err = e
        except Exception as e:  # a bug in Verso: never a traceback to the client
            log.exception("Unexpected error in %s", name)
            err = ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}")
        finally:
            gate.active -= 1
            if info.claim is not None:
                info.claim.release()
        if isinstance(err, LimitExceeded) and rejections is not None:
            rejections("gRPC", err)
        if core is not None:
            core.record(info, err)
        if err is None:
            return result
        await context.abort(_STATUS[int(err.code)], grpc_message(err.message))

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=_parser(request_cls), response_serializer=_serialize)


def service_handlers(core: ServingCore, max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
                     ) -> list[grpc.GenericRpcHandler]:
    """TF Serving's two services (their calls recorded in the core's request metrics) and,
    with rollouts, Verso's RolloutService; at most ``max_concurrent_rpcs`` calls of them in
    progress (0: no limit)."""
    gate = _Gate(max_concurrent_rpcs)
    rejections = Rejections(core.metrics)

    def method(name, call, request_cls, response_cls, counted=False, routed=False, control=False, data=False):
        return _method(name, call, request_cls, response_cls, core, counted, routed, control, gate, rejections,
                       data or counted)

    prediction = {
        # Routing keys and request ids only matter with rollouts; without, Predict skips them.
        "Predict": method("Predict", core.predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse, True,
                          routed=core.rollouts is not None),
        "GetModelMetadata": method("GetModelMetadata", core.get_model_metadata,
                                   get_model_metadata_pb2.GetModelMetadataRequest,
                                   get_model_metadata_pb2.GetModelMetadataResponse),
        "Classify": method("Classify", core.classify, classification_pb2.ClassificationRequest,
                           classification_pb2.ClassificationResponse, True),
        "Regress": method("Regress", core.regress, regression_pb2.RegressionRequest,
                          regression_pb2.RegressionResponse, True),
        "MultiInference": method("MultiInference", core.multi_inference, inference_pb2.MultiInferenceRequest,
                                 inference_pb2.MultiInferenceResponse, data=True),
    }
    model = {
        "GetModelStatus": method("GetModelStatus", core.get_model_status,
                                 get_model_status_pb2.GetModelStatusRequest,
                                 get_model_status_pb2.GetModelStatusResponse),
        "HandleReloadConfigRequest": method("HandleReloadConfigRequest", core.reload_config,
                                            model_management_pb2.ReloadConfigRequest,
                                            model_management_pb2.ReloadConfigResponse, control=True),
    }
    handlers = [grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
                grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", model)]
    if core.rollouts is not None:
        # Verso's extension service: not counted in the per-model request metrics.
        handlers.append(grpc.method_handlers_generic_handler("verso.rollout.RolloutService", {
            "GetRollout": _method("GetRollout", lambda r, _: core.get_rollout(r.model),
                                  rollout_pb2.RolloutRequest, rollout_pb2.RolloutStatus, gate=gate,
                                  rejections=rejections),
            "SetRollout": _method("SetRollout", core.set_rollout, rollout_pb2.ModelRollout,
                                  rollout_pb2.RolloutStatus, control=True, gate=gate, rejections=rejections),
            "Feedback": _method("Feedback", lambda r, info: core.feedback(r.request_id, r.labels, info, r.targets),
                                rollout_pb2.FeedbackRequest, rollout_pb2.FeedbackResponse, control=True, gate=gate,
                                rejections=rejections),
        }))
    return handlers


def create_server(core: ServingCore, address: Optional[str], reuse_port: bool = False,
                  channel_arguments=(), credentials=None, socket_path: Optional[str] = None,
                  max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
                  max_receive_bytes: int = INT32_MAX) -> grpc.aio.Server:
    """A grpc.aio server bound to ``address`` (None: no TCP port, ``--port=0``) and, with
    ``socket_path`` (``--grpc_socket_path``), also to that UNIX domain socket with the same
    credentials, as TF Serving; both services, not started. (gRPC replaces a stale socket file
    at the path when it binds and removes the socket when the server stops.)

    Message size limits are INT32_MAX both ways, as TF Serving sets them, except that a
    received message may not be larger than ``max_receive_bytes`` (the in-flight budget: gRPC
    core buffers a message whole before any handler sees it, and one that large could never be
    served). ``reuse_port``
    (``--num_workers``): several worker processes share the port (SO_REUSEPORT); otherwise a
    port in use is an error. ``credentials`` (``--ssl_config_file``): TLS on the port instead of
    plain text. ``max_concurrent_rpcs`` (``--grpc_max_concurrent_rpcs``): calls in progress
    beyond it get RESOURCE_EXHAUSTED (see the module docstring). Raises RuntimeError when the
    address cannot be bound.
    """
    options = [
        ("grpc.max_receive_message_length", max(1, min(INT32_MAX, max_receive_bytes))),
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS),
    ]
    # --grpc_channel_arguments: the operator's settings win over the defaults above.
    overridden = {k for k, _ in channel_arguments}
    options = [o for o in options if o[0] not in overridden] + list(channel_arguments)
    server = grpc.aio.server(handlers=service_handlers(core, max_concurrent_rpcs), options=options)
    for target in ([address] if address else []) + ([f"unix:{socket_path}"] if socket_path else []):
        try:
            bound = (server.add_secure_port(target, credentials) if credentials is not None
                     else server.add_insecure_port(target))
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise RuntimeError(f"Could not bind the gRPC server to {target}")
    return server
