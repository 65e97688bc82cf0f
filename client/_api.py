"""The client's calls, written once for every transport and for both sync and asyncio.

Each public call is a generator (sans-IO): it builds wire requests with the transport's codec,
yields ``(method, wire_request, timeout)`` and receives the raw response. Two runners drive
the generators: ``SyncRunner`` (blocking I/O) and ``AsyncRunner`` (awaits the I/O), so
``Client.predict`` returns arrays and ``AsyncClient.predict`` returns an awaitable of the same.
A concrete client mixes ``Api`` with one runner and provides ``_codec`` and ``_io``.

Errors: ``_io`` raises ``VersoError``; it is thrown back into the generator (so a call can
drop a metadata cache entry that led it astray, or retry) and then reaches the caller unchanged.
Retries: gRPC channels retry UNAVAILABLE by themselves; for REST, ``Api._call`` retries on the
same schedule and yields ``(SLEEP, None, seconds)`` for the runner to wait.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Optional

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from client.errors import VersoError
from client.types import ModelMetadata, Signature
from protos import tensor_codec

SLEEP = "sleep"  # the method a call generator yields to wait (its "timeout" is the wait)
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 5  # gRPC's own ceiling for retryPolicy.maxAttempts
# gRPC's retry schedule (A6): the n-th retry waits uniform(0, min(initial * multiplier**n, max)).
BACKOFF_INITIAL_S, BACKOFF_MAX_S, BACKOFF_MULTIPLIER = 0.1, 1.0, 2.0

# Codes after which a cached signature may be what went wrong (a new version changed it).
_STALE_METADATA = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                   grpc.StatusCode.NOT_FOUND}


class Prediction(NamedTuple):
    """``predict(..., details=True)``: outputs by alias, the version that answered (None when
    a REST server does not say), the request id for ``feedback`` (None unless the model is
    under a Verso rollout)."""

    outputs: dict
    version: Optional[int]
    request_id: Optional[str]


class Spec(NamedTuple):
    """Which servable a call addresses: a model, at most one of version/label, a signature."""

    model: str
    version: Optional[int] = None
    label: Optional[str] = None
    signature: str = ""


def make_spec(model: str, version, label, signature) -> Spec:
    if version is not None and label is not None:
        raise VersoError.invalid("give a version or a label, not both")
    if version is not None:
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise VersoError.invalid(f"version must be an integer, not {version!r}") from None
    return Spec(str(model), version, None if label is None else str(label), signature or "")


def backoff_delays(max_attempts: int, rng=random.random) -> Iterator[float]:
    """The waits before attempts 2..max_attempts, on gRPC's retry schedule (used for REST;
    gRPC channels retry by themselves with the same parameters)."""
    cap = BACKOFF_INITIAL_S
    for _ in range(max_attempts - 1):
        yield rng() * cap
        cap = min(cap * BACKOFF_MULTIPLIER, BACKOFF_MAX_S)


def as_input_array(alias: str, value, spec) -> np.ndarray:
    """A caller's value for one input. numpy arrays are sent as they are; lists and scalars take
    the signature's dtype (``spec``, a ``TensorSpec`` or None when unknown), as REST JSON does."""
    if isinstance(value, np.ndarray):
        return value
    try:
        if spec is None:
            return np.asarray(value)
        if spec.dtype == "string":
            return np.asarray(value, dtype=object)
        return np.asarray(value, dtype=spec.np_dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise VersoError.invalid(f"input {alias}: cannot make a {spec.dtype if spec else ''} array: {e}") from None


def bind_inputs(inputs, signature: Optional[Signature]) -> dict[str, np.ndarray]:
    """``predict``'s inputs as ``{alias: array}``: one value goes to the signature's only input;
    values become arrays by ``as_input_array``. ``signature`` may be None only for a dict of
    numpy arrays."""
    if not isinstance(inputs, Mapping):
        if signature is None or len(signature.inputs) != 1:
            n = len(signature.inputs) if signature else "several"
            raise VersoError.invalid(f"signature {signature.name if signature else ''} has {n} inputs "
                                     f"({', '.join(signature.inputs) if signature else '?'}): "
                                     "pass a dict {alias: value}")
        inputs = {next(iter(signature.inputs)): inputs}
    return {str(a): as_input_array(a, v, signature.inputs.get(a) if signature else None)
            for a, v in inputs.items()}


def features_json(features) -> dict:
    """A dict of example features as TF Serving's REST JSON values (``input_from_json`` turns
    those into ``tf.train.Example``): arrays flatten to lists, numpy scalars become Python
    numbers, bytes become ``{"b64": ...}``."""
    if not isinstance(features, Mapping):
        raise VersoError.invalid(f"an example must be a dict of features, not {type(features).__name__}")
    return {str(name): _feature_json(value) for name, value in features.items()}


def _feature_json(value):
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    if isinstance(value, (list, tuple)):
        return [_scalar_json(v) for v in value]
    return _scalar_json(value)


def _scalar_json(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(v)).decode("ascii")}
    return v


def reload_config(config) -> model_server_config_pb2.ModelServerConfig:
    """``reload``'s argument as a ModelServerConfig: the proto itself, a path (``os.PathLike``)
    to a text-proto file, or text-proto text."""
    if isinstance(config, model_server_config_pb2.ModelServerConfig):
        return config
    if isinstance(config, os.PathLike):
        try:
            with open(config, encoding="utf-8") as f:
                config = f.read()
        except OSError as e:
            raise VersoError.invalid(f"cannot read {os.fspath(config)}: {e.strerror}") from None
    if not isinstance(config, str):
        raise VersoError.invalid(f"config must be a ModelServerConfig, a path or text, not {type(config).__name__}")
    try:
        return text_format.Parse(config, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise VersoError.invalid(f"not a text-format ModelServerConfig: {e}") from None


class Api:
    """The calls every client offers. Needs ``self._codec``, ``self.timeout``,
    ``self.max_attempts`` and a runner's ``_run``; ``self._signatures`` caches ModelMetadata by
    (model, version, label)."""

    _codec: Any
    timeout: float
    max_attempts: int

    def _init_api(self, timeout: Optional[float], max_attempts: int) -> None:
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self._signatures: dict[tuple, ModelMetadata] = {}

    def _deadline(self, timeout: Optional[float]) -> float:
        return self.timeout if timeout is None else float(timeout)

    # ---- public calls ------------------------------------------------------------------------

    def predict(self, model: str, inputs, *, version: Optional[int] = None, label: Optional[str] = None,
                signature: Optional[str] = None, output_filter=None, timeout: Optional[float] = None,
                with_version: bool = False, as_dict: bool = False, routing_key: Optional[str] = None,
                slice: Optional[str] = None,
                details: bool = False):
        """Run a Predict signature.

        ``inputs``: a dict ``{alias: value}``, or one value when the signature has one input.
        numpy arrays are sent with their own dtype; lists and scalars are converted to the
        signature input's dtype (the signature is fetched once with GetModelMetadata and cached).
        Returns one numpy array when the answer has one output (unless ``as_dict``), else
        ``{alias: array}``; ``(that, version)`` with ``with_version=True`` (the version that
        answered; None from a REST server that does not say). ``output_filter``: aliases to
        return (REST: filtered here, the server computes every output).
        ``details=True`` returns a ``Prediction`` (outputs by alias, the answering version, the
        request id that ``feedback`` takes). ``routing_key``: Verso's rollout extension, so one
        user always lands on the same side of a canary split. ``slice``: the slice key (e.g. a
        region or device class) the rollout's per-slice accuracy and bias gate count it under.
        """
        spec = make_spec(model, version, label, signature)
        return self._run(self._predict(spec, inputs, output_filter, self._deadline(timeout),
                                       "details" if details else ("version" if with_version else ""),
                                       as_dict, routing_key, slice))

    def classify(self, model: str, examples, *, context=None, version: Optional[int] = None,
                 label: Optional[str] = None, signature: Optional[str] = None,
                 timeout: Optional[float] = None) -> list[list[tuple[str, float]]]:
        """Classify ``examples`` (a list of ``{feature: value}`` dicts; ``context``: features
        shared by all). Returns, per example, its ``(label, score)`` pairs."""
        spec = make_spec(model, version, label, signature)
        return self._run(self._inference("classify", spec, examples, context, self._deadline(timeout)))

    def regress(self, model: str, examples, *, context=None, version: Optional[int] = None,
                label: Optional[str] = None, signature: Optional[str] = None,
                timeout: Optional[float] = None) -> np.ndarray:
        """Regress ``examples`` (as ``classify``). Returns one float32 value per example."""
        spec = make_spec(model, version, label, signature)
        return self._run(self._inference("regress", spec, examples, context, self._deadline(timeout)))

    def metadata(self, model: str, *, version: Optional[int] = None, label: Optional[str] = None,
                 timeout: Optional[float] = None) -> ModelMetadata:
        """GetModelMetadata: the version that answered and its signatures."""
        spec = make_spec(model, version, label, None)
        return self._run(self._metadata(spec, self._deadline(timeout)))

    def status(self, model: str, *, version: Optional[int] = None, label: Optional[str] = None,
               timeout: Optional[float] = None):
        """GetModelStatus: a ``VersionStatus`` per version the server knows of."""
        spec = make_spec(model, version, label, None)
        codec = self._codec
        return self._run(self._simple("status", codec.status_request, codec.status_result, spec,
                                         self._deadline(timeout)))

    # ---- Verso's rollout extension (verso.rollout.RolloutService; protos/rollout.proto) ---------

    def rollout(self, model: str, *, timeout: Optional[float] = None):
        """The model's rollout: config, evidence per version, verdict, decisions, alarms
        (a ``verso.rollout.RolloutStatus``). NOT_FOUND when the model has no rollout."""
        codec = self._codec
        return self._run(self._simple("rollout", codec.rollout_request, codec.rollout_result, str(model),
                                         self._deadline(timeout)))

    def set_rollout(self, model: str, *, stable: int, canary: int = 0, canary_percent: float = 0.0,
                    shadow_percent: float = 0.0, timeout: Optional[float] = None, **fields):
        """Configure (or change) a model's rollout; other ``ModelRollout`` fields by keyword
        (``labels=[...]``, ``gates={...}``, ``auto={"enabled": True}`` ...). Returns its status."""
        from google.protobuf import json_format

        from protos import rollout_pb2

        doc = {"model": str(model), "stable": int(stable), "canary": int(canary),
               "canary_percent": float(canary_percent), "shadow_percent": float(shadow_percent), **fields}
        try:
            message = json_format.ParseDict(doc, rollout_pb2.ModelRollout())
        except json_format.ParseError as e:
            raise VersoError.invalid(f"not a rollout: {e}") from None
        codec = self._codec
        return self._run(self._simple("set_rollout", codec.set_rollout_request, codec.set_rollout_result, message,
                                         self._deadline(timeout)))

    def feedback(self, request_id: str, labels=(), *, targets=(), timeout: Optional[float] = None):
        """Ground truth for an earlier answer (its ``Prediction.request_id``): one label per
        row (classifiers) and/or one numeric target per row (regressors). Returns a
        ``verso.rollout.FeedbackResponse`` (model, version, rows, correct)."""
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
            labels = [labels]
        texts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in np.asarray(labels).tolist()]
        if not hasattr(targets, "__iter__"):
            targets = [targets]
        try:
            numbers = [float(t) for t in np.asarray(targets, dtype=np.float64).ravel().tolist()]
        except (TypeError, ValueError):
            raise VersoError.invalid(f"feedback targets must be numbers: {targets!r}") from None
        codec = self._codec
        return self._run(self._simple("feedback", codec.feedback_request, codec.feedback_result,
                                         (str(request_id), texts, numbers), self._deadline(timeout)))

    def reload(self, config, *, timeout: Optional[float] = None) -> None:
        """HandleReloadConfigRequest with the full desired ``ModelServerConfig`` (a proto, a
        path to a text-proto file or its text). Returns when the server has applied it."""
        proto = reload_config(config)
        codec = self._codec
        return self._run(self._simple("reload", codec.reload_request, codec.reload_result, proto,
                                         self._deadline(timeout)))

    # ---- the calls as generators --------------------------------------------------------------

    def _call(self, method: str, request, timeout: float):
        """One RPC: yields it and returns its answer. A transport whose codec says
        ``retries_here`` (REST; gRPC channels retry by themselves) gets UNAVAILABLE retried here
        on gRPC's schedule, within the call's deadline: the waits are yielded as ``SLEEP``."""
        if not self._codec.retries_here:
            return (yield (method, request, timeout))
        deadline = time.monotonic() + timeout
        delays = backoff_delays(self.max_attempts)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VersoError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            try:
                return (yield (method, request, remaining))
            except VersoError as e:
                delay = next(delays, None) if e.code == grpc.StatusCode.UNAVAILABLE else None
                if delay is None or time.monotonic() + delay >= deadline:
                    raise
            yield (SLEEP, None, delay)

    def _signature(self, spec: Spec, timeout: float):
        key = (spec.model, spec.version, spec.label)
        md = self._signatures.get(key)
        if md is None:
            md = yield from self._metadata(spec, timeout)
            self._signatures[key] = md
        return md.signature(spec.signature)

    def _metadata(self, spec: Spec, timeout: float):
        raw = yield from self._call("metadata", self._codec.metadata_request(spec), timeout)
        return self._codec.metadata_result(raw)

    def _simple(self, method: str, encode, decode, arg, timeout: float):
        """A call without client-side logic: ``encode(arg)``, the transport's ``method``, ``decode``."""
        raw = yield from self._call(method, encode(arg), timeout)
        return decode(raw)

    def _predict(self, spec: Spec, inputs, output_filter, timeout: float, shape: str, as_dict: bool,
                 routing_key: Optional[str], slice: Optional[str] = None):
        single = not isinstance(inputs, Mapping)
        sig: Optional[Signature] = None
        if single or self._codec.needs_signature or not all(isinstance(v, np.ndarray) for v in inputs.values()):
            sig = yield from self._signature(spec, timeout)
        arrays = bind_inputs(inputs, sig)
        wanted = None if output_filter is None else (
            [output_filter] if isinstance(output_filter, str) else [str(o) for o in output_filter])
        try:
            request = self._codec.predict_request(spec, arrays, wanted, routing_key, slice)
        except tensor_codec.TensorCodecError as e:
            raise VersoError.invalid(str(e)) from None
        try:
            raw = yield from self._call("predict", request, timeout)
        except VersoError as e:
            if sig is not None and e.code in _STALE_METADATA:
                self._signatures.pop((spec.model, spec.version, spec.label), None)
            raise
        outputs, answered, request_id = self._codec.predict_result(raw, sig)
        if wanted is not None and not self._codec.filters_outputs:
            missing = [o for o in wanted if o not in outputs]
            if missing:
                raise VersoError.invalid(f"output tensor alias not found in signature: {missing[0]} "
                                         f"Outputs expected to be in the set {{{','.join(sorted(outputs))}}}.")
            outputs = {o: outputs[o] for o in wanted}
        if shape == "details":
            return Prediction(outputs, answered, request_id)
        result = next(iter(outputs.values())) if len(outputs) == 1 and not as_dict else outputs
        return (result, answered) if shape == "version" else result

    def _inference(self, method: str, spec: Spec, examples, context, timeout: float):
        if isinstance(examples, Mapping) or not isinstance(examples, (list, tuple)):
            raise VersoError.invalid("examples must be a list of {feature: value} dicts")
        doc: dict = {"examples": [features_json(e) for e in examples]}
        if context is not None:
            doc["context"] = features_json(context)
        if spec.signature:
            doc["signature_name"] = spec.signature
        raw = yield from self._call(method, getattr(self._codec, f"{method}_request")(spec, doc), timeout)
        return getattr(self._codec, f"{method}_result")(raw)


class SyncRunner:
    """Drives a call generator with blocking ``self._io(method, request, timeout)`` (and
    ``time.sleep`` for ``SLEEP``). Also the client's ``with`` support around ``close()``."""

    def _run(self, gen):
        value, error = None, None
        while True:
            try:
                method, request, timeout = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                if method is SLEEP:
                    value, error = time.sleep(timeout), None
                else:
                    value, error = self._io(method, request, timeout), None
            except VersoError as e:
                value, error = None, e

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRunner:
    """Drives a call generator with ``await self._io(method, request, timeout)`` (and
    ``asyncio.sleep`` for ``SLEEP``). Also ``async with`` support around ``close()``."""

    async def _run(self, gen):
        value, error = None, None
        while True:
            try:
                method, request, timeout = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                if method is SLEEP:
                    value, error = await asyncio.sleep(timeout), None
                else:
                    value, error = await self._io(method, request, timeout), None
            except VersoError as e:
                value, error = None, e

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
