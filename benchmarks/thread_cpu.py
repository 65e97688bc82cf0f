"""CPU per request of each thread of a server under h2load: where a server's time goes.

Starts echo, the floor batcher (floor_server.py) or Verso (batching) on the MLP of predict_bench.py, warms it up, reads every
thread's user + system CPU from /proc/PID/task/*/stat, sends N batch-1 Predict requests with C
in flight, reads again, and prints the CPU per request per thread (threads grouped by name;
the main thread, the event loop, apart). 127.0.0.1 only; needs h2load.

Usage: python benchmarks/thread_cpu.py [--server verso-batching|verso|echo|floor] [--requests 30000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import predict_bench as pb  # noqa: E402


def thread_cpu(pid: int) -> dict[str, tuple[str, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = (name + (" (main: the event loop)" if tid == str(pid) else ""), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="verso-batching", choices=["verso-batching", "verso", "echo", "floor"])
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verso-threads-")
    pb.build_mlp(os.path.join(tmp, "mlp", "1"))
    body = os.path.join(tmp, "request.bin")
    with open(body, "wb") as f:
        f.write(pb.request_bytes(1))
    batching = os.path.join(tmp, "batching.config")
    with open(batching, "w") as f:
        f.write(pb.BATCHING)
    port = pb.free_port()
    if args.server == "echo":
        cmd = [sys.executable, os.path.join(HERE, "echo_server.py"), str(port)]
    elif args.server == "floor":
        cmd = [sys.executable, os.path.join(HERE, "floor_server.py"), os.path.join(tmp, "mlp", "1"), str(port)]
    else:
        cmd = [sys.executable, "-m", "server", "--bind_address=127.0.0.1", "--model_name=mlp",
               f"--model_base_path={os.path.join(tmp, 'mlp')}", "--enable_grpc_healthcheck_service=false",
               f"--port={port}"]
        if args.server == "verso-batching":
            cmd += ["--enable_batching", f"--batching_parameters_file={batching}"]
    proc = pb.run_server(cmd, port, os.path.join(tmp, "server.log"), check=args.server != "echo", cwd=pb.ROOT)
    try:
        pb.h2load(port, body, 3000, args.concurrency)
        before = thread_cpu(proc.pid)
        r = pb.h2load(port, body, args.requests, args.concurrency)
        after = thread_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    tick = os.sysconf("SC_CLK_TCK")
    per = collections.Counter()
    for tid, (name, t) in after.items():
        per[name] += t - before.get(tid, (name, 0))[1]
    total = sum(per.values())
    print(f"{args.server}: {args.requests} requests, {args.concurrency} in flight, {r['rps']:.0f} req/s")
    print(f"{'thread':40} {'CPU s':>7} {'us/request':>11}")
    for name, t in per.most_common():
        if t:
            print(f"{name:40} {t / tick:7.2f} {t / tick / args.requests * 1e6:11.1f}")
    print(f"{'total':40} {total / tick:7.2f} {total / tick / args.requests * 1e6:11.1f}")
    log = open(os.path.join(tmp, "server.log")).read()
    sizes = [line for line in log.splitlines() if "mean batch size" in line]
    if sizes:
        print(sizes[-1].split("] ", 1)[-1])
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
