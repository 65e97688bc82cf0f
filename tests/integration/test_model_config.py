"""Version management in process (the real server, its ports and the official client): policies, labels, reload RPC, config polling, retries,
warmup, start-up reporting and health, with the official client."""

from __future__ import annotations

import os
import shutil
import time

import grpc
import numpy as np
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, prediction_log_pb2

from server.lifecycle.policy import State
from tests import models
from tests.helpers import (FAST, REPO_ROOT, X, config_text, hp_answer, model_block, predict_request, reload_request,
                           rpc_error, states, status_request)
from tests.server_proc import wait_until

# ---- policies -----------------------------------------------------------------------------------


def test_latest_n_specific_and_a_specific_version_that_never_appears(repo, server_factory, tmp_path):
    for v in (1, 2, 3):
        repo.put("latest2", v, f"hp{v}")
        repo.put("spec", v, f"hp{v}")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(
        model_block("latest2", repo.path("latest2"), "model_version_policy { latest { num_versions: 2 } }"),
        model_block("spec", repo.path("spec"), "model_version_policy { specific { versions: 1 versions: 3 } }"),
        model_block("never", repo.path("spec"), "model_version_policy { specific { versions: 7 } }")))
    srv = server_factory(f"--model_config_file={cfg}", *FAST)
    assert states(srv, "latest2") == {3: State.AVAILABLE, 2: State.AVAILABLE}
    assert states(srv, "spec") == {3: State.AVAILABLE, 1: State.AVAILABLE}
    assert hp_answer(srv, "spec", version=1) == (1, 2.0)
    e = rpc_error(srv.predict_stub.Predict, predict_request("spec", {"x": X}, version=2))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(spec, 2)")
    assert states(srv, "never") == {}
    assert ("Version 7 of servable never, which was requested to be served as a 'specific' version in the "
            "servable's version policy, was not found in the file system") in srv.output()
    # latest 2: a new version pushes out the oldest of the two.
    repo.put("latest2", 4, "hp4")
    wait_until(lambda: states(srv, "latest2") == {4: State.AVAILABLE, 3: State.AVAILABLE, 2: State.END},
               what="latest 2 after v4")


# ---- labels ---------------------------------------------------------------------------------------


def test_labels_resolve_move_and_are_validated(repo, server_factory, tmp_path):
    for v in (1, 2):
        repo.put("hp", v, f"hp{v}")
    cfg = tmp_path / "models.config"
    all_policy = "model_version_policy { all {} } "
    cfg.write_text(config_text(model_block("hp", repo.path("hp"), all_policy +
                                           'version_labels { key: "stable" value: 1 } '
                                           'version_labels { key: "also_stable" value: 1 }')))
    srv = server_factory(f"--model_config_file={cfg}", *FAST)
    assert hp_answer(srv, label="stable") == (1, 2.0)
    assert hp_answer(srv, label="also_stable") == (1, 2.0)
    # Move "stable" to version 2 and add "canary" on 2 (both AVAILABLE): accepted.
    srv.model_stub.HandleReloadConfigRequest(reload_request(config_text(model_block(
        "hp", repo.path("hp"), all_policy + 'version_labels { key: "stable" value: 2 } '
                                            'version_labels { key: "canary" value: 2 }'))), timeout=60)
    assert hp_answer(srv, label="stable") == (2, 3.0)
    assert hp_answer(srv, label="canary") == (2, 3.0)
    req = predict_request("hp", {"x": X})
    req.model_spec.version_label = "also_stable"
    e = rpc_error(srv.predict_stub.Predict, req)
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Unrecognized servable version label: also_stable")
    # A label on a version that is not available: refused, and the old labels keep working.
    e = rpc_error(srv.model_stub.HandleReloadConfigRequest, reload_request(config_text(model_block(
        "hp", repo.path("hp"), all_policy + 'version_labels { key: "stable" value: 5 }'))))
    assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                       "Request to assign label to version 5 of model hp, which is not "
                                       "currently available for inference")
    assert hp_answer(srv, label="stable") == (2, 3.0)


def test_allow_labels_for_unavailable_models(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp"), 'version_labels { key: "stable" value: 1 } '
                                                                  'version_labels { key: "next" value: 2 }')))
    # (Without the flag, start-up stops: tests/e2e/test_startup.py.)
    srv = server_factory(f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models", *FAST)
    assert hp_answer(srv, label="stable") == (1, 2.0)
    req = predict_request("hp", {"x": X})
    req.model_spec.version_label = "next"
    e = rpc_error(srv.predict_stub.Predict, req)  # label whose version is not loaded: NOT_FOUND
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(hp, 2)")
    # Moving an existing label to an unavailable version is refused even with the flag.
    e = rpc_error(srv.model_stub.HandleReloadConfigRequest, reload_request(config_text(model_block(
        "hp", repo.path("hp"), 'version_labels { key: "stable" value: 3 }'))))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    # When version 2 arrives, "next" serves it.
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp").get(2) == State.AVAILABLE, what="v2")
    assert hp_answer(srv, label="next") == (2, 3.0)


# ---- reload ---------------------------------------------------------------------------------------


def test_reload_adds_removes_changes_and_rejects(repo, server_factory, tmp_path, built_models):
    repo.put("hp", 1, "hp1")
    repo.put("hp", 2, "hp2")
    repo.put("other", 1, "hp3")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp"))))
    srv = server_factory(f"--model_config_file={cfg}", *FAST)
    assert states(srv, "hp") == {2: State.AVAILABLE}
    # Add a model and change hp's policy: the call returns once "other" is available.
    both = config_text(model_block("hp", repo.path("hp"), "model_version_policy { all {} }"),
                       model_block("other", repo.path("other")))
    resp = srv.model_stub.HandleReloadConfigRequest(reload_request(both), timeout=120)
    assert resp.status.error_code == 0
    assert hp_answer(srv, "other") == (1, 4.0)
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.AVAILABLE}, what="hp all")
    # A reload that fails validation changes nothing.
    for bad, code, text in [
        (config_text(model_block("hp", repo.path("hp")), model_block("hp", repo.path("other"))),
         grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model hp multiple times in config list"),
        (config_text(model_block("hp", "relative/hp")), grpc.StatusCode.INVALID_ARGUMENT,
         "Expected model hp to have an absolute path or URI; got base_path()=relative/hp"),
        (config_text('config { name: "hp" base_path: "/x" }'), grpc.StatusCode.INVALID_ARGUMENT,
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform"),
    ]:
        e = rpc_error(srv.model_stub.HandleReloadConfigRequest, reload_request(bad))
        assert e.code() == code and text in e.details()
    e = rpc_error(srv.model_stub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                       "Only ModelConfigList is currently supported")
    assert hp_answer(srv, "other") == (1, 4.0) and hp_answer(srv, version=1) == (1, 2.0)
    # Remove "other": its versions unload and it answers NOT_FOUND.
    srv.model_stub.HandleReloadConfigRequest(reload_request(config_text(model_block("hp", repo.path("hp")))),
                                             timeout=60)
    wait_until(lambda: states(srv, "other") == {1: State.END}, what="other unloaded")
    e = rpc_error(srv.predict_stub.Predict, predict_request("other", {"x": X}))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(other)")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="hp back to latest")
    # Adding a model that cannot load: UNKNOWN with TF Serving's summary; the rest keeps serving.
    repo.put("broken", 1, "corrupt")
    e = rpc_error(srv.model_stub.HandleReloadConfigRequest, reload_request(config_text(
        model_block("hp", repo.path("hp")), model_block("broken", repo.path("broken")))))
    assert e.code() == grpc.StatusCode.UNKNOWN
    assert e.details().startswith("1 model(s) did not become available: {{name: broken version: 1 due to error: ")
    assert hp_answer(srv) == (2, 3.0)


def test_config_file_polling(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    repo.put("other", 1, "hp2")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp"))))
    srv = server_factory(f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1", *FAST)
    cfg.write_text(config_text(model_block("hp", repo.path("hp")), model_block("other", repo.path("other"))))
    wait_until(lambda: states(srv, "other") == {1: State.AVAILABLE}, what="other added by the file")
    cfg.write_text("model_config_list { this is not a config")
    wait_until(lambda: "was not applied" in srv.output(), what="bad file logged")
    assert hp_answer(srv, "other") == (1, 3.0)  # still serving
    cfg.write_text(config_text(model_block("other", repo.path("other"))))
    wait_until(lambda: states(srv, "hp") == {1: State.END}, what="hp removed by the file")


# ---- retries ----------------------------------------------------------------------------------------


def test_retries_then_success_and_exhausted_retries(repo, server_factory, built_models):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                         "--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.3",
                         "--max_num_load_retries=5", "--load_retry_interval_micros=1000000")
    dest = repo.put("hp", 2, "corrupt")
    wait_until(lambda: "retry 1 of 5" in srv.output(), what="first retry")
    assert states(srv, "hp")[2] == State.LOADING
    # Fix the file in place while it is being retried: a later attempt succeeds.
    shutil.copy(os.path.join(built_models["hp2"], "saved_model.pb"), os.path.join(dest, "saved_model.pb"))
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="v2 after retries")
    # Exhausted retries: END with the error until the directory leaves and returns.
    repo.put("hp", 3, "corrupt")
    wait_until(lambda: states(srv, "hp").get(3) == State.END, timeout=60, what="v3 END after 5 retries")
    assert "retry 5 of 5" in srv.output()
    assert hp_answer(srv) == (2, 3.0)


# ---- warmup ---------------------------------------------------------------------------------------


def _predict_log(value):
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request("ignored", {"x": np.array([value], np.float32)}))
    return log


def test_warmup_good_and_first_request_is_warm(repo, server_factory, built_models, tmp_path):
    warm_models = [f"warm{i}" for i in range(4)]
    for name in warm_models:
        vdir = tmp_path / name / "1"
        shutil.copytree(built_models["hp1"], vdir)
        models.write_warmup(str(vdir), [_predict_log(float(i)) for i in range(5)])
    # digits, with classify and multi_inference records on its classify signature.
    shutil.copytree(os.path.join(REPO_ROOT, "model_repository", "digits", "2"), tmp_path / "digits" / "1")
    example = tf.train.Example(features=tf.train.Features(feature={
        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * 64))}))
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.signature_name = "classify"
    classify.classify_log.request.input.example_list.examples.add().CopyFrom(example)
    multi = prediction_log_pb2.PredictionLog()
    task = multi.multi_inference_log.request.tasks.add()
    task.model_spec.signature_name = "classify"
    task.method_name = "tensorflow/serving/classify"
    multi.multi_inference_log.request.input.example_list.examples.add().CopyFrom(example)
    models.write_warmup(str(tmp_path / "digits" / "1"), [classify, multi])
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(*[model_block(n, tmp_path / n) for n in warm_models],
                               model_block("digits", tmp_path / "digits")))
    srv = server_factory(f"--model_config_file={cfg}", "--num_request_iterations_for_warmup=2", *FAST)
    out = srv.output()
    assert out.count("Number of warmup records read: 5.") == 4 and "Number of warmup records read: 2." in out
    assert states(srv, "digits") == {1: State.AVAILABLE}
    # The server's own first-call paths (gRPC method, codec) are exercised on another model
    # first, so what is measured below is each version's first run after its warmup.
    srv.predict_stub.Predict(predict_request("digits", {"images": np.zeros((1, 64), np.float32)}), timeout=30)

    def first_and_rest(server, name, n=10):
        latencies = []
        for _ in range(n):
            t0 = time.perf_counter()
            hp_answer(server, name)
            latencies.append(time.perf_counter() - t0)
        return latencies[0], latencies[-1], float(np.median(latencies[1:] or latencies))

    runs = [first_and_rest(srv, name) for name in warm_models]
    first = float(np.median([r[0] for r in runs]))
    tenth = float(np.median([r[1] for r in runs]))
    later = float(np.median([r[2] for r in runs]))
    # For the report only: the same models without warmup.
    cold = server_factory(f"--model_config_file={cfg}", "--enable_model_warmup=false", *FAST)
    cold.predict_stub.Predict(predict_request("digits", {"images": np.zeros((1, 64), np.float32)}), timeout=30)
    cold_first = float(np.median([first_and_rest(cold, name, n=1)[0] for name in warm_models]))
    print(f"after warmup (median over {len(warm_models)} models): first request {first * 1e3:.2f} ms, "
          f"tenth {tenth * 1e3:.2f} ms, median of 2..10 {later * 1e3:.2f} ms; "
          f"without warmup the first took {cold_first * 1e3:.2f} ms")
    assert first <= 2 * max(tenth, later)


def test_broken_warmup_files_fail_the_load(repo, server_factory, built_models, tmp_path):
    cases = {
        "corrupt": b"\x00\x01 definitely not a TFRecord file \xff" * 3,
        "unparsable": [b"malformed_record"],
        "too_many": [_predict_log(1.0)] * 1001,
    }
    blocks = []
    for name, content in cases.items():
        vdir = tmp_path / name / "1"
        shutil.copytree(built_models["hp1"], vdir)
        if isinstance(content, bytes):
            (vdir / "assets.extra").mkdir()
            (vdir / "assets.extra" / "tf_serving_warmup_requests").write_bytes(content)
        else:
            models.write_warmup(str(vdir), content)
        blocks.append(model_block(name, tmp_path / name))
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(*blocks))
    srv = server_factory(f"--model_config_file={cfg}", *FAST)
    got = {}
    for name in cases:
        (st,) = srv.model_stub.GetModelStatus(status_request(name), timeout=10).model_version_status
        assert st.state == State.END
        got[name] = (st.status.error_code, st.status.error_message)
    assert got["corrupt"][0] == grpc.StatusCode.DATA_LOSS.value[0]
    assert got["corrupt"][1].endswith(". Please verify your warmup data is in TFRecord format.")
    assert got["unparsable"][0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert got["unparsable"][1].startswith("Failed to parse warmup record: malformed_record from ")
    assert got["too_many"] == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                               "Number of warmup records exceeds the maximum (1000) at "
                               f"{tmp_path / 'too_many' / '1' / 'assets.extra' / 'tf_serving_warmup_requests'}")
    # With warmup off, the same versions load.
    srv2 = server_factory(f"--model_config_file={cfg}", "--enable_model_warmup=false", *FAST)
    assert all(states(srv2, name) == {1: State.AVAILABLE} for name in cases)


# ---- start-up and health --------------------------------------------------------------------------------


def test_startup_reports_models_that_cannot_load_and_serves_the_rest(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    repo.put("bad", 1, "corrupt")
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp")), model_block("bad", repo.path("bad")),
                               model_block("empty", tmp_path / "empty"), model_block("gone", tmp_path / "gone")))
    srv = server_factory(f"--model_config_file={cfg}", *FAST)
    out = srv.output()
    assert hp_answer(srv) == (1, 2.0)
    for name, why in [("bad", "name: bad version: 1 due to error: "),
                      ("empty", f"no version found under base path {tmp_path / 'empty'}"),
                      ("gone", f"base path {tmp_path / 'gone'} does not exist")]:
        lines = [line for line in out.splitlines() if f"Model {name} has no available version at start-up" in line]
        assert len(lines) == 1 and why in lines[0], out


def test_a_model_waiting_for_load_retries_does_not_keep_the_port_closed(repo, server_factory, tmp_path):
    """TF Serving's defaults (5 retries, 60 s apart): the port opens after the first attempt of
    every load, the good model serves, and the failing one retries in the background."""
    repo.put("hp", 1, "hp1")
    repo.put("bad", 1, "corrupt")
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(model_block("hp", repo.path("hp")), model_block("bad", repo.path("bad"))))
    t0 = time.monotonic()
    srv = server_factory(f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1")
    assert time.monotonic() - t0 < 55  # well before the first retry, 60 s after the first attempt
    assert hp_answer(srv) == (1, 2.0)
    assert states(srv, "bad") == {1: State.LOADING}
    lines = [line for line in srv.output().splitlines() if "Model bad has no available version at start-up" in line]
    assert len(lines) == 1 and "name: bad version: 1 due to error: " in lines[0], srv.output()
    assert "(load retries continue)" in lines[0] and "retry 1 of 5 in 60.0s" in srv.output()


def test_health_follows_readiness_and_liveness_stays_serving(built_models, server_factory, tmp_path):
    """A configured model without a version: the port is open (Verso) but health says
    NOT_SERVING, as TF Serving's unopened port would; ``verso.liveness`` says SERVING. When a
    version loads, health turns SERVING by itself."""
    (tmp_path / "hp").mkdir()
    srv = server_factory(f"--model_base_path={tmp_path / 'hp'}", "--model_name=hp", *FAST)
    stub = health_pb2_grpc.HealthStub(srv.channel)

    def status(service):
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
    for service in ("", "tensorflow.serving.PredictionService", "ModelService"):
        assert status(service) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status("verso.liveness") == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    shutil.copytree(built_models["hp1"], tmp_path / "hp" / ".1")
    os.rename(tmp_path / "hp" / ".1", tmp_path / "hp" / "1")
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    assert status("tensorflow.serving.PredictionService") == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


def test_health_service_can_be_turned_off(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                         "--enable_grpc_healthcheck_service=false")
    e = rpc_error(health_pb2_grpc.HealthStub(srv.channel).Check, health_pb2.HealthCheckRequest())
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
