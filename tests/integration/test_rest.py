"""The REST API end to end: the real server over plain HTTP (http.client), every route of
TF Serving's REST API, both JSON formats, its errors and HTTP statuses, and Verso's extras."""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import shutil

import pytest

from tests.server_proc import InProcessServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(ROOT, "model_repository", "digits")


@pytest.fixture(scope="module")
def server(tmp_path_factory, built_models):
    root = tmp_path_factory.mktemp("rest")
    for model, version, key in [("hp", 1, "hp1"), ("hp", 2, "hp2"), ("multi", 1, "multi"), ("ids", 1, "ids"),
                                ("ex", 1, "examples")]:
        shutil.copytree(built_models[key], root / model / str(version))
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "hp" base_path: "{root / 'hp'}" model_platform: "tensorflow"
               model_version_policy {{ all {{}} }}
               version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
      config {{ name: "multi" base_path: "{root / 'multi'}" model_platform: "tensorflow" }}
      config {{ name: "ids" base_path: "{root / 'ids'}" model_platform: "tensorflow" }}
      config {{ name: "ex" base_path: "{root / 'ex'}" model_platform: "tensorflow" }}
      config {{ name: "digits" base_path: "{DIGITS}" model_platform: "tensorflow" }}
    }}""")
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    proc = InProcessServer([f"--model_config_file={config}", f"--monitoring_config_file={monitoring}",
                          "--rest_api_enable_cors_support=true"], rest=True)
    proc.start()
    yield proc
    proc.stop()


def post(server, path, body, **kw):
    return server.rest_json("POST", path, body, **kw)


# ---- predict ----------------------------------------------------------------------------------


def test_predict_row_and_columnar_single_input(server):
    # Latest version (2): y = 0.5 x + 2.
    assert post(server, "/v1/models/hp:predict", {"instances": [1.0, 2.0]}) == (200, {"predictions": [2.5, 3.0]})
    assert post(server, "/v1/models/hp:predict", {"inputs": [1.0, 2.0]}) == (200, {"outputs": [2.5, 3.0]})
    # A one-key object row keyed by the input alias works too.
    assert post(server, "/v1/models/hp:predict", {"instances": [{"x": 4.0}]}) == (200, {"predictions": [4.0]})


def test_predict_versions_and_labels(server):
    assert post(server, "/v1/models/hp/versions/1:predict", {"instances": [2.0]})[1] == {"predictions": [2.0]}
    assert post(server, "/v1/models/hp/versions/2:predict", {"instances": [2.0]})[1] == {"predictions": [3.0]}
    assert post(server, "/v1/models/hp/labels/stable:predict", {"instances": [2.0]})[1] == {"predictions": [2.0]}
    assert post(server, "/v1/models/hp/labels/canary:predict", {"instances": [2.0]})[1] == {"predictions": [3.0]}
    # Path case-insensitive, as TF Serving's regex.
    assert post(server, "/V1/MODELS/hp/VERSIONS/1:predict", {"instances": [2.0]})[1] == {"predictions": [2.0]}


def test_predict_multi_input_output_both_formats(server):
    status, body = post(server, "/v1/models/multi:predict", {"instances": [{"a": 3.0, "b": 1.0},
                                                                          {"a": 5.0, "b": 2.0}]})
    assert status == 200
    assert body == {"predictions": [{"sum": 4.0, "diff": 2.0}, {"sum": 7.0, "diff": 3.0}]}
    status, body = post(server, "/v1/models/multi:predict", {"inputs": {"a": [3.0, 5.0], "b": [1.0, 2.0],
                                                                        "ignored": 1}})
    assert status == 200 and body == {"outputs": {"sum": [4.0, 7.0], "diff": [2.0, 3.0]}}


def test_predict_b64_in_and_bytes_out(server):
    raw = [b"\x00\xffhello", b"\x01"]
    body = {"signature_name": "echo_bytes", "instances": [{"b64": base64.b64encode(r).decode()} for r in raw]}
    status, out = post(server, "/v1/models/ex:predict", body)
    assert status == 200
    preds = out["predictions"]
    assert [base64.b64decode(p["data_bytes"]["b64"]) for p in preds] == raw
    assert [p["length"] for p in preds] == [7, 1]
    # A string output whose alias does not end in _bytes is plain text.
    status, out = post(server, "/v1/models/ids:predict", {"signature_name": "id_string", "inputs": ["héllo", "x"]})
    assert (status, out) == (200, {"outputs": ["héllo", "x"]})


def test_predict_nan_and_infinity_both_ways(server):
    status, _, data = server.http("POST", "/v1/models/ids:predict",
                                  b'{"signature_name": "id_float", "inputs": [NaN, Infinity, -Infinity, 1.5]}')
    assert status == 200
    assert b"NaN" in data and b"-Infinity" in data
    values = json.loads(data)["outputs"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf and values[3] == 1.5


def test_predict_typed_values(server):
    assert post(server, "/v1/models/ids:predict", {"signature_name": "id_int32", "inputs": [[1, 2], [3, 4]]}) == \
        (200, {"outputs": [[1, 2], [3, 4]]})
    assert post(server, "/v1/models/ids:predict", {"signature_name": "id_bool", "instances": [True, False]}) == \
        (200, {"predictions": [True, False]})
    status, body = post(server, "/v1/models/ids:predict", {"signature_name": "id_int32", "inputs": [1.5]})
    assert status == 400 and body["error"] == "JSON Value: 1.5 Type: Number is not of expected type: int32"


def test_predict_gzip_body(server):
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    status, _, data = server.http("POST", "/v1/models/hp/versions/1:predict", body,
                                  headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 200 and json.loads(data) == {"predictions": [1.5, 2.0]}


@pytest.mark.parametrize("path, body, status, error", [
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/hp/versions/7:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(hp, 7)"),
    ("/v1/models/hp/labels/beta:predict", {"instances": [1.0]}, 400, "Unrecognized servable version label: beta"),
    ("/v1/models/hp:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/hp:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("/v1/models/hp:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/multi:predict", {"inputs": {"a": [1.0]}}, 400, "Missing named input: b in 'inputs' object."),
    ("/v1/models/multi:predict", {"instances": [{"a": 1.0}]}, 400,
     "Failed to process element: 0 of 'instances' list. JSON object: {\"a\":1.0} keys must be equal to: a,b"),
    ("/v1/models/hp:predict", {"instances": [[1.0], [2.0, 3.0]]}, 400, None),
    ("/v1/models/hp:predict", {"instances": ["a"]}, 400, None),
])
def test_predict_errors(server, path, body, status, error):
    got_status, headers, data = server.http("POST", path, json.dumps(body) if isinstance(body, dict) else body)
    assert got_status == status, data
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(data)
    assert set(payload) == {"error"}
    if error is not None:
        assert payload["error"] == error


def test_predict_malformed_json(server):
    status, body = server.rest_json("POST", "/v1/models/hp:predict", b'{"instances": [1.0,')
    assert status == 400 and body["error"].startswith("JSON Parse error: ") and " at offset: " in body["error"]


def test_both_keys_and_empty_instances(server):
    status, body = post(server, "/v1/models/hp:predict", {"instances": [1.0], "inputs": [1.0]})
    assert status == 400
    assert body["error"].endswith("Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                                  "to exist ")
    status, body = post(server, "/v1/models/hp:predict", {"instances": []})
    assert status == 400 and "No values in 'instances' array" in body["error"]


# ---- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("PUT", "/v1/models/hp"),
    ("POST", "/v1/models/hp"),
    ("GET", "/v1/models/hp:predict"),
    ("GET", "/v1/models/hp/versions/abc"),
    ("POST", "/v1/models/hp:PREDICT"),
    ("DELETE", "/v1/models/hp/versions/1"),
    ("GET", "/v1/other"),
])
def test_malformed_requests(server, method, path):
    status, body = server.rest_json(method, path, b"{}" if method in ("POST", "PUT") else None)
    assert status == 400
    assert body == {"error": f"Malformed request: {method} {path}"}


def test_paths_outside_v1_are_plain_404(server):
    status, headers, data = server.http("GET", "/v2/models/hp")
    assert status == 404 and not headers["content-type"].startswith("application/json")


# ---- status and metadata ----------------------------------------------------------------------------


def test_status_json_exactly_as_tf_serving(server):
    status, body = server.rest_json("GET", "/v1/models/hp/versions/1")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    status, body = server.rest_json("GET", "/v1/models/hp")
    assert [v["version"] for v in body["model_version_status"]] == ["2", "1"]
    # GetModelStatus ignores labels: the label route lists every version.
    assert server.rest_json("GET", "/v1/models/hp/labels/stable") == (status, body)
    assert server.rest_json("GET", "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})
    assert server.rest_json("GET", "/v1/models/hp/versions/9") == (
        404, {"error": "Could not find version 9 of model hp"})


def test_metadata_json(server):
    status, body = server.rest_json("GET", "/v1/models/hp/labels/canary/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "hp", "signature_name": "", "version": "2"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert sig["defaults"] == {}
    assert server.rest_json("GET", "/v1/models/nope/metadata")[0] == 404


def test_list_models_extension(server):
    status, body = server.rest_json("GET", "/v1/models")
    assert status == 200
    names = [m["name"] for m in body["models"]]
    assert names == ["digits", "ex", "hp", "ids", "multi"]
    hp = next(m for m in body["models"] if m["name"] == "hp")
    assert [(v["version"], v["state"]) for v in hp["model_version_status"]] == [("2", "AVAILABLE"),
                                                                              ("1", "AVAILABLE")]


def test_readiness_endpoint(server):
    status, _, data = server.http("GET", "/readyz")
    assert status == 200 and data == b"ready\n"


# ---- classify / regress -----------------------------------------------------------------------------


def test_classify_and_regress(server):
    status, body = post(server, "/v1/models/ex:classify", {"signature_name": "classify",
                                                           "examples": [{"x": [0.25, 0.75]}, {"x": [1.0, 2.5]}]})
    assert status == 200, body
    assert body == {"results": [[["neg", 0.25], ["pos", 0.75]], [["neg", 1.0], ["pos", 2.5]]]}
    status, body = post(server, "/v1/models/ex:regress", {"signature_name": "regress",
                                                          "examples": [{"x": [1.5, 2.0]}]})
    assert (status, body) == (200, {"results": [3.5]})
    # context: shared features merged into every example
    status, body = post(server, "/v1/models/ex:regress", {"signature_name": "regress", "context": {"x": [1.0, 1.0]},
                                                          "examples": [{}, {"x": [2.0, 3.0]}]})
    assert (status, body) == (200, {"results": [2.0, 5.0]})


def test_classify_errors(server):
    status, body = post(server, "/v1/models/ex:classify", {"signature_name": "classify"})
    assert status == 400
    assert body["error"].endswith("When method is classify, key 'examples' is expected and was not found")
    status, body = post(server, "/v1/models/ex:classify", {"signature_name": "nope", "examples": [{"x": [1, 2]}]})
    assert (status, body) == (400, {"error": "No signature was found with the name: nope"})
    status, body = post(server, "/v1/models/ex:regress", {"signature_name": "regress", "examples": []})
    assert status == 400 and body["error"].endswith("'examples' value is an empty array")


def test_digits_classify_over_rest(server):
    pixels = [float(i % 17) for i in range(64)]
    status, body = post(server, "/v1/models/digits:classify", {"signature_name": "classify",
                                                               "examples": [{"pixels": pixels}]})
    assert status == 200
    [result] = body["results"]
    assert [label for label, _ in result] == [str(d) for d in range(10)]
    assert abs(sum(score for _, score in result) - 1.0) < 1e-4
    # JSON integers become an int64_list (TF Serving's rule): the model's parse op refuses them,
    # and the caller gets the op's own message without the Python runtime's stack header.
    status, body = post(server, "/v1/models/digits:classify", {"signature_name": "classify",
                                                               "examples": [{"pixels": [1] * 64}]})
    assert status == 400
    assert body["error"].startswith("Name: <unknown>, Key: pixels, Index: 0.  Data types don't match."), body
    assert "Graph execution error" not in body["error"] and "[Op:" not in body["error"]


# ---- CORS ---------------------------------------------------------------------------------------------


def test_cors(server):
    status, headers, _ = server.http("OPTIONS", "/v1/models/hp:predict", headers={"Origin": "https://app.example"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "POST, GET"
    # TF Serving allows Content-Type; Verso adds its rollout routing-key header (docs/tfserving-differences.md).
    # Authorization and Verso-Request-Id only for --rest_api_cors_allowed_origins (tests/security/test_control.py).
    assert headers["access-control-allow-headers"] == "Content-Type, Verso-Routing-Key, Verso-Slice"
    assert headers["access-control-expose-headers"] == "Verso-Model-Version"
    status, body = server.rest_json("OPTIONS", "/v1/models/hp:predict")
    assert (status, body) == (400, {"error": "Origin header is missing in CORS preflight"})
    status, headers, _ = server.http("POST", "/v1/models/hp:predict", json.dumps({"instances": [1.0]}))
    assert status == 200 and headers["access-control-allow-origin"] == "*"


# ---- timeout --------------------------------------------------------------------------------------


def batching_server(repo, server_factory, tmp_path, params: str, *flags: str):
    """hp version 1 with batching (``params``: BatchingParameters text) and REST on."""
    repo.put("hp", 1, "hp1")
    batching = tmp_path / "batching.config"
    batching.write_text(params)
    return server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--enable_batching",
                          f"--batching_parameters_file={batching}", *flags, rest=True)


def test_rest_timeout_gives_504_and_the_server_keeps_serving(repo, server_factory, tmp_path):
    # A batch that waits 3 s for company outlives a 300 ms REST deadline.
    srv = batching_server(repo, server_factory, tmp_path, "max_batch_size { value: 100 } batch_timeout_micros "
                          "{ value: 3000000 } num_batch_threads { value: 1 }", "--rest_api_timeout_in_ms=300")
    status, body = srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [1.0]})
    assert (status, body) == (504, {"error": "Deadline Exceeded"})
    assert srv.rest_json("GET", "/v1/models/hp")[0] == 200
    assert srv.alive()


def test_unsupported_dtype_is_501_and_mixed_feature_kinds_400(server):
    status, body = post(server, "/v1/models/ids:predict", {"signature_name": "id_half", "inputs": [1.0]})
    assert status == 501 and body["error"]
    status, body = post(server, "/v1/models/ex:classify", {"signature_name": "classify",
                                                           "examples": [{"x": [1.5, "a"]}]})
    assert (status, body) == (400, {"error": "Unexpected element type in feature: x expecting type: float"})


def test_queue_full_is_503(repo, server_factory, tmp_path):
    # One 1-row request holds the only batch slot open for 3 s; a 2-row request needs a second
    # batch, and max_enqueued_batches is 1.
    import threading
    srv = batching_server(repo, server_factory, tmp_path, "max_batch_size { value: 2 } batch_timeout_micros "
                          "{ value: 3000000 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }")
    first: list = []
    t = threading.Thread(target=lambda: first.append(srv.rest_json("POST", "/v1/models/hp:predict",
                                                                   {"instances": [2.0]})))
    t.start()
    # The first request is queued once the metrics show it waiting... poll the queue by retrying
    # the second request until it is refused (it succeeds only if it raced ahead of the first).
    from tests.server_proc import wait_until
    answers = []
    wait_until(lambda: answers.append(srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [1.0, 2.0]}))
               or answers[-1][0] == 503, timeout=2.5, interval=0.02, what="queue full")
    assert answers[-1] == (503, {"error": "The batch scheduling queue to which this task was submitted is full"})
    t.join(timeout=10)
    assert first == [(200, {"predictions": [2.0]})]
