"""Predict throughput and latency, every server measured in the same run.

Servers: a no-model grpc.aio echo (the Python gRPC ceiling), the naive TF-Serving-API
baseline, Verso without batching and Verso with batching, on the MLP of
../shared/docs/performance.md (784 -> 128 relu -> 10 softmax, float32 ``images``
[None, 784] -> ``scores``), built here with tf.Module.

Load: h2load (Debian ``nghttp2-client``) when present: one connection (``--connections``), C streams in flight,
N requests of R rows, per-request latencies from its --log-file (p50/p99); otherwise a
grpc.aio Python client (which competes with the server for the 2 cores: figures are lower).
127.0.0.1 only. Each model server's answer is checked with the official client first.

Per server it reports req/s, p50/p99, the server's CPU time per request (its process tree's
user + system CPU over the measured run, from /proc, divided by the requests), the ratios to
echo and naive of the same run, and the growth of the server's resident memory from after the
warm-up to the end of the run (``--requests 100000`` for the flat-memory check).

Usage: python benchmarks/predict_bench.py [--requests 10000] [--concurrency 64] [--rows 1]
       [--servers echo,naive,verso,verso-batching] [--repeat 1] [--ref OTHER_CHECKOUT]
Also: floor (benchmarks/floor_server.py: the least a batching grpc.aio server does, with
Verso's model runner: the floor any Python batcher stands on), verso-batching-2w (--num_workers=2), verso-batching-rollout (the model under a rollout:
every answer routed, recorded and written to the prediction log), verso-rest and
verso-batching-rest (REST predict, ``{"instances": [...]}`` of the same rows, over HTTP/1.1
keep-alive connections, one per request in flight, by ``h2load --h1``).
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
    """One gRPC-framed PredictRequest of ``rows`` rows (the body h2load sends)."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mlp"
    x = np.random.default_rng(1).random((rows, 784), dtype=np.float32)
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    body = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


def rest_body(rows: int = 1) -> bytes:
    """The same rows as ``request_bytes`` as a REST predict body."""
    import json
    x = np.random.default_rng(1).random((rows, 784), dtype=np.float32)
    return json.dumps({"instances": x.tolist()}).encode()


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (threads included)."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


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


def h2load(port: int, body_file: str, requests: int, concurrency: int, connections: int = 1) -> dict:
    log_file = body_file + ".log"
    per_connection = max(1, concurrency // connections)
    cmd = ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(per_connection), "-d", body_file,
           "--log-file", log_file, "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    status = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    with open(log_file) as f:  # start time (us), HTTP status, duration (us)
        lat = np.array([int(line.split()[2]) for line in f if line.strip()], dtype=np.float64) / 1e3
    os.unlink(log_file)
    return {"rps": rps, "failed": int(status.group(5)), "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99))}


def h2load_rest(port: int, body_file: str, requests: int, concurrency: int, connections: int = 1) -> dict:
    """REST predict by h2load over HTTP/1.1: ``concurrency`` keep-alive connections, one request
    in flight on each (HTTP/1.1 has no multiplexing)."""
    log_file = body_file + ".log"
    cmd = ["h2load", "--h1", "-n", str(requests), "-c", str(concurrency), "-m", "1", "-d", body_file,
           "--log-file", log_file, "-H", "content-type: application/json",
           f"http://127.0.0.1:{port}/v1/models/mlp:predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    status = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    with open(log_file) as f:
        lat = np.array([int(line.split()[2]) for line in f if line.strip()], dtype=np.float64) / 1e3
    os.unlink(log_file)
    failed = int(status.group(5)) + (requests - int(codes.group(1)) if codes else 0)
    return {"rps": rps, "failed": failed, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def python_load(port: int, body_file: str, requests: int, concurrency: int, connections: int = 1) -> dict:
    """Fallback load generator (grpc.aio); costs CPU on the same cores as the server."""
    import asyncio

    with open(body_file, "rb") as f:
        body = f.read()[5:]

    async def go():
        lat, failed = [], 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                  request_serializer=None, response_deserializer=None)
            left = [requests]

            async def worker():
                nonlocal failed
                while left[0] > 0:
                    left[0] -= 1
                    t0 = time.perf_counter()
                    try:
                        await call(body, timeout=60)
                    except grpc.RpcError:
                        failed += 1
                    lat.append((time.perf_counter() - t0) * 1e3)

            t0 = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(concurrency)])
            return requests / (time.perf_counter() - t0), lat, failed

    rps, lat, failed = asyncio.run(go())
    return {"rps": rps, "failed": failed, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def run_server(cmd: list[str], port: int, log_path: str, check: bool = True, cwd=None) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            cwd=cwd)
    if check:
        wait_ready(port)
    else:
        deadline = time.monotonic() + 60
        while "ready" not in open(log_path).read():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not start")
            time.sleep(0.1)
    return proc


def _free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


BATCHING = ("max_batch_size { value: 64 } batch_timeout_micros { value: 0 } "
            "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--servers", default="echo,naive,verso,verso-batching")
    ap.add_argument("--batching", default=BATCHING, help="BatchingParameters text for verso-batching")
    ap.add_argument("--verso_flags", default="", help="extra flags for both Verso servers, space-separated")
    ap.add_argument("--ref", default="",
                    help="another checkout of Verso (e.g. `git worktree add /tmp/ref COMMIT`): adds servers "
                         "verso-ref and verso-batching-ref, run from it, to compare before and after a change")
    ap.add_argument("--connections", type=int, default=1,
                    help="HTTP/2 connections the load spreads over (h2load -c; --num_workers balances connections)")
    args = ap.parse_args()
    load = h2load if shutil.which("h2load") else python_load
    tmp = tempfile.mkdtemp(prefix="verso-bench-")
    build_mlp(os.path.join(tmp, "mlp", "1"))
    body = os.path.join(tmp, "request.bin")
    with open(body, "wb") as f:
        f.write(request_bytes(args.rows))
    body_rest = os.path.join(tmp, "request.json")
    with open(body_rest, "wb") as f:
        f.write(rest_body(args.rows))
    batching_file = os.path.join(tmp, "batching.config")
    with open(batching_file, "w") as f:
        f.write(args.batching)
    model_dir = os.path.join(tmp, "mlp")
    # verso-batching-rollout: the model under a rollout (stable only), so that every answer is
    # routed, recorded as evidence and written to the prediction log (its cost, issue 17).
    rollout_file = os.path.join(tmp, "rollouts.config")
    with open(rollout_file, "w") as f:
        f.write('models { model: "mlp" stable: 1 }\n')
    verso = [sys.executable, "-m", "server", "--bind_address=127.0.0.1", "--model_name=mlp",
             f"--model_base_path={model_dir}", "--enable_grpc_healthcheck_service=false"] + args.verso_flags.split()
    servers = {
        "echo": ("grpc.aio echo, no model (ceiling)",
                 lambda port: [sys.executable, os.path.join(HERE, "echo_server.py"), str(port)]),
        "naive": ("naive: sync grpc, make_ndarray, 1 TF call/request",
                  lambda port: [sys.executable, os.path.join(HERE, "naive_server.py"), "mlp",
                                os.path.join(model_dir, "1"), str(port)]),
        # The least a batching Python server on grpc.aio does (no checks, metrics, deadlines).
        "floor": ("floor: minimal grpc.aio batcher, same model run",
                  lambda port: [sys.executable, os.path.join(HERE, "floor_server.py"),
                                os.path.join(model_dir, "1"), str(port)]),
        "verso": ("verso, no batching", lambda port: verso + [f"--port={port}"]),
        "verso-batching": ("verso, batching", lambda port: verso + [
            f"--port={port}", "--enable_batching", f"--batching_parameters_file={batching_file}"]),
        "verso-batching-rollout": ("verso, batching, under a rollout (logged)", lambda port: verso + [
            f"--port={port}", "--enable_batching", f"--batching_parameters_file={batching_file}",
            f"--rollout_config_file={rollout_file}", f"--rollout_state_file={os.path.join(tmp, f'state-{port}.sqlite')}"]),
        "verso-batching-2w": ("verso, batching, --num_workers=2", lambda port: verso + [
            f"--port={port}", "--enable_batching", f"--batching_parameters_file={batching_file}",
            "--num_workers=2"]),
        # REST: the load goes to the REST port (gRPC on the next port, unused).
        "verso-rest": ("verso REST, no batching", lambda port: verso + [
            f"--port={port + 1}", f"--rest_api_port={port}"]),
        "verso-batching-rest": ("verso REST, batching", lambda port: verso + [
            f"--port={port + 1}", f"--rest_api_port={port}", "--enable_batching",
            f"--batching_parameters_file={batching_file}"]),
    }
    if args.ref:
        servers["verso-ref"] = (f"verso at {os.path.basename(args.ref.rstrip('/'))}, no batching",
                                servers["verso"][1])
        servers["verso-batching-ref"] = (f"verso at {os.path.basename(args.ref.rstrip('/'))}, batching",
                                         servers["verso-batching"][1])
    chosen = [k for k in args.servers.split(",") if k]
    results: dict[str, list[dict]] = {k: [] for k in chosen}
    for _ in range(args.repeat):
        for key in chosen:
            port = free_port()
            rest = key.endswith("-rest")
            if rest:
                while not _free(port + 1):
                    port = free_port()
            # `python -m server` imports the package from its working directory: the ref tree's.
            proc = run_server(servers[key][1](port), port + 1 if rest else port, os.path.join(tmp, f"{key}.log"),
                              check=key != "echo", cwd=args.ref if key.endswith("-ref") else ROOT)
            run_load, payload = ((h2load_rest if shutil.which("h2load") else None), body_rest) if rest else \
                (load, body)
            if run_load is None:
                raise SystemExit("REST servers need h2load (apt-get install nghttp2-client)")
            try:
                if key.endswith("-2w"):  # wait_ready saw one worker; wait for both to be serving
                    log_path = os.path.join(tmp, f"{key}.log")
                    deadline = time.monotonic() + 120
                    while sum(1 for line in open(log_path) if line.startswith("Running gRPC ModelServer at")) < 2:
                        if time.monotonic() > deadline:
                            raise RuntimeError("the second worker did not start")
                        time.sleep(0.2)
                run_load(port, payload, min(1000, args.requests), args.concurrency, args.connections)  # warm up
                cpu0, rss0 = tree_cpu_seconds(proc.pid), tree_rss_bytes(proc.pid)
                r = run_load(port, payload, args.requests, args.concurrency, args.connections)
                r["cpu_us"] = (tree_cpu_seconds(proc.pid) - cpu0) / args.requests * 1e6
                r["rss_growth"] = tree_rss_bytes(proc.pid) / rss0 - 1 if rss0 else float("nan")
                r["rss_mib"] = tree_rss_bytes(proc.pid) / 2 ** 20
                results[key].append(r)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    best = {k: max(results[k], key=lambda r: r["rps"]) for k in chosen}
    print(f"\n{args.requests} requests of {args.rows} row(s) of 784 floats, {args.concurrency} in flight "
          f"over {args.connections} connection(s), "
          f"load by {'h2load' if load is h2load else 'Python grpc.aio client'}, best of {args.repeat}")
    print(f"{'server':40} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'x naive':>7} {'% echo':>6} "
          f"{'CPU us/req':>10} {'CPU x echo':>10} {'CPU x naive':>11} {'RSS MiB':>8} {'RSS grew':>8}")
    for k in chosen:
        r = best[k]
        vs_naive = f"{r['rps'] / best['naive']['rps']:.2f}" if "naive" in best else "-"
        vs_echo = f"{r['rps'] / best['echo']['rps'] * 100:.0f}" if "echo" in best else "-"
        cpu_echo = f"{r['cpu_us'] / best['echo']['cpu_us']:.2f}" if "echo" in best else "-"
        cpu_naive = f"{r['cpu_us'] / best['naive']['cpu_us']:.2f}" if "naive" in best else "-"
        print(f"{servers[k][0]:40} {r['rps']:7.0f} {r['p50']:7.2f} {r['p99']:7.2f} {r['failed']:6d} "
              f"{vs_naive:>7} {vs_echo:>6} {r['cpu_us']:10.0f} {cpu_echo:>10} {cpu_naive:>11} "
              f"{r['rss_mib']:8.0f} {r['rss_growth'] * 100:7.1f}%")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
