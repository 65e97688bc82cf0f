"""REST clients (``RestClient``, ``AsyncRestClient``): the gRPC clients' interface over TF
Serving's REST API (``/v1/models/...``), with httpx.

Differences that the REST API imposes (each documented on the call):

* ``predict`` always needs the signature (GetModelMetadata, cached) to type the JSON it
  receives, so outputs come back with the signature's dtypes as over gRPC;
* ``output_filter`` is applied here (REST has none; the server computes every output);
* ``reload`` has no REST endpoint in TF Serving: VersoError UNIMPLEMENTED;
* the answering version comes from Verso's ``Verso-Model-Version`` header (None from
  TF Serving);
* one base URL (no replica list: put a load balancer in front for REST);
* retries on UNAVAILABLE (HTTP 503 or no connection) with gRPC's backoff schedule.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Optional

import grpc
import httpx
import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from client._api import DEFAULT_ATTEMPTS, Api, AsyncRunner, Spec, SyncRunner
from client.errors import VersoError, from_serving_error
from client.types import metadata_from_protos, status_from_proto
from protos import rollout_pb2
from protos import rest_json
from protos.errors import ServingError

VERSION_HEADER = rest_json.VERSION_HEADER
ROUTING_KEY_HEADER, REQUEST_ID_HEADER, SLICE_HEADER = "Verso-Routing-Key", "Verso-Request-Id", "Verso-Slice"
_JSON = {"Content-Type": "application/json"}


def _path(spec: Spec, suffix: str = "") -> str:
    path = "/v1/models/" + urllib.parse.quote(spec.model, safe="")
    if spec.version is not None:
        path += f"/versions/{spec.version}"
    elif spec.label is not None:
        path += "/labels/" + urllib.parse.quote(spec.label, safe="")
    return path + suffix


def _body(doc: dict) -> bytes:
    return orjson.dumps(doc)


class Reply:
    """A REST answer: the parsed JSON body, the answering version and the request id (when
    the server said)."""

    __slots__ = ("doc", "version", "request_id")

    def __init__(self, doc, version: Optional[int], request_id: Optional[str] = None):
        self.doc, self.version, self.request_id = doc, version, request_id


def read_reply(status: int, headers, content: bytes) -> Reply:
    """Parse a response: the JSON document of a 2xx, else VersoError with the server's
    ``{"error": ...}`` text and the gRPC code its HTTP status stands for."""
    try:
        doc = rest_json.parse_json(content) if content else {}
    except ServingError:
        doc = None
    if 200 <= status < 300 and doc is not None:
        version = headers.get(VERSION_HEADER)
        return Reply(doc, int(version) if version and version.isdigit() else None, headers.get(REQUEST_ID_HEADER))
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
    else:
        message = content.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    raise VersoError.from_http(status, message)


def _parse(doc, message):
    try:
        return json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, AttributeError) as e:
        raise VersoError(grpc.StatusCode.INTERNAL, f"unexpected answer from the server: {e}") from None


class RestCodec:
    """Pure request builders (``(verb, path, body)``) and reply readers for TF Serving's REST API."""

    needs_signature = True   # JSON numbers carry no dtype: the signature types the outputs
    filters_outputs = False
    retries_here = True      # HTTP has no retry policy of its own

    @staticmethod
    def predict_request(spec: Spec, arrays: dict, output_filter, routing_key: Optional[str] = None,
                        slice: Optional[str] = None):
        try:
            body = rest_json.encode_predict_request(arrays, spec.signature)
        except ServingError as e:
            raise from_serving_error(e) from None
        headers = {k: v for k, v in ((ROUTING_KEY_HEADER, routing_key), (SLICE_HEADER, slice)) if v}
        return "POST", _path(spec, ":predict"), body, headers or None

    @staticmethod
    def predict_result(reply: Reply, signature) -> tuple[dict, Optional[int], Optional[str]]:
        doc = reply.doc
        if not isinstance(doc, dict) or "outputs" not in doc:
            raise VersoError(grpc.StatusCode.INTERNAL, "the server's answer has no 'outputs'")
        infos = dict(signature.proto.outputs)
        outputs = doc["outputs"]
        if isinstance(outputs, dict) and len(infos) > 1:
            infos = {a: i for a, i in infos.items() if a in outputs}
        try:
            arrays, _ = rest_json.decode_predict({"inputs": outputs}, infos)
        except ServingError as e:
            raise VersoError(grpc.StatusCode.INTERNAL, f"cannot decode the server's answer: {e.message}") from None
        return arrays, reply.version, reply.request_id

    @staticmethod
    def metadata_request(spec: Spec):
        return "GET", _path(spec, "/metadata"), None

    @staticmethod
    def metadata_result(reply: Reply):
        doc = reply.doc if isinstance(reply.doc, dict) else {}
        spec = _parse(doc.get("model_spec", {}), model_pb2.ModelSpec())
        sigs = _parse(doc.get("metadata", {}).get("signature_def", {}), get_model_metadata_pb2.SignatureDefMap())
        return metadata_from_protos(spec, sigs)

    @staticmethod
    def status_request(spec: Spec):
        return "GET", _path(spec), None

    @staticmethod
    def status_result(reply: Reply):
        return status_from_proto(_parse(reply.doc, get_model_status_pb2.GetModelStatusResponse()))

    @staticmethod
    def classify_request(spec: Spec, doc: dict):
        return "POST", _path(spec, ":classify"), _body(doc)

    @staticmethod
    def classify_result(reply: Reply) -> list[list[tuple[str, float]]]:
        try:
            # Scores travel as float32 printed shortest; widen them as gRPC's float field does.
            return [[(str(label), float(np.float32(score))) for label, score in row] for row in reply.doc["results"]]
        except (KeyError, TypeError, ValueError):
            raise VersoError(grpc.StatusCode.INTERNAL, "unexpected classify answer from the server") from None

    @staticmethod
    def regress_request(spec: Spec, doc: dict):
        return "POST", _path(spec, ":regress"), _body(doc)

    @staticmethod
    def regress_result(reply: Reply) -> np.ndarray:
        try:
            return np.asarray(reply.doc["results"], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise VersoError(grpc.StatusCode.INTERNAL, "unexpected regress answer from the server") from None

    @staticmethod
    def request_id_of(reply: Reply) -> Optional[str]:
        return reply.request_id

    @staticmethod
    def version_of(reply: Reply) -> Optional[int]:
        """The version that answered a Predict, when the server said (Verso's version header)."""
        return reply.version

    @staticmethod
    def rollout_request(model: str):
        return "GET", "/v1/rollouts/" + urllib.parse.quote(model, safe=""), None

    @staticmethod
    def rollout_result(reply: Reply):
        return _parse(reply.doc, rollout_pb2.RolloutStatus())

    @staticmethod
    def set_rollout_request(message):
        body = json_format.MessageToJson(message, preserving_proto_field_name=True).encode()
        return "POST", "/v1/rollouts/" + urllib.parse.quote(message.model, safe=""), body

    set_rollout_result = rollout_result

    @staticmethod
    def feedback_request(arg):
        request_id, labels, targets = arg
        body = {"request_id": request_id, "labels": labels}
        if targets:
            body["targets"] = targets
        return "POST", "/v1/feedback", _body(body)

    @staticmethod
    def feedback_result(reply: Reply):
        return _parse(reply.doc, rollout_pb2.FeedbackResponse())

    @staticmethod
    def reload_request(config):
        raise VersoError(grpc.StatusCode.UNIMPLEMENTED,
                         "ReloadConfig has no REST endpoint in TF Serving's API; use the gRPC client")

    @staticmethod
    def reload_result(reply: Reply) -> None:  # never reached: reload_request refuses first
        return None


def _transport_error(e: httpx.HTTPError) -> VersoError:
    if isinstance(e, httpx.TimeoutException):
        return VersoError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    return VersoError(grpc.StatusCode.UNAVAILABLE, f"{type(e).__name__}: {e}")


def _check_deadline(deadline: float) -> None:
    # httpx's timeouts bound each phase (connect, read ...), not the call: an answer that came
    # after the deadline is DEADLINE_EXCEEDED, as gRPC would report it.
    if time.monotonic() > deadline:
        raise VersoError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _RestBase(Api):
    def __init__(self, url: str = "http://localhost:8501", *, timeout: Optional[float] = None,
                 max_attempts: int = DEFAULT_ATTEMPTS, verify=True, token: Optional[str] = None):
        self._init_api(timeout, max_attempts)
        self._verify = verify  # httpx's: True, a CA bundle path, or an ssl.SSLContext (client certificates)
        # --admin_token_file's token, sent with every call (the server asks for it on changes only).
        self._auth = {"Authorization": f"Bearer {token}"} if token else None
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self._codec = RestCodec


class RestClient(_RestBase, SyncRunner):
    """Blocking REST client with ``Client``'s methods: ``RestClient("http://localhost:8501")``.

    HTTPS: ``RestClient("https://host:8501", verify=ssl_context)``; ``verify`` is httpx's (True,
    a CA bundle path, or an ``ssl.SSLContext`` that may carry a client certificate). ``token``:
    the server's admin token (``--admin_token_file``), sent as ``Authorization: Bearer``."""

    def __init__(self, url: str = "http://localhost:8501", **kw):
        super().__init__(url, **kw)
        self._http = httpx.Client(base_url=self.url, verify=self._verify, headers=self._auth)

    def _io(self, method: str, request, timeout: float) -> Reply:
        verb, path, body, *extra = request
        headers = {**_JSON, **(extra[0] or {})} if extra else (_JSON if body else None)
        deadline = time.monotonic() + timeout
        try:
            r = self._http.request(verb, path, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            raise _transport_error(e) from None
        _check_deadline(deadline)
        return read_reply(r.status_code, r.headers, r.content)

    def close(self) -> None:
        self._http.close()


class AsyncRestClient(_RestBase, AsyncRunner):
    """asyncio REST client: ``RestClient``'s methods, awaitable."""

    def __init__(self, url: str = "http://localhost:8501", **kw):
        super().__init__(url, **kw)
        self._http = httpx.AsyncClient(base_url=self.url, verify=self._verify, headers=self._auth)

    async def _io(self, method: str, request, timeout: float) -> Reply:
        verb, path, body, *extra = request
        headers = {**_JSON, **(extra[0] or {})} if extra else (_JSON if body else None)
        deadline = time.monotonic() + timeout
        try:
            r = await self._http.request(verb, path, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            raise _transport_error(e) from None
        _check_deadline(deadline)
        return read_reply(r.status_code, r.headers, r.content)

    async def close(self) -> None:
        await self._http.aclose()
