"""gRPC clients (``Client``, ``AsyncClient``) over TF Serving's public API.

They speak only TF Serving's PredictionService and ModelService, so they work against
TensorFlow Serving itself as well as Verso. Channels are configured, not wrapped:

* retries: gRPC's own retry policy, on UNAVAILABLE only, exponential backoff
  (0.1 s doubling to 1 s, jittered), ``max_attempts`` in all (gRPC caps it at 5);
* replicas: ``"host1:8500,host2:8500"`` is one channel whose resolver returns every address,
  balanced by gRPC's built-in ``round_robin`` policy (a replica that is down is skipped);
* deadlines: every call carries one (the client's ``timeout``, or the call's).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import NamedTuple, Optional, Sequence

import grpc
import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from client._api import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    BACKOFF_MULTIPLIER,
    DEFAULT_ATTEMPTS,
    Api,
    AsyncRunner,
    Spec,
    SyncRunner,
)
from client.errors import VersoError, from_serving_error
from client.types import metadata_from_protos, status_from_proto
from protos import rollout_pb2, rollout_pb2_grpc
from protos import rest_json
from protos import tensor_codec
from protos.errors import ServingError

_URI_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:", "unix-abstract:", "vsock:")
_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def service_config(max_attempts: int = DEFAULT_ATTEMPTS) -> str:
    """The channel's service config: round_robin, and a retry policy on UNAVAILABLE."""
    method = {"name": [{"service": s} for s in _SERVICES]}
    if max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": min(int(max_attempts), 5),
            "initialBackoff": f"{BACKOFF_INITIAL_S}s",
            "maxBackoff": f"{BACKOFF_MAX_S}s",
            "backoffMultiplier": BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]})


def channel_target(target: str) -> str:
    """A gRPC target for ``target``. One address (or any URI gRPC knows, ``dns:``, ``unix:``,
    ``ipv4:`` ...) is used as is. Several comma-separated ``host:port`` become one ``ipv4:`` (or
    ``ipv6:``) address list, host names resolved now, so gRPC balances over all of them."""
    if "," not in target or target.startswith(_URI_SCHEMES):
        return target
    replicas = []
    for part in (p.strip() for p in target.split(",") if p.strip()):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise VersoError.invalid(f"replica {part!r} is not host:port")
        replicas.append((host.strip("[]"), port))
    addresses = []
    for host, port in replicas:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise VersoError(grpc.StatusCode.UNAVAILABLE, f"cannot resolve {host}: {e.strerror}") from None
            # One address per replica: IPv4 first, so "localhost" is not counted twice.
            infos.sort(key=lambda i: i[0] != socket.AF_INET)
            ip = ipaddress.ip_address(infos[0][4][0])
        addresses.append((ip, int(port)))
    if len({ip.version for ip, _ in addresses}) > 1:
        raise VersoError.invalid(f"replicas mix IPv4 and IPv6 addresses: {target}")
    if addresses[0][0].version == 4:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)


def channel_options(max_attempts: int, options: Sequence = ()) -> list:
    return [("grpc.service_config", service_config(max_attempts)),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            *options]


def _model_spec(spec: Spec, with_signature: bool = True) -> model_pb2.ModelSpec:
    ms = model_pb2.ModelSpec(name=spec.model)
    if spec.version is not None:
        ms.version.CopyFrom(wrappers_pb2.Int64Value(value=spec.version))
    elif spec.label is not None:
        ms.version_label = spec.label
    if with_signature and spec.signature:
        ms.signature_name = spec.signature
    return ms


def _input(doc: dict, method: str):
    try:
        return rest_json.input_from_json(doc, method)
    except ServingError as e:
        raise from_serving_error(e) from None


class GrpcCodec:
    """Pure request builders and response readers for TF Serving's gRPC messages."""

    needs_signature = False  # tensors carry their dtype
    filters_outputs = True   # PredictRequest.output_filter
    retries_here = False     # the channel's retry policy does it

    @staticmethod
    def predict_request(spec: Spec, arrays: dict, output_filter, routing_key: Optional[str] = None,
                        slice: Optional[str] = None) -> PredictCall:
        request = predict_pb2.PredictRequest(model_spec=_model_spec(spec))
        for alias, arr in arrays.items():
            # Raw bytes for numbers (one memcpy); strings always go to string_val.
            tensor_codec.fill_proto(request.inputs[alias], arr, tensor_content=True)
        if output_filter:
            request.output_filter.extend(output_filter)
        return PredictCall(request, tuple((k, v) for k, v in ((ROUTING_KEY, routing_key), (SLICE, slice)) if v))

    @staticmethod
    def predict_result(raw, signature) -> tuple[dict, Optional[int], Optional[str]]:
        response, request_id = raw
        try:
            # Copies: arrays decoded from tensor_content are read-only views of the message.
            outputs = {a: np.array(tensor_codec.to_ndarray(t)) for a, t in sorted(response.outputs.items())}
        except tensor_codec.TensorCodecError as e:
            raise VersoError(grpc.StatusCode.INTERNAL, f"cannot decode the server's answer: {e}") from None
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return outputs, version, request_id

    @staticmethod
    def metadata_request(spec: Spec):
        return get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(spec, False), metadata_field=["signature_def"])

    @staticmethod
    def metadata_result(response):
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" in response.metadata:
            response.metadata["signature_def"].Unpack(sigmap)
        return metadata_from_protos(response.model_spec, sigmap)

    @staticmethod
    def status_request(spec: Spec):
        return get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(spec, False))

    @staticmethod
    def status_result(response):
        return status_from_proto(response)

    @staticmethod
    def classify_request(spec: Spec, doc: dict):
        return classification_pb2.ClassificationRequest(model_spec=_model_spec(spec),
                                                        input=_input(doc, "classify"))

    @staticmethod
    def classify_result(response) -> list[list[tuple[str, float]]]:
        return [[(c.label, c.score) for c in cls.classes] for cls in response.result.classifications]

    @staticmethod
    def regress_request(spec: Spec, doc: dict):
        return regression_pb2.RegressionRequest(model_spec=_model_spec(spec), input=_input(doc, "regress"))

    @staticmethod
    def regress_result(response) -> np.ndarray:
        return np.array([r.value for r in response.result.regressions], dtype=np.float32)

    @staticmethod
    def request_id_of(raw) -> Optional[str]:
        return raw[1]

    @staticmethod
    def version_of(raw) -> Optional[int]:
        """The version that answered a Predict (its ``model_spec.version``), None if unsaid."""
        spec = raw[0].model_spec
        return spec.version.value if spec.HasField("version") else None

    @staticmethod
    def rollout_request(model: str):
        return rollout_pb2.RolloutRequest(model=model)

    @staticmethod
    def set_rollout_request(message):
        return message

    @staticmethod
    def feedback_request(arg):
        request_id, labels, targets = arg
        return rollout_pb2.FeedbackRequest(request_id=request_id, labels=labels, targets=targets)

    rollout_result = set_rollout_result = feedback_result = staticmethod(lambda response: response)

    @staticmethod
    def reload_request(config):
        return model_management_pb2.ReloadConfigRequest(config=config)

    @staticmethod
    def reload_result(response) -> None:
        if response.status.error_code != 0:
            raise VersoError.from_number(response.status.error_code, response.status.error_message)


_METHODS = {  # call name -> (stub, gRPC method)
    "predict": (0, "Predict"), "classify": (0, "Classify"), "regress": (0, "Regress"),
    "metadata": (0, "GetModelMetadata"), "status": (1, "GetModelStatus"),
    "reload": (1, "HandleReloadConfigRequest"),
    "rollout": (2, "GetRollout"), "set_rollout": (2, "SetRollout"), "feedback": (2, "Feedback"),
}
ROUTING_KEY, REQUEST_ID, SLICE = "verso-routing-key", "verso-request-id", "verso-slice"


class PredictCall(NamedTuple):
    """A Predict on the wire: the request and its metadata (the rollout routing key)."""

    request: predict_pb2.PredictRequest
    metadata: tuple


def _request_id(trailing) -> Optional[str]:
    for key, value in trailing or ():
        if key == REQUEST_ID:
            return value
    return None


class _GrpcBase(Api):
    def __init__(self, target: str = "localhost:8500", *, timeout: Optional[float] = None,
                 max_attempts: int = DEFAULT_ATTEMPTS, credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Sequence = (), aio: bool = False, token: Optional[str] = None):
        self._init_api(timeout, max_attempts)
        # --admin_token_file's token, sent with every call but Predict (the server asks for it
        # on SetRollout, Feedback and ReloadConfig only).
        self._auth = (("authorization", f"Bearer {token}"),) if token else None
        self.target = target
        self._codec = GrpcCodec
        mod = grpc.aio if aio else grpc
        uri, opts = channel_target(target), channel_options(self.max_attempts, options)
        self._channel = (mod.secure_channel(uri, credentials, options=opts) if credentials is not None
                         else mod.insecure_channel(uri, options=opts))
        stubs = (prediction_service_pb2_grpc.PredictionServiceStub(self._channel),
                 model_service_pb2_grpc.ModelServiceStub(self._channel),
                 rollout_pb2_grpc.RolloutServiceStub(self._channel))
        self._methods = {name: getattr(stubs[i], rpc) for name, (i, rpc) in _METHODS.items()}


class Client(_GrpcBase, SyncRunner):
    """Blocking gRPC client for TF Serving's API (Verso or TensorFlow Serving).

    ``Client("localhost:8500")``; several replicas: ``Client("10.0.0.1:8500,10.0.0.2:8500")``.
    ``timeout``: the default deadline of every call, in seconds (10). ``max_attempts``: tries per
    call when the server answers UNAVAILABLE (1 turns retries off). ``credentials``: TLS.
    ``token``: the server's admin token (``--admin_token_file``), sent as ``authorization: Bearer``.
    Thread-safe (one channel); use as a context manager or call ``close()``.
    """

    def __init__(self, target: str = "localhost:8500", **kw):
        super().__init__(target, aio=False, **kw)

    def _io(self, method: str, request, timeout: float):
        try:
            if method == "predict":
                response, call = self._methods[method].with_call(request.request, timeout=timeout,
                                                                 metadata=request.metadata or None)
                return response, _request_id(call.trailing_metadata())
            return self._methods[method](request, timeout=timeout, metadata=self._auth)
        except grpc.RpcError as e:
            raise VersoError(e.code(), e.details() or "") from None

    def close(self) -> None:
        self._channel.close()


class AsyncClient(_GrpcBase, AsyncRunner):
    """asyncio gRPC client (``grpc.aio``): the methods of ``Client``, awaitable.

    Create it inside the event loop that uses it; ``async with AsyncClient(...) as c:``.
    """

    def __init__(self, target: str = "localhost:8500", **kw):
        super().__init__(target, aio=True, **kw)

    async def _io(self, method: str, request, timeout: float):
        try:
            if method == "predict":
                call = self._methods[method](request.request, timeout=timeout, metadata=request.metadata or None)
                response = await call
                return response, _request_id(await call.trailing_metadata())
            return await self._methods[method](request, timeout=timeout, metadata=self._auth)
        except grpc.RpcError as e:
            raise VersoError(e.code(), e.details() or "") from None

    async def close(self) -> None:
        await self._channel.close()
