"""The command lines: start-up errors in one line, --version, the bundled repository, python -m server."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import metadata_request, predict_request, states, y_of
from tests.e2e.conftest import script
from tests.server_proc import ServerProcess, free_port

def run(*cmd, timeout=120):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--port=notanumber"], "Failed to start server. Error: Invalid value for flag --port: 'notanumber'"),
    (["--model_base_path=/tmp/x", "--file_system_poll_wait_seconds=soon"],
     "Invalid value for flag --file_system_poll_wait_seconds"),
    ([], "Failed to start server. Error: Both server_options.model_base_path and "
         "server_options.model_config_file are empty!"),
    (["--model_config_file=/nonexistent/models.config"], "Cannot read model config file"),
    (["--model_base_path=relative/dir"], "Expected model default to have an absolute path or URI"),
    (["--model_base_path=/m", "--grpc_channel_arguments=nonsense"],
     "Failed to start server. Error: Invalid --grpc_channel_arguments entry 'nonsense': expected key=value"),
])
def test_startup_errors_print_one_line(args, message):
    _assert_one_line_startup_error(args, message)


@pytest.mark.parametrize("text, message", [
    (None, "Cannot read --rollout_config_file"),
    ("models { nonsense: 1 }", 'Error parsing text-format verso.rollout.RolloutConfig: 1:18: '
                               'Message type "verso.rollout.ModelRollout" has no field named "nonsense".'),
    ('models { model: "m" stable: 1 canary: 1 }',
     "Rollout of model m: canary must be 0 (none) or a version other than stable"),
])
def test_a_bad_rollout_config_file_stops_the_start_in_one_line(tmp_path, text, message):
    path = tmp_path / "rollouts.config"
    if text is not None:
        path.write_text(text)
    _assert_one_line_startup_error(["--model_base_path=/tmp/x", f"--rollout_config_file={path}"], message)


def test_a_bad_admin_token_file_or_rollout_state_file_stops_the_start_in_one_line(tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("\n")
    _assert_one_line_startup_error(["--model_base_path=/tmp/x", f"--admin_token_file={token}"],
                                   f"Failed to start server. Error: --admin_token_file {token} is empty")
    _assert_one_line_startup_error(["--model_base_path=/tmp/x", f"--admin_token_file={tmp_path}/none"],
                                   f"Cannot read --admin_token_file {tmp_path}/none")
    # A state file that cannot be used runs the server without rollout changes
    # (tests/security/test_safety_readonly.py); a directory named as the file is a mistake in the flags.
    _assert_one_line_startup_error(["--model_base_path=/tmp/x", f"--rollout_state_file={tmp_path}"],
                                   f"Failed to start server. Error: --rollout_state_file {tmp_path} is a directory")


def _assert_one_line_startup_error(args, message):
    r = run(script("tensorflow_model_server"), *args)
    assert r.returncode == 255
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_invalid_config_files_stop_the_start(tmp_path):
    p = tmp_path / "models.config"
    p.write_text('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" }'
                 ' config { name: "a" base_path: "/b" model_platform: "tensorflow" } }')
    r = run(sys.executable, "-m", "server", f"--model_config_file={p}")
    assert r.returncode == 255
    assert r.stderr.strip() == ("Failed to start server. Error: INVALID_ARGUMENT: "
                                "Illegal to list model a multiple times in config list")
    # Unparsable: what TF Serving prints (protobuf's C++ log line on stderr, main.cc's status on
    # stdout; tests/unit/test_config_parse_errors.py has the positions case by case).
    p.write_text("improperly formatted file")
    r = run(sys.executable, "-m", "server", "--model_config_file", str(p), f"--port={free_port()}")
    assert r.returncode == 255
    assert r.stderr.strip().splitlines() == [
        'Error parsing text-format tensorflow.serving.ModelServerConfig: 1:12: Message type '
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly".']
    assert r.stdout == f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{p}'\n"


def test_version_flag():
    r = run(script("tensorflow_model_server"), "--version")
    assert r.returncode == 0
    assert r.stdout.startswith("TensorFlow ModelServer: ") and "TensorFlow Library: 2." in r.stdout


def test_port_in_use_fails_cleanly(repo):
    import socket
    repo.put("hp", 1, "hp1")
    with socket.socket() as taken:  # another program holds the port (no SO_REUSEPORT)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        second = ServerProcess([f"--model_base_path={repo.path('hp')}", "--model_name=hp"],
                               port=taken.getsockname()[1])
        second.start(wait=False)
        try:
            assert second.wait_exit(timeout=120) == 255
            assert "Failed to start server. Error:" in second.output()
        finally:
            second.stop()


def test_verso_serve_without_model_flags_serves_the_bundled_repository(server_factory):
    srv = server_factory(entry=[script("verso"), "serve"], rest=True)
    x = np.array([1.0, 2.0, 5.0], np.float32)
    resp = srv.predict_stub.Predict(predict_request("half_plus_two", {"x": x}), timeout=30)
    np.testing.assert_allclose(y_of(resp), [2.5, 3.0, 4.5])
    assert resp.model_spec.version.value == 2
    resp = srv.predict_stub.Predict(predict_request("half_plus_two", {"x": x}, version=1), timeout=30)
    np.testing.assert_allclose(y_of(resp), [1.5, 2.0, 3.5])
    assert set(states(srv, "digits")) == {1, 2}
    # digits: a real classifier; an all-zero image gets a probability distribution over 10 classes.
    resp = srv.predict_stub.Predict(predict_request("digits", {"images": np.zeros((2, 64), np.float32)}), timeout=30)
    import tensorflow as tf
    scores = tf.make_ndarray(resp.outputs["scores"])
    assert scores.shape == (2, 10) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    sigs = srv.predict_stub.GetModelMetadata(metadata_request("digits"), timeout=30)
    from tensorflow_serving.apis import get_model_metadata_pb2
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sigs.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["classify"].method_name == "tensorflow/serving/classify"
    # REST and Prometheus are on for `verso serve`.
    assert srv.rest_json("POST", "/v1/models/half_plus_two:predict", {"instances": [1.0]}) == (
        200, {"predictions": [2.5]})
    status, _, text = srv.http("GET", "/monitoring/prometheus/metrics")
    # 2 gRPC Predicts and 1 REST predict on half_plus_two so far.
    assert status == 200 and b':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 3\n' in text


def test_verso_serve_defaults_to_port_8500_and_rest_8501():
    from server.settings import DEFAULT_METRICS_PATH, verso_serve_defaults
    from server.settings import bundled_repository, parse_flags, resolve_models
    settings = parse_flags([])
    assert settings.port == 8500
    served, path = verso_serve_defaults(settings, None)
    assert path == DEFAULT_METRICS_PATH
    assert served.rest_api_port == 8501 and settings.rest_api_port == 0  # a copy; the flags stay frozen
    explicit, path = verso_serve_defaults(parse_flags(["--rest_api_port=0", "--monitoring_config_file=/m"]), None)
    assert path is None and explicit.rest_api_port == 0
    assert parse_flags([]).rest_api_port == 0  # tensorflow_model_server: off, as TF Serving
    models = resolve_models(settings, bundled_config=str(bundled_repository() / "models.config"))
    assert sorted(m.name for m in models) == ["digits", "digits_png", "half_plus_two", "half_plus_two_onnx"]
    assert all(os.path.isdir(os.path.join(m.base_path, "1")) for m in models)


def test_unknown_flag_is_reported_startup_continues_and_sigterm_stops_the_server(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp", "--some_unknown_flag=1")
    assert "unknown argument: --some_unknown_flag=1" in srv.output()
    srv.proc.terminate()
    assert srv.wait_exit(timeout=60) == 0


