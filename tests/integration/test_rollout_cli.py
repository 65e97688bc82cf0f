"""The rollout commands of the `verso` command line, run in process against the real server in
process: set a rollout, bench with feedback from a dataset, compare (with a plot), the
verdict, and the commands' one-line errors. The rollout logic itself: test_rollout.py; the
README's demo, as written with real processes: tests/e2e/test_rollout_demo.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import digits_server, first_table, run_verso

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-cli")
    with digits_server(root) as srv:
        yield srv


def _verso(server, *args):
    return run_verso(*args, env={"VERSO_TARGET": f"127.0.0.1:{server.port}"})


def test_the_rollout_commands(server, tmp_path):
    r = _verso(server, "rollout", "set", "digits", "--stable", "1", "--canary", "2", "--percent", "50",
               "--min-samples", "5", "--max-p99-ratio", "100", "--max-error-rate-increase", "0.2",
               "--warmup-calls", "-1", "--json")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)["config"]
    assert (cfg["stable"], cfg["canary"], cfg["canary_percent"], cfg["gates"]["min_samples"]) == ("1", "2", 50.0, "5")
    # The whole held-out set once, 10 rows a call: ~270 rows a side, so v1's 87 % and v2's 98 %
    # cannot swap places by chance (a 60-row sample once gave v1 21 of 21).
    r = _verso(server, "bench", "digits", "--dataset", str(HOLDOUT), "--feedback", "--rows", "10", "-n", "54",
               "-c", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["feedback_sent"] == 54  # every answer carried a request id
    r = _verso(server, "compare", "digits", "--plot", str(tmp_path / "rollout.png"), "--html",
               str(tmp_path / "rollout.html"))
    assert r.returncode == 0, r.stderr
    # The report is the dashboard page with the status embedded: it parses, and holds this rollout.
    import html.parser
    embedded = []

    class Scripts(html.parser.HTMLParser):
        def handle_data(self, data):
            if data.startswith("window.VERSO_DATA = "):
                embedded.append(json.loads(data[len("window.VERSO_DATA = "):].rstrip().rstrip(";")))

    Scripts().feed((tmp_path / "rollout.html").read_text())
    (doc,) = embedded
    assert doc["rollouts"][0]["config"]["model"] == "digits" and doc["models"][0]["name"] == "digits"
    assert sum(int(v["requests"]) for v in doc["rollouts"][0]["versions"]) == 54
    lines = r.stdout.splitlines()
    assert lines[0] == "rollout of digits: stable v1, canary v2 at 50 %"
    rows = first_table(r.stdout)
    assert (rows["1"]["role"], rows["1"]["traffic"]) == ("stable", "50 %")
    assert (rows["2"]["role"], rows["2"]["traffic"]) == ("canary", "50 %")
    assert int(rows["1"]["calls"]) + int(rows["2"]["calls"]) == 54
    feedback_rows = [int(rows[v]["accuracy"].rsplit("(", 1)[1].rstrip(")")) for v in ("1", "2")]  # "87.0 % (270)"
    assert sum(feedback_rows) == 540
    assert (tmp_path / "rollout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _verso(server, "rollout", "verdict", "digits")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "PROMOTE", r.stdout  # v2 is the more accurate
    doc = json.loads(_verso(server, "rollout", "verdict", "digits", "--json").stdout)
    assert (doc["decision"], doc["final"], [c["name"] for c in doc["checks"]]) == (
        "PROMOTE", False, ["errors", "latency", "accuracy"])
    accuracy = doc["checks"][2]
    assert accuracy["result"] == "PASS" and accuracy["high"] <= accuracy["limit"] and accuracy["canary_samples"] > 0
    log = _verso(server, "rollout", "status", "digits").stdout
    assert "gRPC ipv4:127.0.0.1:" in log and ": stable v1, canary v2 at 50 % (SetRollout)" in log  # who, what
    # When each version's evidence began, and which build it measures (issue 27: evidence belongs to a load).
    assert re.search(r"^v2 evidence since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(build [0-9a-f]{16}\)$", log, re.M), log
    r = _verso(server, "feedback", "no-such-id", "3")
    assert r.returncode == 1 and r.stderr == "verso: error: NOT_FOUND: Unknown or expired request id: no-such-id\n"
    r = _verso(server, "rollout", "status", "nope")
    assert r.returncode == 1 and r.stderr == "verso: error: NOT_FOUND: No rollout configured for model nope\n"


def test_bench_sends_the_datasets_slices_and_the_bias_gate_reads_them(server, tmp_path):
    import numpy as np
    data = np.load(HOLDOUT)
    n = 200
    np.savez(tmp_path / "sliced.npz", images=data["images"][:n], labels=data["labels"][:n],
             slices=np.array(["mobile", "web"] * (n // 2)))
    r = _verso(server, "rollout", "set", "digits", "--stable", "1", "--canary", "2", "--percent", "50",
               "--window", "3000", "--min-samples", "5", "--max-class-drop", "0.05", "--min-class-samples", "10",
               "--json")
    assert r.returncode == 0, r.stderr
    r = _verso(server, "bench", "digits", "--dataset", str(tmp_path / "sliced.npz"), "--feedback", "--rows", "10",
               "-n", "20", "-c", "2", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["feedback_sent"] == 20, r.stderr
    doc = json.loads(_verso(server, "rollout", "status", "digits", "--json").stdout)
    slices = {}
    for v in doc["versions"]:
        for s in v["slices"]:
            slices[s["slice"]] = slices.get(s["slice"], 0) + int(s["rows"])
    assert slices == {"mobile": 100, "web": 100}  # each request carried its rows' slice key
    bias = next(c for c in doc["verdict"]["checks"] if c["name"] == "bias")
    assert bias["subject"].startswith(("class ", "slice ")), bias  # v2 is better everywhere: no FAIL to name
    assert bias["result"] != "FAIL"
