"""Batching end to end: every caller gets exactly its own rows back, with and without padding
and splitting; queue-full and too-large errors over gRPC."""

from __future__ import annotations

import random

import grpc
import numpy as np
import pytest

from tests.helpers import predict_request, rpc_error, y_of


def _serve(repo, server_factory, tmp_path, params: str, *extra, **kw):
    repo.put("hp", 1, "hp1")
    p = tmp_path / "batching.config"
    p.write_text(params)
    return server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp", "--enable_batching",
                          f"--batching_parameters_file={p}", *extra, **kw)


def _fire(srv, sizes):
    """Send one request per size at once; each row value is unique across all requests."""
    start, calls = 0, []
    for n in sizes:
        x = np.arange(start, start + n, dtype=np.float32) + 0.25
        start += n
        calls.append((x, srv.predict_stub.Predict.future(predict_request("hp", {"x": x}), timeout=60)))
    return [(x, f.result()) for x, f in calls]


@pytest.mark.parametrize("params, max_rows", [
    ("max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } max_enqueued_batches { value: 1000 }", 8),
    ("max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } max_enqueued_batches { value: 1000 } "
     "allowed_batch_sizes: 2 allowed_batch_sizes: 4 allowed_batch_sizes: 8", 8),
    ("max_batch_size { value: 16 } batch_timeout_micros { value: 1000 } max_enqueued_batches { value: 1000 } "
     "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 4 } "
     "allowed_batch_sizes: 2 allowed_batch_sizes: 4", 16),
], ids=["plain", "padding", "splitting"])
def test_200_concurrent_mixed_requests_get_their_own_rows(repo, server_factory, tmp_path, params, max_rows):
    srv = _serve(repo, server_factory, tmp_path, params)
    rng = random.Random(7)
    sizes = [rng.randint(1, max_rows) for _ in range(200)]
    for x, resp in _fire(srv, sizes):
        assert resp.model_spec.version.value == 1
        np.testing.assert_array_equal(y_of(resp), 0.5 * x + 1)
    assert "Batching on:" in srv.output()


def test_too_large_and_queue_full_over_grpc(repo, server_factory, tmp_path):
    srv = _serve(repo, server_factory, tmp_path,
                 "max_batch_size { value: 2 } batch_timeout_micros { value: 1500000 } "
                 "max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }")
    e = rpc_error(srv.predict_stub.Predict, predict_request("hp", {"x": np.ones(3, np.float32)}))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Task size 3 is larger than maximum input batch size 2")
    waiting = srv.predict_stub.Predict.future(predict_request("hp", {"x": np.ones(1, np.float32)}), timeout=60)
    # The open batch (1 row, waiting for its 1.5 s timeout) has no room for 2 more rows, and a
    # second batch would exceed max_enqueued_batches: refused at once, not queued.
    e = None
    for _ in range(50):  # until the first request has reached the server's queue
        try:
            srv.predict_stub.Predict(predict_request("hp", {"x": np.ones(2, np.float32)}), timeout=60)
        except grpc.RpcError as err:
            e = err
            break
    assert e is not None
    assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was submitted is full")
    np.testing.assert_array_equal(y_of(waiting.result()), [1.5])
    # A scalar is refused before it reaches a queue (the signature wants rank 1).
    multi = rpc_error(srv.predict_stub.Predict, predict_request("hp", {"x": np.float32(1.0)}))
    assert multi.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_adaptive_batching_logs_its_batch_size(repo, server_factory, tmp_path):
    srv = _serve(repo, server_factory, tmp_path,
                 # A batch timeout lets the 300 calls fill each batch to the cap however fast the
                 # model runs, so the cap grows past 8 (and logs) on any machine.
                 "max_batch_size { value: 64 } max_enqueued_batches { value: 1000 } "
                 "batch_timeout_micros { value: 5000 }",
                 "--batching_latency_objective_ms=50")
    for x, resp in _fire(srv, [1] * 300):
        np.testing.assert_array_equal(y_of(resp), 0.5 * x + 1)
    assert "Adaptive batching hp/1/serving_default: batch size" in srv.output()


def test_a_grpc_deadline_takes_a_queued_request_out_of_its_batch(repo, server_factory, tmp_path):
    """Three callers give up (deadline 0.3 s) while their rows wait for a 2 s batch timeout; the
    fourth caller's batch then runs with its one row only (Prometheus counts the rows run)."""
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    srv = _serve(repo, server_factory, tmp_path,
                 "max_batch_size { value: 8 } batch_timeout_micros { value: 2000000 } "
                 "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }",
                 f"--monitoring_config_file={monitoring}", rest=True)
    stub = srv.predict_stub
    impatient = [stub.Predict.future(predict_request("hp", {"x": np.array([float(i)], np.float32)}), timeout=0.3)
                 for i in range(3)]
    patient = stub.Predict.future(predict_request("hp", {"x": np.array([10.0], np.float32)}), timeout=30)
    for f in impatient:
        assert f.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    np.testing.assert_array_equal(y_of(patient.result()), [6.0])
    status, _, body = srv.http("GET", "/metrics")
    assert status == 200
    lines = body.decode().splitlines()
    assert 'verso_batches_total{queue="hp/1/serving_default"} 1' in lines, [x for x in lines if "verso_batch" in x]
    assert 'verso_batch_rows_total{queue="hp/1/serving_default"} 1' in lines
