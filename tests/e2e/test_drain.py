"""SIGTERM with requests in flight: none is lost, new ones are refused, the process exits 0."""

from __future__ import annotations

import concurrent.futures
import json
import time

import grpc
import numpy as np

from tests.helpers import predict_request
from tests.server_proc import wait_until


def _new_call_code(port: int):
    """The code a brand-new Predict on a new connection gets (a short deadline: while the server
    still accepts calls, this one would wait in the batch queue)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
            predict_request("hp", {"x": np.array([1.0], np.float32)}).SerializeToString(), timeout=0.3)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
    finally:
        channel.close()


def test_sigterm_with_requests_in_flight_loses_none(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    batching = tmp_path / "batching.config"
    # Requests wait in the batch queue for up to 3 s: they are still queued when SIGTERM comes.
    batching.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 3000000 } "
                        "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }")
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--enable_batching",
                         f"--batching_parameters_file={batching}", "--shutdown_grace_seconds=20", rest=True)
    stub = srv.predict_stub
    grpc_calls = [stub.Predict.future(predict_request("hp", {"x": np.array([float(i)], np.float32)}), timeout=30)
                  for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rest_calls = [pool.submit(srv.rest_json, "POST", "/v1/models/hp:predict",
                                  json.dumps({"instances": [float(i)]}), timeout=30) for i in range(8)]
        time.sleep(0.5)  # the calls reach the queue in milliseconds; the batch closes after 3 s
        assert not any(f.done() for f in grpc_calls), "the batch closed before SIGTERM: raise its timeout"
        t0 = time.monotonic()
        srv.proc.terminate()
        wait_until(lambda: "Shutting down" in srv.output(), timeout=10, what="shutdown starts")
        wait_until(lambda: _new_call_code(srv.port) == grpc.StatusCode.UNAVAILABLE, timeout=5,
                   what="new calls refused with UNAVAILABLE during the drain")
        for i, f in enumerate(grpc_calls):  # every queued call got its own answer
            assert f.result(timeout=30).outputs["y"].float_val == [0.5 * i + 1]
        for i, f in enumerate(rest_calls):
            assert f.result(timeout=30) == (200, {"predictions": [0.5 * i + 1]})
    assert srv.wait_exit(timeout=60) == 0
    assert time.monotonic() - t0 < 20  # within the grace period


def test_under_load_every_answer_is_its_callers_own(repo, server_factory, tmp_path):
    """Many small batches (timeout 0, one batch thread): 300 calls of 1 to 3 rows, 64 in flight,
    each gets 0.5 x + 1 of its own rows, whatever batch it shared."""
    repo.put("hp", 1, "hp1")
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 0 } "
                        "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }")
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--enable_batching",
                         f"--batching_parameters_file={batching}")
    stub = srv.predict_stub
    inputs = [np.arange(i * 10, i * 10 + 1 + i % 3, dtype=np.float32) for i in range(300)]
    pending = []
    for x in inputs:
        pending.append(stub.Predict.future(predict_request("hp", {"x": x}), timeout=30))
        if len(pending) >= 64:
            pending[-64].result(timeout=30)  # keep about 64 in flight
    for x, f in zip(inputs, pending):
        assert list(f.result(timeout=30).outputs["y"].float_val) == (0.5 * x + 1).tolist()
