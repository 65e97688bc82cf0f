"""The README's bias-and-drift demo runs as written, as the rollout demo's test runs it (`verso
serve` with the Quickstart's defaults in a loopback host, the lines from ``localhost``):
a biased v4 passes the overall accuracy gate and, with the bias gate switched off, is promoted
with class 7's drop named; with the bias gate set it is rolled back for good naming class 7;
inverted images make v2 drift; every version's cost is measured."""

from __future__ import annotations

import json

from tests.e2e.test_rollout_demo import demo_lines
from tests.helpers import first_table
from tests.readme_text import readme_machine, user_env


def test_readme_bias_and_drift_demo(tmp_path):
    with readme_machine(tmp_path) as m:
        m.serve("verso serve")
        env = user_env(COLUMNS="250")
        lines = demo_lines("Demo: a biased version, and drifting inputs")
        assert len(lines) == 10, lines
        outputs = []
        for line in lines[:-1]:  # the last line removes v4: the cost check below still reads it
            r = m.shell(line, env=env)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
            outputs.append((line, r.stdout))
        verdicts = [out for line, out in outputs if line.startswith("verso rollout verdict")]
        flat = [" ".join(v.split()) for v in verdicts]  # reasons longer than the terminal are wrapped
        assert "accuracy PASS" in flat[0]  # overall accuracy is within 4 points
        first_set = next(line for line in lines if line.startswith("verso rollout set"))
        assert "--max-class-drop -1" in first_set, first_set  # the bias gate switched off: ...
        assert verdicts[0].splitlines()[0] == "PROMOTE", verdicts[0]  # ... the accuracy gate alone promotes,
        # and the verdict still names the class that lost (issue 27: no bare PROMOTE)
        assert "worst class/slice: class 7 recall" in flat[0] and "the bias gate is off" in flat[0]
        assert verdicts[1].splitlines()[0] == "ROLLBACK", verdicts[1]
        assert "bias FAIL: class 7 drops" in flat[1] and "final" in flat[1], verdicts[1]
        compare = outputs[-1][1]
        assert first_table(compare)["2"]["drift"].startswith("DRIFTING: images["), compare
        assert "alarm: stable v2's inputs drift from its reference sample" in compare, compare
        assert "class 7" in compare  # the per-class table
        status = m.shell("verso rollout status digits --json", env=env)
        doc = json.loads(status.stdout)
        versions = {int(v["version"]): v for v in doc["versions"]}
        for v in (2, 4):
            cost = versions[v]["cost"]
            assert int(cost["predictions"]) > 0 and cost["cpu_seconds_per_1000"] > 0, (v, cost)
            assert int(cost["resident_bytes"]) > 0, (v, cost)
        assert versions[2]["info"]["age_source"] == "verso_model.json trained_at"
        assert versions[2]["drift"]["drifting"] and versions[2]["drift"]["has_reference"]
        rollback = next(d for d in doc["decisions"] if d["text"].startswith("ROLLBACK: canary v4"))
        assert "class 7" in rollback["text"]
        # The classes of v4 against v2: 7's recall is where the loss went.
        recall = {c["label"]: c["recall"] for c in versions[4]["classes"]}
        assert recall["7"] < 0.9 and recall["0"] > 0.95
        r = m.shell(lines[-1], env=env)
        assert r.returncode == 0 and not (m.repo / "digits" / "4").exists()
