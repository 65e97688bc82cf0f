"""``--grpc_socket_path``: the gRPC services on a UNIX domain socket too (TF Serving's flag)."""

from __future__ import annotations

import os

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.helpers import predict_request
from tests.server_proc import ServerProcess


def _predict(target: str) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        r = stub.Predict(predict_request("hp", {"x": np.array([1.0, 3.0], np.float32)}), timeout=30)
        return tf.make_ndarray(r.outputs["y"])


def _model_args(tmp_path, built_models):
    import shutil
    shutil.copytree(built_models["hp1"], tmp_path / "hp" / "1")
    return ["--model_name=hp", f"--model_base_path={tmp_path / 'hp'}"]


def test_predict_over_the_socket_and_the_port_and_the_socket_is_removed_on_exit(tmp_path, built_models):
    sock = tmp_path / "verso.sock"
    srv = ServerProcess([*_model_args(tmp_path, built_models), f"--grpc_socket_path={sock}"])
    srv.start()
    try:
        assert f"Running gRPC ModelServer at UNIX socket {sock} ..." in srv.output()
        np.testing.assert_array_equal(_predict(f"unix:{sock}"), [1.5, 2.5])
        np.testing.assert_array_equal(_predict(f"127.0.0.1:{srv.port}"), [1.5, 2.5])
    finally:
        srv.stop()
    assert srv.proc.returncode == 0 and not os.path.exists(sock)


def test_socket_only_with_port_0_and_a_stale_socket_file_is_replaced(tmp_path, built_models):
    import socket
    sock = tmp_path / "only.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # what a killed server leaves behind
    stale.close()
    srv = ServerProcess([*_model_args(tmp_path, built_models), "--port=0", f"--grpc_socket_path={sock}"],
                        with_port=False)
    srv.start()
    try:
        assert "Running gRPC ModelServer at 0.0.0.0" not in srv.output()
        np.testing.assert_array_equal(_predict(f"unix:{sock}"), [1.5, 2.5])
    finally:
        srv.stop()
    assert not os.path.exists(sock)


def test_port_0_without_a_socket_is_tf_servings_start_error(tmp_path, built_models):
    srv = ServerProcess([*_model_args(tmp_path, built_models), "--port=0"], with_port=False)
    srv.start(wait=False)
    assert srv.proc.wait(timeout=60) == 255
    assert "Failed to start server. Error: server_options.grpc_port is not set." in srv.output()
