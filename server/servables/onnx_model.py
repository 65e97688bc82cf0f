"""ONNX models through onnxruntime (``model_platform: "onnx"``; ``pip install 'verso[onnx]'``):
one ``*.onnx`` file per version directory.

The version's single signature, ``serving_default`` (Predict), is made from the graph's inputs
and outputs (names as aliases; symbolic or unknown dimensions as -1). onnxruntime's
``InferenceSession.run`` is thread-safe, so concurrent calls share one session.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import numpy as np
from tensorflow.core.framework import types_pb2

from protos.errors import Code, ServingError
from server.dataplane.predict import DEFAULT_SIGNATURE, signature_not_found
from server.servables.signatures import signature_def

# onnxruntime's type strings -> TF dtypes.
_TYPES = {
    "tensor(float)": types_pb2.DT_FLOAT, "tensor(double)": types_pb2.DT_DOUBLE,
    "tensor(float16)": types_pb2.DT_HALF, "tensor(int8)": types_pb2.DT_INT8, "tensor(int16)": types_pb2.DT_INT16,
    "tensor(int32)": types_pb2.DT_INT32, "tensor(int64)": types_pb2.DT_INT64, "tensor(uint8)": types_pb2.DT_UINT8,
    "tensor(uint16)": types_pb2.DT_UINT16, "tensor(uint32)": types_pb2.DT_UINT32,
    "tensor(uint64)": types_pb2.DT_UINT64, "tensor(bool)": types_pb2.DT_BOOL, "tensor(string)": types_pb2.DT_STRING,
}


def _shape(shape) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (shape or [])]


class OnnxServable:
    def __init__(self, path: str, session):
        self.path = path
        self._session = session
        specs = {}
        for side, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            specs[side] = {}
            for a in args:
                if a.type not in _TYPES:
                    raise ServingError(Code.INVALID_ARGUMENT, f"ONNX model {path}: {side[:-1]} {a.name} has "
                                                              f"unsupported type {a.type}")
                specs[side][a.name] = (_TYPES[a.type], _shape(a.shape), a.name)
        self._string_inputs = {n for n, (dt, _, _) in specs["inputs"].items() if dt == types_pb2.DT_STRING}
        self.signature_defs: Mapping = {DEFAULT_SIGNATURE: signature_def(specs["inputs"], specs["outputs"])}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_aliases: Sequence[str]) -> dict:
        if signature_name not in self.signature_defs:
            raise signature_not_found(signature_name)
        feeds = {}
        for name, arr in inputs.items():
            if name in self._string_inputs:  # onnxruntime wants str objects, TF Serving sends bytes
                arr = np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                                   otypes=[object])(arr)
            feeds[name] = arr
        try:
            values = self._session.run(list(output_aliases), feeds)
        except Exception as e:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise ServingError(Code.INVALID_ARGUMENT, str(e).strip().splitlines()[0]) from None
        return {alias: np.asarray(v) for alias, v in zip(output_aliases, values)}

    def unload(self) -> None:
        self._session = None


def load_onnx(path: str, intra_op_threads: int = 0) -> OnnxServable:
    """Load the one ``*.onnx`` file of a version directory; ``ServingError`` on failure."""
    try:
        import onnxruntime
    except ImportError:
        raise ServingError(Code.FAILED_PRECONDITION, "ONNX models need onnxruntime: pip install 'verso[onnx]'") \
            from None
    files = sorted(glob.glob(os.path.join(path, "*.onnx")))
    if len(files) != 1:
        raise ServingError(Code.NOT_FOUND, f"Expected one .onnx file in {path}, found {len(files)}")
    options = onnxruntime.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    try:
        session = onnxruntime.InferenceSession(files[0], options, providers=onnxruntime.get_available_providers())
    except Exception as e:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to load ONNX model {files[0]}: {type(e).__name__}: {e}") from None
    return OnnxServable(path, session)
