"""Issue 26, "metrics cannot be inflated by callers", against the real server in process:

* model names a caller makes up (60 000 of them made the metrics page 372 MB and each scrape
  stall every call for 2.8 s) are counted under one label, ``__unknown__``;
* swapped-out versions leave no series (nor cost, evidence or drift state) once their grace
  period has passed (a fake clock steps past it);
* feedback labels and slice keys are bounded in size and number wherever they show: status,
  metrics, alarms (50 x 5 MB labels made a 600 MB RolloutStatus).
"""

from __future__ import annotations

import re
import shutil
import time

import grpc
import numpy as np
import pytest

from client import Client, VersoError
from server.rollout import quality
from server.transports.metrics import UNKNOWN_MODEL, VERSION_GRACE_S
from tests.helpers import FAST, predict_request, rpc_error, scrape, status_request
from tests.server_proc import InProcessServer, wait_until

METRICS = "/monitoring/prometheus/metrics"


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _monitoring(tmp_path) -> str:
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config { enable: true }")
    return f"--monitoring_config_file={path}"


def _page(srv) -> bytes:
    status, _, data = srv.http("GET", METRICS)
    assert status == 200
    return data


def _label_values(samples, label: str) -> set[str]:
    return {v for (_, labels) in samples for k, v in labels if k == label}


@pytest.fixture
def started():
    servers: list[InProcessServer] = []

    def start(args, rest=True) -> InProcessServer:
        srv = InProcessServer(list(args), rest=rest)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.stop()


# ---- made-up model names -----------------------------------------------------------------------------

def test_made_up_model_names_are_counted_under_one_label(repo, tmp_path, started):
    repo.put("hp", 1, "hp1")
    srv = started(["--model_name=hp", f"--model_base_path={repo.path('hp')}", _monitoring(tmp_path)])
    stub = srv.predict_stub
    x = {"x": np.array([1.0], np.float32)}
    n_grpc, n_rest = 5000, 200
    t0 = time.monotonic()
    for lo in range(0, n_grpc, 500):  # pipelined: 500 calls in flight at a time
        futures = [stub.Predict.future(predict_request(f"made-up-{i}", x), timeout=60) for i in range(lo, lo + 500)]
        for f in futures:
            assert f.exception().code() == grpc.StatusCode.NOT_FOUND
    for i in range(n_rest):
        assert srv.rest_json("POST", f"/v1/models/rest-made-up-{i}:predict", {"instances": [1.0]})[0] == 404
        assert srv.rest_json("GET", f"/v1/models/rest-made-up-{i}")[0] == 404
    assert rpc_error(srv.model_stub.GetModelStatus, status_request("status-made-up")).code() == grpc.StatusCode.NOT_FOUND
    stub.Predict(predict_request("hp", x), timeout=30)  # a served model keeps its own name
    assert srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [1.0]})[0] == 200
    assert time.monotonic() - t0 < 120

    page = _page(srv)
    assert b"made-up" not in page
    assert len(page) < 64 * 1024, len(page)  # before: a few series per name (> 1 MB here)
    samples, _ = scrape(srv)
    assert _label_values(samples, "model_name") == {"hp", UNKNOWN_MODEL}
    rc = ":tensorflow:serving:request_count"
    assert samples[(rc, frozenset({("model_name", UNKNOWN_MODEL), ("status", "NOT_FOUND")}))] == n_grpc + 2 * n_rest
    assert samples[(rc, frozenset({("model_name", "hp"), ("status", "OK")}))] == 2
    # One series per (label set): the made-up names' calls share the unknown one, over both
    # transports.
    unknown = [k for k in samples if k[0] == "verso_request_count_total" and ("model_name", UNKNOWN_MODEL) in k[1]]
    assert {dict(k[1])["entrypoint"] for k in unknown} == {"GRPC", "REST"}
    assert all(dict(k[1])["version"] == "" for k in unknown)
    assert _label_values(samples, "API") <= {"Predict", "predict", ""}
    assert len(srv.app.metrics._children) < 20  # the children cache holds label sets, not names


# ---- swapped-out versions -------------------------------------------------------------------------------

def _batching(tmp_path) -> str:
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } "
                    "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }")
    return f"--batching_parameters_file={path}"


def _version_series(samples, version: int, path: str) -> list:
    """The samples that belong to one version: its version label, batch queue or load path."""
    out = []
    for key in samples:
        labels = dict(key[1])
        if labels.get("version") == str(version) or labels.get("queue", "").startswith(f"hp/{version}/") \
                or labels.get("model_path") == path:
            out.append(key)
    return out


def test_swapped_out_versions_leave_no_series_after_the_grace_period(repo, tmp_path, started):
    repo.put("hp", 1, "hp1")
    srv = started(["--model_name=hp", f"--model_base_path={repo.path('hp')}", *FAST, _monitoring(tmp_path),
                   "--enable_batching", _batching(tmp_path)])
    clock = FakeClock()
    srv.app.metrics.monotonic = clock  # the grace period's clock (set before any unload)
    x = {"x": np.array([1.0, 2.0], np.float32)}
    for v in (2, 3, 4):
        response = srv.predict_stub.Predict(predict_request("hp", x), timeout=30)
        assert response.model_spec.version.value == v - 1
        assert srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [1.0]})[0] == 200
        repo.put("hp", v, f"hp{v}")
        wait_until(lambda: [(s.version, s.state) for s in srv.model_stub.GetModelStatus(
            status_request("hp"), timeout=30).model_version_status][:2] == [(v, 30), (v - 1, 50)],
            timeout=60, what=f"v{v} loaded and v{v - 1} unloaded")
    srv.predict_stub.Predict(predict_request("hp", x), timeout=30)
    paths = {v: f"{repo.path('hp')}/{v}" for v in (1, 2, 3, 4)}

    # Within the grace period the final values of the unloaded versions can still be scraped.
    samples, _ = scrape(srv)
    for v in (1, 2, 3):
        assert samples[("verso_request_count_total", frozenset({
            ("model_name", "hp"), ("version", str(v)), ("api", "Predict"), ("entrypoint", "GRPC"),
            ("status", "OK")}))] == 1
        assert samples[("verso_model_version_state", frozenset({
            ("model_name", "hp"), ("version", str(v)), ("state", "END")}))] == 1
        assert _version_series(samples, v, paths[v])

    clock.t += VERSION_GRACE_S + 1
    samples, _ = scrape(srv)
    for v in (1, 2, 3):
        assert _version_series(samples, v, paths[v]) == [], v
    assert _version_series(samples, 4, paths[4])  # the live version keeps its own
    assert samples[("verso_model_version_state", frozenset({
        ("model_name", "hp"), ("version", "4"), ("state", "AVAILABLE")}))] == 1
    # The per-version state behind other series went with them: costs, the metric children.
    assert {v for _, v, *_ in srv.app.rollouts.costs.all_totals()} == {4}
    assert set(srv.app.metrics._series) == {("hp", 4)}
    # Still counted per model (TF Serving's series), and v4 goes on being recorded.
    assert samples[(":tensorflow:serving:request_count", frozenset({("model_name", "hp"), ("status", "OK")}))] == 7
    srv.predict_stub.Predict(predict_request("hp", x), timeout=30)
    samples, _ = scrape(srv)
    assert samples[("verso_request_count_total", frozenset({
        ("model_name", "hp"), ("version", "4"), ("api", "Predict"), ("entrypoint", "GRPC"), ("status", "OK")}))] == 2


# ---- feedback labels and slice keys ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids_server(built_models, tmp_path_factory):
    """``ids`` (identity signatures: a string model's answer is what the caller sent) under a
    rollout, with Prometheus on."""
    root = tmp_path_factory.mktemp("ids-repo")
    shutil.copytree(built_models["ids"], root / "ids" / "1")
    (root / "rollouts.config").write_text('models { model: "ids" stable: 1 window: 1000 }\n')
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    srv = InProcessServer(["--model_name=ids", f"--model_base_path={root}/ids",
                           f"--rollout_config_file={root}/rollouts.config",
                           f"--monitoring_config_file={root}/monitoring.config"], rest=True).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(ids_server):
    with Client(f"127.0.0.1:{ids_server.port}") as c:
        yield c


def _answer(client, texts, slice=None) -> str:
    p = client.predict("ids", {"x": np.array(texts, dtype=object)}, signature="id_string", details=True,
                       slice=slice)
    assert p.request_id
    return p.request_id


def test_huge_and_many_feedback_labels_are_refused_and_the_id_stays_usable(ids_server, client):
    request_id = _answer(client, ["a"])
    t0 = time.monotonic()
    for _ in range(5):  # before: each 1 MB label went into the evidence, the status and the state file
        e = pytest.raises(VersoError, client.feedback, request_id, ["L" * 1_000_000]).value
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert e.message == f"Feedback label 0 has 1000000 characters; at most {quality.MAX_LABEL_CHARS} are taken"
    assert time.monotonic() - t0 < 30
    assert client.feedback(request_id, ["a"]).correct == 1  # the refused calls did not use the id up
    # More labels than one call takes (even for an answer of that many rows): refused before the lookup.
    many = quality.MAX_FEEDBACK_ROWS + 1
    request_id = _answer(client, ["b"] * many)
    e = pytest.raises(VersoError, client.feedback, request_id, ["b"] * many).value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 10000" in e.message
    e = pytest.raises(VersoError, client.feedback, request_id, targets=[1.0] * many).value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    # Over REST too: 400 with the same text.
    status, body = ids_server.rest_json("POST", "/v1/feedback", {"request_id": request_id, "labels": ["L" * 300]})
    assert status == 400 and body["error"] == f"Feedback label 0 has 300 characters; at most 256 are taken"
    assert client.rollout("ids").ByteSize() < 256 * 1024


def test_classes_past_the_bound_count_as_other_in_status_and_metrics(ids_server, client):
    long_answer = "A" * 5000  # the model echoes the caller: an answer is caller-chosen text
    for i in range(quality.MAX_CLASSES + 20):
        text = f"class-{i}"
        assert client.feedback(_answer(client, [text]), [text]).correct == 1
    assert client.feedback(_answer(client, [long_answer]), ["short"]).correct == 0
    st = client.rollout("ids")
    v1 = next(v for v in st.versions if v.version == 1)
    labels = {c.label for c in v1.classes}
    assert len(labels) <= quality.MAX_CLASSES + 1 and quality.OTHER in labels
    assert all(len(c.label) <= quality.MAX_LABEL_CHARS for c in v1.classes)
    assert all(len(c.label) <= quality.MAX_LABEL_CHARS and len(c.predicted) <= quality.MAX_LABEL_CHARS
               for c in v1.confusion)
    # Accuracy is judged on the full texts: every "class-i" row was right, the long one wrong.
    other = next(c for c in v1.classes if c.label == quality.OTHER)
    assert other.support >= 20
    assert any(f"class labels past the first {quality.MAX_CLASSES}" in a for a in st.alarms)
    assert any(f"class labels over {quality.MAX_LABEL_CHARS} characters" in a for a in st.alarms)
    assert st.ByteSize() < 256 * 1024
    samples, _ = scrape(ids_server)
    recall = [k for k in samples if k[0] == "verso_rollout_class_recall"]
    assert 0 < len(recall) <= quality.MAX_CLASSES + 1
    assert b"A" * 300 not in _page(ids_server)


def test_slice_keys_of_any_length_raise_one_alarm(ids_server, client):
    for n in range(quality.MAX_SLICE_CHARS + 1, quality.MAX_SLICE_CHARS + 41):  # 40 different lengths
        _answer(client, ["s"], slice="k" * n)
    alarms = [a for a in client.rollout("ids").alarms if "slice" in a]
    # before: one alarm (and one alarm key kept) per length a caller chose
    assert len(alarms) == 1 and re.search(r"\d+ answers had slice keys over 64 characters", alarms[0]), alarms


# ---- output sets a caller chooses ---------------------------------------------------------------------------

def test_output_filters_cannot_multiply_a_versions_batch_queues(repo, tmp_path, started, monkeypatch):
    """Each output_filter (in each order) had a batch queue of its own for the version's life:
    a model with k outputs let callers make sum k!/(k-j)! of them. Now one per set, whatever the
    order, and past MAX_OUTPUT_SETS the every-output queue (a bound of 2 here: the model has two
    outputs), with each answer still exactly the outputs asked for."""
    from server.dataplane import core
    monkeypatch.setattr(core, "MAX_OUTPUT_SETS", 2)
    repo.put("multi", 1, "multi")
    srv = started(["--model_name=multi", f"--model_base_path={repo.path('multi')}", "--enable_batching",
                   _batching(tmp_path)], rest=False)
    inputs = {"a": np.array([3.0], np.float32), "b": np.array([1.0], np.float32)}
    want = {"sum": 4.0, "diff": 2.0}
    for _ in range(2):
        for output_filter in (["sum", "diff"], ["diff", "sum"], ["diff"], ["sum"]):
            r = srv.predict_stub.Predict(predict_request("multi", inputs, output_filter=output_filter), timeout=30)
            assert sorted(r.outputs) == sorted(output_filter)
            assert {k: v.float_val[0] for k, v in r.outputs.items()} == {k: want[k] for k in output_filter}
    queues = srv.app.manager.snapshot["multi"].versions[1].batch_queues
    assert sorted(queues) == [("serving_default", ("diff",)), ("serving_default", ("diff", "sum"))]
