"""Issue 26, verdicts no caller can forge, through the real serving path (in-process server,
official gRPC stubs): what a caller sends keyed onto the canary must not decide its verdict.

- Invalid requests (and requests over ``--max_tensor_bytes``, RESOURCE_EXHAUSTED) fail before
  the version runs: counted apart as the caller's, never in the canary's error rate.
- Heavy requests keyed onto the canary are compared with nothing of stable's but calls of
  their own size, so they do not fail its latency check.

Each attacker finds the canary's keys as a remote caller can: it probes keys with valid requests
and keeps those the canary answers (the answer names its version).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from protos import tensor_codec
from server.rollout import stats
from tests.server_proc import InProcessServer

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "model_repository" / "half_plus_two"   # v1 0.5x+1, v2 0.5x+2: both good
MAX_TENSOR_BYTES = 4_000_000
MIN_SAMPLES = 60


def _save_quadratic(path: Path, offset: float) -> None:
    """x [n] float -> y [n]: work in n squared (an outer product), so that a heavy request is
    much slower than a light one on either version."""
    import tensorflow as tf

    class Quadratic(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reduce_mean(tf.sin(tf.tensordot(x, x, axes=0)), axis=1) + offset}

    m = Quadratic()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def _save_renamed(path: Path) -> None:
    """half_plus_two whose input is called "z": a canary that refuses what stable takes."""
    import tensorflow as tf

    class Renamed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="z")])
        def serve(self, z):
            return {"y": 0.5 * z + 2.0}

    m = Renamed()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    for v in (1, 2):
        _save_quadratic(root / "quadratic" / str(v), float(v))
    shutil.copytree(BASE / "1", root / "renamed" / "1")
    _save_renamed(root / "renamed" / "2")
    models = "".join(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
                     'model_version_policy { all {} } } '
                     for name, base in (("errors", BASE), ("latency", root / "quadratic"),
                                        ("renamed", root / "renamed")))
    (root / "models.config").write_text(f"model_config_list {{ {models} }}\n")
    # Ratio only (no absolute allowance): the heavy calls would fail it if they were judged.
    gates = f"gates {{ min_samples: {MIN_SAMPLES} warmup_calls: -1 max_p99_ratio: 3 max_p99_increase_ms: -1 }}"
    (root / "rollouts.config").write_text(
        f'models {{ model: "errors" stable: 1 canary: 2 canary_percent: 50 {gates} }}\n'
        f'models {{ model: "latency" stable: 1 canary: 2 canary_percent: 50 {gates} }}\n'
        f'models {{ model: "renamed" stable: 1 canary: 2 canary_percent: 50 {gates} }}\n')
    srv = InProcessServer([f"--model_config_file={root}/models.config",
                           f"--rollout_config_file={root}/rollouts.config",
                           f"--max_tensor_bytes={MAX_TENSOR_BYTES}"], rest=True)
    srv.start()
    yield srv
    srv.stop()


def _request(model: str, x, alias: str = "x") -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    x = np.asarray(x)
    tensor_codec.fill_proto(req.inputs[alias], x if x.dtype == object else x.astype(np.float32))
    return req


def _predict(srv, request, key: str):
    return srv.predict_stub.Predict(request, metadata=(("verso-routing-key", key),), timeout=30)


def _canary_keys(srv, model: str, n: int) -> list[str]:
    keys = []
    for i in range(400):
        key = f"attacker-{i}"
        if _predict(srv, _request(model, [1.0]), key).model_spec.version.value == 2:
            keys.append(key)
            if len(keys) == n:
                return keys
    raise AssertionError(f"found {len(keys)} canary keys in 400 probes")


def _status(srv, model: str) -> tuple[dict, dict, dict]:
    code, st = srv.rest_json("GET", f"/v1/rollouts/{model}")
    assert code == 200, st
    versions = {int(v["version"]): v for v in st["versions"]}
    return versions[1], versions[2], {c["name"]: c for c in st["verdict"]["checks"]}


def test_invalid_requests_keyed_onto_the_canary_do_not_move_its_error_rate_or_verdict(server):
    keys = _canary_keys(server, "errors", 4)
    rng = random.Random(0)
    empty = predict_pb2.PredictRequest()
    empty.model_spec.name = "errors"
    bad = [_request("errors", [1.0], alias="no_such_input"),                 # INVALID_ARGUMENT
           _request("errors", np.asarray([b"a"], object)),                   # the wrong dtype
           empty,                                                            # no input at all
           _request("errors", np.zeros(MAX_TENSOR_BYTES // 4 + 1))]          # over --max_tensor_bytes
    codes = {}
    for i in range(250):
        _predict(server, _request("errors", [1.0, 2.0]), f"user-{rng.randrange(10 ** 9)}")
        for request in bad:
            with pytest.raises(grpc.RpcError) as e:
                _predict(server, request, keys[i % len(keys)])
            codes[e.value.code().name] = codes.get(e.value.code().name, 0) + 1
    assert codes == {"INVALID_ARGUMENT": 750, "RESOURCE_EXHAUSTED": 250}
    stable, canary, checks = _status(server, "errors")
    assert canary["errors"] == {} and canary["error_rate"] == 0.0
    # Shown apart, as the caller's.
    assert {k: int(n) for k, n in canary["caller_errors"].items()} == {"INVALID_ARGUMENT": 750,
                                                                        "RESOURCE_EXHAUSTED": 250}
    assert int(canary["requests"]) >= MIN_SAMPLES and int(stable["requests"]) >= MIN_SAMPLES
    errors = checks["errors"]
    assert errors["result"] != "FAIL" and errors["statistic"] == 0.0, errors
    # Under the old rule (every non-OK code a canary error) this evidence failed the check.
    n_c, n_s = int(canary["requests"]), int(stable["requests"])
    old = stats.proportion_difference(1000, n_c + 1000, 0, n_s, 0.95)
    assert old.low > errors["limit"]


def test_heavy_requests_keyed_onto_the_canary_do_not_fail_its_latency(server):
    keys = _canary_keys(server, "latency", 4)
    rng = random.Random(1)
    heavy = _request("latency", np.ones(4000))  # 16 million sines
    for i in range(3 * MIN_SAMPLES):
        _predict(server, _request("latency", [1.0]), f"user-{rng.randrange(10 ** 9)}")
        if i % 2 == 0:
            _predict(server, heavy, keys[i % len(keys)])
    stable, canary, checks = _status(server, "latency")
    # All calls together, the canary looks many times slower: the old check failed it.
    assert canary["p99_ms"] > 5 * stable["p99_ms"], (canary["p99_ms"], stable["p99_ms"])
    latency = checks["latency"]
    assert latency["result"] != "FAIL", latency
    # Judged on the users' one-element calls only (the attacker's 90 are a class of their own),
    # those of the time span both windows cover (the latency check's common span).
    assert MIN_SAMPLES <= int(latency["stable_samples"]) <= int(stable["requests"])
    assert MIN_SAMPLES <= int(latency["canary_samples"]) <= int(canary["requests"]) - 90


def test_a_canary_that_refuses_requests_stable_takes_is_still_failed(server):
    """The other side of the rule: a request stable accepts and the canary refuses (here its
    input was renamed) is the canary's fault, judged; a request both refuse stays the caller's."""
    rng = random.Random(2)
    for _ in range(2 * MIN_SAMPLES + 40):
        key = f"user-{rng.randrange(10 ** 9)}"
        try:
            _predict(server, _request("renamed", [1.0]), key)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError):
            _predict(server, _request("renamed", [1.0], alias="neither"), key)
    stable, canary, checks = _status(server, "renamed")
    assert int(canary["requests"]) >= MIN_SAMPLES and int(stable["requests"]) >= MIN_SAMPLES
    assert int(canary["errors"]["INVALID_ARGUMENT"]) == int(canary["requests"]) and canary["error_rate"] == 1.0
    # The requests neither version takes: the callers', on both sides.
    assert sum(int(v["caller_errors"]["INVALID_ARGUMENT"]) for v in (stable, canary)) == 2 * MIN_SAMPLES + 40
    assert stable["errors"] == {} and checks["errors"]["result"] == "FAIL", checks["errors"]
