"""``verso bench`` against the real server, as a user runs it: a version swapped in and one
removed during an open-loop run, a worker killed under ``--num_workers 2``, the limit search.
127.0.0.1 only; every run is bounded by its schedule or budget."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.e2e.conftest import script
from tests.server_proc import wait_until

READY = "Running gRPC ModelServer at"


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([script("verso"), "bench", *args, "--no-progress"], capture_output=True, text=True,
                          timeout=timeout)


def test_a_swap_and_a_remove_during_an_open_loop_fail_no_call(server_factory, repo, built_models, tmp_path):
    repo.put("hp", 1, "hp1")
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}")
    out, plot = tmp_path / "run.json", tmp_path / "run.png"
    r = _bench("hp", "--target", f"127.0.0.1:{srv.port}", "--rate", "40", "-d", "20s",
               "--fault", f"5s:swap:{built_models['hp2']}", "--fault", "12s:remove:1",
               "--model-base-path", repo.path("hp"), "--threshold", "errors<=0", "--threshold", "p99<2s",
               "--json", str(out), "--plot", str(plot))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert (doc["requests"], doc["ok"], doc["failed"], doc["dropped_by_tool"]) == (800, 800, 0, 0)
    assert set(doc["versions"]) == {"1", "2"} and doc["versions"]["1"] > 0 and doc["versions"]["2"] > 0
    swap, remove = doc["faults"]
    assert swap["error"] is None and swap["result"] == f"version 2 added from {built_models['hp2']}"
    assert remove["error"] is None and remove["result"] == "version 1 removed"
    assert sorted(os.listdir(repo.path("hp"))) == ["2"]
    # Version 1 alone before the swap; version 2 alone once version 1 is gone.
    assert set().union(*(s["versions"] for s in doc["series"][:5])) == {"1"}
    assert set().union(*(s["versions"] for s in doc["series"][12:])) == {"2"}
    assert swap["after"]["errors"] == 0 and "2" in swap["after"]["versions"]
    assert "fault swap:" in r.stdout and "threshold errors<=0: ok" in r.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_killed_worker_shows_around_its_fault(server_factory, repo, tmp_path):
    repo.put("hp", 1, "hp1")
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--num_workers=2")
    wait_until(lambda: sum(1 for x in srv.output().splitlines() if x.startswith(READY)) == 2, timeout=120)
    out = tmp_path / "run.json"
    r = _bench("hp", "--target", f"127.0.0.1:{srv.port}", "--rate", "50", "-d", "7s",
               "--fault", "2s:kill-worker", "--server-pid", str(srv.proc.pid), "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    kill = doc["faults"][0]
    assert kill["error"] is None and kill["result"].startswith("worker ") and "killed (SIGKILL)" in kill["result"]
    victim = int(kill["result"].split()[1])
    assert not os.path.exists(f"/proc/{victim}") or open(f"/proc/{victim}/stat").read().split()[2] == "Z"
    # Every call is accounted for, on either side of the kill; none failed before it; the
    # last seconds are answered (the client reconnected to a live worker).
    assert doc["ok"] + doc["failed"] == 350 and doc["dropped_by_tool"] == 0
    assert kill["before"]["errors"] == 0 and kill["before"]["ok"] == 100
    assert kill["after"]["ok"] + kill["after"]["errors"] == 250
    assert [s["ok"] for s in doc["series"][-2:]] == [50, 50]
    assert f"fault kill-worker at 2s: {kill['result']}" in r.stdout
    assert f"5 s after: {kill['after']['ok']} ok, {kill['after']['errors']} errors" in r.stdout


def test_the_limit_search_on_the_real_server_prints_a_knee_within_its_budget(bundled, tmp_path):
    out, plot = tmp_path / "limit.json", tmp_path / "limit.png"
    t0 = time.monotonic()
    r = _bench("half_plus_two", "--target", f"127.0.0.1:{bundled.port}", "--find-limit", "--slo-p99", "100ms",
               "--start-rate", "50", "--probe-duration", "1s", "--budget", "6s", "--json", str(out),
               "--plot", str(plot))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    lim = doc["limit"]
    assert lim["knee"] is not None and lim["knee"] >= 50 and lim["stopped_by"] in ("precision", "budget", "max_rate")
    assert len(lim["probes"]) >= 3 and (lim["probes"][0]["rate"], lim["probes"][0]["ok"]) == (50.0, True)
    assert all(p["ok"] == (p["p99_ms"] is not None and p["p99_ms"] <= 100 and p["error_rate"] <= 0.001)
               for p in lim["probes"])
    # The budget bounds the probes started; the last probe and its drain may run past it.
    assert took < 6 + 15
    knee_line = next(x for x in r.stdout.splitlines() if x.startswith("knee: "))
    assert f"{lim['knee']:.1f} req/s" in knee_line
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
