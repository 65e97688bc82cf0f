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
