"""Memory across version swaps: load a new version, unload the old one, 50 times.

In-process, with Verso's own Manager and SavedModel loader (the code path the server
uses), on the MLP of predict_bench.py. Reports resident memory (VmRSS) after the first
load and after every 10 swaps, and the time of each swap (new version AVAILABLE and old
one unloaded). No collection is forced here: what is measured is what the server's own
unload path releases. Usage: python benchmarks/memory_bench.py [--swaps 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.predict_bench import build_mlp  # noqa: E402
from server.lifecycle.manager import Manager  # noqa: E402
from server.lifecycle.policy import State  # noqa: E402
from server.servables.loader import load_servable  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def run(swaps: int, dirs: list[str]) -> None:
    with ThreadPoolExecutor(1) as load, ThreadPoolExecutor(1) as unload:
        m = Manager(lambda n, v, p: load_servable(p), load_executor=load, unload_executor=unload)
        m.set_aspired_versions("m", {1: dirs[1]})
        await m.run_until_idle()
        base = rss_mib()
        print(f"after first load: {base:.1f} MiB")
        times, marks = [], []
        for k in range(2, swaps + 2):
            t0 = time.perf_counter()
            m.set_aspired_versions("m", {k: dirs[k % 2]})
            await m.run_until_idle()
            times.append(time.perf_counter() - t0)
            assert {s.version: s.state for s in m.status("m")}[k] == State.AVAILABLE
            if (k - 1) % 10 == 0:
                marks.append((k - 1, rss_mib()))
                print(f"after {k - 1:3d} swaps: {marks[-1][1]:.1f} MiB")
        end = marks[-1][1]
        print(f"\n{swaps} swaps: RSS {base:.1f} -> {end:.1f} MiB ({(end - base) / base * 100:+.1f} %), "
              f"growth per swap {(end - base) / swaps * 1024:.0f} KiB")
        print(f"swap time: median {statistics.median(times) * 1e3:.0f} ms, max {max(times) * 1e3:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--swaps", type=int, default=50)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verso-mem-")
    dirs = [os.path.join(tmp, "a"), os.path.join(tmp, "b")]
    for d in dirs:
        build_mlp(d)
    asyncio.run(run(args.swaps, dirs))


if __name__ == "__main__":
    main()
