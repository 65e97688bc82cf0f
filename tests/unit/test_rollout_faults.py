"""Verdicts no caller can forge (issue 26), on the pure parts: whose fault a failed call is;
a caller's failures keyed onto the canary move neither its error rate nor its verdict; heavy
requests keyed onto the canary do not fail its latency check; routing keys hashed with a
per-rollout secret salt, kept in the state store."""

from __future__ import annotations

import numpy as np
import pytest

from protos import rollout_pb2
from protos.errors import Code, ServingError
from server.rollout import routing
from server.rollout.evidence import Window
from server.rollout.faults import CALLER, CALLER_CODES, MODEL, REFUSED, REQUEST, SERVER, fault, origin_of
from server.rollout.manager import RolloutManager
from server.rollout.store import RolloutStore
from server.rollout.verdict import FAIL, PASS, ROLLBACK, Gates, check_errors, check_latency, decide
from tests.unit.test_rollout_manager import Clock, FakeManager, FakeServable, make_rm, mr_of, no_rand

GATES = Gates(warmup_calls=0)


# ---- whose fault -------------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "UNAUTHENTICATED",
                                  "PERMISSION_DENIED", "OUT_OF_RANGE", "CANCELLED", "ALREADY_EXISTS",
                                  "UNIMPLEMENTED"])
def test_caller_codes_are_the_callers_wherever_they_arose(code):
    assert {fault(code, o) for o in (None, REQUEST, MODEL)} == {CALLER}


@pytest.mark.parametrize("code", ["INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS", "ABORTED",
                                  "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "NO_SUCH_CODE"])
def test_server_codes_count_against_the_version_when_it_ran(code):
    assert fault(code, MODEL) == fault(code) == SERVER  # unknown origin, unknown name: fail closed
    # Raised before the version ran (reading and checking the request): the request's.
    assert fault(code, REQUEST) == CALLER


def test_ok_is_nobodys_fault_and_the_error_can_say_whose_it_is():
    assert fault("OK") is None and fault("OK", REQUEST) is None
    assert fault("RESOURCE_EXHAUSTED", CALLER) == CALLER      # e.g. outputs over a limit, after the run
    assert fault("INVALID_ARGUMENT", SERVER) == SERVER
    assert fault("RESOURCE_EXHAUSTED", SERVER) == SERVER      # the server's own budget, wherever checked
    # Refused by the canary before it ran, but stable takes it: the canary breaks working clients.
    assert fault("INVALID_ARGUMENT", REFUSED) == fault("FAILED_PRECONDITION", REFUSED) == SERVER
    assert CALLER_CODES == {c.name for c in Code if fault(c.name, MODEL) == CALLER}


def test_origin_of_a_serving_error():
    assert origin_of(ServingError(Code.RESOURCE_EXHAUSTED, "too big"), REQUEST) == REQUEST
    assert origin_of(ServingError(Code.RESOURCE_EXHAUSTED, "queue full", caller=False), REQUEST) == SERVER
    assert origin_of(ServingError(Code.RESOURCE_EXHAUSTED, "too big", caller=True), MODEL) == CALLER
    assert origin_of(ValueError("a bug"), MODEL) == MODEL
    assert ServingError(Code.INTERNAL, "x").caller is None and str(ServingError(Code.INTERNAL, "x")) == "INTERNAL: x"


# ---- the error-injection attack on the verdict -----------------------------------------------------

def _windows(size=1000):
    clock = Clock()
    return Window(size, clock=clock), Window(size, clock=clock)


def test_invalid_requests_keyed_onto_the_canary_move_neither_its_error_rate_nor_its_verdict():
    stable, canary = _windows()
    for i in range(1000):
        stable.record_call(0.010 + (i % 7) / 1000, size=1)
        canary.record_call(0.010 + (i % 7) / 1000, size=1)
    before = decide(stable.summary(), canary.summary(), GATES)
    for _ in range(5000):  # five times the window: before, they also pushed every good call out
        canary.record_call(0.001, "INVALID_ARGUMENT")
        canary.record_call(0.001, "RESOURCE_EXHAUSTED", caller=True)
    s, c = stable.summary(), canary.summary()
    assert (c.requests, c.error_rate, c.errors) == (1000, 0.0, {})
    assert c.caller_errors == {"INVALID_ARGUMENT": 500, "RESOURCE_EXHAUSTED": 500}
    assert check_errors(s, c, GATES).result == PASS
    after = decide(s, c, GATES, failed_before=GATES.failure_threshold - 1)
    assert after.decision != ROLLBACK and [k.result for k in after.checks] == [k.result for k in before.checks]
    # The mirror trick: flooding stable with invalid requests does not hide a bad canary.
    for _ in range(100):
        canary.record_call(0.01, "INTERNAL")
    for _ in range(5000):
        stable.record_call(0.001, "INVALID_ARGUMENT")
    assert check_errors(stable.summary(), canary.summary(), GATES).result == FAIL


def test_the_canarys_own_failures_still_fail_it():
    stable, canary = _windows()
    for i in range(1000):
        stable.record_call(0.010, size=1)
        canary.record_call(0.010, "UNAVAILABLE" if i % 10 == 0 else "OK", size=1)
    verdict = decide(stable.summary(), canary.summary(), GATES, failed_before=GATES.failure_threshold - 1)
    assert verdict.decision == ROLLBACK and verdict.checks[0].result == FAIL


# ---- latency on calls of comparable size --------------------------------------------------------

def test_heavy_requests_keyed_onto_the_canary_do_not_fail_its_latency():
    rng = np.random.default_rng(1)
    stable, canary = _windows(2000)
    for ms in rng.lognormal(np.log(10), 0.2, 1000):
        stable.record_call(ms / 1000, size=64)
    for ms in rng.lognormal(np.log(10), 0.2, 1000):
        canary.record_call(ms / 1000, size=64)
    for ms in rng.lognormal(np.log(400), 0.2, 500):  # the attacker's: 100 000 elements each
        canary.record_call(ms / 1000, size=100_000)
    s, c = stable.summary(), canary.summary()
    assert c.p99_ms > 10 * s.p99_ms  # all calls together: the canary looks 40x slower
    check = check_latency(s, c, GATES)
    assert check.result == PASS, check.text
    assert (check.canary_samples, check.stable_samples) == (1000, 1000)
    assert "timed calls of 64-127 input elements" in check.text
    # A canary that is slower on calls like stable's still fails, heavy calls or not.
    slow = Window(3000, clock=Clock())
    for ms in rng.lognormal(np.log(20), 0.2, 1000):
        slow.record_call(ms / 1000, size=64)
    for ms in rng.lognormal(np.log(400), 0.2, 500):
        slow.record_call(ms / 1000, size=100_000)
    assert check_latency(s, slow.summary(), GATES).result == FAIL


def test_latency_judges_every_size_class_both_versions_have_enough_of():
    rng = np.random.default_rng(2)
    stable, canary = _windows(5000)
    for size, scale_c in ((1, 1.0), (1000, 2.0)):  # the canary is slow only on large calls
        for ms in rng.lognormal(np.log(10 * size ** 0.3), 0.2, 600):
            stable.record_call(ms / 1000, size=size)
        for ms in rng.lognormal(np.log(10 * size ** 0.3), 0.2, 600) * scale_c:
            canary.record_call(ms / 1000, size=size)
    check = check_latency(stable.summary(), canary.summary(), GATES)
    assert check.result == FAIL and "512-1023 input elements" in check.text
    assert "the worst of 2 size classes, each at 97.50 % confidence" in check.text
    # Only a class with min_samples calls of each version is judged; none: inconclusive.
    few_s, few_c = _windows()
    for _ in range(300):
        few_s.record_call(0.01, size=1)
        few_c.record_call(0.01, size=1000)
    check = check_latency(few_s.summary(), few_c.summary(), GATES)
    assert check.result == "INCONCLUSIVE" and "have 0 and 0 of a comparable size" in check.text


def test_windows_merged_across_workers_keep_caller_errors_and_sizes_apart():
    clock = Clock()
    mine, other = Window(100, clock=clock), Window(100, clock=clock)
    mine.record_call(0.01, size=8)
    other.record_call(0.02, size=1000)
    other.record_call(0.001, "INVALID_ARGUMENT")
    other.record_call(0.001, "INTERNAL", size=8)
    # A worker of an older Verso publishes (age, ms, code) calls, its caller errors among them.
    old = {"size": 100, "calls": [(0.0, 5.0, "OK"), (0.0, None, "NOT_FOUND")], "shadow": [], "feedback": []}
    e = mine.merged([(0.0, other.export()), (0.0, old)]).summary()
    assert (e.requests, e.errors, e.caller_errors) == (4, {"INTERNAL": 1}, {"INVALID_ARGUMENT": 1, "NOT_FOUND": 1})
    assert sorted(e.latency_sizes) == [-1, 3, 9]


# ---- the routing salt --------------------------------------------------------------------------

KEYS = [f"user-{i}" for i in range(2000)]


def rm_on(path: str) -> RolloutManager:
    """A rollout manager (a process, a worker) on the state file ``path``."""
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable(), 3: FakeServable()}})
    return RolloutManager(fm, clock=Clock(), wall=Clock(1000.0), rand=no_rand, store=RolloutStore(path))


def test_a_caller_cannot_predict_the_side_of_a_key_without_the_salt():
    a, b = make_rm(None, mr_of(canary_percent=50)), make_rm(None, mr_of(canary_percent=50))
    side_a = {k: a.route("m", None, "", k) for k in KEYS}
    side_b = {k: b.route("m", None, "", k) for k in KEYS}
    public = {k: 2 if routing.position(k, lambda: 0.0) < 0.5 else 1 for k in KEYS}  # the old, unkeyed hash
    # Two rollouts (two salts) route the same keys independently: about half agree, by chance.
    assert 0.4 < sum(side_a[k] == side_b[k] for k in KEYS) / len(KEYS) < 0.6
    assert 0.4 < sum(side_a[k] == public[k] for k in KEYS) / len(KEYS) < 0.6
    # Keys the old hash put on the canary land on either side now.
    chosen = [k for k in KEYS if public[k] == 2]
    assert 0.4 < sum(side_a[k] == 2 for k in chosen) / len(chosen) < 0.6
    assert side_a == {k: a.route("m", None, "", k) for k in KEYS}  # still sticky


def test_the_salt_is_kept_in_the_store_for_restarts_and_workers(tmp_path):
    path = str(tmp_path / "state.sqlite")
    first = rm_on(path)
    first.apply({"m": mr_of(canary_percent=30)})
    sides = {k: first.route("m", None, "", k) for k in KEYS}
    # Another worker (another process, same file), and the next process after a restart.
    for _ in range(2):
        other = rm_on(path)
        other.restore()
        assert {k: other.route("m", None, "", k) for k in KEYS} == sides
    # A new canary is a new rollout: a new salt, so keys probed before tell nothing.
    old = RolloutStore(path).salt("m", 2, b"unused")
    first.set(mr_of(canary=3, canary_percent=30), who="test")
    first.route("m", None, "", "someone")
    store = RolloutStore(path)
    salt3 = store.salt("m", 3, b"unused")
    assert len(salt3) == routing.SALT_BYTES and salt3 != old
    assert store.db.execute("SELECT canary FROM salts WHERE model = 'm'").fetchall() == [(3,)]  # v2's is gone
    # The salt never leaves the server: not in the status a caller may read.
    assert salt3 not in first.status("m").SerializeToString()


def test_a_store_that_cannot_keep_a_salt_still_routes_unpredictably(tmp_path):
    path = str(tmp_path / "state.sqlite")
    rm = rm_on(path)
    rm.apply({"m": mr_of(canary_percent=50)})
    rm.store.salt = lambda model, canary, new: None  # read-only or full, and nothing kept before
    sides = {k: rm.route("m", None, "", k) for k in KEYS}
    public = {k: 2 if routing.position(k, lambda: 0.0) < 0.5 else 1 for k in KEYS}
    assert 0.4 < sum(sides[k] == public[k] for k in KEYS) / len(KEYS) < 0.6
    assert sides == {k: rm.route("m", None, "", k) for k in KEYS}


def test_status_shows_caller_errors_apart():
    rm = make_rm(None, mr_of(canary_percent=50))
    rm.observe("m", 2, 0.01, "OK", size=4)
    rm.observe("m", 2, 0.01, "INVALID_ARGUMENT", origin=REQUEST)
    rm.observe("m", 2, 0.01, "RESOURCE_EXHAUSTED", origin=REQUEST)
    rm.observe("m", 2, 0.01, "UNAVAILABLE", origin=MODEL)
    v = {e.version: e for e in rm.status("m").versions}[2]
    assert (v.requests, dict(v.errors), dict(v.caller_errors)) == (
        2, {"UNAVAILABLE": 1}, {"INVALID_ARGUMENT": 1, "RESOURCE_EXHAUSTED": 1})
    assert isinstance(rm.status("m"), rollout_pb2.RolloutStatus)


def test_a_canary_refusing_far_more_requests_than_stable_raises_an_alarm_not_a_verdict():
    rm = make_rm(None, mr_of(canary_percent=50, gates={"min_samples": 20}))
    for _ in range(30):
        rm.observe("m", 1, 0.01, "OK", size=1)
        rm.observe("m", 2, 0.01, "OK", size=1)
    assert rm.status("m").alarms == []
    for _ in range(10):
        rm.observe("m", 2, 0.01, "INVALID_ARGUMENT", origin=REQUEST)
    st = rm.status("m")
    assert list(st.alarms) == ["canary v2: 25 % of its calls failed by the caller's fault (INVALID_ARGUMENT 10) "
                               "against 0 % of stable v1's: requests aimed at it, or a canary that refuses requests "
                               "stable takes (a changed signature?); not judged"]
    assert st.verdict.failed_analyses == 0 and not any(c.result == "FAIL" for c in st.verdict.checks)


def test_only_a_canary_is_judged_by_what_its_stable_version_takes():
    rm = make_rm(None, mr_of(canary_percent=50))
    assert rm.stable_of("m", 2) == 1
    assert rm.stable_of("m", 1) is None and rm.stable_of("m", 3) is None and rm.stable_of("other", 2) is None
    rm.apply({"m": mr_of(canary=0, canary_percent=0)})
    assert rm.stable_of("m", 2) is None
