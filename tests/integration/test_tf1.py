"""TF 1.x exports served as TF Serving serves them: lenient shapes and legacy TF 1.0 bundles.

Both models compute y = 0.5 * x + 2 (tests/models.py ``save_tf1_half_plus_two``): ``tf1`` as
``tf.compat.v1.saved_model.Builder`` writes it today (``x`` declared ``[-1, 1]``), ``legacy``
rewritten the way TF 1.0 wrote it (producer 21, ``shape {}`` placeholders, TensorInfos without
``tensor_shape``), which TensorFlow's v2 loader cannot load. The expected answers are TF
Serving's: its DirectSession feeds the tensor whatever its declared shape, so ``[1]``, ``[3]``
and ``[1, 1]`` all answer.
"""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, inference_pb2, regression_pb2

from tests import models
from tests.helpers import metadata_request, predict_request, rpc_error
from tests.server_proc import InProcessServer


@pytest.fixture(scope="module")
def tf1_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf1")
    models.save_tf1_half_plus_two(str(root / "tf1" / "1"))
    shutil.copytree(root / "tf1" / "1", root / "legacy" / "1")
    models.make_legacy_export(str(root / "legacy" / "1"))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in ("tf1", "legacy")) + "}\n")
    return config


@pytest.fixture(scope="module", params=["direct", "batching"])
def server(request, tf1_models):
    extra = ["--enable_batching"] if request.param == "batching" else []
    srv = InProcessServer([f"--model_config_file={tf1_models}", "--file_system_poll_wait_seconds=0", *extra],
                        rest=True)
    srv.start()
    srv.batching = request.param == "batching"
    yield srv
    srv.stop()


MODELS = ["tf1", "legacy"]
BATCHING_SCALAR = "Batching Run() input tensors must have at least one dimension"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("x, y", [
    (np.array([2.0], np.float32), [3.0]),                       # float_val: 2.0, shape [1]
    (np.array([2.0, 3.0, 4.0], np.float32), [3.0, 3.5, 4.0]),  # shape [3]
    (np.array([[2.0]], np.float32), [[3.0]]),                   # the declared rank
])
def test_predict_feeds_any_shape_the_graph_takes(server, model, x, y):
    r = server.predict_stub.Predict(predict_request(model, {"x": x}), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(r.outputs["y"]), np.array(y, np.float32))
    assert (r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name) == (
        model, 1, "serving_default")


def test_a_float_val_request_without_a_shape_is_a_scalar_and_answers(server):
    """``float_val: 2.0`` and no tensor_shape is a scalar for TensorFlow. TF Serving's batching
    session refuses scalars (they have no batch dimension); its plain session answers."""
    req = predict_request("tf1", {})
    req.inputs["x"].dtype = tf.float32.as_datatype_enum
    req.inputs["x"].float_val.append(2.0)
    if server.batching:
        e = rpc_error(server.predict_stub.Predict, req)
        assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, BATCHING_SCALAR)
        return
    r = server.predict_stub.Predict(req, timeout=30)
    assert tf.make_ndarray(r.outputs["y"]).tolist() == 3.0


@pytest.mark.parametrize("model", MODELS)
def test_rest_row_and_columnar_answer_as_tf_serving(server, model):
    path = f"/v1/models/{model}:predict"
    assert server.rest_json("POST", path, {"instances": [2.0, 3.0, 4.0]}) == (200, {"predictions": [3.0, 3.5, 4.0]})
    assert server.rest_json("POST", path, {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})
    assert server.rest_json("POST", path, {"instances": [[2.0], [4.0]]}) == (200, {"predictions": [[3.0], [4.0]]})
    assert server.rest_json("POST", path, {"inputs": [[2.0]]}) == (200, {"outputs": [[3.0]]})


@pytest.mark.parametrize("model", MODELS)
def test_an_op_that_cannot_take_the_input_answers_with_the_ops_error(server, model):
    """ParseExample needs a vector of serialized examples: a scalar fails in the op, with its text."""
    ex = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))})).SerializeToString()
    req = predict_request(model, {"inputs": np.array(ex, dtype=object)}, signature="regress_x_to_y")
    e = rpc_error(server.predict_stub.Predict, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    if server.batching:
        assert e.details() == BATCHING_SCALAR
    else:
        assert e.details().startswith("Expected serialized to be a vector, got shape: []"), e.details()
    # Dtypes are still TensorFlow's to refuse, with its text.
    e = rpc_error(server.predict_stub.Predict, predict_request(model, {"x": np.array([1], np.int32)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Expects arg[0] to be float but int32 is provided")


def test_metadata_reports_the_declared_shapes_and_the_legacy_missing_ones(server):
    def x_info(model):
        meta = server.predict_stub.GetModelMetadata(metadata_request(model), timeout=30)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(sig_map)
        return sig_map.signature_def["serving_default"].inputs["x"]

    tf1 = x_info("tf1")
    assert [d.size for d in tf1.tensor_shape.dim] == [-1, 1] and not tf1.tensor_shape.unknown_rank
    legacy = x_info("legacy")
    assert not legacy.HasField("tensor_shape") and legacy.name == "x:0"
    status, body = server.rest_json("GET", "/v1/models/legacy/metadata")
    assert status == 200
    assert body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"] == {
        "dtype": "DT_FLOAT", "name": "x:0"}


def _examples(*xs):
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})) for x in xs]


@pytest.mark.parametrize("model", MODELS)
def test_classify_regress_and_multi_inference_on_tf_examples(server, model):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name, req.model_spec.signature_name = model, "regress_x_to_y"
    req.input.example_list.examples.extend(_examples(2.0, 4.0))
    r = server.predict_stub.Regress(req, timeout=30)
    assert [x.value for x in r.result.regressions] == [3.0, 4.0]
    assert (r.model_spec.name, r.model_spec.signature_name) == (model, "regress_x_to_y")

    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = model, "classify_x_to_y"
    req.input.example_list.examples.extend(_examples(2.0, 6.0))
    r = server.predict_stub.Classify(req, timeout=30)
    assert [[(c.label, c.score) for c in cl.classes] for cl in r.result.classifications] == [[("", 3.0)], [("", 5.0)]]

    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y", "tensorflow/serving/regress")):
        task = req.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = model, sig, method
    req.input.example_list.examples.extend(_examples(0.0))
    r = server.predict_stub.MultiInference(req, timeout=30)
    assert r.results[0].classification_result.classifications[0].classes[0].score == 2.0
    assert r.results[1].regression_result.regressions[0].value == 2.0
