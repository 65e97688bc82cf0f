"""The client's pure parts (specs, input binding, codecs, targets, error mapping, bench
statistics, CLI input parsing) and its retry behaviour against scripted fake servers."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from concurrent import futures

import grpc
import numpy as np
import orjson
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from client import AsyncClient, AsyncRestClient, Client, RestClient, VersoError, bench
from client._api import (
    DEFAULT_ATTEMPTS,
    as_input_array,
    backoff_delays,
    bind_inputs,
    features_json,
    make_spec,
    reload_config,
)
from client.cli import CliError, parse_inputs
from client.grpc_client import GrpcCodec, channel_target, service_config
from client.rest_client import RestCodec, read_reply
from client.types import ModelMetadata, Signature, TensorSpec
from protos import tensor_codec


def _sig(**inputs) -> Signature:
    return Signature("serving_default", "tensorflow/serving/predict",
                     {a: TensorSpec(a, dt, (-1,), f"{a}:0", tensor_codec.dtype_for_array(
                         np.empty(0, object if dt == "string" else {"float": np.float32, "int64": np.int64}[dt])).enum)
                      for a, dt in inputs.items()}, {})


# ---- specs and inputs ------------------------------------------------------------------------------

def test_make_spec_checks_version_and_label():
    assert make_spec("m", "3", None, None) == ("m", 3, None, "")
    assert make_spec("m", None, "stable", "sig") == ("m", None, "stable", "sig")
    with pytest.raises(VersoError, match="not both") as e:
        make_spec("m", 1, "x", None)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(VersoError, match="integer"):
        make_spec("m", "one", None, None)


def test_lists_take_the_signature_dtype_and_arrays_keep_theirs():
    x = _sig(x="float").inputs["x"]
    assert as_input_array("x", [1, 2], x).dtype == np.float32
    arr = np.array([1.0])
    assert as_input_array("x", arr, x) is arr
    s = _sig(s="string").inputs["s"]
    assert as_input_array("s", ["a", b"b"], s).dtype == object
    assert as_input_array("y", [1, 2], None).dtype == np.int64
    with pytest.raises(VersoError, match="input x"):
        as_input_array("x", [[1], [2, 3]], x)
    with pytest.raises(VersoError):
        as_input_array("x", ["nan?"], x)


def test_bind_inputs_one_value_goes_to_the_only_input():
    out = bind_inputs([1.0], _sig(x="float"))
    assert list(out) == ["x"] and out["x"].dtype == np.float32
    with pytest.raises(VersoError, match=r"has 2 inputs \(a, b\)"):
        bind_inputs([1.0], _sig(a="float", b="float"))
    with pytest.raises(VersoError, match="pass a dict"):
        bind_inputs([1.0], None)
    assert bind_inputs({"a": np.zeros(1)}, None)["a"].dtype == np.float64


def test_features_json_makes_tf_servings_json_values():
    got = features_json({"f": np.array([[1.0, 2.0]], np.float32), "i": np.int64(3), "b": b"\x00\xff",
                         "s": "text", "l": [1, np.int32(2)], "flag": True})
    assert got == {"f": [1.0, 2.0], "i": 3, "b": {"b64": "AP8="}, "s": "text", "l": [1, 2], "flag": True}
    with pytest.raises(VersoError, match="dict of features"):
        features_json([1.0])


def test_reload_config_reads_protos_paths_and_text(tmp_path):
    text = 'model_config_list { config { name: "a" base_path: "/m/a" } }'
    p = tmp_path / "c.config"
    p.write_text(text)
    assert reload_config(p).model_config_list.config[0].name == "a"
    proto = reload_config(text)
    assert reload_config(proto) is proto
    with pytest.raises(VersoError, match="cannot read"):
        reload_config(tmp_path / "missing")
    with pytest.raises(VersoError, match="not a text-format ModelServerConfig"):
        reload_config("model_config_list {")
    with pytest.raises(VersoError, match="not int"):
        reload_config(3)


def test_backoff_follows_grpcs_schedule():
    assert list(backoff_delays(5, rng=lambda: 1.0)) == [0.1, 0.2, 0.4, 0.8]
    assert list(backoff_delays(7, rng=lambda: 1.0))[-2:] == [1.0, 1.0]  # capped at 1 s
    assert list(backoff_delays(1)) == []
    assert all(0 <= d <= 0.1 for d in list(backoff_delays(2)))


# ---- gRPC channel configuration -------------------------------------------------------------------

def test_service_config_retries_unavailable_only_with_round_robin():
    cfg = json.loads(service_config(DEFAULT_ATTEMPTS))
    assert cfg["loadBalancingConfig"] == [{"round_robin": {}}]
    policy = cfg["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"] and policy["maxAttempts"] == 5
    assert "retryPolicy" not in json.loads(service_config(1))["methodConfig"][0]
    assert json.loads(service_config(9))["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5


@pytest.mark.parametrize("target, expected", [
    ("localhost:8500", "localhost:8500"),
    ("dns:///a.example:8500,b", "dns:///a.example:8500,b"),
    ("10.0.0.1:8500,10.0.0.2:8501", "ipv4:10.0.0.1:8500,10.0.0.2:8501"),
    ("localhost:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ("[::1]:1, [::2]:2", "ipv6:[::1]:1,[::2]:2"),
])
def test_channel_target_turns_replicas_into_one_address_list(target, expected):
    assert channel_target(target) == expected


def test_channel_target_rejects_bad_replica_lists():
    with pytest.raises(VersoError, match="not host:port"):
        channel_target("a:1,b")
    with pytest.raises(VersoError, match="mix IPv4 and IPv6"):
        channel_target("127.0.0.1:1,[::1]:2")


# ---- codecs ----------------------------------------------------------------------------------------

def test_grpc_codec_round_trip():
    spec = make_spec("m", None, "canary", "sig")
    call = GrpcCodec.predict_request(spec, {"x": np.arange(3, dtype=np.float32), "s": np.array([b"a"], object)},
                                     ["y"], routing_key="user-1")
    assert call.metadata == (("verso-routing-key", "user-1"),)
    req = call.request
    assert req.model_spec.version_label == "canary" and req.model_spec.signature_name == "sig"
    assert req.inputs["x"].tensor_content and list(req.inputs["s"].string_val) == [b"a"]
    assert list(req.output_filter) == ["y"]
    resp = predict_pb2.PredictResponse()
    resp.model_spec.version.value = 4
    resp.outputs["y"].CopyFrom(req.inputs["x"])
    outputs, version, request_id = GrpcCodec.predict_result((resp, "abc"), None)
    assert version == 4 and request_id == "abc" and outputs["y"].flags.writeable
    np.testing.assert_array_equal(outputs["y"], [0, 1, 2])


def test_rest_codec_request_and_reply():
    spec = make_spec("my model", 2, None, "sig")
    verb, path, body, headers = RestCodec.predict_request(spec, {"x": np.array([1.5, np.nan], np.float32),
                                                                 "b": np.array([b"\xff"], object)}, None)
    assert headers is None
    assert (verb, path) == ("POST", "/v1/models/my%20model/versions/2:predict")
    assert body == b'{"inputs":{"x":[1.5,NaN],"b":[{"b64":"/w=="}]},"signature_name":"sig"}'
    sig = Signature("sig", "", {}, {}, proto=_signature_def({"y": 1, "n": 9}))  # float, int64
    reply = read_reply(200, {"Verso-Model-Version": "2", "Verso-Request-Id": "r1"},
                       b'{"outputs": {"y": [1.0, 2.5], "n": [3]}}')
    outputs, version, request_id = RestCodec.predict_result(reply, sig)
    assert version == 2 and request_id == "r1" and outputs["y"].dtype == np.float32 and outputs["n"].dtype == np.int64
    one = Signature("sig", "", {}, {}, proto=_signature_def({"y": 1}))
    outputs, version, request_id = RestCodec.predict_result(read_reply(200, {}, b'{"outputs": [[1.0]]}'), one)
    assert version is None and request_id is None and outputs["y"].shape == (1, 1)
    with pytest.raises(VersoError) as e:
        RestCodec.reload_request(None)
    assert e.value.code == grpc.StatusCode.UNIMPLEMENTED


def _signature_def(outputs: dict):
    from tensorflow.core.protobuf import meta_graph_pb2
    sd = meta_graph_pb2.SignatureDef()
    for alias, dtype in outputs.items():
        sd.outputs[alias].dtype = dtype
    return sd


@pytest.mark.parametrize("status, body, code", [
    (404, b'{"error": "Servable not found for request: Latest(x)"}', grpc.StatusCode.NOT_FOUND),
    (400, b'{"error": "bad"}', grpc.StatusCode.INVALID_ARGUMENT),
    (503, b'{"error": "busy"}', grpc.StatusCode.UNAVAILABLE),
    (504, b'{"error": "Deadline Exceeded"}', grpc.StatusCode.DEADLINE_EXCEEDED),
    (501, b'{"error": "no"}', grpc.StatusCode.UNIMPLEMENTED),
    (500, b"<html>proxy error</html>", grpc.StatusCode.INTERNAL),
    (418, b"", grpc.StatusCode.UNKNOWN),
])
def test_rest_errors_map_back_to_grpc_codes(status, body, code):
    with pytest.raises(VersoError) as e:
        read_reply(status, {}, body)
    assert e.value.code == code and e.value.http_status == status
    if body.startswith(b'{"error"'):
        assert e.value.message == json.loads(body)["error"]
    else:
        assert e.value.message == (body.decode() or f"HTTP {status}")


def test_signature_lookup_uses_tf_servings_text():
    md = ModelMetadata("m", 1, {"serving_default": _sig(x="float")})
    assert md.signature(None).name == "serving_default"
    with pytest.raises(VersoError) as e:
        md.signature("other")
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.message == 'Serving signature key "other" not found.'


# ---- bench -----------------------------------------------------------------------------------------

def test_generated_inputs_follow_the_signature():
    sig = Signature("s", "", {
        "x": TensorSpec("x", "float", (-1, 3), "", 1), "n": TensorSpec("n", "int64", (-1, -1), "", 9),
        "s": TensorSpec("s", "string", (-1,), "", 7), "u": TensorSpec("u", "float", None, "", 1),
        "f": TensorSpec("f", "bool", (2,), "", 10)}, {})
    got = bench.generated_inputs(sig, rows=5)
    assert got["x"].shape == (5, 3) and got["x"].dtype == np.float32
    assert got["n"].shape == (5, 1) and got["n"].dtype == np.int64
    assert list(got["s"]) == [b"verso"] * 5 and got["u"].shape == (5,) and got["f"].shape == (2,)


# ---- CLI inputs ------------------------------------------------------------------------------------

def test_parse_inputs_literals_aliases_and_files(tmp_path):
    assert parse_inputs(["[1.0, 2]"]) == [1.0, 2]
    assert parse_inputs(["x=[1]", "y=NaN"])["y"] != parse_inputs(["x=[1]", "y=NaN"])["y"]  # NaN read as NaN
    assert parse_inputs(["a=(1, 2)", "b='s'"]) == {"a": (1, 2), "b": "s"}
    assert parse_inputs(['{"a": [1], "b": [2]}']) == {"a": [1], "b": [2]}
    assert parse_inputs(["-1.5"]) == -1.5
    assert parse_inputs([]) is None
    np.save(tmp_path / "x.npy", np.arange(3, dtype=np.int32))
    np.savez(tmp_path / "xy.npz", a=np.zeros(2), b=np.ones(1))
    (tmp_path / "rows.json").write_text('{"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}')
    (tmp_path / "cols.json").write_text('{"signature_name": "s", "inputs": {"a": [1]}}')
    (tmp_path / "plain.json").write_text("[[1, 2]]")
    got = parse_inputs([f"x=@{tmp_path}/x.npy"])
    assert got["x"].dtype == np.int32
    assert sorted(parse_inputs([f"@{tmp_path}/xy.npz"])) == ["a", "b"]
    assert parse_inputs([f"@{tmp_path}/rows.json"]) == {"a": [1, 3], "b": [2, 4]}
    assert parse_inputs([f"@{tmp_path}/cols.json"]) == {"a": [1]}
    assert parse_inputs([f"@{tmp_path}/plain.json"]) == [[1, 2]]
    with pytest.raises(CliError, match="not a JSON or Python literal"):
        parse_inputs(["[1,"])
    with pytest.raises(CliError, match="cannot read"):
        parse_inputs([f"@{tmp_path}/missing.npy"])
    with pytest.raises(CliError, match="name each one"):
        parse_inputs(["[1]", "[2]"])


# ---- retries against scripted fake servers -----------------------------------------------------------

class _ScriptedPredict(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict with the codes in ``script`` (then OK), counting attempts."""

    def __init__(self, script):
        self.script, self.attempts = list(script), 0

    def Predict(self, request, context):
        self.attempts += 1
        if self.script:
            code = self.script.pop(0)
            context.abort(code, f"scripted {code.name}")
        resp = predict_pb2.PredictResponse()
        resp.outputs["y"].CopyFrom(request.inputs["x"])
        return resp


@pytest.fixture
def fake_grpc():
    servers = []

    def start(script):
        svc = _ScriptedPredict(script)
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(svc, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        servers.append(srv)
        return svc, f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


X = {"x": np.array([1.0, 2.0], np.float32)}


def test_grpc_retries_unavailable_then_succeeds(fake_grpc):
    svc, target = fake_grpc([grpc.StatusCode.UNAVAILABLE] * 2)
    with Client(target) as c:
        np.testing.assert_array_equal(c.predict("m", X), X["x"])
    assert svc.attempts == 3


def test_asyncio_grpc_retries_the_same_way(fake_grpc):
    svc, target = fake_grpc([grpc.StatusCode.UNAVAILABLE] * 3)

    async def go():
        async with AsyncClient(target) as c:
            return await c.predict("m", X)
    np.testing.assert_array_equal(asyncio.run(go()), X["x"])
    assert svc.attempts == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND])
def test_grpc_does_not_retry_other_codes(fake_grpc, code):
    svc, target = fake_grpc([code])
    with Client(target) as c, pytest.raises(VersoError) as e:
        c.predict("m", X)
    assert (e.value.code, e.value.message, svc.attempts) == (code, f"scripted {code.name}", 1)


def test_grpc_gives_up_after_max_attempts(fake_grpc):
    svc, target = fake_grpc([grpc.StatusCode.UNAVAILABLE] * 10)
    with Client(target, max_attempts=3) as c, pytest.raises(VersoError) as e:
        c.predict("m", X)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and svc.attempts == 3
    svc, target = fake_grpc([grpc.StatusCode.UNAVAILABLE] * 10)
    with Client(target, max_attempts=1) as c, pytest.raises(VersoError):
        c.predict("m", X)
    assert svc.attempts == 1


class _ScriptedHttp(http.server.ThreadingHTTPServer):
    def __init__(self, script):
        self.script, self.attempts = list(script), 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self):
        srv = self.server
        srv.attempts += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if srv.script:
            status = srv.script.pop(0)
            data = orjson.dumps({"error": f"scripted {status}"})
        elif self.path.endswith("/metadata"):
            status, data = 200, orjson.dumps({"model_spec": {"name": "m", "version": "1"}, "metadata": {
                "signature_def": {"signature_def": {"serving_default": {
                    "inputs": {"x": {"dtype": "DT_FLOAT"}}, "outputs": {"y": {"dtype": "DT_FLOAT"}}}}}}})
        else:
            status, data = 200, orjson.dumps({"outputs": orjson.loads(body)["inputs"]["x"]})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture
def fake_http():
    servers = []

    def start(script):
        srv = _ScriptedHttp(script)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_rest_retries_503_then_succeeds(fake_http):
    srv, url = fake_http([503, 503])  # the metadata call meets both 503s
    with RestClient(url) as c:
        np.testing.assert_array_equal(c.predict("m", [1.0, 2.0]), [1.0, 2.0])
    assert srv.attempts == 4  # 2 failed + metadata + predict


def test_asyncio_rest_retries_and_gives_up_after_max_attempts(fake_http):
    srv, url = fake_http([503] * 10)

    async def go():
        async with AsyncRestClient(url, max_attempts=3) as c:
            return await c.predict("m", [1.0])
    with pytest.raises(VersoError) as e:
        asyncio.run(go())
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.message == "scripted 503"
    assert srv.attempts == 3


@pytest.mark.parametrize("status", [400, 404, 500, 504])
def test_rest_does_not_retry_other_statuses(fake_http, status):
    srv, url = fake_http([status])
    with RestClient(url) as c, pytest.raises(VersoError) as e:
        c.status("m")
    assert e.value.http_status == status and srv.attempts == 1


# ---- the shared call layer, driven by a scripted transport --------------------------------------------

class _ScriptedTransport:
    """A codec + ``_io`` whose answers come from a script: ``("metadata"|"predict", answer)``
    where an answer is a VersoError to raise or a value to return."""

    needs_signature = False
    filters_outputs = True

    def __init__(self, script, retries_here=False):
        self.script, self.calls, self.retries_here = list(script), [], retries_here

    def metadata_request(self, spec):
        return "md"

    def metadata_result(self, raw):
        return raw

    def predict_request(self, spec, arrays, output_filter, routing_key=None, slice=None):
        return arrays

    def predict_result(self, raw, sig):
        return raw, 1, None


def _fake_client(transport, max_attempts=5):
    from client._api import Api, SyncRunner

    class Fake(Api, SyncRunner):
        def _io(self, method, request, timeout):
            transport.calls.append((method, timeout))
            kind, answer = transport.script.pop(0)
            assert kind == method, (kind, method)
            if isinstance(answer, Exception):
                raise answer
            return answer

        def close(self):
            pass

    c = Fake()
    c._init_api(5.0, max_attempts)
    c._codec = transport
    return c


MD = ModelMetadata("m", 1, {"serving_default": _sig(x="float")})


def test_metadata_is_fetched_once_and_dropped_after_an_error_it_may_explain():
    bad = VersoError(grpc.StatusCode.INVALID_ARGUMENT, "alias changed")
    t = _ScriptedTransport([("metadata", MD), ("predict", {"y": 1}), ("predict", {"y": 2}), ("predict", bad),
                            ("metadata", MD), ("predict", {"y": 3})])
    c = _fake_client(t)
    assert c.predict("m", [1.0]) == 1 and c.predict("m", [2.0]) == 2  # one metadata call for both
    with pytest.raises(VersoError, match="alias changed"):
        c.predict("m", [3.0])
    assert c.predict("m", [4.0]) == 3  # fetched again
    assert [m for m, _ in t.calls] == ["metadata", "predict", "predict", "predict", "metadata", "predict"]
    assert all(timeout == 5.0 for _, timeout in t.calls)  # the client's deadline on every call


def test_the_call_layer_retries_for_transports_without_their_own_policy(monkeypatch):
    waits = []
    monkeypatch.setattr("client._api.time.sleep", waits.append)
    busy = VersoError(grpc.StatusCode.UNAVAILABLE, "busy")
    t = _ScriptedTransport([("predict", busy), ("predict", busy), ("predict", {"y": 7})], retries_here=True)
    assert _fake_client(t).predict("m", {"x": np.zeros(1)}) == 7
    assert len(waits) == 2 and 0 <= waits[0] <= 0.1 and 0 <= waits[1] <= 0.2
    # the deadline shrinks across attempts
    assert t.calls[0][1] >= t.calls[1][1] >= t.calls[2][1]
    t = _ScriptedTransport([("predict", VersoError(grpc.StatusCode.INTERNAL, "boom"))], retries_here=True)
    with pytest.raises(VersoError, match="boom"):
        _fake_client(t).predict("m", {"x": np.zeros(1)})
    t = _ScriptedTransport([("predict", busy)] * 2, retries_here=True)
    with pytest.raises(VersoError, match="busy"):
        _fake_client(t, max_attempts=2).predict("m", {"x": np.zeros(1)})
    assert len(t.calls) == 2


def test_bench_datasets_are_npz_files_read_like_inputs(tmp_path):
    from client.cli import _load_dataset

    np.savez(tmp_path / "d.npz", images=np.zeros((4, 2), np.float32), labels=np.arange(4))
    assert sorted(_load_dataset(str(tmp_path / "d.npz"))) == ["images", "labels"]
    with pytest.raises(CliError, match="expected an .npz file"):
        _load_dataset(str(tmp_path / "d.json"))
    with pytest.raises(CliError, match="cannot read .*missing.npz: No such file or directory"):
        _load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="fewer than --rows 5"):
        bench.dataset_batches(_load_dataset(str(tmp_path / "d.npz")), ["images"], 5)
    with pytest.raises(ValueError, match="no array for input x"):
        bench.dataset_batches({"images": np.zeros(3)}, ["x"], 1)
    batches = bench.dataset_batches(_load_dataset(str(tmp_path / "d.npz")), ["images"], 3)
    assert len(batches) == 1 and batches[0][1].tolist() == [0, 1, 2]  # the trailing row is left out


def test_bench_dataset_slices_group_rows_and_targets_travel():
    data = {"x": np.arange(10, dtype=np.float32)[:, None], "slices": np.array(list("abababab") + ["c", "c"]),
            "targets": np.arange(10) * 0.5}
    batches = bench.dataset_batches(data, ["x"], 2)
    assert [(b.slice, b.inputs["x"][:, 0].tolist(), b.targets.tolist()) for b in batches] == [
        ("a", [0, 2], [0.0, 1.0]), ("a", [4, 6], [2.0, 3.0]), ("b", [1, 3], [0.5, 1.5]), ("b", [5, 7], [2.5, 3.5]),
        ("c", [8, 9], [4.0, 4.5])]
    assert batches[0].labels is None
    with pytest.raises(ValueError, match="targets must be numbers"):
        bench.dataset_batches({**data, "targets": np.array(["x"] * 10)}, ["x"], 2)
    with pytest.raises(ValueError, match="differ in length"):
        bench.dataset_batches({**data, "slices": np.array(["a"])}, ["x"], 2)
