"""Old evidence never judges a new build (issue 27, friction 3), against a real in-process
server: a rollout of digits v1 -> v2 gathers calls, feedback and drifting inputs; v2 is
deleted and re-created from another model; its evidence, drift and costs start from nothing, the
verdict is HOLD (more data), not the old build's PROMOTE, and feedback for the old build's
answers is refused."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, VersoError
from server.lifecycle.manager import load_identity
from tests.server_proc import InProcessServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "model_repository" / "digits"
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"
INVERTED = ROOT / "model_repository" / "digits_inverted.npz"
GATES = {"min_samples": 30, "max_p99_ratio": 50, "max_error_rate_increase": 0.5, "warmup_calls": -1}


@pytest.fixture
def server(tmp_path):
    for v in (1, 2):
        shutil.copytree(DIGITS / str(v), tmp_path / "digits" / str(v))
    (tmp_path / "models.config").write_text(f"""model_config_list {{
  config {{ name: "digits" base_path: "{tmp_path}/digits" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
}}
""")
    srv = InProcessServer([f"--model_config_file={tmp_path}/models.config", "--file_system_poll_wait_seconds=1",
                           "--version_settle_seconds=0.2"])
    srv.repo = tmp_path / "digits"
    srv.start()
    yield srv
    srv.stop()


def _v2(c: Client):
    status = c.rollout("digits")
    return next(v for v in status.versions if v.version == 2), status.verdict


def test_a_re_created_version_starts_from_nothing(server):
    data = np.load(HOLDOUT)
    with Client(f"127.0.0.1:{server.port}") as c:
        c.set_rollout("digits", stable=1, canary=2, canary_percent=50, gates=GATES)
        answers = []
        for i in range(160):
            p = c.predict("digits", {"images": data["images"][i:i + 1]}, details=True)
            answers.append((p.request_id, p.version, int(data["labels"][i])))
        old_v2 = [a for a in answers if a[1] == 2]
        assert len(old_v2) >= 40
        kept = old_v2[-1]  # an answer of the old v2 keeps its feedback for later
        for rid, _, label in answers:
            if rid != kept[0]:
                c.feedback(rid, [label])
        v2, verdict = _v2(c)
        assert v2.requests >= 40 and v2.feedback >= 35 and v2.load_id == load_identity(str(server.repo / "2"))
        assert v2.cost.predictions >= 40
        assert verdict.decision == "PROMOTE", list(verdict.reasons)  # v2 (98 %) is better than v1 (87 %)
        first_since = v2.evidence_since_unix_time
        assert 0 < first_since <= time.time()
        # v2's inputs drift: inverted images, sent to it by explicit version.
        inverted = np.load(INVERTED)["images"]
        for i in range(0, 200, 10):
            c.predict("digits", {"images": inverted[i:i + 10]}, version=2)
        wait_until(lambda: _v2(c)[0].drift.drifting, what="v2 drifting")
        assert any("drift" in a for a in c.rollout("digits").alarms)

        # rm -r 2, then a new v2 (another model: v1's files) once the old one has unloaded.
        shutil.rmtree(server.repo / "2")
        wait_until(lambda: not _v2(c)[0].available, what="v2 unloaded")
        recreated = time.time()
        shutil.copytree(DIGITS / "1", server.repo / "2")
        new_id = load_identity(str(server.repo / "2"))
        wait_until(lambda: _v2(c)[0].available, what="the new v2 loaded")

        v2, verdict = _v2(c)
        assert (v2.requests, v2.feedback, v2.shadow_compared, v2.accuracy) == (0, 0, 0, -1.0)
        assert v2.load_id == new_id
        assert v2.evidence_since_unix_time >= recreated > first_since
        assert v2.cost.predictions == 0
        assert not v2.drift.drifting and v2.drift.live_rows == 0
        assert not any("drift" in a for a in c.rollout("digits").alarms)
        assert verdict.decision == "HOLD", list(verdict.reasons)
        assert not any("drift" in r for r in verdict.reasons)
        # The old build's answers: their feedback is refused and counted nowhere.
        rid, _, label = kept
        e = pytest.raises(VersoError, c.feedback, rid, [label]).value
        assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "earlier build" in e.message
        assert _v2(c)[0].feedback == 0
        # The new build's own calls count from here.
        p = c.predict("digits", {"images": data["images"][:1]}, version=2, details=True)
        assert c.feedback(p.request_id, [int(data["labels"][0])]).rows == 1
        v2, _ = _v2(c)
        assert (v2.requests, v2.feedback, v2.load_id) == (1, 1, new_id)
