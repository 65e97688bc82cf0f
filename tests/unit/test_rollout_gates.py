"""The loss, bias and cost gates and the holds, on constructed evidence; feedback with scores,
targets and slices through the rollout manager; what versions say about themselves."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from protos import rollout_pb2
from protos.errors import Code, ServingError
from server.rollout import facts as facts_mod
from server.rollout.config import gates_of
from server.rollout.evidence import Evidence, FeedbackRow, Window
from server.rollout.facts import VersionFacts, read_facts
from server.rollout.verdict import (FAIL, HOLD, INCONCLUSIVE, PASS, PROMOTE, Gates, check_bias, check_cost,
                                    check_loss, decide)
from tests.unit.test_rollout_manager import CLASSES, Clock, FakeManager, fb, make_rm, mr_of


def window_of(rows) -> Evidence:
    # One instant for every window: the versions' calls are of the same minutes (the latency
    # check compares only those).
    w = Window(100_000, clock=lambda: 0.0)
    for _ in range(1000):
        w.record_call(0.01)
    w.record_feedback(rows)
    return w.summary()


def digits(recall7: float, n7: int = 400, n_other: int = 3600, slice_=None) -> list[FeedbackRow]:
    """Feedback rows: ``n7`` sevens of which ``recall7`` are answered 7 (the rest 1), and
    ``n_other`` rows of classes 0..6 all answered right."""
    right = round(recall7 * n7)
    rows = [FeedbackRow(True, "7", "7", slice_)] * right + [FeedbackRow(False, "7", "1", slice_)] * (n7 - right)
    rows += [FeedbackRow(True, str(i % 7), str(i % 7), slice_) for i in range(n_other)]
    return rows


def test_bias_gate_fails_naming_the_class_the_overall_accuracy_hides():
    stable, canary = window_of(digits(0.98)), window_of(digits(0.83))
    overall = stable.accuracy - canary.accuracy
    assert overall == pytest.approx(0.015)  # 1.5 points overall: within a 3-point accuracy gate
    gates = Gates(min_samples=100, max_accuracy_drop=0.03, max_p99_ratio=2, max_class_drop=0.05)
    c = check_bias(stable, canary, gates)
    assert (c.result, c.subject) == (FAIL, "class 7")
    assert c.statistic == pytest.approx(0.15)
    assert c.low > 0.05 and "class 7 drops" in c.text and "8 classes and slices" in c.text
    v = decide(stable, canary, gates)
    assert [x.result for x in v.checks] == [PASS, PASS, PASS, FAIL]  # errors, latency, accuracy, bias
    assert v.decision == HOLD and v.failed  # the first failed analysis of three
    # Without the bias gate the same evidence is promoted.
    assert decide(stable, canary, dataclasses.replace(gates, max_class_drop=0)).decision == PROMOTE


def test_bias_gate_passes_equal_classes_and_is_inconclusive_without_enough_rows():
    gates = Gates(min_samples=100, max_class_drop=0.05)
    c = check_bias(window_of(digits(0.98)), window_of(digits(0.98)), gates)
    assert c.result == PASS
    few = dataclasses.replace(gates, min_class_samples=10_000)
    c = check_bias(window_of(digits(0.98)), window_of(digits(0.5)), few)
    assert c.result == INCONCLUSIVE and "no class or slice has 10000" in c.text


def test_bias_gate_judges_slices_too():
    stable = window_of(digits(0.98, slice_="mobile"))
    canary = window_of(digits(0.98, n_other=0, slice_="mobile")
                       + [FeedbackRow(False, str(i % 7), "9", "mobile") for i in range(3600)])
    c = check_bias(stable, canary, Gates(max_class_drop=0.05))
    assert c.result == FAIL and c.subject.startswith(("class", "slice"))
    bad_slices = [s for s in canary.slices if s.slice == "mobile"]
    assert bad_slices[0].accuracy < 0.2


def losses(values) -> list[FeedbackRow]:
    return [FeedbackRow(True, "1", "1", None, float(v), 0.0) for v in values]


def test_loss_gate():
    rng = np.random.default_rng(0)
    base = rng.exponential(0.1, 2000)
    gates = Gates(max_loss_increase=0.02)
    c = check_loss(window_of(losses(base)), window_of(losses(base + 0.1)), gates)
    assert c.result == FAIL and c.statistic == pytest.approx(0.1)
    c = check_loss(window_of(losses(base)), window_of(losses(base)), gates)
    assert c.result == PASS and c.statistic == 0.0
    c = check_loss(window_of(losses(base[:10])), window_of(losses(base[:10])), gates)
    assert c.result == INCONCLUSIVE and "need 100 feedback rows" in c.text


def test_cost_gate():
    stable = dataclasses.replace(window_of([]), cost_samples=tuple(np.full(200, 1e-4) * np.linspace(0.9, 1.1, 200)))
    double = dataclasses.replace(stable, cost_samples=tuple(2 * x for x in stable.cost_samples))
    gates = Gates(max_cost_ratio=1.5)
    c = check_cost(stable, double, gates)
    assert c.result == FAIL and c.statistic == pytest.approx(2.0)
    assert check_cost(stable, stable, gates).result == PASS
    assert check_cost(stable, dataclasses.replace(stable, cost_samples=(1e-4,)), gates).result == INCONCLUSIVE


def test_holds_keep_a_passing_canary_from_promotion():
    stable = canary = window_of(digits(0.98))
    gates = Gates(min_samples=100)
    assert decide(stable, canary, gates).decision == PROMOTE
    v = decide(stable, canary, gates, holds=["canary v2 is older than stable v1 (20.0 d against 1.0 d)"])
    assert v.decision == HOLD and v.reasons[-1] == "hold: canary v2 is older than stable v1 (20.0 d against 1.0 d)"


def test_older_canary_is_held_with_the_reason_in_the_manager():
    rm = make_rm(None, mr_of(gates={"min_samples": 1}), ages={("m", 1): 86400.0, ("m", 2): 20 * 86400.0})
    assert rm.holds("m") == ["canary v2 is older than stable v1 (20.0 d against 1.0 d)"]
    assert "hold: canary v2 is older than stable v1" in " ".join(rm.verdict("m").reasons)


def test_feedback_with_scores_gives_loss_and_per_class_rows_with_slices():
    rm = make_rm(None, mr_of())
    out = {"classes": np.array([7, 1]), "scores": np.array([[0.1] * 7 + [0.3, 0.0, 0.0], [0.0, 1.0] + [0.0] * 8],
                                                           np.float32)}
    rid = rm.observe("m", 2, 0.01, "OK", out, slice="mobile")
    r = fb(rm, rid, ["7", "7"])
    assert (r.rows, r.correct) == (2, 1)
    e = rm.evidence("m", 2)
    assert e.log_loss == pytest.approx((-math.log(0.3) - math.log(1e-15)) / 2, rel=1e-5)
    assert [(c.label, c.support, c.recall) for c in e.classes] == [("1", 0, None), ("7", 2, 0.5)]
    assert [(s.slice, s.rows, s.accuracy) for s in e.slices] == [("mobile", 2, 0.5)]
    st = rm.status("m")
    v2 = {v.version: v for v in st.versions}[2]
    assert v2.loss.rows == 2 and v2.loss.log_loss > 0 and v2.loss.mse == -1
    assert [(c.label, c.recall) for c in v2.classes] == [("1", -1.0), ("7", 0.5)]
    assert [(c.label, c.predicted, c.count) for c in v2.confusion] == [("7", "1", 1), ("7", "7", 1)]


def test_feedback_targets_for_a_regressor_and_bad_targets():
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", {"y": np.array([[2.5], [3.0]], np.float32)})
    for targets, message in (([1.0], "Feedback has 1 targets for an answer of 2 rows"),
                             ([1.0, float("nan")], "Feedback targets must be finite numbers")):
        with pytest.raises(ServingError) as e:
            import asyncio
            asyncio.run(rm.feedback(rid, [], targets))
        assert (e.value.code, e.value.message) == (Code.INVALID_ARGUMENT, message)
    import asyncio
    r = asyncio.run(rm.feedback(rid, [], [3.0, 1.0]))
    assert (r.rows, r.correct) == (2, 0)
    e = rm.evidence("m", 1)
    assert (e.mse, e.mae, e.feedback, e.loss_rows) == (pytest.approx(2.125), pytest.approx(1.25), 0, 2)
    # Targets for an answer that is not one number per row: refused, the id not used up.
    rid = rm.observe("m", 1, 0.01, "OK", {"scores": np.ones((2, 3), np.float32)})
    with pytest.raises(ServingError) as err:
        asyncio.run(rm.feedback(rid, [], [1.0, 2.0]))
    assert err.value.code == Code.INVALID_ARGUMENT and "one number per row" in err.value.message
    assert fb(rm, rid, ["0", "1"]).rows == 2


def test_long_or_too_many_slice_keys_count_as_other_and_are_reported():
    rm = make_rm(None, mr_of())
    for i in range(52):
        rid = rm.observe("m", 1, 0.01, "OK", CLASSES, slice=f"s{i}")
        fb(rm, rid, ["3"])
    rid = rm.observe("m", 1, 0.01, "OK", CLASSES, slice="x" * 100)
    fb(rm, rid, ["3"])
    slices = {s.slice: s.rows for s in rm.evidence("m", 1).slices}
    assert len(slices) == 51 and slices["other"] == 3
    alarms = rm.status("m").alarms
    assert any("slice keys past the first 50" in a for a in alarms)
    assert any("slice keys over 64 characters" in a for a in alarms)  # no length: callers would multiply alarms


# ---- what versions say about themselves ---------------------------------------------------------

def write(path, name, data: bytes) -> None:
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", name), "wb") as f:
        f.write(data)


def test_verso_model_json_gives_the_age_and_the_directory_time_does_not(tmp_path):
    v = tmp_path / "1"
    v.mkdir()
    (v / "saved_model.pb").write_bytes(b"x")
    os.utime(v / "saved_model.pb", (1_000_000, 1_000_000))
    os.utime(v, (2_000_000, 2_000_000))  # a copy's directory time: ignored
    f = read_facts(str(v))
    assert (f.files_time, f.born_at, f.age_source) == (1_000_000, 1_000_000, "model files")
    write(str(v), "verso_model.json", json.dumps({"trained_at": "2026-11-20T00:00:00Z", "data_until": 1.7e9,
                                                  "metrics": {"auc": 0.9}}).encode())
    f = read_facts(str(v))
    assert f.trained_at == 1795132800.0 and f.data_until == 1.7e9 and f.metrics == {"auc": 0.9}
    assert (f.born_at, f.age_source, f.problems) == (1795132800.0, "verso_model.json trained_at", ())


@pytest.mark.parametrize("doc, problem", [
    (b"{not json", "verso_model.json: Expecting property name"),
    (b"[1, 2]", "the top level must be a JSON object"),
    (b'{"trained_at": "last tuesday"}', "trained_at 'last tuesday' is not an ISO 8601 time"),
    (b'{"trained_at": true}', "trained_at must be an ISO 8601 time or Unix seconds"),
    (b'{"metrics": {"auc": "high"}}', "metrics must be an object of names to finite numbers"),
])
def test_a_malformed_verso_model_json_is_a_problem_not_a_failure(tmp_path, doc, problem, caplog):
    write(str(tmp_path), "verso_model.json", doc)
    f = read_facts(str(tmp_path))
    assert f.trained_at is None and len(f.problems) == 1 and problem in f.problems[0]
    assert problem in caplog.text  # logged once, at the load


def test_reference_npz_read_and_malformed_ones_are_problems(tmp_path):
    import io
    buf = io.BytesIO()
    np.savez(buf, images=np.ones((3, 4), np.float32))
    write(str(tmp_path), "reference.npz", buf.getvalue())
    f = read_facts(str(tmp_path))
    assert f.reference["images"].shape == (3, 4) and f.problems == ()
    write(str(tmp_path), "reference.npz", b"garbage")
    f = read_facts(str(tmp_path))
    assert f.reference is None and f.problems[0] == ("assets.extra/reference.npz: ValueError: not an .npz file "
                                                  "(numpy.savez's zip of arrays)")
    for bad in (np.float32(1.0), np.array(["a", "b"], dtype=object)):
        buf = io.BytesIO()
        np.savez(buf, x=bad)
        write(str(tmp_path), "reference.npz", buf.getvalue())
        problem = read_facts(str(tmp_path)).problems[0]
        assert "must be numeric with at least one row" in problem or "Object arrays cannot be loaded" in problem


def test_drift_of_a_version_with_a_reference_sample_in_status_and_alarms():
    ref = np.random.default_rng(0).integers(0, 5, (500, 4)).astype(np.float32)  # dark pixels; inverted: bright
    facts = {("m", 1): VersionFacts(reference={"x": ref}), ("m", 2): VersionFacts(reference={"x": ref})}
    rm = make_rm(None, mr_of())
    rm.facts = lambda name, version: facts.get((name, version))
    rm.clock = Clock(100.0)
    rm.observe_inputs("m", 1, {"x": ref[:200]})
    rm.observe_inputs("m", 2, {"x": 16 - ref[:200]})
    assert not rm.drift("m", 1).drifting and rm.drift("m", 2).drifting
    v = {e.version: e for e in rm.status("m").versions}
    assert v[2].drift.drifting and v[2].drift.has_reference and v[2].drift.live_rows == 200
    assert v[2].drift.worst[0].psi > 0.25 and not v[1].drift.drifting
    assert any("canary v2's inputs drift from its reference sample" in a for a in rm.status("m").alarms)
    assert any("drift" in h for h in rm.holds("m"))
    rm.forget_version("m", 2)  # unloaded: its reservoir goes with it
    assert rm.drift("m", 2) is None


# ---- bias on by default; every verdict names the worst class or slice (issue 27) ------------------

def test_bias_is_on_by_default_and_fails_the_class_that_fell():
    """The friction: class 7's recall fell 15 points and a bare PROMOTE was printed. Now the
    rollout's default gates (nothing set) judge it at 5 points."""
    g = gates_of(mr_of(gates=dict(max_accuracy_drop=0.03)))
    assert (g.max_class_drop, g.min_class_samples, g.bias_must_pass) == (0.05, 30, False)
    v = decide(window_of(digits(0.98)), window_of(digits(0.83)), g)
    bias = next(c for c in v.checks if c.name == "bias")
    assert (bias.result, bias.subject) == (FAIL, "class 7")
    assert v.decision == HOLD and v.failed
    assert v.worst_drop.startswith("worst class/slice: class 7 recall 98.00 % -> 83.00 % (-15.0 points, drops")


def test_a_promote_with_the_bias_gate_off_still_names_the_worst_drop():
    g = gates_of(mr_of(gates=dict(max_accuracy_drop=0.03, max_class_drop=-1)))  # < 0: off
    assert g.max_class_drop == 0
    v = decide(window_of(digits(0.98)), window_of(digits(0.83)), g)
    assert v.decision == PROMOTE and "bias" not in [c.name for c in v.checks]
    assert v.worst_drop in v.reasons
    assert "class 7 recall 98.00 % -> 83.00 % (-15.0 points" in v.worst_drop
    assert v.worst_drop.endswith("; the bias gate is off")
    # A canary better everywhere: the line names the least gain.
    better = decide(window_of(digits(0.83)), window_of(digits(0.98)), g)
    assert "(+0.0 points, unchanged" in better.worst_drop  # classes 0-6 stay at 100 %; 7 gains


def test_a_class_below_the_minimum_support_is_not_judged():
    """20 sevens per version: class 7 dropping to 0 % recall is not judged (nor named), the
    classes with 30 rows are; with no class at 30 rows bias is not judged and holds nothing."""
    stable, canary = window_of(digits(1.0, n7=20)), window_of(digits(0.0, n7=20))
    g = Gates(min_samples=100, max_accuracy_drop=0.2)
    v = decide(stable, canary, g)
    bias = next(c for c in v.checks if c.name == "bias")
    assert bias.subject != "class 7" and bias.result == PASS
    assert v.decision == PROMOTE and "class 7" not in v.worst_drop
    scarce = dataclasses.replace(g, min_class_samples=10_000)
    v = decide(stable, canary, scarce)
    assert v.decision == PROMOTE and "bias" not in [c.name for c in v.checks]
    assert "bias not judged: no class or slice has 10000 feedback rows in both versions" in v.reasons


def test_an_inconclusive_bias_check_holds_only_when_the_operator_set_the_gate():
    # 60 sevens each, recall 98 % -> 90 %: the interval at 8 classes' Bonferroni confidence straddles 5 points.
    stable, canary = window_of(digits(0.98, n7=60)), window_of(digits(0.90, n7=60))
    default = gates_of(mr_of(gates=dict(max_accuracy_drop=0.05)))
    v = decide(stable, canary, default)
    assert next(c for c in v.checks if c.name == "bias").result == INCONCLUSIVE
    assert v.decision == PROMOTE and "class 7 recall" in v.worst_drop
    explicit = gates_of(mr_of(gates=dict(max_accuracy_drop=0.05, max_class_drop=0.05)))
    assert explicit.bias_must_pass and decide(stable, canary, explicit).decision == HOLD


def test_gates_of_switches_off_with_negative_values():
    g = gates_of(mr_of())
    assert (g.max_p99_increase_ms, g.max_class_drop) == (5.0, 0.05)
    off = gates_of(mr_of(gates=dict(max_p99_increase_ms=-1, max_class_drop=-1)))
    assert (off.max_p99_increase_ms, off.max_class_drop) == (0.0, 0.0)
    assert gates_of(mr_of(gates=dict(max_p99_increase_ms=12.5))).max_p99_increase_ms == 12.5
    with pytest.raises(ServingError) as e:
        mr_of(gates=dict(max_p99_increase_ms=math.nan))
    assert e.value.code == Code.INVALID_ARGUMENT


def test_the_friction_through_the_manager_a_faster_stable_does_not_roll_back_a_better_canary():
    """Issue 27's friction 4 end to end in the manager: a 10 % canary at p99 ~5 ms against a
    ~1 ms stable, 10 points more accurate, on one clock. The latency check passes within the
    5 ms allowance over the span both windows cover, and the status carries what it judged."""
    clock = Clock(100.0)
    # The demo's error gate: 0.5 points takes ~550 error-free canary calls to show.
    rm = make_rm(None, mr_of(gates={"min_samples": 100, "max_error_rate_increase": 0.02}), clock=clock)
    answers = {"classes": np.arange(10)}  # ten rows answered 0..9
    ids = {1: [], 2: []}
    for i in range(3000):
        clock.t += 0.01
        v = 2 if i % 10 == 0 else 1
        latency = (3.0 + (i % 23) * 0.09) / 1000 if v == 2 else (0.5 + (i % 19) * 0.025) / 1000
        ids[v].append(rm.observe("m", v, latency, "OK", answers))
    for rid in ids[1][-40:]:
        fb(rm, rid, [str(k) if k != 8 else "9" for k in range(10)])  # stable misses every 9 it sees (as 8)
    for rid in ids[2][-40:]:
        fb(rm, rid, [str(k) for k in range(10)])
    st = rm.status("m")
    v = st.verdict
    latency = next(c for c in v.checks if c.name == "latency")
    assert latency.result == "PASS" and latency.statistic > 3, latency  # ~5x on the ratio alone
    assert latency.allowance_ms == 5.0 and latency.canary_p99_ms > 4.5 and latency.stable_p99_ms < 1.1
    assert v.decision == "PROMOTE", list(v.reasons)
    assert v.worst_drop.startswith("worst class/slice: class ") and v.worst_drop in v.reasons
