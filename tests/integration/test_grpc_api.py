"""Every RPC of the foundation and every error case, against the real server (in process) over gRPC."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, predict_pb2, regression_pb2,
                                     session_service_pb2)

from tests.helpers import metadata_request, predict_request, rpc_error, status_request, y_of
from tests.models import IDENTITY_DTYPES
from tests.server_proc import InProcessServer

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def api_repo(tmp_path_factory, built_models):
    root = tmp_path_factory.mktemp("api")
    for model, versions in {"hp": {1: "hp1", 2: "hp2"}, "multi": {1: "multi"}, "ids": {3: "ids"}}.items():
        for v, key in versions.items():
            shutil.copytree(built_models[key], root / model / str(v))
    config = root / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "hp" base_path: "{root / 'hp'}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }}
           version_labels {{ key: "old" value: 1 }} }}
  config {{ name: "multi" base_path: "{root / 'multi'}" model_platform: "tensorflow" }}
  config {{ name: "ids" base_path: "{root / 'ids'}" model_platform: "tensorflow" }}
}}
""")
    return root, str(config)


@pytest.fixture(scope="module")
def server(api_repo):
    proc = InProcessServer([f"--model_config_file={api_repo[1]}"])
    proc.start()
    yield proc
    proc.stop()


X = np.array([1.0, 2.0, 5.0], np.float32)


# ---- Predict ----------------------------------------------------------------------------------


def test_predict_latest_version_and_model_spec_echo(server):
    resp = server.predict_stub.Predict(predict_request("hp", {"x": X}), timeout=30)
    np.testing.assert_allclose(y_of(resp), 0.5 * X + 2)
    assert resp.model_spec.name == "hp"
    assert resp.model_spec.version.value == 2
    assert resp.model_spec.signature_name == "serving_default"
    # TF Serving's default: outputs in typed fields, not tensor_content.
    assert list(resp.outputs["y"].float_val) == pytest.approx([2.5, 3.0, 4.5])
    assert resp.outputs["y"].tensor_content == b""


def test_predict_specific_version(server):
    resp = server.predict_stub.Predict(predict_request("hp", {"x": X}, version=1), timeout=30)
    np.testing.assert_allclose(y_of(resp), 0.5 * X + 1)
    assert resp.model_spec.version.value == 1


def test_predict_input_in_typed_field(server):
    proto = tf.make_tensor_proto(X)
    typed = tf.make_tensor_proto([0.0])  # build a float proto with float_val instead of tensor_content
    typed.ClearField("float_val")
    typed.float_val.extend(X.tolist())
    typed.tensor_shape.dim[0].size = 3
    assert proto.tensor_content and not typed.tensor_content
    for p in (proto, typed):
        resp = server.predict_stub.Predict(predict_request("hp", {"x": p}), timeout=30)
        np.testing.assert_allclose(y_of(resp), 0.5 * X + 2)


@pytest.mark.parametrize("name", sorted(IDENTITY_DTYPES))
def test_every_dtype_round_trips(server, name):
    dtype = IDENTITY_DTYPES[name]
    if name == "string":
        value = np.array([[b"a", b"\x00\xffbytes"], [b"", "é".encode()]], dtype=object)
    elif name == "bool":
        value = np.array([[True, False], [False, True]])
    elif dtype.is_complex:
        value = np.array([[1 + 2j, -3.5j], [0, 4]], dtype=dtype.as_numpy_dtype)
    else:
        value = np.array([[0, 1], [2, 3]]).astype(dtype.as_numpy_dtype)
    resp = server.predict_stub.Predict(predict_request("ids", {"x": value}, signature=f"id_{name}"), timeout=30)
    out = resp.outputs["y"]
    assert out.dtype == dtype.as_datatype_enum
    assert out.tensor_content == b""  # typed fields by default
    got = tf.make_ndarray(out)
    assert got.shape == value.shape
    if name == "string":
        assert got.tolist() == value.tolist()
    else:
        np.testing.assert_array_equal(got, value)


def test_output_filter_selects_and_orders(server):
    a, b = np.array([1.0, 2.0], np.float32), np.array([10.0, 20.0], np.float32)
    resp = server.predict_stub.Predict(predict_request("multi", {"a": a, "b": b}, output_filter=["diff"]), timeout=30)
    assert list(resp.outputs) == ["diff"]
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["diff"]), a - b)
    resp = server.predict_stub.Predict(predict_request("multi", {"a": a, "b": b}), timeout=30)
    assert sorted(resp.outputs) == ["diff", "sum"]


def test_output_filter_errors(server):
    a = np.array([1.0], np.float32)
    e = rpc_error(server.predict_stub.Predict, predict_request("multi", {"a": a, "b": a}, output_filter=["nope"]))
    assert e.code() == INVALID
    assert e.details() == "output tensor alias not found in signature: nope Outputs expected to be in the set {diff,sum}."
    e = rpc_error(server.predict_stub.Predict,
                  predict_request("multi", {"a": a, "b": a}, output_filter=["sum", "sum"]))
    assert e.code() == INVALID
    assert e.details() == "duplicate output tensor alias: sum"


def test_unknown_model_and_version(server):
    e = rpc_error(server.predict_stub.Predict, predict_request("nope", {"x": X}))
    assert (e.code(), e.details()) == (NOT_FOUND, "Servable not found for request: Latest(nope)")
    e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": X}, version=9))
    assert (e.code(), e.details()) == (NOT_FOUND, "Servable not found for request: Specific(hp, 9)")


def test_empty_name_and_missing_spec(server):
    e = rpc_error(server.predict_stub.Predict, predict_request("", {"x": X}))
    assert (e.code(), e.details()) == (INVALID, "ModelSpec has no name specified.")
    req = predict_request("hp", {"x": X})
    req.ClearField("model_spec")
    e = rpc_error(server.predict_stub.Predict, req)
    assert (e.code(), e.details()) == (INVALID, "Missing ModelSpec")


def test_config_labels_resolve_and_several_labels_share_a_version(server):
    for label, version in (("stable", 1), ("canary", 2), ("old", 1)):
        req = predict_request("hp", {"x": X})
        req.model_spec.version_label = label
        resp = server.predict_stub.Predict(req, timeout=30)
        assert resp.model_spec.version.value == version
        assert resp.model_spec.version_label == ""  # TF Serving echoes the version, never the label
        np.testing.assert_allclose(y_of(resp), 0.5 * X + version)
        meta = metadata_request("hp")
        meta.model_spec.version_label = label
        assert server.predict_stub.GetModelMetadata(meta, timeout=30).model_spec.version.value == version


def test_unknown_label(server):
    req = predict_request("hp", {"x": X})
    req.model_spec.version_label = "nightly"
    e = rpc_error(server.predict_stub.Predict, req)
    assert (e.code(), e.details()) == (INVALID, "Unrecognized servable version label: nightly")


def test_unknown_signature(server):
    e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": X}, signature="nope"))
    assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


def test_missing_and_extra_inputs(server):
    a = np.array([1.0], np.float32)
    e = rpc_error(server.predict_stub.Predict, predict_request("multi", {"a": a}))
    assert e.code() == INVALID
    assert e.details() == ("input size does not match signature: 1!=2 len({a}) != len({a,b}). "
                           "Sent extra: {}. Missing but required: {b}.")
    e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": a, "z": a}))
    assert e.details() == ("input size does not match signature: 2!=1 len({x,z}) != len({x}). "
                           "Sent extra: {z}. Missing but required: {}.")
    e = rpc_error(server.predict_stub.Predict, predict_request("multi", {"a": a, "c": a}))
    assert e.code() == INVALID
    assert e.details() == ("Signature input alias: b(feed name: serving_default_b:0) not found in request and "
                           "no default value provided. Inputs expected to be in the request {a,c}, or default "
                           "input alias set: ")


def test_wrong_dtype(server):
    e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": np.array([b"a"], dtype=object)}))
    assert (e.code(), e.details()) == (INVALID, "Expects arg[0] to be float but string is provided")
    e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": np.array([1], np.int32)}))
    assert (e.code(), e.details()) == (INVALID, "Expects arg[0] to be float but int32 is provided")


def test_a_shape_other_than_the_signatures_reaches_the_graph_and_its_ops_decide(server):
    """TF Serving's DirectSession does not check a fed tensor against the declared shape: x is
    [-1] in the signature, and 0.5 * x + 2 (v2) of a [2, 2] x is an answer, not an error."""
    r = server.predict_stub.Predict(predict_request("hp", {"x": np.ones((2, 2), np.float32)}), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(r.outputs["y"]), np.full((2, 2), 2.5, np.float32))
    # Where an op cannot take the shapes, its own error comes back (a + b of [2] and [3]).
    e = rpc_error(server.predict_stub.Predict, predict_request("multi", {"a": np.ones(2, np.float32),
                                                                         "b": np.ones(3, np.float32)}))
    assert e.code() == INVALID and e.details().startswith("Incompatible shapes: [2] vs. [3]"), e.details()


def test_unparsable_tensors(server):
    bad_len = tf.make_tensor_proto(X)
    bad_len.tensor_content = bad_len.tensor_content[:-1]
    neg_dim = tf.make_tensor_proto(X)
    neg_dim.tensor_shape.dim[0].size = -3
    unknown_rank = tf.make_tensor_proto(X)
    unknown_rank.tensor_shape.unknown_rank = True
    bad_dtype = tf.make_tensor_proto(X)
    bad_dtype.dtype = 105  # DT_FLOAT_REF: not a value dtype
    for proto in (bad_len, neg_dim, unknown_rank, bad_dtype):
        e = rpc_error(server.predict_stub.Predict, predict_request("hp", {"x": proto}))
        assert (e.code(), e.details()) == (INVALID, "tensor parsing error: x")
    # The server is unharmed.
    server.predict_stub.Predict(predict_request("hp", {"x": X}), timeout=30)


def test_raw_garbage_request_bytes(server):
    call = server.channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff garbage", timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Failed to parse tensorflow.serving.PredictRequest"
    server.predict_stub.Predict(predict_request("hp", {"x": X}), timeout=30)


# ---- empty requests and SessionService ------------------------------------------------------------


def test_empty_inference_requests_and_session_service(server):
    stub = server.predict_stub
    for call, req, text in ((stub.Classify, classification_pb2.ClassificationRequest(), "Missing ModelSpec"),
                            (stub.Regress, regression_pb2.RegressionRequest(), "Missing ModelSpec"),
                            (stub.MultiInference, inference_pb2.MultiInferenceRequest(),
                             "ModelSpec has no name specified.")):
        err = rpc_error(call, req)
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, text)
    # SessionService is defined but not served by TF Serving (no grpc stub ships for it).
    session_run = server.channel.unary_unary(
        "/tensorflow.serving.SessionService/SessionRun",
        request_serializer=session_service_pb2.SessionRunRequest.SerializeToString,
        response_deserializer=session_service_pb2.SessionRunResponse.FromString)
    assert rpc_error(session_run, session_service_pb2.SessionRunRequest()).code() == grpc.StatusCode.UNIMPLEMENTED


# ---- GetModelMetadata ---------------------------------------------------------------------------


def _bundle_signatures(path: str):
    saved = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    return saved.meta_graphs[0].signature_def


def test_metadata_returns_the_bundles_signature_defs(server, api_repo):
    resp = server.predict_stub.GetModelMetadata(metadata_request("multi"), timeout=30)
    assert resp.model_spec.name == "multi" and resp.model_spec.version.value == 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    expected = _bundle_signatures(str(api_repo[0] / "multi" / "1"))
    assert dict(sig_map.signature_def) == dict(expected)
    sig = sig_map.signature_def["serving_default"]
    assert sorted(sig.inputs) == ["a", "b"] and sorted(sig.outputs) == ["diff", "sum"]
    assert sig.method_name == "tensorflow/serving/predict"


def test_metadata_specific_version_and_errors(server):
    resp = server.predict_stub.GetModelMetadata(metadata_request("hp", version=1), timeout=30)
    assert resp.model_spec.version.value == 1
    e = rpc_error(server.predict_stub.GetModelMetadata, metadata_request("hp", fields=()))
    assert (e.code(), e.details()) == (INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    e = rpc_error(server.predict_stub.GetModelMetadata, metadata_request("hp", fields=("signature_def", "x")))
    assert (e.code(), e.details()) == (INVALID, "Metadata field x is not supported")
    e = rpc_error(server.predict_stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest())
    assert (e.code(), e.details()) == (INVALID, "Missing ModelSpec")
    e = rpc_error(server.predict_stub.GetModelMetadata, metadata_request("nope"))
    assert (e.code(), e.details()) == (NOT_FOUND, "Servable not found for request: Latest(nope)")
    e = rpc_error(server.predict_stub.GetModelMetadata, metadata_request("hp", version=5))
    assert (e.code(), e.details()) == (NOT_FOUND, "Servable not found for request: Specific(hp, 5)")


# ---- GetModelStatus -----------------------------------------------------------------------------


def test_status_all_versions_and_one(server):
    resp = server.model_stub.GetModelStatus(status_request("hp"), timeout=30)
    got = [(s.version, s.state, s.status.error_code, s.status.error_message) for s in resp.model_version_status]
    assert got == [(2, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0, ""),
                   (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0, "")]
    resp = server.model_stub.GetModelStatus(status_request("hp", version=1), timeout=30)
    assert [s.version for s in resp.model_version_status] == [1]
    text_format.MessageToString(resp)  # well-formed


def test_status_errors(server):
    e = rpc_error(server.model_stub.GetModelStatus, status_request("hp", version=7))
    assert (e.code(), e.details()) == (NOT_FOUND, "Could not find version 7 of model hp")
    e = rpc_error(server.model_stub.GetModelStatus, status_request("nope"))
    assert (e.code(), e.details()) == (NOT_FOUND, "Could not find any versions of model nope")
    e = rpc_error(server.model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    assert (e.code(), e.details()) == (INVALID, "Missing ModelSpec")


def test_tensor_content_outputs_flag(built_models, repo, server_factory):
    repo.put("hp", 1, "hp2")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                         "--enable_serialization_as_tensor_content=true")
    resp = srv.predict_stub.Predict(predict_request("hp", {"x": X}), timeout=30)
    out = resp.outputs["y"]
    assert out.tensor_content and not out.float_val
    np.testing.assert_allclose(np.frombuffer(out.tensor_content, np.float32), 0.5 * X + 2)


# ---- memory stays bounded ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, dims, fill", [
    (types_pb2.DT_INT64, [1_000_000_000, 3], None),          # 24 GB from a few bytes: typed fields fill in
    (types_pb2.DT_UINT8, [1_000_000_000], [1]),
    (types_pb2.DT_COMPLEX64, [1_000_000_000, 2, 7], None),
    (types_pb2.DT_STRING, [2**40], None),
])
def test_an_input_that_would_decode_past_the_limit_is_refused_before_allocation(server, dtype, dims, fill):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "ids"
    req.model_spec.signature_name = "id_float"
    t = req.inputs["x"]
    t.dtype = dtype
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    if fill:
        t.int_val.extend(fill)
    with pytest.raises(grpc.RpcError) as e:
        server.predict_stub.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details().startswith("Input x is too large: shape ")
    assert e.value.details().endswith(f"more than the limit of {512 * 2**20} (--max_tensor_bytes)")


def test_grpc_channel_arguments_set_the_message_size_limit(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                         "--grpc_channel_arguments=grpc.max_receive_message_length=2000")
    small = predict_request("hp", {"x": np.zeros(10, np.float32)})
    assert y_of(srv.predict_stub.Predict(small, timeout=10)).tolist() == [1.0] * 10
    big = predict_request("hp", {"x": np.zeros(4000, np.float32)})  # ~16 KB > 2000 bytes
    with pytest.raises(grpc.RpcError) as e:
        srv.predict_stub.Predict(big, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert y_of(srv.predict_stub.Predict(small, timeout=10)).tolist() == [1.0] * 10  # still serving
