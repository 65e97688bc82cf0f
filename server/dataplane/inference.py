"""Classify, Regress and MultiInference on tf.Example input: TF Serving's signature rules.

Pure (numpy + protos). The caller resolves the model, runs the signature and hands the
outputs back here; this module decides which signature and outputs a request needs and
turns the output tensors into ``ClassificationResult`` / ``RegressionResult`` with TF
Serving's checks and messages (servables/tensorflow/classifier.cc, regressor.cc,
multi_inference.cc). Every error is a ``ServingError``.

MultiInference differs on purpose: TF Serving runs the request as one session run over the
union of the tasks' outputs, so it requires every signature to read the same input tensor
(``Input tensor must be the same for all Signatures.``), which no TF 2 SavedModel with
separate classify/regress functions satisfies (each function has its own placeholder).
Verso runs each task's signature on the same serialized examples, so it needs no such rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from protos import tensor_codec
from protos.errors import Code, ServingError, invalid_argument
from server.dataplane.predict import DEFAULT_SIGNATURE

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS = "inputs"
CLASSES = "classes"
SCORES = "scores"
OUTPUTS = "outputs"


@dataclass(frozen=True)
class Plan:
    """What to run for one classify or regress task: a signature, its examples input alias
    and the output aliases to fetch."""

    method: str
    signature_name: str
    signature: object
    input_alias: str
    output_aliases: tuple[str, ...]


def _debug_string(signature) -> str:
    return text_format.MessageToString(signature)


def _check_classification(signature) -> tuple[str, ...]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    outputs = tuple(a for a in (CLASSES, SCORES) if a in signature.outputs)
    if not outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {_debug_string(signature)}")
    return outputs


def _check_regression(signature) -> tuple[str, ...]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    return (OUTPUTS,)


def _check(method: str, signature) -> tuple[str, ...]:
    return _check_classification(signature) if method == CLASSIFY_METHOD else _check_regression(signature)


def plan(method: str, signature_defs: Mapping, signature_name: str, *, check_method_name: bool = False) -> Plan:
    """The plan for a Classify (``method`` = CLASSIFY_METHOD) or Regress request.

    Raises INVALID_ARGUMENT ``No signature was found with the name: S`` for an unknown
    signature and TF Serving's structural errors for a signature that cannot classify/regress.
    """
    name = signature_name or DEFAULT_SIGNATURE
    signature = signature_defs.get(name)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {name}")
    if check_method_name and signature.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise invalid_argument(f"Expected {kind} signature method_name to be {method}. "
                               f"Was: {signature.method_name}")
    return Plan(method, name, signature, INPUTS, _check(method, signature))


def multi_inference_plans(signature_defs: Mapping, tasks, *, check_method_name: bool = False) -> list[Plan]:
    """One plan per task of a MultiInferenceRequest, with TF Serving's checks in its order."""
    if not tasks:
        raise invalid_argument("MultiInferenceRequest must contain at least one task.")
    model_name = ""
    seen: set[str] = set()
    plans: list[Plan] = []
    for task in tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        sig_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if sig_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {sig_name}")
        seen.add(sig_name)
        signature = signature_defs.get(sig_name)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {sig_name}")
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        if check_method_name and signature.method_name != task.method_name:
            kind = "classification" if task.method_name == CLASSIFY_METHOD else "regression"
            raise invalid_argument(f"Expected {kind} signature method_name to be {task.method_name}. "
                                   f"Was: {signature.method_name}")
        outputs = _check(task.method_name, signature)
        plans.append(Plan(task.method_name, sig_name, signature, INPUTS, outputs))
    return plans


def _shape_debug(arr: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in arr.shape) + "]"


def classification_result(num_examples: int, outputs: Mapping[str, np.ndarray]
                          ) -> classification_pb2.ClassificationResult:
    """TF Serving's PostProcessClassificationResult over the fetched ``classes``/``scores``."""
    classes = outputs.get(CLASSES)
    scores = outputs.get(SCORES)
    for alias, arr, want in ((CLASSES, classes, "DT_STRING"), (SCORES, scores, "DT_FLOAT")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug(arr)}")
        got = _dtype_enum_name(arr)
        if got != want:
            raise invalid_argument(f"Expected {alias} Tensor of {want}. Got: {got}")
        if arr.shape[0] != num_examples:
            raise invalid_argument(f"Expected {alias} output batch size of {num_examples}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). "
                               f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    score_rows = scores.tolist() if scores is not None else None
    for i in range(num_examples):
        row = result.classifications.add()
        for c in range(num_classes):
            cl = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                cl.label = label if isinstance(label, (bytes, str)) else bytes(label)
            if score_rows is not None:
                cl.score = score_rows[i][c]
    return result


def regression_result(num_examples: int, outputs: Mapping[str, np.ndarray]) -> regression_pb2.RegressionResult:
    """TF Serving's PostProcessRegressionResult over the fetched ``outputs``."""
    out = outputs[OUTPUTS]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                               f"but got {_shape_debug(out)}")
    if out.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: {num_examples} vs. "
                               f"{out.shape[0]}")
    got = _dtype_enum_name(out)
    if got != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {got}")
    result = regression_pb2.RegressionResult()
    for v in out.reshape(-1).tolist():
        result.regressions.add().value = v
    return result


def _dtype_enum_name(arr: np.ndarray) -> str:
    """``DT_FLOAT``-style name of the TF dtype an output array carries (the tensor codec's mapping)."""
    try:
        return types_pb2.DataType.Name(tensor_codec.dtype_for_array(arr).enum)
    except tensor_codec.TensorCodecError:
        return f"DT_{arr.dtype.name.upper()}"
