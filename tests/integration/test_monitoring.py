"""Prometheus metrics on the REST port: TF Serving's names and labels, exact counts after a
known number of requests, batching and load metrics, and Verso's per-version extras."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tests.helpers import predict_request, rpc_error, scrape, status_request


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def server(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")  # the default path
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } "
                        "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }")
    return server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}",
                          f"--monitoring_config_file={monitoring}", "--enable_batching",
                          f"--batching_parameters_file={batching}", rest=True)


def test_metrics_count_exactly(server, repo):
    stub = server.predict_stub
    for i in range(3):
        stub.Predict(predict_request("hp", {"x": np.array([float(i)], np.float32)}), timeout=30)
    for _ in range(2):
        err = rpc_error(stub.Predict, predict_request("hp", {"x": np.array([1.0], np.float32)}, version=9))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    server.model_stub.GetModelStatus(status_request("hp"), timeout=30)  # not a counted API over gRPC
    for i in range(4):
        assert server.rest_json("POST", "/v1/models/hp:predict", {"instances": [1.0, 2.0]})[0] == 200
    assert server.rest_json("POST", "/v1/models/hp:predict", {"signature_name": "x", "instances": [1.0]})[0] == 400
    for _ in range(2):
        assert server.rest_json("GET", "/v1/models/hp")[0] == 200

    samples, types = scrape(server)
    rc = ":tensorflow:serving:request_count"
    assert types[rc] == "counter"
    assert value(samples, rc, model_name="hp", status="OK") == 3 + 4 + 2
    assert value(samples, rc, model_name="hp", status="NOT_FOUND") == 2
    assert value(samples, rc, model_name="hp", status="INVALID_ARGUMENT") == 1

    lat = ":tensorflow:serving:request_latency"
    assert types[lat] == "histogram"
    assert value(samples, lat + "_count", model_name="hp", API="Predict", entrypoint="GRPC") == 3
    assert value(samples, lat + "_count", model_name="hp", API="predict", entrypoint="REST") == 4
    assert value(samples, lat + "_count", model_name="hp", API="", entrypoint="REST") == 2
    assert value(samples, lat + "_bucket", model_name="hp", API="Predict", entrypoint="GRPC", le="+Inf") == 3
    buckets = [k for k in samples if k[0] == lat + "_bucket" and ("entrypoint", "GRPC") in k[1]]
    assert len(buckets) == 34  # 33 bounds of 10 x 1.8^i, then +Inf

    assert value(samples, ":tensorflow:serving:runtime_latency_count", model_name="hp", API="Predict",
                 runtime="TF1") == 3 + 4

    # Batching: sequential requests, timeout 0 -> one batch each; rows: 3 x 1 + 4 x 2.
    assert value(samples, ":tensorflow:serving:batching_session:wrapped_run_count") == 7
    assert value(samples, ":tensorflow:serving:batching_session:input_batch_size_count") == 7
    assert value(samples, ":tensorflow:serving:batching_session:input_batch_size_sum") == 3 + 8
    assert value(samples, ":tensorflow:serving:batching_session:processed_batch_size_sum") == 3 + 8
    assert value(samples, ":tensorflow:serving:batching_session:queuing_latency_count",
                 thread_pool_name="batch_threads") == 7
    assert value(samples, "verso_batch_size_cap", queue="hp/1/serving_default") == 8

    path = repo.path("hp") + "/1"
    assert value(samples, ":tensorflow:cc:saved_model:load_attempt_count", model_path=path, status="success") == 1
    assert value(samples, ":tensorflow:cc:saved_model:load_latency", model_path=path) > 0

    # Verso's per-version extras.
    assert value(samples, "verso_request_count_total", model_name="hp", version="1", api="Predict",
                 entrypoint="GRPC", status="OK") == 3
    assert value(samples, "verso_request_count_total", model_name="hp", version="", api="Predict",
                 entrypoint="GRPC", status="NOT_FOUND") == 2
    assert value(samples, "verso_request_count_total", model_name="hp", version="1", api="Predict",
                 entrypoint="REST", status="OK") == 4
    assert value(samples, "verso_model_version_state", model_name="hp", version="1", state="AVAILABLE") == 1
    age = value(samples, "verso_model_version_age_seconds", model_name="hp", version="1")
    assert 0 <= age < 3600
    assert value(samples, "process_start_time_seconds") > 1e9
    # TF Serving's text: no _created samples, counters without _total.
    assert not any(name.endswith("_created") for name, _ in samples)
    assert not any(name.startswith(":tensorflow") and name.endswith("_total") and "example_count" not in name
                   for name, _ in samples)


def test_both_transports_recorded_alike(server):
    """One recorder (ServingCore.record) for both transports: the model a call names and the
    version that answered, for every API (a refused call: the model it named, no version)."""
    from tensorflow_serving.apis import get_model_metadata_pb2
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "hp"
    server.predict_stub.GetModelMetadata(request, timeout=30)
    assert server.rest_json("GET", "/v1/models/hp/metadata")[0] == 200
    request.metadata_field[:] = ["nope"]
    assert rpc_error(server.predict_stub.GetModelMetadata, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.rest_json("POST", "/v1/models/hp:predict", {"instances": "no"})[0] == 400
    samples, _ = scrape(server)
    for entrypoint in ("GRPC", "REST"):
        assert value(samples, "verso_request_count_total", model_name="hp", version="1", api="GetModelMetadata",
                     entrypoint=entrypoint, status="OK") == 1
    assert value(samples, "verso_request_count_total", model_name="hp", version="", api="GetModelMetadata",
                 entrypoint="GRPC", status="INVALID_ARGUMENT") == 1
    assert value(samples, "verso_request_count_total", model_name="hp", version="", api="Predict",
                 entrypoint="REST", status="INVALID_ARGUMENT") == 1


def test_metrics_off_without_monitoring_config(server_factory, repo):
    repo.put("hp", 1, "hp1")
    server = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", rest=True)
    status, headers, _ = server.http("GET", "/monitoring/prometheus/metrics")
    assert status == 404
