"""Transport-agnostic request handlers: TF Serving's request semantics, once.

Every gRPC (and later REST) entry point is a thin adapter over ``ServingCore``. Handlers
run on the event loop that owns the ``Manager``; the model itself runs in the request
executor. Errors are raised as ``ServingError`` carrying TF Serving's code and message.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Mapping, Optional

import numpy as np
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     predict_pb2)

from server.core import tensor_codec
from server.core.errors import Code, ServingError, invalid_argument
from server.core.manager import Manager

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


def _join(names) -> str:
    return ",".join(sorted(names))


def _shape_text(dims) -> str:
    return "[" + ",".join("?" if d < 0 else str(d) for d in dims) + "]"


class ServingCore:
    """Predict / GetModelMetadata / GetModelStatus over one ``Manager``.

    ``labels`` maps model name -> {label: version} (version labels of the model config).
    """

    def __init__(self, manager: Manager, executor: Executor, *, tensor_content_outputs: bool = False,
                 labels: Optional[Mapping[str, Mapping[str, int]]] = None):
        self.manager = manager
        self.executor = executor
        self.tensor_content_outputs = tensor_content_outputs
        self.labels: Mapping[str, Mapping[str, int]] = labels or {}

    # ---- model spec --------------------------------------------------------------------

    def resolve(self, spec: model_pb2.ModelSpec) -> tuple[str, Optional[int]]:
        """(name, version or None for latest) for a ModelSpec, as TF Serving resolves it."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, spec.version.value
        if choice == "version_label":
            version = self.labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
            return spec.name, version
        return spec.name, None

    # ---- Predict -----------------------------------------------------------------------

    async def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        name, version = self.resolve(request.model_spec)
        handle = self.manager.lease(name, version)
        try:
            servable = handle.servable
            sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            signature = servable.signature_defs.get(sig_name)
            if signature is None:
                raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{sig_name}" not found.')
            inputs = decode_inputs(signature, request.inputs)
            aliases = output_aliases(signature, request.output_filter)
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, servable.run, sig_name, inputs, aliases)
        finally:
            self.manager.release(handle)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = handle.version
        response.model_spec.signature_name = sig_name
        for alias in aliases:
            tensor_codec.fill_proto(response.outputs[alias], outputs[alias],
                                    tensor_content=self.tensor_content_outputs)
        return response

    # ---- GetModelMetadata ----------------------------------------------------------------

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                           ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for f in request.metadata_field:
            if f != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {f} is not supported")
        name, version = self.resolve(request.model_spec)
        handle = self.manager.lease(name, version)
        try:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in handle.servable.signature_defs.items():
                sig_map.signature_def[key].CopyFrom(sig)
        finally:
            self.manager.release(handle)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = handle.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        return response

    # ---- GetModelStatus -----------------------------------------------------------------

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                         ) -> get_model_status_pb2.GetModelStatusResponse:
        # TF Serving ignores version_label here; so do we.
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        statuses = self.manager.status(spec.name)
        if spec.HasField("version"):
            statuses = [s for s in statuses if s.version == spec.version.value]
            if not statuses:
                raise ServingError(Code.NOT_FOUND,
                                   f"Could not find version {spec.version.value} of model {spec.name}")
        elif not statuses:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            entry = response.model_version_status.add()
            entry.version = s.version
            entry.state = int(s.state)
            if s.error is not None:
                entry.status.error_code = int(s.error.code)
                entry.status.error_message = s.error.message
        return response


def decode_inputs(signature, request_inputs) -> dict[str, np.ndarray]:
    """Validate request inputs against a SignatureDef and decode them, with TF Serving's
    checks in its order: input count (fewer only when the signature has ``defaults``), then
    each signature alias (from the request, else its default), then unknown request names,
    then dtypes and shapes against the TensorInfo."""
    sig_inputs = signature.inputs
    defaults = signature.defaults
    n_req, n_sig = len(request_inputs), len(sig_inputs)
    if n_req > n_sig or (n_req < n_sig and not defaults):
        sent, wanted = set(request_inputs), set(sig_inputs)
        raise invalid_argument(
            f"input size does not match signature: {n_req}!={n_sig} "
            f"len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). Sent extra: {{{_join(sent - wanted)}}}. "
            f"Missing but required: {{{_join(wanted - sent)}}}.")
    decoded: dict[str, np.ndarray] = {}
    dtypes: dict[str, int] = {}
    for alias in sorted(sig_inputs):
        proto = request_inputs.get(alias) if alias in request_inputs else None
        if proto is None:
            if alias not in defaults:
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {sig_inputs[alias].name}) not found in request "
                    f"and no default value provided. Inputs expected to be in the request "
                    f"{{{_join(request_inputs)}}}, or default input alias set: {_join(defaults)}")
            proto = defaults[alias]
        try:
            decoded[alias] = tensor_codec.to_ndarray(proto)
        except tensor_codec.TensorCodecError:
            raise invalid_argument(f"tensor parsing error: {alias}") from None
        dtypes[alias] = proto.dtype
    used = [a for a in request_inputs if a in sig_inputs]
    if request_inputs and len(used) != n_req:
        raise invalid_argument(f"Inputs contains invalid name. Used request inputs: {_join(used)}, "
                               f"request input: {_join(request_inputs)}")
    for index, alias in enumerate(decoded):
        info = sig_inputs[alias]
        if info.dtype and dtypes[alias] != info.dtype:
            raise invalid_argument(f"Expects arg[{index}] to be {tensor_codec.dtype_name(info.dtype)} "
                                   f"but {tensor_codec.dtype_name(dtypes[alias])} is provided")
        shape = info.tensor_shape
        if not shape.unknown_rank:
            want = [d.size for d in shape.dim]
            got = decoded[alias].shape
            if len(want) != len(got) or any(w >= 0 and w != g for w, g in zip(want, got)):
                raise invalid_argument(f"Expects arg[{index}] to have shape {_shape_text(want)} "
                                       f"but shape {_shape_text(got)} is provided")
    return decoded


def output_aliases(signature, output_filter) -> list[str]:
    """The output aliases to return, in filter order (all outputs when the filter is empty)."""
    if not output_filter:
        return list(signature.outputs)
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{_join(signature.outputs)}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen
