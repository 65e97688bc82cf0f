"""The rollout manager with a fake Manager, clock, wall, rand and version ages: config parsing and
validation, routing, observe/feedback, shadow calls, status, automatic steps and apply(). Pure and
fast: no server, no TensorFlow, no sleeps."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from protos import rollout_pb2
from server.lifecycle.manager import Lease
from protos.errors import Code, ServingError
from server.rollout import manager as rollout_manager
from server.rollout import routing
from server.rollout.config import (
    DEFAULT_AUTO_INTERVAL_S,
    DEFAULT_SHADOW_IN_FLIGHT,
    DEFAULT_STEPS,
    DEFAULT_WINDOW,
    gates_of,
    parse_rollout_config,
    validated,
)
from server.rollout.manager import RolloutManager
from server.rollout.verdict import Gates

# ---------------------------------------------------------------------------------------------
# Fakes


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Seq:
    """``rand`` returning the given values in a cycle; counts its calls."""

    def __init__(self, *values: float):
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> float:
        v = self.values[self.calls % len(self.values)]
        self.calls += 1
        return v


def no_rand() -> float:
    raise AssertionError("rand() must not be called here")


class FakeServable:
    def __init__(self, outputs=None, error: Exception | None = None):
        self.outputs = outputs if outputs is not None else {}
        self.error = error
        self.calls: list[tuple] = []

    def run(self, sig_name, inputs, aliases):
        self.calls.append((sig_name, inputs, aliases))
        if self.error is not None:
            raise self.error
        return self.outputs


class FakeHarness:
    def __init__(self, name: str, version: int, servable: FakeServable):
        self.name, self.version, self.servable = name, version, servable


class FakeModel:
    def __init__(self, versions: dict):
        self.versions = versions


class FakeManager:
    """``snapshot`` and ``lease`` (real ``Lease`` objects) as RolloutManager uses them; counts leases."""

    def __init__(self, models: dict[str, dict[int, FakeServable]] | None = None):
        models = {"m": {1: FakeServable(), 2: FakeServable()}} if models is None else models
        self.snapshot = {name: FakeModel({v: FakeHarness(name, v, s) for v, s in versions.items()})
                         for name, versions in models.items()}
        self.lease_calls: list[tuple[str, int]] = []
        self.leased: list[FakeHarness] = []
        self.released: list[FakeHarness] = []

    def servable(self, name: str, version: int) -> FakeServable:
        return self.snapshot[name].versions[version].servable

    def lease(self, name, version=None):
        self.lease_calls.append((name, version))
        model = self.snapshot.get(name)
        h = model.versions.get(version) if model else None
        if h is None:
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
        self.leased.append(h)
        return Lease(self, h)

    def _release(self, h):  # what Lease.release calls
        self.released.append(h)


def mr_of(model="m", stable=1, canary=2, canary_percent=10.0, gates=None, auto=None, **kw) -> rollout_pb2.ModelRollout:
    """A validated ModelRollout; every call is timed (no warmup calls) unless ``gates`` say."""
    gates = {"warmup_calls": -1, **(gates or {})}
    return validated(rollout_pb2.ModelRollout(
        model=model, stable=stable, canary=canary, canary_percent=canary_percent,
        gates=rollout_pb2.Gates(**gates), auto=rollout_pb2.Auto(**(auto or {})), **kw))


def make_rm(fm: FakeManager | None = None, *configs: rollout_pb2.ModelRollout, clock=None, wall=None, rand=None,
            ages=None, executor=None) -> RolloutManager:
    ages = ages or {}
    rm = RolloutManager(fm if fm is not None else FakeManager(), shadow_executor=executor,
                        version_age=lambda name, version: ages.get((name, version)),
                        clock=clock or Clock(), wall=wall or Clock(1000.0), rand=rand or Seq(0.5))
    if configs:
        rm.apply({mr.model: mr for mr in configs})
    return rm


def fb(rm: RolloutManager, request_id: str, labels) -> rollout_pb2.FeedbackResponse:
    """Feedback as a transport gives it (the manager's coroutine, on a loop of its own)."""
    return asyncio.run(rm.feedback(request_id, labels))


def versions_of(st: rollout_pb2.RolloutStatus) -> dict[int, rollout_pb2.VersionEvidence]:
    return {v.version: v for v in st.versions}


CLASSES = {"classes": np.array([3])}  # one row whose top-1 answer is 3


# ---------------------------------------------------------------------------------------------
# config: parse_rollout_config, validated, gates_of


def test_defaults_are_filled_in():
    out = parse_rollout_config('models { model: "m" stable: 1 canary: 2 canary_percent: 5 }')
    assert list(out) == ["m"]
    mr = out["m"]
    assert (DEFAULT_WINDOW, DEFAULT_SHADOW_IN_FLIGHT, DEFAULT_STEPS, DEFAULT_AUTO_INTERVAL_S) == (
        1000, 4, (10.0, 25.0, 50.0, 100.0), 30.0)
    assert mr.window == 1000
    assert mr.shadow_max_in_flight == 4
    assert list(mr.auto.steps) == [10.0, 25.0, 50.0, 100.0]
    assert mr.auto.interval_seconds == 30.0
    assert (mr.stable, mr.canary, mr.canary_percent, mr.shadow_percent) == (1, 2, 5.0, 0.0)
    assert mr.auto.enabled is False


def test_set_values_are_kept_and_input_not_modified():
    raw = rollout_pb2.ModelRollout(model="m", stable=3, canary=7, canary_percent=100, shadow_percent=100,
                                   shadow_max_in_flight=2, window=7, max_age_seconds=60,
                                   labels=["canary", "stable"], evidence_output="probs",
                                   auto=rollout_pb2.Auto(enabled=True, steps=[20, 100], interval_seconds=5))
    mr = validated(raw)
    assert mr is not raw
    assert (mr.window, mr.shadow_max_in_flight, mr.max_age_seconds) == (7, 2, 60.0)
    assert list(mr.auto.steps) == [20.0, 100.0]
    assert mr.auto.interval_seconds == 5.0
    assert list(mr.labels) == ["canary", "stable"]
    assert mr.evidence_output == "probs"
    raw2 = rollout_pb2.ModelRollout(model="m", stable=1)
    out2 = validated(raw2)
    assert out2.window == 1000
    assert raw2.window == 0 and list(raw2.auto.steps) == [] and raw2.auto.interval_seconds == 0


def test_several_models_in_file_order():
    out = parse_rollout_config('models { model: "b" stable: 1 } models { model: "a" stable: 2 canary: 1 }')
    assert list(out) == ["b", "a"]
    assert (out["a"].stable, out["a"].canary) == (2, 1)
    assert parse_rollout_config("") == {}


@pytest.mark.parametrize("kw, field", [
    (dict(stable=1), "model is required"),
    (dict(model="m", stable=0), "stable"),
    (dict(model="m", stable=-2), "stable"),
    (dict(model="m", stable=2, canary=2), "canary"),
    (dict(model="m", stable=2, canary=-1), "canary"),
    (dict(model="m", stable=1, canary=2, canary_percent=100.5), "canary_percent must be within 0..100, not 100.5"),
    (dict(model="m", stable=1, canary=2, canary_percent=-1), "canary_percent must be within 0..100, not -1"),
    (dict(model="m", stable=1, canary=2, canary_percent=float("nan")), "canary_percent"),
    (dict(model="m", stable=1, canary=2, canary_percent=float("inf")), "canary_percent"),
    (dict(model="m", stable=1, canary=2, shadow_percent=101), "shadow_percent must be within 0..100, not 101"),
    (dict(model="m", stable=1, canary=2, shadow_percent=-0.5), "shadow_percent must be within 0..100, not -0.5"),
    (dict(model="m", stable=1, canary_percent=10), "canary_percent and shadow_percent need a canary"),
    (dict(model="m", stable=1, shadow_percent=10), "canary_percent and shadow_percent need a canary"),
    (dict(model="m", stable=1, shadow_max_in_flight=-1), "shadow_max_in_flight"),
    (dict(model="m", stable=1, window=-1), "window"),
    (dict(model="m", stable=1, max_age_seconds=-1), "max_age_seconds"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(max_error_rate_increase=-0.1)), "gates"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(max_p99_ratio=-1)), "gates"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(min_top1_agreement=-0.1)), "gates"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(max_accuracy_drop=-0.01)), "gates"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(min_samples=-1)), "gates"),
    (dict(model="m", stable=1, gates=rollout_pb2.Gates(min_top1_agreement=1.5)), "min_top1_agreement within 0..1"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[25, 10])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[10, 10, 50])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[0, 50])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[50, 100.5])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[-5])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(steps=[float("nan")])), "auto.steps"),
    (dict(model="m", stable=1, auto=rollout_pb2.Auto(interval_seconds=-1)), "auto.interval_seconds"),
])
def test_validation_errors_name_model_and_field(kw, field):
    with pytest.raises(ServingError) as e:
        validated(rollout_pb2.ModelRollout(**kw))
    assert e.value.code == Code.INVALID_ARGUMENT
    name = kw.get("model") or "(no name)"
    assert e.value.message.startswith(f"Rollout of model {name}: ")
    assert field in e.value.message


@pytest.mark.parametrize("kw", [
    dict(canary=2, canary_percent=0),
    dict(canary=2, canary_percent=100, shadow_percent=100),
    dict(canary=2, gates=rollout_pb2.Gates(min_top1_agreement=1.0)),
    dict(canary=0, auto=rollout_pb2.Auto(steps=[100])),
    dict(canary=2, auto=rollout_pb2.Auto(steps=[0.5, 99.5, 100])),
])
def test_boundaries_are_accepted(kw):
    mr = validated(rollout_pb2.ModelRollout(model="m", stable=1, **kw))
    assert mr.model == "m"


def test_validation_errors_through_the_file():
    with pytest.raises(ServingError) as e:
        parse_rollout_config('models { model: "m" stable: 1 canary: 2 canary_percent: 150 }')
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Rollout of model m: canary_percent must be within 0..100, not 150"


def test_duplicate_model_is_rejected():
    with pytest.raises(ServingError) as e:
        parse_rollout_config('models { model: "m" stable: 1 } models { model: "n" stable: 1 } '
                             'models { model: "m" stable: 2 }')
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Rollout config names model m twice"


@pytest.mark.parametrize("text, error", [
    ('models { model: "m" stable: x }', "1:29: Expected integer, got: x"),
    ('models { model: "m" stable: 1 bogus: 3 }',
     '1:36: Message type "verso.rollout.ModelRollout" has no field named "bogus".'),
    ('models { model: "m" stable: 1', "1:30: Expected identifier, got: "),
])
def test_text_format_errors_are_invalid_argument(text, error):
    # As TF Serving's config files (server/textproto.py; tests/unit/test_config_parse_errors.py).
    with pytest.raises(ServingError) as e:
        parse_rollout_config(text, "/etc/rollout.cfg")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Invalid protobuf file: '/etc/rollout.cfg'"
    assert e.value.errors == ("Error parsing text-format verso.rollout.RolloutConfig: " + error,)


def test_gates_of_zero_fields_take_defaults():
    assert gates_of(mr_of(gates=dict(warmup_calls=0))) == Gates()
    assert Gates() == Gates(0.005, 1.2, 0.97, 0.01, 100, 0.95, 3, 20)
    assert gates_of(mr_of()).warmup_calls == 0  # negative: no warmup calls


def test_gates_of_keeps_set_values():
    g = gates_of(mr_of(gates=dict(max_error_rate_increase=0.02, max_p99_ratio=2.5, min_top1_agreement=0.9,
                                  max_accuracy_drop=0.05, min_samples=7, confidence=0.99, failure_threshold=5,
                                  warmup_calls=3)))
    assert g == Gates(max_error_rate_increase=0.02, max_p99_ratio=2.5, min_top1_agreement=0.9,
                      max_accuracy_drop=0.05, min_samples=7, confidence=0.99, failure_threshold=5, warmup_calls=3)
    assert type(g.min_samples) is int and type(g.failure_threshold) is int
    partial = gates_of(mr_of(gates=dict(min_samples=5, warmup_calls=0)))
    assert partial == Gates(min_samples=5)


@pytest.mark.parametrize("gates, message", [
    (dict(confidence=1.0), "gates.confidence must be within (0.5, 1), not 1"),
    (dict(confidence=0.3), "gates.confidence must be within (0.5, 1), not 0.3"),
    (dict(failure_threshold=-1), "gates must not be negative (min_top1_agreement within 0..1)"),
])
def test_new_gates_are_validated(gates, message):
    with pytest.raises(ServingError) as e:
        mr_of(gates=gates)
    assert e.value.message == f"Rollout of model m: {message}"


@pytest.mark.parametrize("text", [
    "gates { min_top1_agreement: nan }",
    "gates { max_p99_ratio: nan }",
    "gates { max_error_rate_increase: nan }",
    "gates { max_accuracy_drop: nan }",
    "max_age_seconds: nan",
    "auto { interval_seconds: nan }",
])
def test_nan_settings_are_rejected(text):
    with pytest.raises(ServingError) as e:
        parse_rollout_config(f'models {{ model: "m" stable: 1 canary: 2 {text} }}')
    assert e.value.code == Code.INVALID_ARGUMENT


def test_set_with_nan_gate_is_invalid_argument_and_changes_nothing():
    rm = make_rm()
    bad = rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=10,
                                   gates=rollout_pb2.Gates(min_top1_agreement=float("nan")))
    try:
        rm.set(bad)
    except ServingError as e:
        assert e.code == Code.INVALID_ARGUMENT
    finally:
        assert "m" not in rm.configs


# ---------------------------------------------------------------------------------------------
# routing


def test_position_of_a_key_is_stable_and_within_unit_interval():
    a = routing.position("user-42", no_rand)
    assert a == routing.position("user-42", no_rand)
    assert 0.0 <= a < 1.0
    assert routing.position("user-43", no_rand) != a


def test_positions_of_keys_spread_uniformly():
    positions = [routing.position(f"user-{i}", no_rand) for i in range(10_000)]
    assert all(0.0 <= p < 1.0 for p in positions)
    below = sum(p < 0.25 for p in positions) / len(positions)
    assert 0.23 <= below <= 0.27
    half = sum(p < 0.5 for p in positions) / len(positions)
    assert 0.48 <= half <= 0.52
    assert len(set(positions)) == 10_000


@pytest.mark.parametrize("key", [None, ""])
def test_position_without_key_is_rand(key):
    rand = Seq(0.125, 0.75)
    assert routing.position(key, rand) == 0.125
    assert routing.position(key, rand) == 0.75
    assert rand.calls == 2


def test_choose():
    both = {1, 2}
    assert routing.choose(1, 2, 25.0, 0.0, both) == 2
    assert routing.choose(1, 2, 25.0, 0.2499, both) == 2
    assert routing.choose(1, 2, 25.0, 0.25, both) == 1
    assert routing.choose(1, 2, 25.0, 0.99, both) == 1
    assert routing.choose(1, 2, 100.0, 0.9999, both) == 2
    assert routing.choose(1, 2, 0.0, 0.0, both) == 1           # canary at 0 %
    assert routing.choose(1, 0, 50.0, 0.0, both) == 1          # no canary
    assert routing.choose(1, 2, 25.0, 0.1, {1}) == 1           # canary not available -> stable
    assert routing.choose(1, 2, 25.0, 0.9, {2}) == 2           # stable not available -> canary (fail closed)
    assert routing.choose(1, 2, 25.0, 0.1, {2}) == 2           # canary side still served
    assert routing.choose(1, 2, 25.0, 0.1, {3}) is None        # neither: never another version
    assert routing.choose(1, 0, 0.0, 0.5, {2, 3}) is None
    assert routing.choose(1, 2, 25.0, 0.1, set()) is None


# ---------------------------------------------------------------------------------------------
# RolloutManager.route


def test_explicit_version_is_never_rerouted():
    rm = make_rm(None, mr_of(canary_percent=100), rand=no_rand)
    assert rm.route("m", "version", "", None) is None
    assert rm.route("m", "version", "", "key") is None


def test_label_rerouted_only_when_listed():
    rm = make_rm(None, mr_of(canary_percent=100, labels=["prod"]), rand=Seq(0.5))
    assert rm.route("m", "version_label", "prod", None) == 2
    assert rm.route("m", "version_label", "beta", None) is None
    rm2 = make_rm(None, mr_of(canary_percent=100), rand=Seq(0.5))
    assert rm2.route("m", "version_label", "prod", None) is None


def test_route_none_without_rollout_and_unavailable_when_no_pinned_version_is():
    fm = FakeManager({"other": {1: FakeServable()}, "m": {3: FakeServable()}})
    rm = make_rm(fm, mr_of(), rand=Seq(0.0))
    assert rm.route("other", None, "", None) is None       # in the snapshot, no rollout
    assert rm.route("nope", None, "", None) is None
    with pytest.raises(ServingError) as e:  # under rollout, v1 and v2 gone, v3 loaded: fail closed
        rm.route("m", None, "", None)
    assert (e.value.code, e.value.message) == (
        Code.UNAVAILABLE, "Rollout of model m: neither stable v1 nor canary v2 is available")


def test_route_split_is_exact_with_deterministic_rand():
    rand = Seq(*[i / 100 for i in range(100)])
    rm = make_rm(None, mr_of(canary_percent=25), rand=rand)
    got = [rm.route("m", None, "", None) for _ in range(100)]
    assert got.count(2) == 25 and got.count(1) == 75
    assert got[:25] == [2] * 25 and got[25:] == [1] * 75
    assert rand.calls == 100


def test_route_canary_zero_or_unavailable_goes_to_stable():
    rm = make_rm(None, mr_of(canary_percent=0), rand=Seq(0.0))
    assert rm.route("m", None, "", None) == 1
    fm = FakeManager({"m": {1: FakeServable()}})
    rm2 = make_rm(fm, mr_of(canary_percent=100), rand=Seq(0.0))
    assert rm2.route("m", None, "", None) == 1
    fm3 = FakeManager({"m": {2: FakeServable(), 3: FakeServable()}})
    rm3 = make_rm(fm3, mr_of(canary_percent=10), rand=Seq(0.5))
    assert rm3.route("m", None, "", None) == 2  # stable gone: the canary, not the newest v3
    st = rm3.status("m")
    assert list(st.alarms) == ["stable v1 is not available: its traffic goes to canary v2"]
    assert {v.version: (v.role, v.available) for v in st.versions} == {
        1: ("stable", False), 2: ("canary", True), 3: ("not in rollout", True)}


def test_sticky_keys():
    rm = make_rm(None, mr_of(canary_percent=30), rand=no_rand)
    keys = [f"k{i}" for i in range(2000)]
    first = {k: rm.route("m", None, "", k) for k in keys}
    assert first == {k: rm.route("m", None, "", k) for k in keys}
    salt = rm.store.salt("m", 2, b"not this one")  # the rollout's, kept in the store
    assert len(salt) == routing.SALT_BYTES
    expected = {k: 2 if routing.position(k, no_rand, salt) * 100 < 30 else 1 for k in keys}
    assert first == expected
    on_canary = {k for k, v in first.items() if v == 2}
    assert 0.27 <= len(on_canary) / len(keys) <= 0.33
    # Raising the share only moves stable keys to the canary, never back.
    rm.apply({"m": mr_of(canary_percent=60)})
    later = {k for k in keys if rm.route("m", None, "", k) == 2}
    assert on_canary < later


# ---------------------------------------------------------------------------------------------
# observe and feedback


def test_observe_records_calls_and_returns_ids_only_for_ok_with_outputs():
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.010, "OK", CLASSES)
    assert isinstance(rid, str) and len(rid) == 32
    assert rm.observe("m", 1, 0.020, "OK", None) is None
    assert rm.observe("m", 1, 0.030, "INTERNAL", CLASSES) is None
    assert rm.observe("m", 1, 0.040, "INVALID_ARGUMENT") is None
    assert rm.observe("m", 2, 0.010, "OK", CLASSES) != rid
    e1 = rm.evidence("m", 1)
    assert e1.requests == 3  # the caller's INVALID_ARGUMENT is counted apart
    assert e1.errors == {"INTERNAL": 1} and e1.caller_errors == {"INVALID_ARGUMENT": 1}
    assert e1.error_rate == pytest.approx(1 / 3)
    assert e1.p50_ms == pytest.approx(15.0)
    assert rm.evidence("m", 2).requests == 1


def test_observe_without_rollout_records_nothing():
    rm = make_rm(None, mr_of())
    assert rm.observe("other", 1, 0.01, "OK", CLASSES) is None
    assert ("other", 1) not in rm._windows
    rm.log.flush()
    assert rm.log.written == 0


def test_feedback_counts_correct_rows_exactly():
    rm = make_rm(None, mr_of())
    a = rm.observe("m", 2, 0.01, "OK", {"scores": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])})  # 1, 0, 1
    b = rm.observe("m", 2, 0.01, "OK", {"scores": np.array([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])})  # 0, 1, 0
    r = fb(rm, a, ["1", "1", "1"])
    assert (r.model, r.version, r.rows, r.correct) == ("m", 2, 3, 2)
    r = fb(rm, b, ["0", "1", "0"])
    assert (r.rows, r.correct) == (3, 3)
    e = rm.evidence("m", 2)
    assert e.feedback == 6
    assert e.accuracy == pytest.approx(5 / 6)
    assert rm.evidence("m", 1).feedback == 0
    st = versions_of(rm.status("m"))
    assert st[2].feedback == 6 and st[2].accuracy == pytest.approx(5 / 6)
    assert st[1].accuracy == -1.0


def test_feedback_uses_the_id_up():
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", CLASSES)
    assert fb(rm, rid, ["3"]).correct == 1
    with pytest.raises(ServingError) as e:
        fb(rm, rid, ["3"])
    assert (e.value.code, e.value.message) == (Code.ALREADY_EXISTS, f"Feedback for request id {rid} was already given")
    assert rm.evidence("m", 1).feedback == 1


def test_feedback_unknown_id_is_not_found():
    rm = make_rm(None, mr_of())
    with pytest.raises(ServingError) as e:
        fb(rm, "nope", ["1"])
    assert e.value.code == Code.NOT_FOUND
    assert e.value.message == "Unknown or expired request id: nope"


def test_feedback_wrong_label_count_keeps_the_id():
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", {"classes": np.array([1, 2])})
    for labels in (["1"], ["1", "2", "3"], []):
        with pytest.raises(ServingError) as e:
            fb(rm, rid, labels)
        assert e.value.code == Code.INVALID_ARGUMENT
        assert e.value.message == (f"Feedback has {len(labels)} labels for an answer of 2 rows" if labels else
                                   "Feedback needs labels (classifiers) or targets (regressors), one per row")
    assert rm.evidence("m", 1).feedback == 0
    r = fb(rm, rid, ["1", "5"])
    assert (r.rows, r.correct) == (2, 1)


def test_feedback_without_top1_is_invalid_argument():
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", {"score": np.array([0.5, 0.7])})  # float, 1-D: no top-1
    assert rid is not None
    with pytest.raises(ServingError) as e:
        fb(rm, rid, ["1", "0"])
    assert e.value.code == Code.INVALID_ARGUMENT
    assert rm.evidence("m", 1).feedback == 0


@pytest.mark.parametrize("classes", [
    np.array([b"cat", b"dog", b"cat"], dtype=object),
    np.array([b"cat", b"dog", b"cat"]),
    np.array([[b"cat"], [b"dog"], [b"cat"]]),
    np.array(["cat", "dog", "cat"]),
])
def test_feedback_compares_byte_labels_as_text(classes):
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", {"classes": classes})
    r = fb(rm, rid, ["cat", "cat", "cat"])
    assert (r.rows, r.correct) == (3, 2)


def test_feedback_uses_evidence_output():
    rm = make_rm(None, mr_of(evidence_output="b"))
    outputs = {"a": np.array([7, 7]), "b": np.array([1, 2])}
    rid = rm.observe("m", 1, 0.01, "OK", outputs)
    assert fb(rm, rid, ["1", "2"]).correct == 2
    rm2 = make_rm(None, mr_of())  # default: the first alias in sorted order ("a")
    rid = rm2.observe("m", 1, 0.01, "OK", outputs)
    assert fb(rm2, rid, ["1", "2"]).correct == 0


def test_feedback_a_minute_and_hours_later_and_after_many_answers_then_expired():
    wall = Clock(1000.0)
    rm = make_rm(None, mr_of(), wall=wall)
    first = [rm.observe("m", 1, 0.01, "OK", CLASSES) for _ in range(1000)]
    assert len(set(first)) == 1000 and all(len(rid) == 32 for rid in first)  # 128 random bits each
    for _ in range(12):  # more than the 10 000 answers the in-memory store used to keep
        for _ in range(1000):
            rm.observe("m", 1, 0.01, "OK", CLASSES)
        rm.log.flush()  # paced as traffic is: a burst beyond the queue's room would be dropped (counted)
    later = [rm.observe("m", 1, 0.01, "OK", CLASSES) for _ in range(20)]
    wall.t += 60  # a minute later: all 1 000 accepted

    async def give(ids):
        return await asyncio.gather(*(rm.feedback(rid, ["3"]) for rid in ids))
    assert [r.correct for r in asyncio.run(give(first))] == [1] * 1000
    wall.t += 6 * 3600  # six hours later
    assert [r.correct for r in asyncio.run(give(later[:10]))] == [1] * 10
    wall.t += 7 * 86400  # past the retention (7 days)
    with pytest.raises(ServingError) as e:
        fb(rm, later[10], ["3"])
    assert e.value.code == Code.NOT_FOUND
    assert rm.log.dropped == 0 and rm.evidence("m", 1).feedback == 1000  # the window keeps the last 1 000 rows


def test_the_log_is_pruned_by_age_and_count():
    wall = Clock(1000.0)
    rm = make_rm(None, mr_of(), wall=wall)
    rm.log.max_rows = 30
    rm.log._pruned_at = wall.t  # the writer's own minutely prune is not due on this clock
    for _ in range(40):
        rm.observe("m", 1, 0.01, "OK", CLASSES)
    rm.log.flush()
    assert rm.log.prune() == 10
    wall.t += 8 * 86400
    assert rm.log.prune() == 30


def test_a_full_log_queue_drops_and_counts_never_blocks():
    rm = make_rm(None, mr_of())
    rm.log.capacity = 1
    rm.log._thread = object()  # no writer: what is queued stays queued
    ids = [rm.observe("m", 1, 0.01, "OK", CLASSES) for _ in range(5)]
    # A dropped answer gets no request id: feedback could never name it.
    assert ids[0] and ids[1:] == [None] * 4 and rm.log.dropped == 4 and len(rm.log._answers) == 1
    assert rm.log.dropped_by == {"queue full": 4}
    assert any("4 answers were not logged and got no request id" in a for a in rm.status("m").alarms)
    rm.wall.t += rollout_manager.DROP_ALARM_S + 1  # an alarm clears once drops stop (the metric keeps counting)
    assert not any("got no request id" in a for a in rm.status("m").alarms) and rm.log.dropped == 4


def test_answers_are_logged_with_role_output_and_class_scores():
    rm = make_rm(None, mr_of(evidence_output="classes"))
    outputs = {"classes": np.array([1, 0]), "scores": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)}
    rid = rm.observe("m", 2, 0.01, "OK", outputs)
    rm.log.flush()
    with rm.store.lock:
        row = rm.store.db.execute("SELECT model, version, role, output, dtype, shape, data, scores, classes "
                                  "FROM predictions WHERE request_id = ?", (rid,)).fetchone()
    model, version, role, output, dtype, shape, data, scores, classes = row
    assert (model, version, role, output, dtype, shape, classes) == ("m", 2, "canary", "classes", "<i8", "2", 2)
    assert np.frombuffer(data, dtype).tolist() == [1, 0]
    assert np.frombuffer(scores, "<f4").reshape(-1, classes).tolist() == [[0.25, 0.75], [0.5, 0.5]]
    assert fb(rm, rid, ["1", "1"]).correct == 1  # top-1 taken from the logged output at feedback time


# ---------------------------------------------------------------------------------------------
# shadow calls

PRIMARY = {"scores": np.array([[0.25, 0.75], [0.75, 0.25], [0.375, 0.625], [1.0, 0.0]])}        # top-1 1, 0, 1, 0
CANDIDATE = {"scores": np.array([[0.125, 0.875], [0.625, 0.375], [0.875, 0.125], [1.0, 0.0]])}  # top-1 1, 0, 0, 0


def run_async(body):
    async def main():
        with ThreadPoolExecutor(1) as pool:
            return await body(pool)
    return asyncio.run(main())


def shadow_setup(pool, canary_outputs=None, error=None, rand=None, **kw):
    fm = FakeManager({"m": {1: FakeServable(PRIMARY), 2: FakeServable(canary_outputs or CANDIDATE, error)}})
    kw.setdefault("shadow_percent", 100)
    rm = make_rm(fm, mr_of(**kw), rand=rand or Seq(0.0), executor=pool)
    return fm, rm


def test_shadow_records_divergence_on_canary_window():
    inputs = {"x": np.array([[1.0], [2.0], [3.0], [4.0]])}
    primary = dict(PRIMARY)
    before = {k: v.copy() for k, v in primary.items()}
    ids = {k: id(v) for k, v in primary.items()}

    async def body(pool):
        fm, rm = shadow_setup(pool)
        rm.maybe_shadow("m", 1, "serving_default", inputs, ("scores",), primary)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    canary = fm.servable("m", 2)
    assert canary.calls == [("serving_default", inputs, ["scores"])]
    assert fm.servable("m", 1).calls == []
    e = rm.evidence("m", 2)
    assert e.shadow_compared == 1
    assert e.max_abs_diff == 0.5
    assert e.top1_agreement == 0.75
    assert e.requests == 0
    assert rm.evidence("m", 1).shadow_compared == 0
    st = versions_of(rm.status("m"))
    assert (st[2].shadow_compared, st[2].max_abs_diff, st[2].top1_agreement) == (1, 0.5, 0.75)
    assert (st[1].shadow_compared, st[1].max_abs_diff, st[1].top1_agreement) == (0, -1.0, -1.0)
    # The caller's outputs are untouched.
    assert list(primary) == ["scores"]
    assert {k: id(v) for k, v in primary.items()} == ids
    assert all(np.array_equal(primary[k], before[k]) for k in before)
    assert fm.lease_calls == [("m", 2)]
    assert fm.released == fm.leased == [fm.snapshot["m"].versions[2]]
    assert rm._shadow_in_flight["m"] == 0


def test_shadow_divergence_accumulates_over_calls():
    same = {"scores": PRIMARY["scores"].copy()}

    async def body(pool):
        fm, rm = shadow_setup(pool)
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        fm.servable("m", 2).outputs = same
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    e = rm.evidence("m", 2)
    assert e.shadow_compared == 2
    assert e.max_abs_diff == 0.5
    assert e.top1_agreement == 7 / 8
    assert len(fm.released) == 2


@pytest.mark.parametrize("r, shadowed", [(0.0, True), (0.29, True), (0.3, False), (0.99, False)])
def test_shadow_percent_uses_rand(r, shadowed):
    async def body(pool):
        fm, rm = shadow_setup(pool, rand=Seq(r), shadow_percent=30)
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert rm.evidence("m", 2).shadow_compared == (1 if shadowed else 0)
    assert len(fm.leased) == len(fm.released) == (1 if shadowed else 0)
    assert rm._shadow_dropped[("m", 2)] == 0


def test_shadow_only_for_stable_and_with_canary():
    async def body(pool):
        fm, rm = shadow_setup(pool, rand=no_rand)
        rm.maybe_shadow("m", 2, "s", {}, (), PRIMARY)      # the canary's own answer
        rm.maybe_shadow("m", 3, "s", {}, (), PRIMARY)      # another version
        rm.maybe_shadow("other", 1, "s", {}, (), PRIMARY)  # no rollout
        rm.apply({"m": mr_of(canary=0, canary_percent=0)})
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)      # no canary
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert fm.lease_calls == []
    assert rm.evidence("m", 2).shadow_compared == 0
    assert sum(rm._shadow_dropped.values()) == 0


def test_shadow_zero_percent_never_shadows():
    async def body(pool):
        fm, rm = shadow_setup(pool, rand=Seq(0.0), shadow_percent=0)
        for _ in range(5):
            rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert fm.lease_calls == []


def test_shadow_budget_full_drops_and_counts():
    async def body(pool):
        fm, rm = shadow_setup(pool, shadow_max_in_flight=2)
        for _ in range(5):  # no await in between: the first two are still in flight
            rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        assert rm._shadow_in_flight["m"] == 2
        await rm.drain_shadows()
        assert rm._shadow_in_flight["m"] == 0
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)  # budget free again
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert len(fm.leased) == 3
    assert fm.released == fm.leased
    assert rm.evidence("m", 2).shadow_compared == 3
    st = versions_of(rm.status("m"))
    assert st[2].shadow_dropped == 3
    assert st[1].shadow_dropped == 0


def test_shadow_default_budget_is_four():
    async def body(pool):
        fm, rm = shadow_setup(pool)
        for _ in range(6):
            rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert len(fm.leased) == 4
    assert versions_of(rm.status("m"))[2].shadow_dropped == 2


def test_shadow_lease_failure_is_dropped():
    async def body(pool):
        fm = FakeManager({"m": {1: FakeServable(PRIMARY)}})
        rm = make_rm(fm, mr_of(shadow_percent=100), rand=Seq(0.0), executor=pool)
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert fm.lease_calls == [("m", 2), ("m", 2)]
    assert fm.leased == [] and fm.released == []
    assert rm._shadow_in_flight["m"] == 0
    assert versions_of(rm.status("m"))[2].shadow_dropped == 2


def test_shadow_without_executor_is_dropped():
    fm = FakeManager({"m": {1: FakeServable(PRIMARY), 2: FakeServable(CANDIDATE)}})
    rm = make_rm(fm, mr_of(shadow_percent=100), rand=Seq(0.0), executor=None)
    rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
    assert fm.lease_calls == []
    assert versions_of(rm.status("m"))[2].shadow_dropped == 1


@pytest.mark.parametrize("error", [RuntimeError("boom"), ServingError(Code.INTERNAL, "tf failed"), ValueError("x")])
def test_shadow_failure_is_dropped_and_never_propagates(error):
    async def body(pool):
        fm, rm = shadow_setup(pool, error=error)
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    assert len(fm.servable("m", 2).calls) == 1
    assert fm.released == fm.leased == [fm.snapshot["m"].versions[2]]
    e = rm.evidence("m", 2)
    assert e.shadow_compared == 0
    assert versions_of(rm.status("m"))[2].shadow_dropped == 1
    assert rm._shadow_in_flight["m"] == 0


def test_shadow_compares_top1_on_evidence_output():
    primary = {"a": np.array([1, 2, 3, 4]), "b": np.array([5, 6, 7, 8])}
    candidate = {"a": np.array([1, 2, 3, 4]), "b": np.array([5, 0, 0, 8])}

    async def body(pool):
        fm, rm = shadow_setup(pool, canary_outputs=candidate, evidence_output="b")
        rm.maybe_shadow("m", 1, "s", {}, ("a", "b"), primary)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    e = rm.evidence("m", 2)
    assert (e.shadow_compared, e.top1_agreement, e.max_abs_diff) == (1, 0.5, 7.0)
    assert fm.servable("m", 2).calls[0][2] == ["a", "b"]


def test_shadow_with_incomparable_outputs_counts_a_comparison_without_rows():
    async def body(pool):
        fm, rm = shadow_setup(pool, canary_outputs={"other": np.array([1.0])})
        rm.maybe_shadow("m", 1, "s", {}, (), PRIMARY)
        await rm.drain_shadows()
        return fm, rm

    fm, rm = run_async(body)
    e = rm.evidence("m", 2)
    assert (e.shadow_compared, e.max_abs_diff, e.top1_agreement) == (1, None, None)


# ---------------------------------------------------------------------------------------------
# status


def test_status_roles_and_traffic():
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable(), 3: FakeServable()}})
    rm = make_rm(fm, mr_of(canary_percent=15))
    st = rm.status("m")
    assert st.config == rm.configs["m"]
    vs = versions_of(st)
    assert list(vs) == [1, 2, 3]
    assert {v: e.role for v, e in vs.items()} == {1: "stable", 2: "canary", 3: "not in rollout"}
    assert {v: e.traffic_percent for v, e in vs.items()} == {1: 85.0, 2: 15.0, 3: 0.0}
    rm.apply({"m": mr_of(stable=3, canary=0, canary_percent=0)})
    vs = versions_of(rm.status("m"))
    assert {v: e.role for v, e in vs.items()} == {1: "not in rollout", 2: "not in rollout", 3: "stable"}
    assert {v: e.traffic_percent for v, e in vs.items()} == {1: 0.0, 2: 0.0, 3: 100.0}


def test_status_lists_configured_versions_missing_from_snapshot():
    fm = FakeManager({"m": {1: FakeServable()}})
    rm = make_rm(fm, mr_of(canary=4, canary_percent=20))
    vs = versions_of(rm.status("m"))
    assert list(vs) == [1, 4]
    assert (vs[4].role, vs[4].traffic_percent) == ("canary", 20.0)
    rm2 = make_rm(FakeManager({}), mr_of(canary=4, canary_percent=20))
    assert list(versions_of(rm2.status("m"))) == [1, 4]


def test_status_unknown_figures_are_minus_one():
    rm = make_rm(None, mr_of())
    vs = versions_of(rm.status("m"))
    for v in (1, 2):
        e = vs[v]
        assert (e.requests, e.error_rate, e.requests_per_second, e.shadow_compared, e.feedback) == (0, 0.0, 0.0, 0, 0)
        assert (e.p50_ms, e.p99_ms, e.max_abs_diff, e.top1_agreement, e.accuracy, e.age_seconds) == (-1.0,) * 6
        assert e.stale is False and e.shadow_dropped == 0
        assert dict(e.errors) == {}


def test_status_figures():
    clock = Clock(10.0)
    rm = make_rm(None, mr_of(), clock=clock, ages={("m", 1): 120.0, ("m", 2): 5.5})
    rm.observe("m", 1, 0.010, "OK")
    clock.t = 12.0
    rm.observe("m", 1, 0.030, "OK")
    rm.observe("m", 1, 0.5, "INTERNAL")
    clock.t = 14.0
    e = versions_of(rm.status("m"))[1]
    assert e.requests == 3
    assert dict(e.errors) == {"INTERNAL": 1}
    assert e.error_rate == pytest.approx(1 / 3)
    assert e.p50_ms == pytest.approx(20.0)
    assert e.p99_ms == pytest.approx(29.8)
    assert e.requests_per_second == pytest.approx(3 / 4.0)
    assert e.age_seconds == 120.0
    assert versions_of(rm.status("m"))[2].age_seconds == 5.5


def test_status_includes_verdict():
    rm = make_rm(None, mr_of(gates=dict(min_samples=5)))
    st = rm.status("m")
    assert st.verdict.decision == "HOLD"
    assert list(st.verdict.reasons) == ["need more data: 5 calls of each version, have 0 (canary) and 0 (stable)"]
    rm.apply({"m": mr_of(canary=0, canary_percent=0)})
    st = rm.status("m")
    assert st.verdict.decision == "HOLD"
    assert list(st.verdict.reasons) == ["no canary configured"]


def test_status_decisions_log():
    wall = Clock(1000.0)
    rm = make_rm(None, mr_of(canary_percent=10, shadow_percent=50), wall=wall)
    wall.t = 2000.0
    st = rm.set(rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=25))
    assert [(d.unix_time, d.text) for d in st.decisions] == [
        (1000.0, "stable v1, canary v2 at 10 %, shadow 50 % (config file)"),
        (2000.0, "stable v1, canary v2 at 25 % (SetRollout)"),
    ]
    wall.t = 3000.0
    rm.apply({"m": mr_of(stable=2, canary=0, canary_percent=0)}, source="reload")
    assert rm.status("m").decisions[-1].text == "stable v2, canary none (reload)"
    assert len(rm.status("m").decisions) == 3


def test_decisions_log_is_bounded():
    rm = make_rm(None, mr_of(canary_percent=0))
    for p in range(1, 151):
        rm.apply({"m": mr_of(canary_percent=p % 100)})
    texts = [d.text for d in rm.status("m").decisions]
    assert len(texts) == rollout_manager.DECISIONS_KEPT == 100
    assert texts[-1] == "stable v1, canary v2 at 50 % (config file)"


def test_set_validates_and_changes_nothing_when_invalid():
    rm = make_rm(None, mr_of(canary_percent=10))
    before = rm.configs["m"]
    with pytest.raises(ServingError) as e:
        rm.set(rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=120))
    assert e.value.code == Code.INVALID_ARGUMENT
    assert rm.configs["m"] is before
    assert len(rm.status("m").decisions) == 1
    st = rm.set(rollout_pb2.ModelRollout(model="n", stable=5))
    assert st.config.window == 1000 and st.config.model == "n"


def test_stale_version_alarm_logged_once(caplog):
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable(), 3: FakeServable()}})
    rm = make_rm(fm, mr_of(max_age_seconds=100), ages={("m", 1): 150.0, ("m", 2): 50.0, ("m", 3): 100.0})
    with caplog.at_level(logging.WARNING, logger="verso.rollout"):
        st = rm.status("m")
        st2 = rm.status("m")
    vs = versions_of(st)
    assert {v: e.stale for v, e in vs.items()} == {1: True, 2: False, 3: False}
    assert list(st.alarms) == ["v1 is stale: 150 s old > max_age_seconds 100"]
    assert list(st2.alarms) == list(st.alarms)
    assert rm.stale_versions("m") == {1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Rollout of m: v1 is stale: 150 s old > max_age_seconds 100"]


def test_no_staleness_without_max_age_or_age():
    rm = make_rm(None, mr_of(), ages={("m", 1): 1e9})
    st = rm.status("m")
    assert list(st.alarms) == []
    assert not any(e.stale for e in st.versions)
    rm2 = make_rm(None, mr_of(max_age_seconds=10))  # ages unknown
    assert list(rm2.status("m").alarms) == []


def test_older_canary_is_flagged():
    rm = make_rm(None, mr_of(), ages={("m", 1): 10.0, ("m", 2): 20.0})
    assert list(rm.status("m").alarms) == ["canary v2 is older than stable v1"]
    rm2 = make_rm(None, mr_of(), ages={("m", 1): 20.0, ("m", 2): 10.0})
    assert list(rm2.status("m").alarms) == []
    rm3 = make_rm(None, mr_of(max_age_seconds=15), ages={("m", 1): 10.0, ("m", 2): 20.0})
    assert list(rm3.status("m").alarms) == ["v2 is stale: 20 s old > max_age_seconds 15",
                                            "canary v2 is older than stable v1"]


def test_status_without_rollout_is_not_found():
    rm = make_rm(None, mr_of())
    with pytest.raises(ServingError) as e:
        rm.status("other")
    assert e.value.code == Code.NOT_FOUND
    assert e.value.message == "No rollout configured for model other"
    with pytest.raises(ServingError) as e:
        rm.verdict("other")
    assert e.value.code == Code.NOT_FOUND


# ---------------------------------------------------------------------------------------------
# tick: automatic mode


# Gates wide enough that 5-10 calls decide (the checks' intervals are wide at such counts), and
# one failed analysis is enough to roll back; test_tick_failure_threshold_* use the defaults.
AUTO_GATES = dict(min_samples=5, max_error_rate_increase=0.5, max_accuracy_drop=0.5, failure_threshold=1)


def auto_rm(canary_percent=10.0, gates=None, **kw):
    clock = Clock(0.0)
    kw.setdefault("auto", dict(enabled=True))
    rm = make_rm(None, mr_of(canary_percent=canary_percent, gates={**AUTO_GATES, **(gates or {})}, **kw),
                 clock=clock)
    return rm, clock


def good_evidence(rm, n=5):
    """Both versions: n OK calls of 10 ms and n correct feedback rows -> PROMOTE."""
    for v in (1, 2):
        for _ in range(n):
            rid = rm.observe("m", v, 0.010, "OK", CLASSES)
            assert fb(rm, rid, ["3"]).correct == 1


def bad_canary_evidence(rm, n=10):
    """Stable fine, every canary call an error -> ROLLBACK."""
    for _ in range(n):
        rm.observe("m", 1, 0.010, "OK")
        rm.observe("m", 2, 0.010, "INTERNAL")


def test_tick_nothing_before_interval():
    rm, clock = auto_rm()
    good_evidence(rm)
    assert rm.verdict("m").decision == "PROMOTE"
    clock.t = 29.999
    assert rm.tick() == []
    assert rm.configs["m"].canary_percent == 10.0
    clock.t = 30.0
    changes = rm.tick()
    assert len(changes) == 1 and changes[0][0] == "m"
    assert rm.configs["m"].canary_percent == 25.0


def test_tick_hold_leaves_percent_and_restarts_interval():
    rm, clock = auto_rm()
    clock.t = 30.0
    assert rm.verdict("m").decision == "HOLD"
    assert rm.tick() == []
    assert rm.configs["m"].canary_percent == 10.0
    assert len(rm.status("m").decisions) == 1
    good_evidence(rm)
    clock.t = 59.0
    assert rm.tick() == []  # the HOLD at 30 s started a new interval
    clock.t = 60.0
    assert [c[0] for c in rm.tick()] == ["m"]
    assert rm.configs["m"].canary_percent == 25.0


def test_tick_promote_steps_then_canary_becomes_stable():
    wall = Clock(5000.0)
    rm, clock = auto_rm(shadow_percent=20)
    rm.wall = wall
    good_evidence(rm)
    seen, logged = [], []
    for i, expected in enumerate([25.0, 50.0, 100.0], start=1):
        clock.t = 30.0 * i
        changes = rm.tick()
        assert len(changes) == 1
        name, text = changes[0]
        prev = seen[-1] if seen else 10.0
        assert name == "m"
        assert text.startswith(f"PROMOTE: canary v2 {prev:g} % -> {expected:g} %; errors PASS: ")
        assert rm.configs["m"].canary_percent == expected
        assert rm.configs["m"].shadow_percent == 20.0
        seen.append(expected)
        logged.append(text)
    clock.t = 120.0
    changes = rm.tick()
    assert len(changes) == 1
    assert changes[0][1].startswith("PROMOTE: v2 is now stable (was v1); errors PASS: ")
    mr = rm.configs["m"]
    assert (mr.stable, mr.canary, mr.canary_percent, mr.shadow_percent) == (2, 0, 0.0, 0.0)
    assert mr.auto.enabled is True and mr.gates.min_samples == 5
    texts = [d.text for d in rm.status("m").decisions]
    assert texts == ["stable v1, canary v2 at 10 %, shadow 20 % (config file)"] + logged + [changes[0][1]]
    assert rm.status("m").decisions[-1].unix_time == 5000.0
    assert rm.route("m", None, "", None) == 2
    vs = versions_of(rm.status("m"))
    assert {v: (e.role, e.traffic_percent) for v, e in vs.items()} == {1: ("not in rollout", 0.0), 2: ("stable", 100.0)}
    clock.t = 1000.0
    assert rm.tick() == []  # no canary any more
    assert rm.configs["m"] is mr


def test_tick_uses_configured_steps():
    rm, clock = auto_rm(canary_percent=0, auto=dict(enabled=True, steps=[5, 100], interval_seconds=10))
    good_evidence(rm)
    clock.t = 10.0
    assert rm.tick()[0][1].startswith("PROMOTE: canary v2 0 % -> 5 %; ")
    clock.t = 20.0
    assert rm.tick()[0][1].startswith("PROMOTE: canary v2 5 % -> 100 %; ")
    clock.t = 30.0
    rm.tick()
    assert (rm.configs["m"].stable, rm.configs["m"].canary) == (2, 0)


def test_tick_rollback_to_zero_and_shadow_off():
    rm, clock = auto_rm(canary_percent=25, shadow_percent=40)
    bad_canary_evidence(rm)
    assert rm.verdict("m").decision == "ROLLBACK"
    clock.t = 30.0
    changes = rm.tick()
    assert len(changes) == 1
    assert changes[0][1].startswith("ROLLBACK: canary v2 25 % -> 0 %; errors FAIL: canary - stable error rate +100.00 points ")
    mr = rm.configs["m"]
    assert (mr.stable, mr.canary, mr.canary_percent, mr.shadow_percent) == (1, 2, 0.0, 0.0)
    assert rm.status("m").decisions[-1].text == changes[0][1]
    assert rm.route("m", None, "", None) == 1
    clock.t = 60.0
    assert rm.tick() == []  # already at 0 %: nothing more to change
    assert len(rm.status("m").decisions) == 2


def test_tick_rollback_of_shadow_only_canary_turns_shadow_off():
    rm, clock = auto_rm(canary_percent=0, shadow_percent=50)
    bad_canary_evidence(rm)  # e.g. calls naming the canary explicitly
    assert rm.verdict("m").decision == "ROLLBACK"
    clock.t = 30.0
    changes = rm.tick()
    assert rm.configs["m"].shadow_percent == 0.0
    assert len(changes) == 1 and changes[0][1].startswith("ROLLBACK: ")


def test_a_config_file_with_a_nan_gate_is_refused_before_tick_can_see_it():
    with pytest.raises(ServingError) as e:
        parse_rollout_config('models { model: "m" stable: 1 canary: 2 canary_percent: 10 '
                             'auto { enabled: true } gates { min_top1_agreement: nan } }')
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Rollout of model m: gates.min_top1_agreement must be a finite number, not nan"


def test_tick_ignores_models_not_in_auto_mode_or_without_canary():
    clock = Clock(0.0)
    rm = make_rm(None, mr_of(model="m", gates=dict(min_samples=5)),
                 mr_of(model="n", canary=0, canary_percent=0, auto=dict(enabled=True)), clock=clock)
    good_evidence(rm)
    clock.t = 1000.0
    assert rm.tick() == []
    assert rm.configs["m"].canary_percent == 10.0
    assert len(rm.status("m").decisions) == 1


def test_tick_failure_threshold_holds_then_rolls_back_and_the_rollback_is_final():
    rm, clock = auto_rm(gates=dict(failure_threshold=3), auto=dict(enabled=True, interval_seconds=10))
    bad_canary_evidence(rm)
    for i, t in enumerate((10.0, 20.0)):
        clock.t = t
        assert rm.tick() == []  # a failed analysis short of the threshold moves nothing ...
        assert rm.configs["m"].canary_percent == 10.0
        last = rm.status("m").decisions[-1].text
        assert last.startswith("HOLD: canary v2 stays at 10 %; errors FAIL")  # ... but is logged
        assert last.endswith(f"failed analysis {i + 1} of 3 in a row: HOLD until it fails again or recovers")
    clock.t = 30.0
    [(name, text)] = rm.tick()
    assert text.startswith("ROLLBACK: canary v2 10 % -> 0 %") and "failed analysis 3 of 3" in text
    v = rm.status("m").verdict
    assert (v.decision, v.final) == ("ROLLBACK", True)
    assert list(v.reasons)[1] == "the canary stays at 0 % until an operator sets a new rollout"
    # Evidence that would now promote does not bring the canary back.
    rm._windows.clear()
    good_evidence(rm, n=10)
    for t in (40.0, 50.0, 60.0):
        clock.t = t
        assert rm.tick() == []
    assert rm.configs["m"].canary_percent == 0.0 and rm.verdict("m").decision == "ROLLBACK"
    # An operator's new rollout lifts it.
    rm.set(rollout_pb2.ModelRollout(model="m", stable=1, canary=2, canary_percent=10, gates=rm.configs["m"].gates,
                                    auto=rm.configs["m"].auto))
    assert rm.verdict("m").decision != "ROLLBACK" and not rm.verdict("m").final


def test_a_passing_analysis_resets_the_failure_count():
    rm, clock = auto_rm(gates=dict(failure_threshold=2), auto=dict(enabled=True, interval_seconds=10))
    bad_canary_evidence(rm)
    clock.t = 10.0
    rm.tick()
    assert rm.verdict("m").failed_analyses == 2  # the next analysis would be the second failure
    rm._windows.clear()
    good_evidence(rm, n=10)
    clock.t = 20.0
    rm.tick()  # PROMOTE: 10 -> 25 %
    rm._windows.clear()
    bad_canary_evidence(rm)
    clock.t = 30.0
    assert rm.tick() == [] and rm.configs["m"].canary_percent == 25.0  # counts from 1 again: HOLD


def test_tick_handles_several_models():
    clock = Clock(0.0)
    rm = make_rm(FakeManager({"m": {1: FakeServable(), 2: FakeServable()}, "n": {1: FakeServable()}}),
                 mr_of(model="m", gates=AUTO_GATES, auto=dict(enabled=True)),
                 mr_of(model="n", gates=AUTO_GATES, auto=dict(enabled=True, interval_seconds=60)),
                 clock=clock)
    good_evidence(rm)
    for _ in range(10):
        rm.observe("n", 1, 0.01, "OK")
        rm.observe("n", 2, 0.01, "DEADLINE_EXCEEDED")
    clock.t = 30.0
    assert [c[0] for c in rm.tick()] == ["m"]
    clock.t = 60.0
    changes = rm.tick()
    assert sorted(c[0] for c in changes) == ["m", "n"]
    assert rm.configs["m"].canary_percent == 50.0
    assert rm.configs["n"].canary_percent == 0.0


# ---------------------------------------------------------------------------------------------
# apply


def test_apply_replaces_all_rollouts():
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}, "n": {1: FakeServable(), 2: FakeServable()}})
    rm = make_rm(fm, mr_of(model="m", canary_percent=100), mr_of(model="n", canary_percent=100), rand=Seq(0.5))
    assert (rm.route("m", None, "", None), rm.route("n", None, "", None)) == (2, 2)
    rm.apply({"n": mr_of(model="n", canary_percent=0)})
    assert list(rm.configs) == ["n"]
    assert rm.route("m", None, "", None) is None
    assert rm.route("n", None, "", None) == 1
    assert rm.observe("m", 1, 0.01, "OK", CLASSES) is None
    with pytest.raises(ServingError) as e:
        rm.status("m")
    assert e.value.code == Code.NOT_FOUND
    assert rm.store.decisions("m")[-1][1:] == ("config file", "rollout removed: no longer in the rollout config file")
    rm.apply({})
    assert rm.configs == {}
    assert rm.route("n", None, "", None) is None


def test_apply_same_config_is_not_relogged_and_keeps_evidence():
    clock = Clock(0.0)
    rm = make_rm(None, mr_of(auto=dict(enabled=True)), clock=clock)
    rm.observe("m", 1, 0.01, "OK")
    clock.t = 20.0
    rm.apply({"m": mr_of(auto=dict(enabled=True))})
    assert len(rm.status("m").decisions) == 1
    assert rm.evidence("m", 1).requests == 1
    assert rm._last_auto["m"] == 0.0
    rm.apply({"m": mr_of(canary_percent=20, auto=dict(enabled=True))})  # same window: evidence kept
    assert rm.evidence("m", 1).requests == 1
    assert rm._last_auto["m"] == 20.0
    assert len(rm.status("m").decisions) == 2


def test_apply_changed_window_resets_that_models_evidence():
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}, "n": {1: FakeServable()}})
    rm = make_rm(fm, mr_of(model="m"), mr_of(model="n", canary=0, canary_percent=0))
    for v in (1, 2):
        for _ in range(3):
            rm.observe("m", v, 0.01, "OK")
    rm.observe("n", 1, 0.01, "OK")
    rm.apply({"m": mr_of(model="m", window=2), "n": mr_of(model="n", canary=0, canary_percent=0)})
    assert rm.evidence("m", 1).requests == 0
    assert rm.evidence("m", 2).requests == 0
    assert rm.evidence("n", 1).requests == 1
    for _ in range(3):
        rm.observe("m", 1, 0.01, "OK")
    assert rm.evidence("m", 1).requests == 2  # the new window size holds


def test_removed_then_readded_with_other_window_uses_new_size():
    rm = make_rm(None, mr_of())
    for _ in range(3):
        rm.observe("m", 1, 0.01, "OK")
    rm.apply({})
    rm.apply({"m": mr_of(window=2)})
    for _ in range(3):
        rm.observe("m", 1, 0.01, "OK")
    assert rm.evidence("m", 1).requests == 2


def test_workers_share_rollouts_evidence_and_one_takes_the_automatic_steps(tmp_path):
    """--num_workers: two managers (two worker processes) over one state file."""
    from server.rollout.store import RolloutStore
    path = str(tmp_path / "state.sqlite")
    clock, wall = Clock(0.0), Clock(1000.0)
    fm = FakeManager({"m": {1: FakeServable(), 2: FakeServable()}})

    def worker(pid: int) -> RolloutManager:
        rm = RolloutManager(fm, clock=clock, wall=wall, rand=Seq(0.5), workers=True, store=RolloutStore(path))
        rm.worker_id = f"host:{pid}"  # two processes: two ids
        return rm

    a, b = worker(1), worker(2)
    a.set(mr_of(canary_percent=10, gates=AUTO_GATES, auto=dict(enabled=True, interval_seconds=10)))
    assert "m" not in b.configs
    b.sync()  # takes up a's SetRollout
    assert b.configs["m"].canary_percent == 10
    # Evidence is summed: 5 calls and feedback rows of each version on each worker.
    good_evidence(a)
    good_evidence(b)
    a.sync()
    b.sync()
    assert a.evidence("m", 2).requests == 10 and b.evidence("m", 1).feedback == 10
    assert {v.version: v.requests for v in b.status("m").versions} == {1: 10, 2: 10}
    # One worker takes the automatic steps; the other takes up its decision.
    clock.t = 10.0
    steps = a.tick() + b.tick()
    assert len(steps) == 1 and steps[0][1].startswith("PROMOTE: canary v2 10 % -> 25 %")
    a.sync()
    b.sync()
    assert a.configs["m"].canary_percent == b.configs["m"].canary_percent == 25.0
    # A worker that stops renewing loses the lease when it expires; then another may step.
    leader = a if a.store.take_lease("auto", "host:1", wall.t, 5) else b
    other = b if leader is a else a
    assert not other.store.take_lease("auto", other.worker_id, wall.t + 1, 5)
    assert other.store.take_lease("auto", other.worker_id, wall.t + 10, 5)
    # A removal made through one worker reaches the other.
    a.apply({}, source="rollouts.config")  # m was set by a call: the file does not remove it
    assert "m" in a.configs
    a._file_entries["m"] = b"x"
    a.apply({}, source="rollouts.config")
    b.sync()
    assert "m" not in b.configs


# ---- bounds on what callers name (issue 26) ---------------------------------------------------------------

def test_feedback_over_the_bounds_is_refused_and_keeps_the_id():
    from server.rollout import quality
    rm = make_rm(None, mr_of())
    rid = rm.observe("m", 1, 0.01, "OK", CLASSES)
    for labels in (["3" * (quality.MAX_LABEL_CHARS + 1)], ["3"] * (quality.MAX_FEEDBACK_ROWS + 1)):
        with pytest.raises(ServingError) as e:
            fb(rm, rid, labels)
        assert e.value.code == Code.INVALID_ARGUMENT
    assert fb(rm, rid, ["3"]).correct == 1


def test_classes_past_the_bound_count_as_other_and_raise_one_alarm():
    from server.rollout import quality
    rm = make_rm(None, mr_of())
    n = quality.MAX_CLASSES + 10
    for i in range(n):
        rid = rm.observe("m", 1, 0.01, "OK", {"classes": np.array([f"c{i}"])})
        assert fb(rm, rid, [f"c{i}"]).correct == 1  # judged on the full texts
    rid = rm.observe("m", 1, 0.01, "OK", {"classes": np.array(["A" * 1000])})  # an over-long answer
    assert fb(rm, rid, ["c0"]).correct == 0
    st = rm.status("m")
    v1 = versions_of(st)[1]
    labels = [c.label for c in v1.classes]
    assert len(labels) == quality.MAX_CLASSES + 1 and quality.OTHER in labels
    other = next(c for c in v1.classes if c.label == quality.OTHER)
    assert (other.support, other.predicted) == (10, 11)
    assert v1.accuracy == pytest.approx(n / (n + 1))
    assert [a for a in st.alarms if "class" in a] == [
        '1 feedback rows had class labels over 256 characters: counted as class "other"',
        '10 feedback rows had class labels past the first 50: counted as class "other"']


def test_forget_versions_drops_unloaded_versions_state_but_not_the_rollouts_own():
    rm = make_rm(None, mr_of(stable=1, canary=2))
    for v in (1, 2, 5, 6):
        rm.observe("m", v, 0.01, "OK", CLASSES)
        rm.costs.add("m", v, 0.001, 1)
        rm._shadow_dropped[("m", v)] += 1
    rm.costs.add("other", 1, 0.001, 1)
    rm.forget_versions(lambda name, version: (name, version) == ("m", 6))
    assert set(rm._windows) == {("m", 1), ("m", 2), ("m", 6)}  # 1 and 2: the rollout's own
    assert set(rm._shadow_dropped) == {("m", 1), ("m", 2), ("m", 6)}
    assert {(n, v) for n, v, *_ in rm.costs.all_totals()} == {("m", 1), ("m", 2), ("m", 6)}
    assert {v.version for v in rm.status("m").versions} == {1, 2, 6}  # 5: gone from the status too
