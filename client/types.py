"""What the client returns besides arrays: model metadata and version states (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from tensorflow_serving.apis import get_model_status_pb2

from protos import tensor_codec

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: ``dtype`` is TF's name (``float``, ``string`` ...);
    ``shape`` uses -1 for an unknown dimension (as ``saved_model_cli``) and is None for an
    unknown rank; ``name`` is the graph tensor's name."""

    alias: str
    dtype: str
    shape: Optional[tuple[int, ...]]
    name: str = ""
    dtype_enum: int = field(default=0, repr=False, compare=False)

    @property
    def np_dtype(self) -> np.dtype:
        d = tensor_codec.BY_ENUM.get(self.dtype_enum)
        return d.np_dtype if d is not None else np.dtype(object)

    @property
    def shape_text(self) -> str:
        return "unknown rank" if self.shape is None else "(" + ", ".join(str(d) for d in self.shape) + ")"


@dataclass(frozen=True)
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    proto: object = field(default=None, repr=False, compare=False)  # the SignatureDef


@dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: the model, the version that answered, its signatures."""

    model: str
    version: Optional[int]
    signatures: dict[str, Signature]

    def signature(self, name: Optional[str]) -> Signature:
        """The named signature (``serving_default`` for None/""); a missing one is VersoError
        FAILED_PRECONDITION with TF Serving's Predict text."""
        import grpc

        from client.errors import VersoError

        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise VersoError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        return self.signatures[key]


@dataclass(frozen=True)
class VersionStatus:
    """One version's state as GetModelStatus reports it (``state``: START, LOADING,
    AVAILABLE, UNLOADING, END; ``error_code``: the gRPC code name of a failed load)."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def _tensor_spec(alias: str, info) -> TensorSpec:
    shp = info.tensor_shape
    # A TensorInfo without tensor_shape (TF 1.0 exports) means unknown rank, as TensorFlow reads it.
    shape = None if shp.unknown_rank or not info.HasField("tensor_shape") else tuple(d.size for d in shp.dim)
    return TensorSpec(alias, tensor_codec.dtype_name(info.dtype), shape, info.name, info.dtype)


def metadata_from_protos(model_spec, signature_def_map) -> ModelMetadata:
    """Build ``ModelMetadata`` from a ModelSpec and a ``SignatureDefMap`` (gRPC or REST)."""
    sigs = {}
    for name in sorted(signature_def_map.signature_def):
        sd = signature_def_map.signature_def[name]
        sigs[name] = Signature(
            name, sd.method_name,
            {a: _tensor_spec(a, sd.inputs[a]) for a in sorted(sd.inputs)},
            {a: _tensor_spec(a, sd.outputs[a]) for a in sorted(sd.outputs)},
            sd)
    version = model_spec.version.value if model_spec.HasField("version") else None
    return ModelMetadata(model_spec.name, version, sigs)


def status_from_proto(response: get_model_status_pb2.GetModelStatusResponse) -> list[VersionStatus]:
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    out = []
    for v in response.model_version_status:
        code = v.status.error_code
        out.append(VersionStatus(v.version, state_name(v.state),
                                 _code_name(code), v.status.error_message))
    return out


def _code_name(number: int) -> str:
    from client.errors import _BY_NUMBER

    sc = _BY_NUMBER.get(number)
    return sc.name if sc is not None else str(number)
