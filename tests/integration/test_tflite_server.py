"""``--prefer_tflite_model=true`` through the real server (in process): it serves the ``model.tflite`` of
version directories that also hold a SavedModel, over gRPC with the official client
(Predict at batch 1 and 3, strings, a shape the model cannot take, GetModelMetadata), for a
TFLite model with signatures and one without (TF Serving's generated ``serving_default``)."""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

from server.lifecycle.policy import State
from tests import tflite_models
from tests.helpers import metadata_request, predict_request, rpc_error, states


def _signatures(srv, model: str):
    resp = srv.predict_stub.GetModelMetadata(metadata_request(model), timeout=10)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigmap)
    return sigmap.signature_def


def test_prefer_tflite_model_serves_model_tflite_over_grpc(tmp_path, server_factory):
    lite, nosig = tmp_path / "lite", tmp_path / "nosig"
    tflite_models.save_version(str(lite / "1"))
    tflite_models.save_version(str(nosig / "1"), signatures=False)
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n"
                      f'  config {{ name: "lite" base_path: "{lite}" model_platform: "tensorflow" }}\n'
                      f'  config {{ name: "nosig" base_path: "{nosig}" model_platform: "tensorflow" }}\n'
                      "}\n")
    srv = server_factory(f"--model_config_file={config}", "--prefer_tflite_model=true", "--num_tflite_pools=2",
                         "--file_system_poll_wait_seconds=0")
    assert states(srv, "lite") == {1: State.AVAILABLE} and states(srv, "nosig") == {1: State.AVAILABLE}
    stub = srv.predict_stub

    sigs = _signatures(srv, "lite")
    assert sorted(sigs) == ["double", "echo", "serving_default"]  # no __saved_model_init_op: not the SavedModel
    # echo's "same" output is its input tensor in the TFLite model (the SavedModel names it
    # after the function's output).
    assert sigs["echo"].outputs["same"].name == sigs["echo"].inputs["text"].name == "echo_text:0"
    assert [d.size for d in sigs["serving_default"].inputs["x"].tensor_shape.dim] == [-1, 2]
    for n in (1, 3):
        x = np.arange(2 * n, dtype=np.float32).reshape(n, 2) - 2
        r = stub.Predict(predict_request("lite", {"x": x}), timeout=10)
        assert r.model_spec.version.value == 1 and r.model_spec.signature_name == "serving_default"
        np.testing.assert_array_equal(tf.make_ndarray(r.outputs["y"]), tflite_models.affine(x)["y"])
        np.testing.assert_array_equal(tf.make_ndarray(r.outputs["s"]), tflite_models.affine(x)["s"])
    r = stub.Predict(predict_request("lite", {"text": np.array([b"a", b"\xffz"], dtype=object)},
                                     signature="echo"), timeout=10)
    assert tf.make_ndarray(r.outputs["reversed"]).tolist() == [b"\xffz", b"a"]
    e = rpc_error(stub.Predict, predict_request("lite", {"x": np.ones((3, 3), np.float32)}))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "failed to prepare" in e.details()
    e = rpc_error(stub.Predict, predict_request("lite", {"x": np.ones((1, 2), np.int32)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Expects arg[0] to be float but int32 is provided")

    sig = _signatures(srv, "nosig")["serving_default"]
    assert list(sig.inputs) == ["serving_default_x"] and sig.method_name == "tensorflow/serving/predict"
    # The outputs' aliases are their tensor names; y is the one of rank 2, s the one of rank 1.
    alias = {len(info.tensor_shape.dim): a for a, info in sig.outputs.items()}
    assert sorted(alias) == [1, 2] and all(":" in a for a in alias.values())
    for n in (1, 3):
        x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
        r = stub.Predict(predict_request("nosig", {"serving_default_x": x}), timeout=10)
        np.testing.assert_array_equal(tf.make_ndarray(r.outputs[alias[2]]), tflite_models.affine(x)["y"])
        np.testing.assert_array_equal(tf.make_ndarray(r.outputs[alias[1]]), tflite_models.affine(x)["s"])
