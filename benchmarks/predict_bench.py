"""Predict throughput: Verso against the naive baseline, measured in the same run with h2load.

Model: the MLP of ../shared/docs/performance.md (784 -> 128 relu -> 10 softmax, float32
``images`` [None, 784] -> ``scores``), built here with tf.Module. Load: h2load (Debian
``nghttp2-client``), one row per request, N requests with C in flight, to 127.0.0.1 only.
Each server's answer is checked once with the official client before it is loaded.

Usage: python benchmarks/predict_bench.py [--requests 10000] [--concurrency 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from tests.server_proc import free_port  # noqa: E402


def build_mlp(path: str) -> None:
    rng = np.random.default_rng(0)

    class MLP(tf.Module):
        def __init__(self):
            self.w1 = tf.Variable(rng.normal(0, 0.05, (784, 128)).astype(np.float32))
            self.b1 = tf.Variable(np.zeros(128, np.float32))
            self.w2 = tf.Variable(rng.normal(0, 0.05, (128, 10)).astype(np.float32))
            self.b2 = tf.Variable(np.zeros(10, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def serve(self, images):
            h = tf.nn.relu(images @ self.w1 + self.b1)
            return {"scores": tf.nn.softmax(h @ self.w2 + self.b2)}

    m = MLP()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def request_bytes(rows: int = 1) -> bytes:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mlp"
    x = np.random.default_rng(1).random((rows, 784), dtype=np.float32)
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    body = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


def wait_ready(port: int, timeout: float = 120) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest.FromString(request_bytes()[5:])
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = stub.Predict(req, timeout=5)
            scores = tf.make_ndarray(resp.outputs["scores"])
            assert scores.shape == (1, 10) and abs(scores.sum() - 1) < 1e-4, scores
            channel.close()
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def h2load(port: int, body_file: str, requests: int, concurrency: int) -> dict:
    cmd = ["h2load", "-n", str(requests), "-c", "1", "-m", str(concurrency), "-d", body_file,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    status = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    lat = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", out)

    def ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "succeeded": int(status.group(4)), "failed": int(status.group(5)),
            "mean_ms": ms(lat.group(5), lat.group(6)), "max_ms": ms(lat.group(3), lat.group(4))}


def run_server(cmd: list[str], port: int, log_path: str) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wait_ready(port)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client")
    tmp = tempfile.mkdtemp(prefix="verso-bench-")
    build_mlp(os.path.join(tmp, "mlp", "1"))
    body = os.path.join(tmp, "request.bin")
    with open(body, "wb") as f:
        f.write(request_bytes())

    servers = {
        "naive (sync grpc, make_ndarray, 1 TF call/request)":
            lambda port: [sys.executable, os.path.join(HERE, "naive_server.py"), "mlp", os.path.join(tmp, "mlp", "1"),
                          str(port)],
        "verso (no batching)":
            lambda port: [sys.executable, "-m", "server", f"--port={port}", "--bind_address=127.0.0.1",
                          "--model_name=mlp", f"--model_base_path={os.path.join(tmp, 'mlp')}"],
    }
    results: dict[str, list[dict]] = {k: [] for k in servers}
    for _ in range(args.repeat):
        for name, make_cmd in servers.items():
            port = free_port()
            proc = run_server(make_cmd(port), port, os.path.join(tmp, "server.log"))
            try:
                h2load(port, body, min(1000, args.requests), args.concurrency)  # warm up
                results[name].append(h2load(port, body, args.requests, args.concurrency))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    base = max(r["rps"] for r in results[next(iter(servers))])
    print(f"\n{args.requests} requests, 1 row of 784 floats each, {args.concurrency} in flight (h2load)")
    print(f"{'server':55} {'req/s':>8} {'x naive':>8} {'mean ms':>8} {'max ms':>8} {'failed':>6}")
    for name, runs in results.items():
        for r in runs:
            print(f"{name:55} {r['rps']:8.0f} {r['rps'] / base:8.2f} {r['mean_ms']:8.1f} {r['max_ms']:8.1f} "
                  f"{r['failed']:6d}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
