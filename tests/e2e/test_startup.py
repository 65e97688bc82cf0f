"""Start-up and shutdown that only a process of its own shows: a start that fails with TF
Serving's exit status, health turning NOT_SERVING on SIGTERM."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import FAST, config_text, model_block, rpc_error
from tests.server_proc import ServerProcess


def test_a_label_on_a_version_that_never_loaded_stops_the_start(repo, tmp_path):
    """Without --allow_version_labels_for_unavailable_models (the flag's in-process test:
    tests/integration/test_model_config.py)."""
    repo.put("hp", 1, "hp1")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp"), 'version_labels { key: "stable" value: 1 } '
                                                                  'version_labels { key: "next" value: 2 }')))
    bad = ServerProcess([f"--model_config_file={cfg}", *FAST])
    bad.start(wait=False)
    try:
        assert bad.wait_exit(timeout=120) == 255
        assert ("Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 2 of "
                "model hp, which is not currently available for inference") in bad.output()
    finally:
        bad.stop()


def test_health_serving_then_not_serving_on_shutdown(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp", "--shutdown_grace_seconds=2")
    stub = health_pb2_grpc.HealthStub(srv.channel)
    for service in ("", "tensorflow.serving.PredictionService", "PredictionService", "ModelService"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    e = rpc_error(stub.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    srv.proc.terminate()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert srv.wait_exit(timeout=60) == 0


