"""The client's cost: tensor encoding, per-call overhead, and ``verso bench`` against h2load.

All in one run on this machine, against one Verso server (no batching) serving the MLP of
predict_bench.py (float32 ``images`` [None, 784] -> ``scores``):

1. codec, in-process: encode a [rows, 784] float32 array into a TensorProto and decode the
   10-float answer, Verso's numpy codec against ``tf.make_tensor_proto`` / ``tf.make_ndarray``;
2. one call at a time (``--calls``), p50 latency: the official stub with a request built once
   (the floor), the official stub building tensors with TF per call (how users call TF Serving),
   ``client.Client.predict`` (numpy in, numpy out);
3. throughput at ``--concurrency`` in flight: ``verso bench`` (the Python asyncio client)
   against h2load (C) on the same server, the same request.

127.0.0.1 only; bounded by the counts given. Usage:
python benchmarks/client_bench.py [--rows 8] [--calls 2000] [--requests 5000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from predict_bench import ROOT, build_mlp, h2load, run_server  # noqa: E402
import tensorflow as tf  # noqa: E402  (imported by predict_bench already)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

sys.path.insert(0, ROOT)
import grpc  # noqa: E402

from client import Client  # noqa: E402
from protos import tensor_codec  # noqa: E402
from tests.server_proc import free_port  # noqa: E402


def per_call_us(fn, n: int) -> float:
    for _ in range(min(n, 500)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def p50_ms(fn, n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(lat, 50) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    x = np.random.default_rng(1).random((args.rows, 784), dtype=np.float32)
    answer = np.random.default_rng(2).random((args.rows, 10), dtype=np.float32)
    answer_proto = tf.make_tensor_proto(answer)

    print(f"codec, [{args.rows}, 784] float32 in, [{args.rows}, 10] out, us per call (20 000 calls):")
    ours = per_call_us(lambda: (tensor_codec.from_ndarray(x, tensor_content=True),
                                tensor_codec.to_ndarray(answer_proto)), 20000)
    tfs = per_call_us(lambda: (tf.make_tensor_proto(x), tf.make_ndarray(answer_proto)), 20000)
    print(f"  verso tensor_codec {ours:8.1f}\n  tf.make_tensor_proto + make_ndarray {tfs:8.1f}  ({tfs / ours:.1f}x)")

    tmp = tempfile.mkdtemp(prefix="verso-client-bench-")
    model_dir = os.path.join(tmp, "mlp")
    build_mlp(os.path.join(model_dir, "1"))
    port = free_port()
    proc = run_server([sys.executable, "-m", "server", "--bind_address=127.0.0.1", f"--port={port}",
                       "--model_name=mlp", f"--model_base_path={model_dir}"], port, os.path.join(tmp, "verso.log"))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        built = predict_pb2.PredictRequest()
        built.model_spec.name = "mlp"
        built.inputs["images"].CopyFrom(tf.make_tensor_proto(x))

        def official():
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "mlp"
            req.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
            return tf.make_ndarray(stub.Predict(req, timeout=10).outputs["scores"])

        client = Client(f"127.0.0.1:{port}")
        print(f"\none call at a time, p50 ms over {args.calls} calls:")
        floor = p50_ms(lambda: stub.Predict(built, timeout=10), args.calls)
        off = p50_ms(official, args.calls)
        ours = p50_ms(lambda: client.predict("mlp", {"images": x}), args.calls)
        print(f"  official stub, request built once (floor) {floor:7.3f}")
        print(f"  official stub + tf.make_tensor_proto/make_ndarray {off:7.3f}  (+{(off - floor) * 1e3:.0f} us)")
        print(f"  client.Client.predict {ours:7.3f}  (+{(ours - floor) * 1e3:.0f} us)")
        client.close()
        channel.close()

        print(f"\n{args.requests} requests, {args.concurrency} in flight:")
        verso = shutil.which("verso", path=os.path.dirname(sys.executable)) or "verso"
        np.save(os.path.join(tmp, "images.npy"), x)
        cmd = [verso, "bench", "mlp", f"images=@{tmp}/images.npy", "-n", str(args.requests),
               "-c", str(args.concurrency),
               "--json", "--no-progress", "--target", f"127.0.0.1:{port}"]
        subprocess.run(cmd[:4] + ["-n", "500"] + cmd[6:], capture_output=True, check=True)  # warm up
        report = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"  verso bench  {report['requests_per_s']:8.0f} req/s  p50 {report['latency_ms']['all']['p50']:.2f} ms  "
              f"errors {report['errors']}")
        if shutil.which("h2load"):
            body = os.path.join(tmp, "request.bin")
            raw = built.SerializeToString()
            with open(body, "wb") as f:
                f.write(b"\x00" + struct.pack(">I", len(raw)) + raw)
            h2load(port, body, 500, args.concurrency)
            r = h2load(port, body, args.requests, args.concurrency)
            print(f"  h2load       {r['rps']:8.0f} req/s  p50 {r['p50']:.2f} ms  failed {r['failed']}")
            print(f"  verso bench / h2load = {report['requests_per_s'] / r['rps']:.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
