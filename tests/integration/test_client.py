"""The Python client (``client/``) against the real server: every call over gRPC and REST,
blocking and asyncio, versions and labels, errors, deadlines, reload, several replicas."""

from __future__ import annotations

import asyncio
import shutil

import grpc
import numpy as np
import pytest

from client import AsyncClient, AsyncRestClient, Client, RestClient, TensorSpec, VersionStatus, VersoError
from tests.server_proc import InProcessServer, free_port

KINDS = ["grpc", "grpc-async", "rest", "rest-async"]


def _config(root: str) -> str:
    return f"""model_config_list {{
  config {{ name: "half_plus_two" base_path: "{root}/half_plus_two" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "multi" base_path: "{root}/multi" model_platform: "tensorflow" }}
  config {{ name: "examples" base_path: "{root}/examples" model_platform: "tensorflow" }}
}}
"""


@pytest.fixture(scope="module")
def server(built_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("client-repo")
    for model, version, key in (("half_plus_two", 1, "hp1"), ("half_plus_two", 2, "hp2"),
                                ("multi", 1, "multi"), ("examples", 1, "examples")):
        shutil.copytree(built_models[key], root / model / str(version))
    config = root / "models.config"
    config.write_text(_config(str(root)))
    srv = InProcessServer([f"--model_config_file={config}"], rest=True)
    srv.start()
    yield srv
    srv.stop()


class Blocking:
    """One client kind seen through blocking calls (asyncio kinds run each call in a fresh loop)."""

    def __init__(self, kind: str, srv: InProcessServer, **kw):
        self.kind = kind
        grpc_target, url = f"127.0.0.1:{srv.port}", f"http://127.0.0.1:{srv.rest_port}"
        if kind == "grpc":
            self._client = Client(grpc_target, **kw)
        elif kind == "rest":
            self._client = RestClient(url, **kw)
        else:
            cls = AsyncClient if kind == "grpc-async" else AsyncRestClient
            self._factory = lambda: cls(grpc_target if kind == "grpc-async" else url, **kw)
            self._client = None

    def __getattr__(self, name):
        if self._client is not None:
            return getattr(self._client, name)

        def call(*args, **kw):
            async def go():
                async with self._factory() as c:
                    return await getattr(c, name)(*args, **kw)
            return asyncio.run(go())
        return call

    def close(self):
        if self._client is not None:
            self._client.close()


@pytest.fixture(params=KINDS)
def client(request, server):
    c = Blocking(request.param, server)
    yield c
    c.close()


def _raises(code: grpc.StatusCode, fn, *args, **kw) -> VersoError:
    with pytest.raises(VersoError) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value
    return info.value


# ---- predict -------------------------------------------------------------------------------------

def test_predict_a_list_for_the_only_input_returns_one_array(client):
    out = client.predict("half_plus_two", [1.0, 2.0, 5.0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([2.5, 3.0, 4.5], np.float32))  # latest: v2 = 0.5x + 2


@pytest.mark.parametrize("selector, version, offset", [
    ({"version": 1}, 1, 1.0), ({"version": 2}, 2, 2.0), ({"label": "stable"}, 1, 1.0),
    ({"label": "canary"}, 2, 2.0), ({}, 2, 2.0)])
def test_predict_reaches_the_version_or_label_asked_and_says_which_answered(client, selector, version, offset):
    out, answered = client.predict("half_plus_two", np.array([4.0], np.float32), with_version=True, **selector)
    assert answered == version
    np.testing.assert_array_equal(out, [2.0 + offset])


def test_predict_several_inputs_and_outputs_by_alias_and_output_filter(client):
    a, b = np.array([1.0, 2.0], np.float32), np.array([0.5, 4.0], np.float32)
    out = client.predict("multi", {"a": a, "b": b})
    assert sorted(out) == ["diff", "sum"]
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["diff"], a - b)
    only = client.predict("multi", {"a": [1.0], "b": [2.0]}, output_filter=["diff"])
    np.testing.assert_array_equal(only, np.array([-1.0], np.float32))


def test_predict_with_a_named_signature_and_bytes_round_trip(client):
    data = [b"\x00\xffbinary", "text".encode()]
    out = client.predict("examples", {"data": np.array(data, dtype=object)}, signature="echo_bytes")
    assert list(out["data_bytes"]) == data
    np.testing.assert_array_equal(out["length"], [8, 4])
    assert out["length"].dtype == np.int32


def test_predict_a_two_dimensional_list_takes_the_signature_dtype(client):
    out = client.predict("examples", [[2.0, 3.0], [4.0, 0.5]])  # serving_default: x [None, 2] -> x0 * x1
    np.testing.assert_array_equal(out, np.array([6.0, 2.0], np.float32))


# ---- classify / regress / metadata / status ----------------------------------------------------

def test_classify_from_feature_dicts_with_and_without_context(client):
    got = client.classify("examples", [{"x": [1.0, 2.0]}, {"x": np.array([3.0, 0.25], np.float32)}],
                          signature="classify")
    assert got == [[("neg", 1.0), ("pos", 2.0)], [("neg", 3.0), ("pos", 0.25)]]
    with_context = client.classify("examples", [{}], context={"x": [5.0, 6.0]}, signature="classify")
    assert with_context == [[("neg", 5.0), ("pos", 6.0)]]


def test_regress_returns_one_float32_per_example(client):
    got = client.regress("examples", [{"x": [1.0, 2.0]}, {"x": [0.5, 0.25]}], signature="regress")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [3.0, 0.75])


def test_metadata_lists_signatures_with_dtypes_and_shapes(client):
    md = client.metadata("half_plus_two")
    assert (md.model, md.version) == ("half_plus_two", 2)
    sig = md.signature(None)
    assert sig.method == "tensorflow/serving/predict"
    assert sig.inputs == {"x": TensorSpec("x", "float", (-1,), "serving_default_x:0")}
    assert sig.outputs["y"].dtype == "float" and sig.outputs["y"].shape == (-1,)
    assert client.metadata("half_plus_two", version=1).version == 1
    assert client.metadata("half_plus_two", label="stable").version == 1
    ex = client.metadata("examples")
    assert ex.signatures["echo_bytes"].inputs["data"].dtype == "string"
    assert ex.signatures["serving_default"].inputs["x"].shape == (-1, 2)


def test_status_lists_every_version_and_one_when_asked(client):
    assert client.status("half_plus_two") == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "AVAILABLE")]
    assert client.status("half_plus_two", version=1) == [VersionStatus(1, "AVAILABLE")]


# ---- errors --------------------------------------------------------------------------------------

def test_errors_carry_the_servers_code_and_text(client):
    e = _raises(grpc.StatusCode.NOT_FOUND, client.predict, "nope", {"x": np.array([1.0], np.float32)})
    assert e.message == "Servable not found for request: Latest(nope)"
    e = _raises(grpc.StatusCode.NOT_FOUND, client.predict, "half_plus_two",
                {"x": np.array([1.0], np.float32)}, version=7)
    assert e.message == "Servable not found for request: Specific(half_plus_two, 7)"
    e = _raises(grpc.StatusCode.NOT_FOUND, client.status, "nope")
    _raises(grpc.StatusCode.FAILED_PRECONDITION, client.predict, "half_plus_two", [1.0], signature="nope")
    _raises(grpc.StatusCode.INVALID_ARGUMENT, client.classify, "examples", [{"x": [1.0]}], signature="classify")
    if client.kind.startswith("rest"):
        assert e.http_status == 404


def test_client_side_mistakes_are_invalid_argument_before_anything_is_sent(client):
    e = _raises(grpc.StatusCode.INVALID_ARGUMENT, client.predict, "half_plus_two", [1.0], version=1, label="x")
    assert e.message == "give a version or a label, not both"
    e = _raises(grpc.StatusCode.INVALID_ARGUMENT, client.predict, "multi", [1.0])
    assert "has 2 inputs (a, b)" in e.message
    _raises(grpc.StatusCode.INVALID_ARGUMENT, client.predict, "half_plus_two", ["not a number"])
    _raises(grpc.StatusCode.INVALID_ARGUMENT, client.classify, "examples", {"x": [1.0]})


def test_wrong_numpy_dtype_over_grpc_gets_tf_servings_error(server):
    with Client(f"127.0.0.1:{server.port}") as c:
        e = _raises(grpc.StatusCode.INVALID_ARGUMENT, c.predict, "half_plus_two", {"x": np.array([1.0])})
    assert e.message == "Expects arg[0] to be float but double is provided"


def test_every_call_has_a_deadline(server):
    # 16 MB of input cannot travel and run in 2 ms; a deadline of microseconds instead could be
    # rounded up by gRPC's timers and miss a fast call.
    big = {"x": np.zeros(4_000_000, np.float32)}
    for kind in KINDS:
        c = Blocking(kind, server, timeout=0.002)
        try:
            _raises(grpc.StatusCode.DEADLINE_EXCEEDED, c.predict, "half_plus_two", big)
        finally:
            c.close()
    with Client(f"127.0.0.1:{server.port}", timeout=1e-6) as c:  # a call's own timeout wins
        assert c.status("half_plus_two", timeout=10)[0].state == "AVAILABLE"


# ---- reload --------------------------------------------------------------------------------------

def test_reload_applies_a_config_and_rest_says_it_cannot(server_factory, repo, tmp_path):
    repo.put("a", 1, "hp1")
    repo.put("b", 1, "hp3")
    srv = server_factory("--model_name=a", f"--model_base_path={repo.path('a')}", rest=True)
    config = tmp_path / "new.config"
    config.write_text(f'model_config_list {{ config {{ name: "b" base_path: "{repo.path("b")}" '
                      'model_platform: "tensorflow" } }\n')
    with Client(f"127.0.0.1:{srv.port}") as c:
        c.reload(config)  # a path
        assert c.status("b") == [VersionStatus(1, "AVAILABLE")]
        np.testing.assert_array_equal(c.predict("b", [2.0]), [4.0])
        _raises(grpc.StatusCode.NOT_FOUND, c.predict, "a", [2.0])
        c.reload(config.read_text().replace('"b"', '"a"').replace(repo.path("b"), repo.path("a")))  # text
        np.testing.assert_array_equal(c.predict("a", [2.0]), [2.0])
        e = _raises(grpc.StatusCode.INVALID_ARGUMENT, c.reload, "model_config_list { nonsense }")
        assert "not a text-format ModelServerConfig" in e.message
        e = _raises(grpc.StatusCode.INVALID_ARGUMENT, c.reload,
                    'model_config_list { config { name: "x" base_path: "relative/path" } }')
        assert e.message  # the server's own validation text
    with RestClient(f"127.0.0.1:{srv.rest_port}") as r:
        _raises(grpc.StatusCode.UNIMPLEMENTED, r.reload, config)


# ---- replicas ------------------------------------------------------------------------------------

def test_two_replicas_share_the_calls(server_factory, tmp_path, built_models):
    replicas = []
    for offset in (1, 3):  # same model name, different answers: y = 0.5x + offset
        base = tmp_path / f"replica{offset}" / "half_plus_two"
        shutil.copytree(built_models[f"hp{offset}"], base / "1")
        replicas.append(server_factory("--model_name=half_plus_two", f"--model_base_path={base}"))
    target = ",".join(f"localhost:{r.port}" for r in replicas)
    seen = {1.0: 0, 3.0: 0}
    with Client(target) as c:
        for _ in range(10):  # until both connections are up
            c.predict("half_plus_two", [0.0])
        for _ in range(40):
            seen[float(c.predict("half_plus_two", [0.0])[0])] += 1
    # round_robin alternates between READY replicas: an even split, give or take a reconnect
    assert seen[1.0] >= 15 and seen[3.0] >= 15, seen


def test_a_replica_that_is_down_is_skipped(server):
    dead = free_port()
    with Client(f"127.0.0.1:{dead},127.0.0.1:{server.port}") as c:
        for _ in range(20):
            np.testing.assert_array_equal(c.predict("half_plus_two", [2.0], version=1), [2.0])


def test_nothing_listening_is_unavailable_after_the_retries(server):
    dead = free_port()
    with Client(f"127.0.0.1:{dead}", timeout=20) as c:
        e = _raises(grpc.StatusCode.UNAVAILABLE, c.status, "half_plus_two")
    assert "connect" in e.message.lower()
    with RestClient(f"http://127.0.0.1:{dead}", timeout=20) as r:
        _raises(grpc.StatusCode.UNAVAILABLE, r.status, "half_plus_two")

