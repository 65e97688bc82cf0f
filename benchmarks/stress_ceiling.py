"""The stress tool's own ceiling: ``verso bench`` open loops against the no-model echo server.

The echo server (benchmarks/echo_server.py) answers a canned PredictResponse with no model,
so what limits a run against it is the tool (and the machine), not a model server. For each
rate and number of client processes this runs ``verso bench --rate R -d DURATION
--processes P`` and prints the answered rate, p50/p99 (from the scheduled send times), how late
the tool sent (lag p99) and the calls it dropped. The tool's ceiling is the highest rate at
which it kept its schedule: answered >= 99 % of offered and lag p99 <= 10 ms. Above it, a
run's figures describe the tool, not the server. For reference, h2load's closed-loop
throughput against the same echo server (64 in flight) when h2load is installed.

127.0.0.1 only. Usage: python benchmarks/stress_ceiling.py [--rates 500,1000,2000,3000,4000]
       [--processes 1,2] [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import predict_bench as pb  # noqa: E402

VERSO = shutil.which("verso", path=os.path.dirname(sys.executable)) or "verso"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000,3000,4000")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verso-ceiling-")
    port = pb.free_port()
    echo = pb.run_server([sys.executable, os.path.join(HERE, "echo_server.py"), str(port)], port,
                         os.path.join(tmp, "echo.log"), check=False)
    try:
        if shutil.which("h2load"):
            body = os.path.join(tmp, "request.bin")
            with open(body, "wb") as f:
                f.write(pb.request_bytes(1))
            pb.h2load(port, body, 2000, 64)
            r = pb.h2load(port, body, 20000, 64)
            print(f"h2load, closed loop, 64 in flight: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                  f"p99 {r['p99']:.2f} ms")
        print(f"{'processes':>9} {'offered/s':>9} {'answered/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'lag p99 ms':>10} "
              f"{'dropped':>7}  kept the schedule")
        for processes in (int(x) for x in args.processes.split(",")):
            for rate in (float(x) for x in args.rates.split(",")):
                cmd = [VERSO, "bench", "mlp", "images=[[0.5, 0.5]]", "--target", f"127.0.0.1:{port}",
                       "--rate", str(rate), "-d", f"{args.duration}s", "--processes", str(processes),
                       "--json", "--no-progress"]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 10 + 60)
                if out.returncode != 0:
                    print(f"{processes:9d} {rate:9.0f}  failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                d = json.loads(out.stdout)
                lat, lag = d["latency_ms"]["all"], d["tool"]["lag_p99_ms"]
                kept = d["ok_per_s"] >= 0.99 * rate and lag is not None and lag <= 10
                print(f"{processes:9d} {rate:9.0f} {d['ok_per_s']:10.0f} {lat['p50']:8.2f} {lat['p99']:8.2f} "
                      f"{lag:10.2f} {d['dropped_by_tool']:7d}  {'yes' if kept else 'no'}")
    finally:
        echo.terminate()
        echo.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
