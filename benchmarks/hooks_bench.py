"""What Python hooks cost per request: the same SavedModel served twice by one server, as
``mlp`` (no hooks) and ``mlp_hooked`` (the same directory plus ``assets.extra/verso_hooks.py``
with pass-through ``preprocess`` and ``postprocess``), so any difference is the hooks' path:
the extra executor hops, the model-side input check and the dict copies.

For each server mode (no batching; batching with ``max_batch_size`` 64, timeout 0), in one run:

1. one call at a time, p50 latency over ``--calls`` calls per model, the models alternating in
   blocks of 100 so drift hits both alike (official stub, a request built once);
2. h2load at ``--concurrency`` in flight, ``--requests`` calls per model.

127.0.0.1 only; bounded by the counts given. Usage:
python benchmarks/hooks_bench.py [--calls 2000] [--requests 5000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from predict_bench import ROOT, build_mlp, h2load, run_server  # noqa: E402

sys.path.insert(0, ROOT)
import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from protos import tensor_codec  # noqa: E402
from tests.server_proc import free_port  # noqa: E402

PASS_THROUGH_HOOKS = '''
def preprocess(inputs, signature_name):
    return inputs


def postprocess(outputs, signature_name):
    return outputs
'''
BATCHING = ("max_batch_size { value: 64 } batch_timeout_micros { value: 0 } "
            "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }")


def request(model: str) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    x = np.random.default_rng(1).random((1, 784), dtype=np.float32)
    tensor_codec.fill_proto(req.inputs["images"], x, tensor_content=True)
    return req


def p50_ms(stubs: dict, calls: int) -> dict:
    times = {m: [] for m in stubs}
    reqs = {m: request(m) for m in stubs}
    for m, stub in stubs.items():  # warm both paths
        for _ in range(50):
            stub.Predict(reqs[m], timeout=10)
    for _ in range(calls // 100):
        for m, stub in stubs.items():
            for _ in range(100):
                t0 = time.perf_counter()
                stub.Predict(reqs[m], timeout=10)
                times[m].append(time.perf_counter() - t0)
    return {m: float(np.percentile(t, 50) * 1e3) for m, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="verso-hooks-bench-")
    try:
        build_mlp(os.path.join(work, "mlp", "1"))
        shutil.copytree(os.path.join(work, "mlp", "1"), os.path.join(work, "mlp_hooked", "1"))
        os.makedirs(os.path.join(work, "mlp_hooked", "1", "assets.extra"))
        with open(os.path.join(work, "mlp_hooked", "1", "assets.extra", "verso_hooks.py"), "w") as f:
            f.write(PASS_THROUGH_HOOKS)
        config = os.path.join(work, "models.config")
        with open(config, "w") as f:
            f.write("model_config_list {\n" + "".join(
                f'  config {{ name: "{m}" base_path: "{work}/{m}" model_platform: "tensorflow" }}\n'
                for m in ("mlp", "mlp_hooked")) + "}\n")
        params = os.path.join(work, "batching.config")
        with open(params, "w") as f:
            f.write(BATCHING)
        results = {}
        for mode, extra in (("no batching", []), ("batching", ["--enable_batching",
                                                                f"--batching_parameters_file={params}"])):
            port = free_port()
            proc = run_server([sys.executable, "-m", "server", f"--port={port}", "--bind_address=127.0.0.1",
                               f"--model_config_file={config}", *extra], port, os.path.join(work, "server.log"))
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
                    latency = p50_ms({"mlp": stub, "mlp_hooked": stub}, args.calls)
                load = {}
                for m in ("mlp", "mlp_hooked"):
                    body = request(m).SerializeToString()
                    body_file = os.path.join(work, f"{m}.bin")
                    with open(body_file, "wb") as f:
                        f.write(b"\x00" + struct.pack(">I", len(body)) + body)
                    load[m] = h2load(port, body_file, args.requests, args.concurrency)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            results[mode] = {"p50_ms": latency, "load": load}
            print(f"{mode}: p50 one at a time {latency['mlp']:.3f} ms without hooks, "
                  f"{latency['mlp_hooked']:.3f} ms with (+{(latency['mlp_hooked'] - latency['mlp']) * 1e3:.0f} us); "
                  f"{args.concurrency} in flight {load['mlp']['rps']:.0f} vs {load['mlp_hooked']['rps']:.0f} req/s "
                  f"(ratio {load['mlp_hooked']['rps'] / load['mlp']['rps']:.2f}), "
                  f"failed {load['mlp']['failed']} / {load['mlp_hooked']['failed']}", flush=True)
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
