"""Do rollout verdicts hold up? The README demo's scenarios, N times each, from scratch.

Each run starts a fresh server (its own copy of the bundled digits versions, its own state
file), sets the demo's automatic rollout and sends the held-out digits with feedback
(`verso bench --dataset ... --feedback`), until the rollout decides or ``--timeout`` passes:

- good:      stable v1 (87 %), canary v2 (98 %)      -> should be PROMOTED
- broken:    stable v2, canary v3 that always says 0 -> should be ROLLED BACK
- identical: stable v2, canary v3 = a copy of v2     -> should be PROMOTED

Prints, per scenario, how many runs promoted, rolled back or did not decide, and the time to
each decision. 127.0.0.1 only; every process it starts is stopped at the end of its run.

Usage: python benchmarks/rollout_trial.py [--runs 20] [--scenarios good,broken,identical] [--timeout 90]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from client import Client  # noqa: E402
from tests.server_proc import ServerProcess  # noqa: E402

DIGITS = os.path.join(ROOT, "model_repository", "digits")
HOLDOUT = os.path.join(ROOT, "model_repository", "digits_holdout.npz")
# The README demo's rollout (verso rollout set ... --percent 10 --auto --interval 2 --min-samples 50
# --max-p99-ratio 2 --max-error-rate-increase 0.02).
DEMO = dict(canary_percent=10, auto={"enabled": True, "interval_seconds": 2},
            gates={"min_samples": 50, "max_p99_ratio": 2, "max_error_rate_increase": 0.02})
SCENARIOS = {"good": (1, 2, "PROMOTE"), "broken": (2, 3, "ROLLBACK"), "identical": (2, 3, "PROMOTE")}


def _repo(root: str, scenario: str) -> str:
    base = os.path.join(root, "digits")
    for v in (1, 2):
        shutil.copytree(os.path.join(DIGITS, str(v)), os.path.join(base, str(v)))
    if scenario == "broken":
        subprocess.run([sys.executable, os.path.join(ROOT, "model_repository", "broken_digits.py"),
                        os.path.join(base, "3")], check=True, capture_output=True)
    elif scenario == "identical":
        shutil.copytree(os.path.join(DIGITS, "2"), os.path.join(base, "3"))
    config = os.path.join(root, "models.config")
    with open(config, "w") as f:
        f.write(f'model_config_list {{ config {{ name: "digits" base_path: "{base}" model_platform: "tensorflow" '
                'model_version_policy { all {} } } }\n')
    return config


def one_run(scenario: str, timeout_s: float) -> tuple[str, float]:
    """(PROMOTE, ROLLBACK or NONE, seconds from the rollout's start to the decision)."""
    stable, canary, _ = SCENARIOS[scenario]
    root = tempfile.mkdtemp(prefix=f"verso-trial-{scenario}-")
    server = ServerProcess([f"--model_config_file={_repo(root, scenario)}",
                            f"--rollout_state_file={os.path.join(root, 'state.sqlite')}"])
    bench = None
    try:
        server.start()
        with Client(f"127.0.0.1:{server.port}") as c:
            c.set_rollout("digits", stable=stable, canary=canary, **DEMO)
            t0 = time.monotonic()
            bench = subprocess.Popen(
                [sys.executable, "-c", "import sys; from client.cli import verso_main; sys.exit(verso_main())",
                 "bench", "digits", "--dataset", HOLDOUT, "--feedback", "--duration", str(timeout_s),
                 "--concurrency", "4", "--no-progress", "--target", f"127.0.0.1:{server.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
            while time.monotonic() - t0 < timeout_s:
                cfg = c.rollout("digits")
                if cfg.config.stable == canary:
                    return "PROMOTE", time.monotonic() - t0
                if cfg.verdict.final:
                    return "ROLLBACK", time.monotonic() - t0
                time.sleep(0.25)
            return "NONE", timeout_s
    finally:
        if bench is not None:
            bench.kill()
            bench.wait()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--scenarios", default="good,broken,identical")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds a run may take to decide")
    args = ap.parse_args()
    print(f"{args.runs} runs per scenario, the README demo's rollout, decisions within {args.timeout:g} s")
    print(f"{'scenario':<10} {'expected':<9} {'PROMOTE':>8} {'ROLLBACK':>9} {'none':>5}  time to decision (s)")
    for scenario in [s for s in args.scenarios.split(",") if s]:
        outcomes: dict[str, list[float]] = {"PROMOTE": [], "ROLLBACK": [], "NONE": []}
        for _ in range(args.runs):
            decision, seconds = one_run(scenario, args.timeout)
            outcomes[decision].append(seconds)
        expected = SCENARIOS[scenario][2]
        times = outcomes[expected]
        spread = (f"median {statistics.median(times):.1f}, max {max(times):.1f}" if times else "-")
        print(f"{scenario:<10} {expected:<9} {len(outcomes['PROMOTE']):>8} {len(outcomes['ROLLBACK']):>9} "
              f"{len(outcomes['NONE']):>5}  {spread}", flush=True)


if __name__ == "__main__":
    main()
