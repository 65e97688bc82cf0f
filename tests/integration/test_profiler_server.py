"""``--enable_profiler`` (TF Serving's default, off by default in Verso): TensorFlow's own
profiler client captures a profile from the running server (in process) over its gRPC port, as
TensorBoard's "Capture profile" does, into the server's --profiler_log_dir; the service alone:
tests/integration/test_profiler.py; its attacks: tests/security/test_profiler.py."""

from __future__ import annotations

import glob
import shutil
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import predict_request
from tests.server_proc import InProcessServer


def _server(tmp_path, built_models, *flags):
    shutil.copytree(built_models["hp1"], tmp_path / "hp" / "1")
    srv = InProcessServer(["--model_name=hp", f"--model_base_path={tmp_path / 'hp'}", *flags])
    srv.start()
    return srv


def test_tensorflows_profiler_client_captures_a_profile_from_the_server(tmp_path, built_models):
    logdir = tmp_path / "logdir"
    srv = _server(tmp_path, built_models, "--enable_profiler", f"--profiler_log_dir={logdir}")
    stop = threading.Event()

    def traffic():  # the capture holds the Predict calls the server runs meanwhile
        while not stop.is_set():
            srv.predict_stub.Predict(predict_request("hp", {"x": np.ones(4, np.float32)}), timeout=30)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        tf.profiler.experimental.client.trace(f"grpc://127.0.0.1:{srv.port}", str(logdir), duration_ms=500)
        files = glob.glob(str(logdir / "plugins" / "profile" / "*" / "*.xplane.pb"))
        assert len(files) == 1 and files[0].endswith(f"127.0.0.1_{srv.port}.xplane.pb")
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
        space = xplane_pb2.XSpace()
        with open(files[0], "rb") as f:
            space.ParseFromString(f.read())
        assert any(p.name == "/host:CPU" for p in space.planes)
    finally:
        stop.set()
        t.join()
        srv.stop()


def test_without_the_profiler_the_capture_is_refused(tmp_path, built_models):
    srv = _server(tmp_path, built_models)  # Verso's default: off
    try:
        profile = srv.channel.unary_unary("/tensorflow.ProfilerService/Profile")
        with pytest.raises(grpc.RpcError) as e:
            profile(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        srv.stop()
