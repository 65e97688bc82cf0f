"""The rollout views of the command line that need no server (issue 27, friction 6): tables that
fit the terminal (columns dropped by priority, ``--wide`` for all), this rollout's decisions
apart from earlier ones, "promoted" said as such, the checks table on a final ROLLBACK; and
``verso bench --feedback``'s counting (friction 7) on the stress loops."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from client import cli, stress, stress_view, table_fit
from client.errors import VersoError
from protos import rollout_pb2


def _status() -> rollout_pb2.RolloutStatus:
    st = rollout_pb2.RolloutStatus()
    st.config.model, st.config.stable, st.config.canary, st.config.canary_percent = "digits", 1, 2, 10
    st.config.auto.enabled = True
    for n, role, share in ((1, "stable", 90), (2, "canary", 10), (3, "not in rollout", 0)):
        v = st.versions.add(version=n, role=role, traffic_percent=share, requests=1234, accuracy=0.87, feedback=270,
                            p50_ms=1.2, p99_ms=5.7, top1_agreement=0.97, shadow_compared=400, age_seconds=3600,
                            max_abs_diff=0.25, requests_per_second=12.5)
        v.errors["INTERNAL"] = 3
        v.caller_errors["INVALID_ARGUMENT"] = 7
        v.loss.log_loss, v.loss.rows = 0.31, 270
        v.cost.cpu_seconds_per_1000, v.cost.money_per_1000, v.cost.currency = 0.12, 0.0001, "USD"
        v.drift.has_reference = True
        v.drift.worst.add(feature="images[13]", psi=0.41)
        v.drift.worst.add(feature="images[14]", psi=0.33)
    v = st.verdict
    v.decision, v.failed_analyses, v.failure_threshold = "HOLD", 1, 3
    v.next_analysis_unix_time, v.next_analysis_in_seconds = 1.7e9, 12
    v.next_step = "canary 25 % if the analysis passes; HOLD at 10 % (failed analyses 2 of 3) if it fails"
    v.checks.add(name="errors", result="PASS", statistic=0.001, low=-0.002, high=0.004, limit=0.005,
                 canary_samples=1234, stable_samples=1234)
    v.checks.add(name="latency", result="FAIL", statistic=5.7, low=3.1, high=7.7, limit=1.2,
                 canary_samples=1200, stable_samples=1200)
    v.checks.add(name="accuracy", result="INCONCLUSIVE", statistic=0.004, low=-0.01, high=0.02, limit=0.01,
                 canary_samples=270, stable_samples=270, forecast="about 700 more canary feedback rows")
    return st


def _printed(capsys, fn, *args, columns: int, monkeypatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    fn(*args)
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("columns", [80, 200])
def test_the_compare_tables_fit_the_terminal(capsys, monkeypatch, columns):
    lines = _printed(capsys, cli._show_compare, _status(), False, columns=columns, monkeypatch=monkeypatch)
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)
    header = next(line for line in lines if line.startswith("┃ version"))
    for kept in ("version", "role", "traffic", "calls", "accuracy"):  # the most important always shown
        assert kept in header
    at = next(i for i, line in enumerate(lines) if line.startswith("(not shown at this width"))
    note = " ".join(lines[at:at + 3]).split(")")[0]
    assert "--wide shows every column" in note
    dropped = note.split(": ", 1)[1].split("; ")[0].split(", ")
    cells = [c.strip() for c in header.strip("┃").split("┃")]
    assert not set(dropped) & set(cells)  # what is named as left out is not shown
    if columns == 80:
        assert "drift" in dropped and "max diff" in dropped and "p99 ms" in cells
    assert any(line.startswith("┃ check") for line in lines)  # the checks table
    assert "verdict: HOLD" in lines
    assert "failed analyses: 1 of 3 (ROLLBACK at 3 in a row)" in lines
    assert any(line.startswith("next analysis at ") and "(in 12 s): canary 25 % if the analysis passes" in line
               for line in lines)
    assert "accuracy needs: about 700 more canary feedback rows" in lines


def test_wide_shows_every_column(capsys, monkeypatch):
    lines = _printed(capsys, cli._show_compare, _status(), False, True, columns=80, monkeypatch=monkeypatch)
    header = next(line for line in lines if line.startswith("┃ version"))
    for name in ("version", "drift", "max diff", "cost/1k", "age", "CPU s/1k", "p50 ms", "errors"):
        assert name in header
    assert not any(line.startswith("(not shown") for line in lines)
    assert "…" not in "\n".join(lines)  # nothing cut


def test_columns_go_by_priority_rightmost_first_and_priority_zero_stays():
    cols = [table_fit.Column("a", 0, lambda r: "x" * 10), table_fit.Column("b", 2, lambda r: "y" * 10),
            table_fit.Column("c", 1, lambda r: "z" * 10), table_fit.Column("d", 2, lambda r: "w" * 10)]
    each = 10 + table_fit.CELL_OVERHEAD
    assert table_fit.fit(cols, [0], None) == ([0, 1, 2, 3], [])
    assert table_fit.fit(cols, [0], 4 * each + 1) == ([0, 1, 2, 3], [])
    assert table_fit.fit(cols, [0], 4 * each) == ([0, 1, 2], ["d"])
    assert table_fit.fit(cols, [0], 2 * each + 1) == ([0, 2], ["b", "d"])
    assert table_fit.fit(cols, [0], 5) == ([0], ["b", "c", "d"])  # too narrow even for "a": kept, wrapped
    assert table_fit.required_width(cols, [0]) == 4 * each + 1
    wrapping = table_fit.Column("text", 1, lambda r: "word " * 20, wraps=True)
    assert table_fit.natural_width(wrapping, ["word " * 20]) == table_fit.WRAP_AT


def test_only_this_rollouts_decisions_unless_all_are_asked_for(capsys, monkeypatch):
    st = _status()
    for t, who, text, earlier in ((1.0, "op", "stable v1, canary v4 at 10 % (SetRollout)", True),
                                  (2.0, "automatic", "ROLLBACK: canary v4 10 % -> 0 %", True),
                                  (3.0, "op", "stable v1, canary v2 at 10 % (SetRollout)", False)):
        st.decisions.add(unix_time=t, who=who, text=text, earlier_rollout=earlier)
    st.rollout_started_unix_time = 3.0
    shown, left_out = cli.this_rollouts_decisions(st.decisions)
    assert [d.unix_time for d in shown] == [3.0] and left_out == 2
    shown, left_out = cli.this_rollouts_decisions(st.decisions, all_decisions=True)
    assert len(shown) == 3 and left_out == 0
    out = "\n".join(_printed(capsys, cli._show_status_log, st, columns=200, monkeypatch=monkeypatch))
    assert "canary v2 at 10 %" in out and "canary v4" not in out
    assert "(2 decisions of earlier rollouts not shown: --all-decisions shows them)" in out
    out = "\n".join(_printed(capsys, cli._show_status_log, st, True, columns=200, monkeypatch=monkeypatch))
    assert "ROLLBACK: canary v4 10 % -> 0 %  [earlier rollout]" in out


def test_a_promotion_is_said_as_such_and_its_shadow_evidence_is_not_against_itself(capsys, monkeypatch):
    st = _status()
    st.config.stable, st.config.canary, st.config.canary_percent = 2, 0, 0
    del st.verdict.checks[:]
    st.verdict.decision, st.verdict.next_analysis_in_seconds = "HOLD", -1
    st.verdict.promoted_version, st.verdict.promoted_from, st.verdict.promoted_by = 2, 1, "automatic"
    st.verdict.promoted_unix_time = 1.7e9
    st.verdict.next_step = "nothing moves: v2 was promoted and is the stable version"
    st.versions[1].role = "stable"
    st.versions[1].outputs["y"].max_abs_diff = 0.5
    st.versions[1].outputs["y"].top1_agreement = 0.9
    lines = _printed(capsys, cli._show_compare, st, False, columns=200, monkeypatch=monkeypatch)
    assert lines[0] == "rollout of digits: stable v2 (promoted from v1), no canary, automatic"
    assert "verdict: PROMOTED" in lines and "verdict: HOLD" not in lines
    assert any(line.startswith("v2 was promoted: it is the stable version (was v1), automatic at ") for line in lines)
    assert not any(line.startswith("v2 vs stable") for line in lines)
    assert any(line.startswith("v2 as canary, before its promotion, vs v1, per output:") for line in lines)


def test_a_final_rollback_shows_its_checks_table(capsys, monkeypatch):
    st = _status()
    st.verdict.decision, st.verdict.final = "ROLLBACK", True
    st.verdict.checks_note = "the final ROLLBACK's checks, on the evidence as it stands now"
    lines = _printed(capsys, cli._show_compare, st, False, columns=120, monkeypatch=monkeypatch)
    rows = [line for line in lines if line.startswith("│ latency")]
    assert rows and "FAIL" in rows[0]
    assert "verdict: ROLLBACK (final)" in lines
    assert "checks: the final ROLLBACK's checks, on the evidence as it stands now" in lines


# ---- bench --feedback: counted apart ---------------------------------------------------------------

def test_feedback_is_counted_apart_from_the_predict_calls():
    n = [0]

    async def feedback(i):
        await asyncio.sleep(0.05)  # a slow feedback call: not in the Predict latency
        if i % 2:
            raise VersoError(grpc.StatusCode.INVALID_ARGUMENT, f"label {i} too long")

    async def send():
        n[0] += 1
        i = n[0]
        return stress.Answered(3, lambda: feedback(i))

    rec = asyncio.run(stress.closed_loop(send, concurrency=2, requests=10))
    report = stress.summarize(rec, mode="closed", target="t", model="m", rows=1, concurrency=2)
    assert (report["requests"], report["ok"], report["failed"], report["errors"]) == (10, 10, 0, {})
    assert report["versions"] == {"3": 10}
    assert report["latency_ms"]["all"]["max"] < 40, report["latency_ms"]  # the 50 ms feedback is not in it
    assert report["feedback"] == {"sent": 10, "accepted": 5, "refused": {"INVALID_ARGUMENT": 5},
                                  "refused_examples": {"INVALID_ARGUMENT": "label 1 too long"}}
    rows = dict(stress_view.summary_lines(report))
    assert (rows["errors"], rows["feedback sent"], rows["feedback accepted"], rows["feedback refused"]) == (
        "0", "10", "5", "INVALID_ARGUMENT 5")
    # several client processes: the counts add up
    merged = stress.Recorder.from_dict(rec.to_dict())
    merged.merge(stress.Recorder.from_dict(rec.to_dict()))
    assert merged.feedback_summary()["refused"] == {"INVALID_ARGUMENT": 10} and merged.feedback_sent == 20


def test_an_open_loop_keeps_its_schedule_while_feedback_is_slow():
    async def send():
        return stress.Answered(1, lambda: asyncio.sleep(0.3))

    start = time.perf_counter()
    rec = asyncio.run(stress.open_loop(send, stress.Schedule.constant(50, 0.4)))
    assert rec.count == 20 and rec.feedback_accepted == 20
    assert rec.all.get_max_value() / 1e3 < 100  # ms: the 300 ms of feedback are not latency
    assert time.perf_counter() - start < 2
