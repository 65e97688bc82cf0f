"""Classify / Regress result building and MultiInference planning, without a model."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow_serving.apis import inference_pb2

from server.dataplane import inference
from protos.errors import Code, ServingError


def error(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as e:
        fn(*args)
    return e.value


def test_classification_result_checks_dtypes_shapes_and_batch():
    ok = inference.classification_result(1, {"classes": np.array([[b"a", b"b"]], dtype=object),
                                             "scores": np.array([[0.25, 0.75]], np.float32)})
    assert [(c.label, c.score) for c in ok.classifications[0].classes] == [("a", 0.25), ("b", 0.75)]
    e = error(inference.classification_result, 1, {"classes": np.array([[1.0]], np.float32)})
    assert (e.code, e.message) == (Code.INVALID_ARGUMENT, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT")
    e = error(inference.classification_result, 1, {"scores": np.array([[1]], np.int64)})
    assert e.message == "Expected scores Tensor of DT_FLOAT. Got: DT_INT64"
    e = error(inference.classification_result, 2, {"scores": np.zeros((1, 3), np.float32)})
    assert e.message == "Expected scores output batch size of 2. Got: 1"
    e = error(inference.classification_result, 1, {"scores": np.zeros(3, np.float32)})
    assert e.message == "Expected Tensor shape: [batch_size num_classes] but got [3]"
    e = error(inference.classification_result, 1, {"classes": np.array([[b"a"]], dtype=object),
                                                   "scores": np.zeros((1, 2), np.float32)})
    assert e.message == "Tensors class and score should match in dim_size(1). Got 1 vs. 2"


def test_regression_result_checks():
    assert [r.value for r in inference.regression_result(2, {"outputs": np.array([[1.0], [2.0]],
                                                                                  np.float32)}).regressions] == [1, 2]
    e = error(inference.regression_result, 1, {"outputs": np.zeros((1, 2), np.float32)})
    assert e.message == "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"
    e = error(inference.regression_result, 2, {"outputs": np.zeros(1, np.float32)})
    assert e.message == "Input batch size did not match output batch size: 2 vs. 1"
    e = error(inference.regression_result, 1, {"outputs": np.zeros(1, np.float64)})
    assert e.message == "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"


def test_multi_inference_plans_need_a_task_and_a_model_name():
    assert error(inference.multi_inference_plans, {}, []).message == \
        "MultiInferenceRequest must contain at least one task."
    req = inference_pb2.MultiInferenceRequest()
    req.tasks.add().method_name = inference.CLASSIFY_METHOD
    assert error(inference.multi_inference_plans, {}, req.tasks).message == "Found ModelSpec with an empty model name."
