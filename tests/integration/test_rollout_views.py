"""The rollout views against the real server in process (issue 27, frictions 6 and 7): a rollout
promoted by automatic mode is said to be promoted (`verdict`, `compare`), the next rollout's
status shows its own decisions only (`--all-decisions` for the earlier ones), a final ROLLBACK
keeps its checks table in `verdict`, `compare` and the HTML report, the views say when the next
analysis runs and what it does, and `verso bench --feedback` counts refused feedback apart from
the Predict calls."""

from __future__ import annotations

import html.parser
import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import digits_server, run_verso

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"
LENIENT = ("--min-samples", "5", "--max-p99-ratio", "100", "--max-error-rate-increase", "0.2", "--warmup-calls", "-1")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-views")
    with digits_server(root, f"--rollout_state_file={root / 'rollouts.sqlite'}") as srv:
        yield srv


def _verso(server, *args, columns: int = 200):
    r = run_verso(*args, env={"VERSO_TARGET": f"127.0.0.1:{server.port}", "COLUMNS": str(columns)})
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def _status(server) -> dict:
    return json.loads(_verso(server, "rollout", "status", "digits", "--json"))


def _wait(server, what, done, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = _status(server)
        if done(doc):
            return doc
        assert time.monotonic() < deadline, (what, doc["verdict"], doc["decisions"])
        time.sleep(0.2)


def _bench_feedback(server, n: int = 54):
    out = _verso(server, "bench", "digits", "--dataset", str(HOLDOUT), "--feedback", "--rows", "10", "-n", str(n),
                 "-c", "2", "--no-progress", "--json")
    return json.loads(out)


def test_promotion_then_a_final_rollback_as_the_views_show_them(server, tmp_path):
    # 1. v2 (98 %) against v1 (87 %): automatic mode promotes it in two steps.
    _verso(server, "rollout", "set", "digits", "--stable", "1", "--canary", "2", "--percent", "50", "--auto",
           "--steps", "50,100", "--interval", "0.5", *LENIENT)
    status = _status(server)
    v = status["verdict"]
    assert v["failure_threshold"] == 3 and 0 <= v["next_analysis_in_seconds"] <= 0.5
    assert v["next_analysis_unix_time"] > 0
    assert v["next_step"].startswith("canary 100 % if the analysis passes; HOLD at 50 % (failed analyses 1 of 3)")
    out = _verso(server, "rollout", "verdict", "digits")
    assert out.splitlines()[0] == "HOLD" and "next analysis at " in out and "canary 100 % if the analysis passes" in out
    assert "failed analyses: 0 of 3" in out
    assert _bench_feedback(server)["feedback"]["accepted"] == 54
    _wait(server, "the promotion", lambda d: d["config"]["stable"] == "2" and d["config"]["canary"] == "0")

    out = _verso(server, "rollout", "verdict", "digits")
    assert out.splitlines()[0] == "PROMOTED", out  # not HOLD
    assert "v2 was promoted: it is the stable version (was v1), automatic at " in out
    doc = json.loads(_verso(server, "rollout", "verdict", "digits", "--json"))
    assert (doc["promoted"]["version"], doc["promoted"]["from"], doc["promoted"]["by"]) == (2, 1, "automatic")
    lines = _verso(server, "compare", "digits").splitlines()
    assert lines[0] == "rollout of digits: stable v2 (promoted from v1), no canary, automatic"
    assert "verdict: PROMOTED" in lines
    assert not any(" vs stable" in line and line.startswith("v2") for line in lines)

    # 2. v1 as the canary of v2 now: a worse model, rolled back at its first failed analysis.
    _verso(server, "rollout", "set", "digits", "--stable", "2", "--canary", "1", "--percent", "50", "--auto",
           "--interval", "0.5", "--failure-threshold", "1", *LENIENT)
    _bench_feedback(server)
    doc = _wait(server, "the final ROLLBACK", lambda d: d["verdict"]["final"])
    v = doc["verdict"]
    checks = {c["name"]: c for c in v["checks"]}
    assert checks["accuracy"]["result"] == "FAIL", v  # the final verdict keeps its checks
    assert v["checks_note"].startswith("the final ROLLBACK's checks")
    assert v["next_analysis_in_seconds"] == -1 and v["next_step"].startswith("nothing moves: the final ROLLBACK stands")
    earlier = [d for d in doc["decisions"] if d["earlier_rollout"]]
    mine = [d for d in doc["decisions"] if not d["earlier_rollout"]]
    assert any(d["text"].startswith("PROMOTE: v2 is now stable (was v1)") for d in earlier)
    assert mine[0]["text"].startswith("stable v2, canary v1 at 50 %") and mine[-1]["text"].startswith("ROLLBACK")
    assert doc["rollout_started_unix_time"] == mine[0]["unix_time"]

    out = _verso(server, "rollout", "verdict", "digits")
    assert out.splitlines()[0] == "ROLLBACK"
    assert any(line.startswith("│ accuracy") and "FAIL" in line for line in out.splitlines()), out  # a table row
    out = _verso(server, "rollout", "status", "digits")
    assert "PROMOTE: v2 is now stable" not in out and "ROLLBACK: canary v1 50 % -> 0 %" in out
    assert "decisions of earlier rollouts not shown: --all-decisions shows them" in out
    out = _verso(server, "rollout", "status", "digits", "--all-decisions")
    assert "PROMOTE: v2 is now stable (was v1)" in out and "[earlier rollout]" in out

    # 3. the HTML report of the final ROLLBACK carries the checks (the page renders them: test_dashboard)
    _verso(server, "compare", "digits", "--html", str(tmp_path / "report.html"), "--plot", str(tmp_path / "r.png"))
    embedded = []

    class Scripts(html.parser.HTMLParser):
        def handle_data(self, data):
            if data.startswith("window.VERSO_DATA = "):
                embedded.append(json.loads(data[len("window.VERSO_DATA = "):].rstrip().rstrip(";")))

    Scripts().feed((tmp_path / "report.html").read_text())
    (report,) = embedded
    verdict = report["rollouts"][0]["verdict"]
    assert verdict["final"] and any(c["name"] == "accuracy" and c["result"] == "FAIL" for c in verdict["checks"])
    versions = report["rollouts"][0]["versions"]
    assert any(99.9 in v["latency_quantile_levels"] for v in versions)  # the distribution to p99.9
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("columns", [80, 200])
def test_compare_fits_the_terminal(server, columns):
    lines = _verso(server, "compare", "digits", columns=columns).splitlines()
    assert max(len(line) for line in lines) <= columns
    wide = _verso(server, "compare", "digits", "--wide", columns=columns).splitlines()
    header = next(line for line in wide if line.startswith("┃ version"))
    for name in ("errors", "p99 ms", "accuracy", "req/s", "CPU s/1k", "age"):
        assert name in header


def test_bench_counts_refused_feedback_apart_from_its_predictions(server, tmp_path):
    from server.rollout.quality import MAX_LABEL_CHARS
    data = np.load(HOLDOUT)
    labels = np.array([str(x) for x in data["labels"][:10]] + ["7" * (MAX_LABEL_CHARS + 1)] * 10)
    np.savez(tmp_path / "refused.npz", images=data["images"][:20], labels=labels)
    _verso(server, "rollout", "set", "digits", "--stable", "1", "--canary", "2", "--percent", "50", *LENIENT)
    out = _verso(server, "bench", "digits", "--dataset", str(tmp_path / "refused.npz"), "--feedback", "--rows", "10",
                 "-n", "20", "-c", "2", "--no-progress", "--json")
    report = json.loads(out)
    # Every Predict succeeded: a refused feedback is not a Predict error.
    assert (report["requests"], report["ok"], report["failed"], report["errors"]) == (20, 20, 0, {})
    fb = report["feedback"]
    assert (fb["sent"], fb["accepted"], fb["refused"]) == (20, 10, {"INVALID_ARGUMENT": 10})
    assert "characters" in fb["refused_examples"]["INVALID_ARGUMENT"] and report["feedback_sent"] == 20
    text = _verso(server, "bench", "digits", "--dataset", str(tmp_path / "refused.npz"), "--feedback", "--rows", "10",
                  "-n", "20", "-c", "2", "--no-progress")
    assert "feedback refused" in text and "INVALID_ARGUMENT 10" in text
    assert "feedback refused, INVALID_ARGUMENT: Feedback label 0 has" in text
