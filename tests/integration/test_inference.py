"""Classify, Regress and MultiInference over gRPC (official stubs) on tf.Example input."""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from tests.helpers import rpc_error
from tests.server_proc import InProcessServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(ROOT, "model_repository", "digits")


def example(x0: float, x1: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x0, x1]))}))


def fill_input(inp, rows, context=None):
    if context is None:
        for r in rows:
            inp.example_list.examples.add().CopyFrom(r)
    else:
        inp.example_list_with_context.context.CopyFrom(context)
        for r in rows:
            inp.example_list_with_context.examples.add().CopyFrom(r)


def classify_request(model, signature, rows, version=None, context=None):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    fill_input(req.input, rows, context)
    return req


def regress_request(model, signature, rows):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    fill_input(req.input, rows)
    return req


@pytest.fixture(scope="module")
def server(tmp_path_factory, built_models):
    import shutil
    root = tmp_path_factory.mktemp("inference")
    shutil.copytree(built_models["examples"], root / "ex" / "1")
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "ex" base_path: "{root / 'ex'}" model_platform: "tensorflow" }}
      config {{ name: "digits" base_path: "{DIGITS}" model_platform: "tensorflow"
               model_version_policy {{ all {{}} }} }}
    }}""")
    proc = InProcessServer([f"--model_config_file={config}"])
    proc.start()
    yield proc
    proc.stop()


def test_classify_classes_and_scores(server):
    resp = server.predict_stub.Classify(classify_request("ex", "classify", [example(0.25, 0.75), example(1, 2)]),
                                        timeout=30)
    assert resp.model_spec.name == "ex" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "classify"
    got = [[(c.label, round(c.score, 6)) for c in cl.classes] for cl in resp.result.classifications]
    assert got == [[("neg", 0.25), ("pos", 0.75)], [("neg", 1.0), ("pos", 2.0)]]


def test_classify_scores_only_has_empty_labels(server):
    resp = server.predict_stub.Classify(classify_request("ex", "scores_only", [example(3, 4)]), timeout=30)
    assert [(c.label, c.score) for c in resp.result.classifications[0].classes] == [("", 3.0), ("", 4.0)]


def test_classify_with_context_merges_features(server):
    # The context gives x; an example's own x wins (proto merge: example bytes come last).
    rows = [tf.train.Example(), example(5, 6)]
    resp = server.predict_stub.Classify(classify_request("ex", "classify", rows, context=example(1, 2)),
                                        timeout=30)
    scores = [[c.score for c in cl.classes] for cl in resp.result.classifications]
    assert scores == [[1.0, 2.0], [5.0, 6.0]]


def test_regress_both_output_shapes(server):
    resp = server.predict_stub.Regress(regress_request("ex", "regress", [example(1, 2), example(3, 4)]),
                                       timeout=30)
    assert [r.value for r in resp.result.regressions] == [3.0, 7.0]
    assert resp.model_spec.signature_name == "regress"
    resp = server.predict_stub.Regress(regress_request("ex", "regress_col", [example(5, 2)]), timeout=30)
    assert [r.value for r in resp.result.regressions] == [3.0]


@pytest.mark.parametrize("call, request_fn, code, text", [
    ("Classify", lambda: classify_request("ex", "nope", [example(1, 2)]), grpc.StatusCode.INVALID_ARGUMENT,
     "No signature was found with the name: nope"),
    ("Regress", lambda: regress_request("ex", "nope", [example(1, 2)]), grpc.StatusCode.INVALID_ARGUMENT,
     "No signature was found with the name: nope"),
    ("Classify", lambda: classify_request("ex", "classify", []), grpc.StatusCode.INVALID_ARGUMENT,
     "Input is empty."),
    ("Regress", lambda: regress_request("ex", "two_outputs", [example(1, 2)]), grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one output Tensor."),
    ("Classify", lambda: classify_request("ex", "regress", [example(1, 2)]), grpc.StatusCode.INVALID_ARGUMENT,
     'Expected classification signature outputs to contain at least one of "classes" or "scores". '
     "Signature was: "),
    ("Classify", lambda: classify_request("ex", "", [example(1, 2)]), grpc.StatusCode.INVALID_ARGUMENT,
     "No classification inputs found in SignatureDef: "),
    ("Classify", lambda: classify_request("missing", "classify", [example(1, 2)]), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(missing)"),
    ("Regress", lambda: regression_pb2.RegressionRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
])
def test_classify_regress_errors(server, call, request_fn, code, text):
    err = rpc_error(getattr(server.predict_stub, call), request_fn())
    assert err.code() == code
    assert err.details().startswith(text), err.details()


def test_classify_example_missing_feature_is_invalid_argument(server):
    err = rpc_error(server.predict_stub.Classify, classify_request("ex", "classify", [tf.train.Example()]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x" in err.details()


def multi_request(tasks, rows, model="ex"):
    req = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        t = req.tasks.add()
        t.model_spec.name = model
        t.model_spec.signature_name = signature
        t.method_name = method
    fill_input(req.input, rows)
    return req


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def test_multi_inference_classify_and_regress(server):
    resp = server.predict_stub.MultiInference(
        multi_request([("classify", CLASSIFY), ("regress", REGRESS)], [example(1, 2), example(3, 5)]), timeout=30)
    assert len(resp.results) == 2
    c, r = resp.results
    assert c.model_spec.signature_name == "classify" and c.model_spec.version.value == 1
    assert [[x.score for x in cl.classes] for cl in c.classification_result.classifications] == [[1, 2], [3, 5]]
    assert [x.value for x in r.regression_result.regressions] == [3.0, 8.0]


@pytest.mark.parametrize("tasks, model, code, text", [
    ([("classify", CLASSIFY), ("classify", CLASSIFY)], "ex", grpc.StatusCode.INVALID_ARGUMENT,
     "Duplicate evaluation of signature: classify"),
    ([("nope", CLASSIFY)], "ex", grpc.StatusCode.INVALID_ARGUMENT,
     "Requested signature not found in model graph: nope"),
    ([("classify", "tensorflow/serving/predict")], "ex", grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict"),
])
def test_multi_inference_errors(server, tasks, model, code, text):
    err = rpc_error(server.predict_stub.MultiInference, multi_request(tasks, [example(1, 2)], model))
    assert err.code() == code
    assert err.details() == text


def test_multi_inference_needs_one_model(server):
    req = multi_request([("classify", CLASSIFY)], [example(1, 2)])
    t = req.tasks.add()
    t.model_spec.name = "digits"
    t.model_spec.signature_name = "classify"
    t.method_name = CLASSIFY
    err = rpc_error(server.predict_stub.MultiInference, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "All ModelSpecs in a MultiInferenceRequest must access the same model name."


def test_digits_classify_signature_answers_for_every_version(server):
    # The demo model: 64 pixel floats per example under feature "pixels"; classes are "0".."9".
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(3):
        pixels = rng.integers(0, 17, 64).astype(np.float32)
        rows.append(tf.train.Example(features=tf.train.Features(feature={
            "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=pixels))})))
    for version in (1, 2):
        resp = server.predict_stub.Classify(classify_request("digits", "classify", rows, version=version),
                                            timeout=30)
        assert resp.model_spec.version.value == version
        assert len(resp.result.classifications) == 3
        for cl in resp.result.classifications:
            assert [c.label for c in cl.classes] == [str(d) for d in range(10)]
            assert abs(sum(c.score for c in cl.classes) - 1.0) < 1e-4
