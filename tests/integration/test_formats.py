"""Beyond SavedModel, end to end with the official client: Keras 3 and ONNX models chosen by
``model_platform`` (Predict, metadata, status, version swaps, batching), and Python hooks
from a version's ``assets.extra/verso_hooks.py`` (happy path, a hook that raises, a bug in a
hook, a hook file that does not import, hooks under batching, REST)."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2

from server.lifecycle.policy import State
from tests import models
from tests.helpers import metadata_request, predict_request, rpc_error, states
from tests.server_proc import wait_until

FAST = ["--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.3", "--max_num_load_retries=0"]


def _config(tmp_path, *models_: tuple[str, str, str]) -> str:
    path = tmp_path / "models.config"
    path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "{platform}" }}\n'
        for name, base, platform in models_) + "}\n")
    return str(path)


def _put(base, version: int, source: str) -> None:
    """Copy a built version in atomically, as an operator would."""
    tmp = base / f".{version}.tmp"
    shutil.copytree(source, tmp)
    tmp.rename(base / str(version))


def _signature(srv, model: str):
    resp = srv.predict_stub.GetModelMetadata(metadata_request(model), timeout=10)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigmap)
    return sigmap.signature_def["serving_default"]


def _y(resp, alias: str = "y") -> np.ndarray:
    from protos.tensor_codec import to_ndarray
    return to_ndarray(resp.outputs[alias])


@pytest.mark.parametrize("batching", [False, True], ids=["direct", "batching"])
def test_keras_and_onnx_models_serve_swap_versions_and_report_metadata(tmp_path, server_factory, format_models,
                                                                       batching):
    keras_base, onnx_base = tmp_path / "k", tmp_path / "o"
    keras_base.mkdir()
    onnx_base.mkdir()
    _put(keras_base, 1, format_models["keras1"])
    _put(onnx_base, 1, format_models["onnx1"])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    extra = ["--enable_batching"] if batching else []
    config = _config(tmp_path, ("k", keras_base, "keras"), ("o", onnx_base, "onnx"))
    srv = server_factory(f"--model_config_file={config}", f"--monitoring_config_file={monitoring}", *FAST, *extra,
                         rest=True)
    stub = srv.predict_stub
    # Keras v1: y = 1 * x + 10; ONNX v1: y = 0.5 * x + 1.
    r = stub.Predict(predict_request("k", {"x": np.array([[1, 2], [3, 4]], np.float32)}), timeout=10)
    assert r.model_spec.version.value == 1
    np.testing.assert_array_equal(_y(r), [[11, 12], [13, 14]])
    r = stub.Predict(predict_request("o", {"x": np.array([2, 4], np.float32)}), timeout=10)
    np.testing.assert_array_equal(_y(r), [2, 3])
    # Signatures made from the formats' own descriptions.
    k = _signature(srv, "k")
    assert (list(k.inputs), list(k.outputs), k.method_name) == (["x"], ["y"], "tensorflow/serving/predict")
    assert [d.size for d in k.inputs["x"].tensor_shape.dim] == [-1, 2] and k.inputs["x"].dtype == 1
    o = _signature(srv, "o")
    assert [d.size for d in o.inputs["x"].tensor_shape.dim] == [-1] and o.outputs["y"].dtype == 1
    # Dtypes are checked against them like a SavedModel's; shapes are the model's business (as a
    # TF graph's ops decide for a SavedModel), here Keras' own check.
    e = rpc_error(stub.Predict, predict_request("k", {"x": np.array([[1, 2, 3]], np.float32)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Input 0 with name 'x' of layer 'functional' is incompatible with the layer: "
                                       "expected shape=(None, 2), found shape=(1, 3)")
    e = rpc_error(stub.Predict, predict_request("o", {"x": np.array([1], np.int32)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Expects arg[0] to be float but int32 is provided")
    # REST goes through the same loaders.
    assert srv.rest_json("POST", "/v1/models/o:predict", {"instances": [2.0]}) == (200, {"predictions": [2.0]})
    # Version swaps with the same lifecycle: v2 loads, then v1 unloads.
    _put(keras_base, 2, format_models["keras2"])
    _put(onnx_base, 2, format_models["onnx2"])
    for model in ("k", "o"):
        wait_until(lambda: states(srv, model) == {1: State.END, 2: State.AVAILABLE}, timeout=60,
                   what=f"{model} v2 only")
    r = stub.Predict(predict_request("k", {"x": np.array([[1, 2]], np.float32)}), timeout=10)
    assert r.model_spec.version.value == 2
    np.testing.assert_array_equal(_y(r), [[22, 24]])
    r = stub.Predict(predict_request("o", {"x": np.array([2], np.float32)}), timeout=10)
    np.testing.assert_array_equal(_y(r), [3])
    _, _, body = srv.http("GET", "/metrics")
    batched = {line.split("{")[1].split("}")[0] for line in body.decode().splitlines()
               if line.startswith("verso_batches_total")}
    assert batched == ({'queue="k/1/serving_default"', 'queue="k/2/serving_default"', 'queue="o/1/serving_default"',
                        'queue="o/2/serving_default"'} if batching else set())


def test_a_model_file_of_the_wrong_format_fails_its_load_only(tmp_path, server_factory, format_models,
                                                              built_models):
    base, good = tmp_path / "k", tmp_path / "o"
    base.mkdir()
    good.mkdir()
    _put(base, 1, built_models["hp1"])  # a SavedModel where a .keras file is expected
    _put(good, 1, format_models["onnx1"])
    srv = server_factory(f"--model_config_file={_config(tmp_path, ('k', base, 'keras'), ('o', good, 'onnx'))}",
                         *FAST)
    assert "Expected one .keras file in" in srv.output()
    e = rpc_error(srv.predict_stub.Predict, predict_request("k", {"x": np.ones((1, 2), np.float32)}))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    r = srv.predict_stub.Predict(predict_request("o", {"x": np.array([2], np.float32)}), timeout=10)
    np.testing.assert_array_equal(_y(r), [2])


HOOKS = '''
import numpy as np

SIGNATURES = {
    "serving_default": {
        "inputs": {"text": ("string", [-1])},
        "outputs": {"y": ("float", [-1]), "label": ("string", [-1])},
    },
}


def preprocess(inputs, signature_name):
    values = []
    for raw in inputs["text"]:
        text = raw.decode()
        if text == "13":
            1 / 0  # a bug in the hook
        try:
            values.append(float(text))
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None
    return {"x": np.array(values, np.float32) * 2}


def postprocess(outputs, signature_name):
    y = outputs["y"]
    return {"y": y, "label": np.array([b"big" if v > 3 else b"small" for v in y], object)}
'''


def _hooked(built_models, dest, source=HOOKS) -> str:
    shutil.copytree(built_models["hp1"], dest)
    models.write_hooks(str(dest), source)
    return str(dest)


def _text_request(values, **kw):
    return predict_request("hp", {"text": np.array([v.encode() for v in values], object)}, **kw)


def test_hooks_shape_the_signature_and_every_call(tmp_path, server_factory, built_models):
    base = tmp_path / "hp"
    base.mkdir()
    _put(base, 1, _hooked(built_models, tmp_path / "built1"))
    srv = server_factory("--model_name=hp", f"--model_base_path={base}", *FAST, rest=True)
    stub = srv.predict_stub
    # The signature as the client sees it: the hooks' declaration, not the model's x -> y.
    sig = _signature(srv, "hp")
    assert sorted(sig.inputs) == ["text"] and sig.inputs["text"].dtype == 7  # DT_STRING
    assert sorted(sig.outputs) == ["label", "y"] and sig.outputs["label"].dtype == 7
    # "1" -> x = 2 -> y = 0.5 * 2 + 1 = 2 (small); "4" -> 8 -> 5 (big).
    r = stub.Predict(_text_request(["1", "4"]), timeout=10)
    np.testing.assert_array_equal(_y(r), [2, 5])
    assert list(_y(r, "label")) == [b"small", b"big"]
    r = stub.Predict(_text_request(["4"], output_filter=["label"]), timeout=10)
    assert list(r.outputs) == ["label"]
    status, body = srv.rest_json("POST", "/v1/models/hp:predict", {"instances": ["1", "4"]})
    assert (status, body) == (200, {"predictions": [{"y": 2.0, "label": "small"}, {"y": 5.0, "label": "big"}]})
    # A hook that refuses the input: INVALID_ARGUMENT with its message.
    e = rpc_error(stub.Predict, _text_request(["1", "one"]))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "not a number: 'one'")
    # A bug in a hook: INTERNAL, one line; the server serves on.
    e = rpc_error(stub.Predict, _text_request(["13"]))
    assert (e.code(), e.details()) == (grpc.StatusCode.INTERNAL,
                                       "preprocess hook failed: ZeroDivisionError: division by zero")
    assert "Traceback" in srv.output()  # ... logged for the operator, not sent to the caller
    # The request is checked against the client-facing signature before any hook runs.
    e = rpc_error(stub.Predict, predict_request("hp", {"x": np.array([1.0], np.float32)}))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("Signature input alias: text(feed name: text) not found in request")
    r = stub.Predict(_text_request(["2"]), timeout=10)
    np.testing.assert_array_equal(_y(r), [3])


def test_a_hook_file_that_does_not_import_fails_that_version_only(tmp_path, server_factory, built_models):
    base = tmp_path / "hp"
    base.mkdir()
    _put(base, 1, _hooked(built_models, tmp_path / "built1"))
    srv = server_factory("--model_name=hp", f"--model_base_path={base}", *FAST)
    _put(base, 2, _hooked(built_models, tmp_path / "built2", "import numpy as np\ndef preprocess(inputs:\n"))
    wait_until(lambda: states(srv, "hp").get(2) == State.END, timeout=60, what="v2's load to fail")
    assert "Failed to import hooks" in srv.output() and "SyntaxError" in srv.output()
    # v1 and its hooks serve on.
    r = srv.predict_stub.Predict(_text_request(["4"]), timeout=10)
    assert r.model_spec.version.value == 1 and list(_y(r, "label")) == [b"big"]


def test_hooks_run_per_request_around_a_batched_model_call(tmp_path, server_factory, built_models):
    base = tmp_path / "hp"
    base.mkdir()
    _put(base, 1, _hooked(built_models, tmp_path / "built1"))
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 200000 } "
                      "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    srv = server_factory("--model_name=hp", f"--model_base_path={base}", "--enable_batching",
                         f"--batching_parameters_file={params}", f"--monitoring_config_file={monitoring}", *FAST,
                         rest=True)
    calls = [(i, srv.predict_stub.Predict.future(_text_request([str(i), str(i + 100)]), timeout=30))
             for i in range(12)]
    for i, f in calls:
        r = f.result()
        # Each caller gets its own rows: x = 2 * value, y = 0.5 * x + 1 = value + 1.
        np.testing.assert_array_equal(_y(r), [i + 1, i + 101])
        assert list(_y(r, "label")) == [b"big" if i + 1 > 3 else b"small", b"big"]
    _, _, body = srv.http("GET", "/metrics")
    lines = dict(line.rsplit(" ", 1) for line in body.decode().splitlines() if line.startswith("verso_batch"))
    batches = float(lines['verso_batches_total{queue="hp/1/serving_default"}'])
    rows = float(lines['verso_batch_rows_total{queue="hp/1/serving_default"}'])
    assert rows == 24 and batches < 12, (batches, rows)  # the model calls were batched


def test_the_demo_models_with_hooks_and_onnx_answer_the_official_client(bundled):
    """model_repository/: digits_png takes PNG images through its hooks, half_plus_two_onnx
    runs in onnxruntime; both over gRPC (official stubs) and REST."""
    from pathlib import Path
    samples = Path(__file__).resolve().parents[2] / "model_repository" / "samples"
    pngs = np.array([(samples / f"digit_{d}.png").read_bytes() for d in range(10)], dtype=object)
    r = bundled.predict_stub.Predict(predict_request("digits_png", {"image": pngs}), timeout=30)
    assert _y(r, "classes").tolist() == list(range(10))
    assert _y(r, "scores").shape == (10, 10)
    assert sorted(_signature(bundled, "digits_png").inputs) == ["image"]
    e = rpc_error(bundled.predict_stub.Predict,
                  predict_request("digits_png", {"image": np.array([b"not a png"], object)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "image is not a PNG")
    r = bundled.predict_stub.Predict(predict_request("half_plus_two_onnx", {"x": np.array([1, 2, 5], np.float32)}),
                                     timeout=30)
    np.testing.assert_array_equal(_y(r), [2.5, 3, 4.5])
    import base64
    status, body = bundled.rest_json("POST", "/v1/models/digits_png:predict",
                                     {"instances": [{"b64": base64.b64encode(pngs[7]).decode()}]})
    assert status == 200 and body["predictions"][0]["classes"] == 7


def test_an_onnx_model_under_a_rollout_splits_and_shadows_like_a_savedmodel(tmp_path, server_factory, format_models):
    """Rollouts use only the servable interface: an ONNX canary gets its share of calls, and
    shadow calls measure its difference from the stable version (v2 - v1 = 1.0 exactly)."""
    from client import Client
    base = tmp_path / "o"
    base.mkdir()
    _put(base, 1, format_models["onnx1"])
    _put(base, 2, format_models["onnx2"])
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "o" base_path: "{base}" model_platform: "onnx" '
                      f'model_version_policy {{ all {{}} }} }} }}')
    srv = server_factory(f"--model_config_file={config}", *FAST)
    with Client(f"127.0.0.1:{srv.port}") as c:
        c.set_rollout("o", stable=1, canary=2, canary_percent=50, shadow_percent=100)
        versions = [c.predict("o", np.array([2.0], np.float32), details=True).version for _ in range(200)]
        assert 60 <= versions.count(2) <= 140 and set(versions) == {1, 2}
        wait_until(lambda: next(v for v in c.rollout("o").versions if v.version == 2).shadow_compared > 0,
                   timeout=30, what="shadow evidence")
        canary = next(v for v in c.rollout("o").versions if v.version == 2)
        assert canary.requests == versions.count(2) and canary.max_abs_diff == 1.0
