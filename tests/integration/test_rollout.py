"""Rollouts against the real server: the split, stickiness, explicit versions, labels, shadow
traffic, feedback and accuracy, the config file, the extension service's errors, metrics."""

from __future__ import annotations

import asyncio
import collections
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from client import AsyncClient, Client, RestClient, VersoError
from protos import rollout_pb2, rollout_pb2_grpc
from protos import tensor_codec
from tests.server_proc import InProcessServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "model_repository" / "digits"
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"


def _config(root: Path) -> str:
    return f"""model_config_list {{
  config {{ name: "half" base_path: "{root}/half" model_platform: "tensorflow" model_version_policy {{ all {{}} }}
           version_labels {{ key: "plain" value: 1 }} version_labels {{ key: "routed" value: 1 }} }}
  config {{ name: "digits" base_path: "{root}/digits" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
  config {{ name: "badinfo" base_path: "{root}/badinfo" model_platform: "tensorflow" }}
}}
"""


@pytest.fixture(scope="module")
def server(built_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-repo")
    shutil.copytree(built_models["hp1"], root / "half" / "1")
    shutil.copytree(built_models["hp2"], root / "half" / "2")
    for v in (1, 2):
        shutil.copytree(DIGITS / str(v), root / "digits" / str(v))
    # A version whose provenance files are malformed: it must load all the same.
    shutil.copytree(built_models["hp1"], root / "badinfo" / "1")
    (root / "badinfo" / "1" / "assets.extra").mkdir()
    (root / "badinfo" / "1" / "assets.extra" / "verso_model.json").write_text('{"trained_at": "yesterday"}')
    (root / "badinfo" / "1" / "assets.extra" / "reference.npz").write_bytes(b"not a zip")
    (root / "models.config").write_text(_config(root))
    rollouts = root / "rollouts.config"
    rollouts.write_text('models { model: "half" stable: 1 canary: 2 canary_percent: 25 }\n')
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    srv = InProcessServer([f"--model_config_file={root}/models.config", f"--rollout_config_file={rollouts}",
                         "--rollout_config_file_poll_wait_seconds=1", f"--monitoring_config_file={monitoring}"],
                        rest=True)
    srv.rollouts_file = rollouts
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with Client(f"127.0.0.1:{server.port}") as c:
        yield c


def _request(model: str, x) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    tensor_codec.fill_proto(req.inputs["x"], np.asarray(x, np.float32))
    return req


def _set(c: Client, model: str, **kw):
    return c.set_rollout(model, **kw)


def _evidence(c: Client, model: str, version: int):
    return next(v for v in c.rollout(model).versions if v.version == version)


# ---- the split ---------------------------------------------------------------------------------------

def test_the_split_converges_to_the_configured_weights(server, client):
    # From the config file: half, stable 1, canary 2 at 25 %.
    stub = server.predict_stub
    req = _request("half", [0.0])
    seen = collections.Counter(stub.Predict(req, timeout=10).model_spec.version.value for _ in range(2000))
    assert set(seen) == {1, 2}
    # binomial(2000, 0.25): sd 19.4 requests; 3 sd = 58
    assert abs(seen[2] - 500) <= 60, seen
    answers = {stub.Predict(req, timeout=10).outputs["y"].float_val[0] for _ in range(50)}
    assert answers <= {1.0, 2.0}  # each answer is its version's own: 0.5 * 0 + N


def test_a_routing_key_always_lands_on_the_same_version(server, client):
    by_key = {}
    for k in range(40):
        versions = {client.predict("half", [0.0], routing_key=f"user-{k}", details=True).version for _ in range(5)}
        assert len(versions) == 1, (k, versions)
        by_key[k] = versions.pop()
    assert set(by_key.values()) == {1, 2}  # the keys spread over both sides
    with RestClient(f"http://127.0.0.1:{server.rest_port}") as r:  # the same key over REST: the same side
        for k in range(10):
            assert r.predict("half", [0.0], routing_key=f"user-{k}", details=True).version == by_key[k]


def test_explicit_versions_and_unlisted_labels_are_never_rerouted(server, client):
    try:
        _set(client, "half", stable=1, canary=2, canary_percent=100, labels=["routed"])
        for _ in range(20):
            assert client.predict("half", [0.0], version=1, details=True).version == 1
            assert client.predict("half", [0.0], label="plain", details=True).version == 1
            assert client.predict("half", [0.0], label="routed", details=True).version == 2
            assert client.predict("half", [0.0], details=True).version == 2
    finally:
        _set(client, "half", stable=1, canary=2, canary_percent=25)


# ---- shadow traffic ----------------------------------------------------------------------------------

def test_shadow_never_changes_the_answer_and_measures_the_difference(server, client):
    _set(client, "half", stable=1, canary=2, canary_percent=0, shadow_percent=100, window=500)
    try:
        xs = np.arange(50, dtype=np.float32)
        for x in xs:
            out = client.predict("half", [x], details=True)
            assert out.version == 1
            np.testing.assert_array_equal(out.outputs["y"], [0.5 * x + 1])  # the stable's own answer
        wait_until(lambda: _evidence(client, "half", 2).shadow_compared == 50, timeout=30, what="shadow calls")
        canary = _evidence(client, "half", 2)
        assert canary.max_abs_diff == 1.0  # v2 - v1 = (0.5x + 2) - (0.5x + 1), exactly
        assert (canary.outputs["y"].max_abs_diff, canary.outputs["y"].top1_agreement) == (1.0, -1)
        assert canary.top1_agreement == -1  # a 1-D float output has no top-1
        assert canary.requests == 0  # shadow calls are not caller traffic
    finally:
        _set(client, "half", stable=1, canary=2, canary_percent=25)


def test_shadow_calls_are_dropped_when_their_budget_is_full(server, client):
    _set(client, "half", stable=1, canary=2, canary_percent=0, shadow_percent=100, shadow_max_in_flight=1,
         window=600)
    try:
        async def burst():
            async with AsyncClient(f"127.0.0.1:{server.port}") as ac:
                xs = [float(i) for i in range(64)]
                outs = await asyncio.gather(*(ac.predict("half", [x]) for x in xs))
                return xs, outs

        xs, outs = asyncio.run(burst())
        for x, y in zip(xs, outs):  # every caller got the stable's answer
            np.testing.assert_array_equal(y, [0.5 * x + 1])
        wait_until(lambda: (lambda e: e.shadow_compared + e.shadow_dropped >= 64)(_evidence(client, "half", 2)),
                   timeout=30, what="shadow calls settle")
        canary = _evidence(client, "half", 2)
        assert canary.shadow_dropped > 0 and canary.shadow_compared > 0
    finally:
        _set(client, "half", stable=1, canary=2, canary_percent=25)


# ---- feedback and accuracy -------------------------------------------------------------------------------

def test_feedback_gives_exact_accuracy_per_version(server, client):
    data = np.load(HOLDOUT)
    _set(client, "digits", stable=1, canary=2, canary_percent=0, window=100, gates={"warmup_calls": -1})
    predicted = []
    for i in range(10):
        p = client.predict("digits", {"images": data["images"][i:i + 1]}, details=True)
        assert p.version == 1 and p.request_id
        predicted.append((p.request_id, int(p.outputs["classes"][0])))
    for i, (request_id, cls) in enumerate(predicted):  # 7 right, 3 wrong, by construction
        label = cls if i < 7 else (cls + 1) % 10
        r = client.feedback(request_id, [label])
        assert (r.model, r.version, r.rows, r.correct) == ("digits", 1, 1, int(i < 7))
    stable = _evidence(client, "digits", 1)
    assert (stable.feedback, stable.accuracy) == (10, 0.7)
    assert [(p.accuracy, p.rows) for p in stable.accuracy_history] == [(1.0, 1)] * 7 + [(0.0, 1)] * 3
    assert len(stable.latency_deciles_ms) == 11 and list(stable.latency_deciles_ms) == sorted(stable.latency_deciles_ms)
    e = pytest.raises(VersoError, client.feedback, predicted[0][0], [1]).value  # once per id
    assert e.code == grpc.StatusCode.ALREADY_EXISTS
    assert e.message == f"Feedback for request id {predicted[0][0]} was already given"
    e = pytest.raises(VersoError, client.feedback, "f" * 32, [1]).value
    assert e.code == grpc.StatusCode.NOT_FOUND and e.message == f"Unknown or expired request id: {'f' * 32}"
    # REST: the request id comes back as a header; feedback over /v1/feedback
    with RestClient(f"http://127.0.0.1:{server.rest_port}") as r:
        p = r.predict("digits", {"images": data["images"][:3]}, details=True)
        assert p.request_id and p.version == 1
        assert r.feedback(p.request_id, data["labels"][:3]).rows == 3
        e = pytest.raises(VersoError, r.feedback, p.request_id, [1, 2, 3]).value  # ALREADY_EXISTS: HTTP 409
        assert e.http_status == 409 and e.message == f"Feedback for request id {p.request_id} was already given"
        e = pytest.raises(VersoError, r.feedback, r.predict("digits", {"images": data["images"][:2]},
                                                             details=True).request_id, [1]).value
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert e.message == "Feedback has 1 labels for an answer of 2 rows"


def test_regressor_targets_slices_and_cost_over_both_transports(server, client):
    _set(client, "half", stable=1, canary=2, canary_percent=0, window=100, gates={"warmup_calls": -1})
    p = client.predict("half", {"x": np.array([1.0, 2.0], np.float32)}, details=True, slice="mobile")
    assert p.version == 1 and p.outputs["y"].tolist() == [1.5, 2.0]  # 0.5 x + 1
    r = client.feedback(p.request_id, targets=[1.0, 3.0])
    assert (r.rows, r.correct) == (2, 0)
    with RestClient(f"http://127.0.0.1:{server.rest_port}") as rc:
        q = rc.predict("half", {"x": np.array([4.0], np.float32)}, details=True, slice="web")
        assert rc.feedback(q.request_id, targets=[3.0]).rows == 1  # answered 3.0: no error
        import httpx
        bad = httpx.post(f"http://127.0.0.1:{server.rest_port}/v1/feedback",
                         json={"request_id": q.request_id, "targets": ["four"]})
        assert bad.status_code == 400 and "targets" in bad.json()["error"]
    e = pytest.raises(VersoError, client.feedback, client.predict("half", {"x": np.ones(2, np.float32)},
                                                                   details=True).request_id, targets=[1.0]).value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and e.message == "Feedback has 1 targets for an answer of 2 rows"
    v1 = _evidence(client, "half", 1)
    # squared errors 0.25, 1.0 and 0.0; absolute 0.5, 1.0 and 0.0
    assert (v1.loss.rows, v1.loss.mse, v1.loss.mae, v1.loss.log_loss) == (3, pytest.approx(1.25 / 3),
                                                                          pytest.approx(0.5), -1)
    assert [(s.slice, s.rows, s.loss) for s in v1.slices] == [("mobile", 2, pytest.approx(0.625)),
                                                              ("web", 1, 0.0)]
    assert v1.cost.predictions >= 5 and v1.cost.cpu_seconds > 0 and v1.cost.cpu_seconds_per_1000 > 0


def test_malformed_provenance_files_load_and_are_shown(server, client):
    st = _set(client, "badinfo", stable=1)
    (v,) = st.versions
    assert v.available and v.info.age_source == "model files" and v.age_seconds >= 0
    assert len(v.info.problems) == 2
    assert "trained_at 'yesterday' is not an ISO 8601 time" in v.info.problems[0]
    assert v.info.problems[1] == "assets.extra/reference.npz: ValueError: not an .npz file (numpy.savez's zip of arrays)"
    assert not v.drift.has_reference and v.drift.problem == v.info.problems[1]
    import httpx
    doc = httpx.get(f"http://127.0.0.1:{server.rest_port}/dashboard/data.json").json()
    model = next(m for m in doc["models"] if m["name"] == "badinfo")
    assert model["versions"][0]["state"] == "AVAILABLE" and len(model["versions"][0]["info"]["problems"]) == 2
    assert any(r["config"]["model"] == "badinfo" for r in doc["rollouts"])
    page = httpx.get(f"http://127.0.0.1:{server.rest_port}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


# ---- configuration and the extension service ----------------------------------------------------------------

def test_the_rollout_config_file_is_read_again_when_it_changes(server, client):
    original = server.rollouts_file.read_text()
    try:
        server.rollouts_file.write_text('models { model: "half" stable: 1 canary: 2 canary_percent: 100 }\n')
        wait_until(lambda: client.rollout("half").config.canary_percent == 100, timeout=30, what="re-read")
        assert {client.predict("half", [0.0], details=True).version for _ in range(10)} == {2}
        server.rollouts_file.write_text("models { nonsense: 1 }\n")  # logged, changes nothing
        wait_until(lambda: "rollout config file" in server.output().lower() and "not applied" in server.output(),
                   timeout=30, what="the bad file logged")
        assert client.rollout("half").config.canary_percent == 100
    finally:
        server.rollouts_file.write_text(original)
        wait_until(lambda: client.rollout("half").config.canary_percent == 25, timeout=30, what="restore")


def test_the_extension_service_answers_errors_with_codes(server):
    stub = rollout_pb2_grpc.RolloutServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.GetRollout(rollout_pb2.RolloutRequest(model="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "No rollout configured for model nope"
    with pytest.raises(grpc.RpcError) as e:
        stub.SetRollout(rollout_pb2.ModelRollout(model="half", stable=1, canary=1))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Rollout of model half: canary must be 0 (none) or a version other than stable"
    status, body = server.rest_json("POST", "/v1/rollouts/half", b'{"stable": 1, "canary_percent": 300}',
                                    headers={"Content-Type": "application/json"})
    assert status == 400 and "canary_percent must be within 0..100" in body["error"]
    status, body = server.rest_json("GET", "/v1/rollouts/nope")
    assert (status, body) == (404, {"error": "No rollout configured for model nope"})


def test_rollout_evidence_is_exported_to_prometheus(server, client):
    client.predict("half", [0.0])
    status, _, text = server.http("GET", "/monitoring/prometheus/metrics")
    text = text.decode()
    assert status == 200
    assert 'verso_rollout_traffic_percent{model_name="half",version="2",role="canary"} 25\n' in text
    assert 'verso_rollout_traffic_percent{model_name="half",version="1",role="stable"} 75\n' in text
    assert 'verso_rollout_verdict{model_name="half",decision="HOLD"} 1\n' in text
    assert 'verso_rollout_window_requests{model_name="half",version="1",role="stable"}' in text


def test_a_failing_dashboard_document_is_one_line_and_the_server_serves_on(server, client, monkeypatch):
    import httpx

    from server.transports import dashboard

    def broken(core):
        raise KeyError("no such thing")

    monkeypatch.setattr(dashboard, "data", broken)
    r = httpx.get(f"http://127.0.0.1:{server.rest_port}/dashboard/data.json")
    assert r.status_code == 500 and r.json() == {"error": "KeyError: 'no such thing'"}
    assert client.predict("half", {"x": np.array([1.0], np.float32)}, version=1).tolist() == [1.5]
