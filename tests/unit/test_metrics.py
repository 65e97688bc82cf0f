"""The Prometheus text renderer and the metric recording, without a server."""

from __future__ import annotations

from server.transports.metrics import LATENCY_BUCKETS_US, Metrics, render
from server.lifecycle.policy import State


def lines(m: Metrics) -> list[str]:
    return m.render().decode().splitlines()


def test_tf_serving_names_types_and_exact_counts():
    m = Metrics()
    for _ in range(3):
        m.request("m", 1, "Predict", "GRPC", "OK", 0.002)
    m.request("m", None, "Predict", "GRPC", "NOT_FOUND", 0.001)
    text = lines(m)
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 3' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in text
    # Latency: successes only, microseconds, TF Serving's 33 buckets then +Inf.
    lat = [x for x in text if x.startswith(":tensorflow:serving:request_latency_bucket")]
    assert len(lat) == len(LATENCY_BUCKETS_US) + 1 == 34
    assert lat[-1].endswith('le="+Inf"} 3')
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 6000' in text
    assert not any("_created" in x for x in text)
    assert not any(x.startswith("# HELP :tensorflow") for x in text)
    # Verso's per-version counter keeps prometheus_client's _total.
    assert ('verso_request_count_total{model_name="m",version="1",api="Predict",entrypoint="GRPC",status="OK"} 3'
            in text)


def test_counts_only_with_count_tf_and_example_counter_keeps_its_name():
    m = Metrics()
    m.request("m", 1, "GetModelMetadata", "GRPC", "OK", 0.001, count_tf=False)
    m.examples("m", 5)
    text = lines(m)
    assert not any(x.startswith(":tensorflow:serving:request_count{") for x in text)
    assert ':tensorflow:serving:request_example_count_total{model="m"} 5' in text


def test_batch_and_load_and_version_state():
    m = Metrics(versions=lambda: [("m", 2, State.AVAILABLE, 100.0), ("m", 1, State.END, None)],
                clock=lambda: 160.0)
    m.batch("m/2/s", "batch_threads", [1, 2], [0.001, 0.003], 3, 4, 8)
    m.load("/p/2", True, 0.25)
    m.load("/p/3", False, 0.1)
    text = lines(m)
    assert ":tensorflow:serving:batching_session:wrapped_run_count 1" in text
    assert ":tensorflow:serving:batching_session:input_batch_size_sum 3" in text
    assert ':tensorflow:serving:batching_session:padding_size_sum{execution_batch_size="4"} 1' in text
    assert ':tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="batch_threads"} 4000' in text
    assert 'verso_batch_size_cap{queue="m/2/s"} 8' in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/p/2",status="success"} 1' in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/p/3",status="fail"} 1' in text
    assert ':tensorflow:cc:saved_model:load_latency{model_path="/p/2"} 250000' in text
    assert 'verso_model_version_state{model_name="m",version="2",state="AVAILABLE"} 1' in text
    assert 'verso_model_version_state{model_name="m",version="1",state="END"} 1' in text
    assert 'verso_model_version_age_seconds{model_name="m",version="2"} 60' in text
    assert not any('verso_model_version_age_seconds{model_name="m",version="1"}' in x for x in text)


def test_label_values_are_escaped():
    m = Metrics()
    m.request('we"ird\\name\n', None, "Predict", "REST", "NOT_FOUND", 0.0, tf_api="predict")
    assert ':tensorflow:serving:request_count{model_name="we\\"ird\\\\name\\n",status="NOT_FOUND"} 1' in lines(m)
    assert render(Metrics().tf.collect()) != b""  # unlabelled counters still print their 0


_RECORD = """
import sys
from server.transports.metrics import Metrics
m = Metrics(multiprocess_dir=sys.argv[1] or None)
for _ in range(int(sys.argv[2])):
    m.request("hp", 1, "Predict", "GRPC", "OK", 0.01)
    m.request("hp", None, "Predict", "REST", "NOT_FOUND", 0.002, tf_api="predict")
    m.batch("hp/1/serving_default", "batch_threads", [1, 2], [0.001, 0.002], 3, 4, 8)
    m.examples("hp", 3)
    m.load("/m/hp/1", True, 1.5)
sys.stdout.write(m.render().decode())
"""


def _metric_lines(multiprocess_dir: str, times: int, env: dict) -> list[str]:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _RECORD, multiprocess_dir, str(times)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return sorted(x for x in out.splitlines() if "process_" not in x)


def test_workers_metrics_are_summed_and_print_as_one_process_would(tmp_path):
    """--num_workers: two worker processes record into the shared directory; a scrape from a
    third prints exactly what one process that recorded everything prints (labels in TF
    Serving's order, TF names, no _created)."""
    import os
    shared = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    single = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    _metric_lines(str(tmp_path), 1, shared)
    _metric_lines(str(tmp_path), 1, shared)
    scraped = _metric_lines(str(tmp_path), 0, shared)
    expected = _metric_lines("", 2, single)
    assert ':tensorflow:serving:request_count{model_name="hp",status="OK"} 2' in expected
    assert scraped == expected


# ---- what callers may name; versions that went (issue 26) ------------------------------------------------

class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_names_the_server_does_not_serve_share_one_label():
    from server.transports.metrics import UNKNOWN_MODEL
    m = Metrics(known=lambda name: name == "m")
    for i in range(100):
        m.request(f"made-up-{i}", None, "Predict", "GRPC", "NOT_FOUND", 0.001)
        m.request(f"made-up-{i}", 3, "Predict", "REST", "OK", 0.001, tf_api="predict")  # no version either
        m.runtime(f"made-up-{i}", "Predict", 0.001)
        m.examples(f"made-up-{i}", 2)
    m.request("m", 1, "Predict", "GRPC", "OK", 0.001)
    text = lines(m)
    assert not any("made-up" in x for x in text)
    assert f':tensorflow:serving:request_count{{model_name="{UNKNOWN_MODEL}",status="NOT_FOUND"}} 100' in text
    assert (f'verso_request_count_total{{model_name="{UNKNOWN_MODEL}",version="",api="Predict",entrypoint="REST",'
            f'status="OK"}} 100') in text
    assert f':tensorflow:serving:request_example_count_total{{model="{UNKNOWN_MODEL}"}} 200' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in text
    assert len(m._children) == 4  # label sets, not names


def _versions_metrics(live: list, clock: FakeClock, states: list) -> Metrics:
    return Metrics(versions=lambda: states, live=lambda: live, monotonic=clock, grace_s=300.0)


def test_an_unloaded_versions_series_go_after_the_grace_period_and_hooks_follow():
    clock = FakeClock()
    live = [("m", 2, "/p/2")]
    states = [("m", 2, State.AVAILABLE, None), ("m", 1, State.END, None)]
    m = _versions_metrics(live, clock, states)
    forgotten = []
    m.on_forget(lambda keep: forgotten.append((keep("m", 1), keep("m", 2), keep("m", 3))))
    for v in (1, 2):
        m.request("m", v, "Predict", "GRPC", "OK", 0.001)
        m.request("m", v, "Predict", "GRPC", "INTERNAL", 0.001)
        m.batch(f"m/{v}/serving_default", "batch_threads", [1], [0.001], 1, 1, 8)
        m.load(f"/p/{v}", True, 0.1)
    m.version_unloaded("m", 1, "/p/1")
    clock.t = 299.0
    text = lines(m)  # within the grace period: the final values are still there
    assert 'verso_request_count_total{model_name="m",version="1",api="Predict",entrypoint="GRPC",status="OK"} 1' in text
    assert 'verso_model_version_state{model_name="m",version="1",state="END"} 1' in text
    assert forgotten == []
    clock.t = 300.0
    text = "\n".join(lines(m))
    for gone in ('version="1"', 'queue="m/1/', 'model_path="/p/1"'):
        assert gone not in text
    for kept in ('version="2"', 'queue="m/2/serving_default"', 'model_path="/p/2"'):
        assert kept in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2' in text  # per model: stays
    assert forgotten == [(False, True, False)]
    assert set(m._series) == {("m", 2)}
    # Recording again (a version loaded again later) starts its series afresh.
    m.request("m", 1, "Predict", "GRPC", "OK", 0.001)
    assert 'verso_request_count_total{model_name="m",version="1",api="Predict",entrypoint="GRPC",status="OK"} 1' \
        in lines(m)


def test_a_version_loaded_again_within_the_grace_period_keeps_its_series():
    clock = FakeClock()
    live = [("m", 1, "/p/1")]  # unloaded, then loaded again
    m = _versions_metrics(live, clock, [("m", 1, State.AVAILABLE, None)])
    m.request("m", 1, "Predict", "GRPC", "OK", 0.001)
    m.version_unloaded("m", 1, "/p/1")
    clock.t = 1000.0
    assert m.sweep() == []
    assert 'verso_request_count_total{model_name="m",version="1",api="Predict",entrypoint="GRPC",status="OK"} 1' \
        in lines(m)


def test_many_swaps_leave_a_bounded_page():
    clock = FakeClock()
    live: list = []
    m = _versions_metrics(live, clock, [])
    sizes = []
    for v in range(1, 201):
        live[:] = [("m", v, f"/p/{v}")]
        m.request("m", v, "Predict", "GRPC", "OK", 0.001)
        m.batch(f"m/{v}/s", "batch_threads", [1], [0.001], 1, 1, 8)
        m.load(f"/p/{v}", True, 0.1)
        m.version_unloaded("m", v - 1, f"/p/{v - 1}") if v > 1 else None
        clock.t += 60.0  # a swap a minute: five versions in their grace period at most
        sizes.append(len(m.render()))
    assert max(sizes[50:]) <= max(sizes[:50]) * 1.1
    assert len(m._series) <= 7


_SWAPS = """
import sys
from server.transports.metrics import Metrics
m = Metrics(multiprocess_dir=sys.argv[1], live=lambda: [("hp", 2, "/m/hp/2")])
if sys.argv[2] == "record":
    for v in (1, 2):
        m.request("hp", v, "Predict", "GRPC", "OK", 0.01)
        m.batch(f"hp/{v}/serving_default", "batch_threads", [1], [0.001], 1, 1, 8)
        m.load(f"/m/hp/{v}", True, 1.5)
sys.stdout.write(m.render().decode())
"""


def test_workers_scrapes_leave_out_versions_that_went(tmp_path):
    """--num_workers: the shared files keep every series ever written; a scrape leaves out
    those of versions that are neither live nor in their grace period."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    recorded = subprocess.run([sys.executable, "-c", _SWAPS, str(tmp_path), "record"], env=env,
                              capture_output=True, text=True, timeout=120, check=True).stdout
    scraped = subprocess.run([sys.executable, "-c", _SWAPS, str(tmp_path), "scrape"], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
    for text in (recorded, scraped):
        for gone in ('version="1"', 'queue="hp/1/', 'model_path="/m/hp/1"'):
            assert gone not in text
        for kept in ('version="2"', 'queue="hp/2/serving_default"', 'model_path="/m/hp/2"'):
            assert kept in text
