"""SignatureDefs made from a format's own input/output descriptions (Keras, ONNX, hooks), so
GetModelMetadata and request validation work the same for every format."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from tensorflow.core.protobuf import meta_graph_pb2

from protos import tensor_codec
from protos.errors import Code, ServingError

PREDICT_METHOD = "tensorflow/serving/predict"

# A spec: (TF DataType enum, shape with -1 for unknown dims or None for unknown rank, tensor name).
Spec = tuple[int, Optional[Sequence[int]], str]


def tensor_info(dtype: int, shape: Optional[Sequence[int]], name: str) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype)
    if shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for d in shape:
            info.tensor_shape.dim.add(size=-1 if d is None or d < 0 else int(d))
    return info


def signature_def(inputs: Mapping[str, Spec], outputs: Mapping[str, Spec],
                  method: str = PREDICT_METHOD) -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef(method_name=method)
    for alias, (dtype, shape, name) in inputs.items():
        sig.inputs[alias].CopyFrom(tensor_info(dtype, shape, name))
    for alias, (dtype, shape, name) in outputs.items():
        sig.outputs[alias].CopyFrom(tensor_info(dtype, shape, name))
    return sig


def dtype_enum(name: str, where: str) -> int:
    """A TF dtype name as TF prints it (``float``, ``int64``, ``string`` ...) -> its enum."""
    for enum, d in tensor_codec.BY_ENUM.items():
        if d.name == name:
            return enum
    known = ", ".join(sorted(d.name for d in tensor_codec.BY_ENUM.values()))
    raise ServingError(Code.INVALID_ARGUMENT, f"{where}: unknown dtype {name!r} (one of: {known})")
