"""One signature call in process: TensorFlow's v2 signature function (what Verso ran before
issue 15) against Verso's SavedModel servable (a session callable, as TF Serving runs it).

Same model as predict_bench.py (the MLP), batch 1 and 32, both measured in this run.

Usage: python benchmarks/session_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.predict_bench import build_mlp  # noqa: E402
from server.servables.loader import load_servable  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(3):  # best of 3 rounds: the least disturbed by the other core's work
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="verso-session-bench-"), "1")
    build_mlp(path)
    eager = tf.saved_model.load(path).signatures["serving_default"]
    servable = load_servable(path, warmup=False)
    print(f"{'batch':>5} {'v2 signature function us':>26} {'session callable us':>20} {'ratio':>6}")
    for rows in (1, 32):
        x = np.random.default_rng(0).random((rows, 784), dtype=np.float32)
        a = per_call_us(lambda: eager(images=x)["scores"].numpy(), args.calls)
        b = per_call_us(lambda: servable.run("serving_default", {"images": x}, ["scores"]), args.calls)
        print(f"{rows:5d} {a:26.1f} {b:20.1f} {a / b:6.2f}")
    servable.unload()


if __name__ == "__main__":
    main()
