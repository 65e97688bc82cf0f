"""``--rollout_config_file`` and SetRollout: parsing, validation, defaults.

A ``verso.rollout.ModelRollout`` per model (see protos/rollout.proto). Zero fields take their
defaults (``with_defaults``); invalid settings are INVALID_ARGUMENT with a message naming the
model and the field, so a bad file or call changes nothing.
"""

from __future__ import annotations

import math

from protos import rollout_pb2
from protos.errors import invalid_argument
from server.rollout.verdict import Gates
from server.textproto import parse_text_proto

DEFAULT_WINDOW = 1000
DEFAULT_SHADOW_IN_FLIGHT = 4
DEFAULT_STEPS = (10.0, 25.0, 50.0, 100.0)
DEFAULT_AUTO_INTERVAL_S = 30.0


def parse_rollout_config(text: str, path: str = "") -> dict[str, rollout_pb2.ModelRollout]:
    """A RolloutConfig text proto -> validated ModelRollouts by model name (defaults applied).

    A text that does not parse raises ``server.textproto.TextProtoError`` (INVALID_ARGUMENT
    ``Invalid protobuf file: '<path>'`` with protobuf's C++ error lines, as TF Serving's own
    config files); an invalid setting raises INVALID_ARGUMENT naming the model and field."""
    config = parse_text_proto(text, rollout_pb2.RolloutConfig(), path)
    out: dict[str, rollout_pb2.ModelRollout] = {}
    for mr in config.models:
        if mr.model in out:
            raise invalid_argument(f"Rollout config names model {mr.model} twice")
        out[mr.model] = validated(mr)
    return out


def validated(mr: rollout_pb2.ModelRollout) -> rollout_pb2.ModelRollout:
    """A checked copy of ``mr`` with defaults filled in."""
    def bad(what: str):
        return invalid_argument(f"Rollout of model {mr.model or '(no name)'}: {what}")

    if not mr.model:
        raise bad("model is required")
    numbers = {"canary_percent": mr.canary_percent, "shadow_percent": mr.shadow_percent,
               "max_age_seconds": mr.max_age_seconds, "auto.interval_seconds": mr.auto.interval_seconds,
               **{f"gates.{f.name}": getattr(mr.gates, f.name) for f in mr.gates.DESCRIPTOR.fields},
               **{f"auto.steps[{i}]": v for i, v in enumerate(mr.auto.steps)}}
    for field, value in numbers.items():
        if not math.isfinite(value):  # NaN passes every < and > check below
            raise bad(f"{field} must be a finite number, not {value}")
    if mr.stable <= 0:
        raise bad("stable must be a version number > 0")
    if mr.canary < 0 or mr.canary == mr.stable:
        raise bad("canary must be 0 (none) or a version other than stable")
    for field in ("canary_percent", "shadow_percent"):
        value = getattr(mr, field)
        if not 0 <= value <= 100:
            raise bad(f"{field} must be within 0..100, not {value:g}")
    if mr.canary == 0 and (mr.canary_percent or mr.shadow_percent):
        raise bad("canary_percent and shadow_percent need a canary")
    if mr.shadow_max_in_flight < 0 or mr.window < 0 or mr.max_age_seconds < 0:
        raise bad("shadow_max_in_flight, window and max_age_seconds must not be negative")
    g = mr.gates
    # max_class_drop and max_p99_increase_ms < 0 (as warmup_calls) switch them off: 0 is their default.
    if min(g.max_error_rate_increase, g.max_p99_ratio, g.min_top1_agreement, g.max_accuracy_drop,
           g.min_samples, g.failure_threshold, g.max_loss_increase, g.min_class_samples,
           g.max_cost_ratio) < 0 or g.min_top1_agreement > 1:
        raise bad("gates must not be negative (min_top1_agreement within 0..1)")
    if g.max_class_drop > 1:
        raise bad(f"gates.max_class_drop is a fraction within 0..1, not {g.max_class_drop:g}")
    if min(mr.prices.cost_per_cpu_hour, mr.prices.cost_per_gib_hour) < 0 or not all(
            math.isfinite(x) for x in (mr.prices.cost_per_cpu_hour, mr.prices.cost_per_gib_hour)):
        raise bad("prices must be finite and not negative")
    if g.confidence and not 0.5 < g.confidence < 1:
        raise bad(f"gates.confidence must be within (0.5, 1), not {g.confidence:g}")
    steps = list(mr.auto.steps)
    if steps and (any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps))):
        raise bad("auto.steps must rise strictly within (0, 100]")
    if mr.auto.interval_seconds < 0:
        raise bad("auto.interval_seconds must not be negative")
    out = rollout_pb2.ModelRollout()
    out.CopyFrom(mr)
    out.window = mr.window or DEFAULT_WINDOW
    out.shadow_max_in_flight = mr.shadow_max_in_flight or DEFAULT_SHADOW_IN_FLIGHT
    if not steps:
        out.auto.steps.extend(DEFAULT_STEPS)
    out.auto.interval_seconds = mr.auto.interval_seconds or DEFAULT_AUTO_INTERVAL_S
    return out


def gates_of(mr: rollout_pb2.ModelRollout) -> Gates:
    """The verdict rules of a rollout, zero fields at their defaults; a negative
    ``max_class_drop`` (no bias gate) or ``max_p99_increase_ms`` (the ratio alone) is off.

    The bias gate at its default (``max_class_drop`` 0) judges only to FAIL: an INCONCLUSIVE
    bias check holds a promotion only when the operator set the gate."""
    d, g = Gates(), mr.gates
    return Gates(max_error_rate_increase=g.max_error_rate_increase or d.max_error_rate_increase,
                 max_p99_ratio=g.max_p99_ratio or d.max_p99_ratio,
                 min_top1_agreement=g.min_top1_agreement or d.min_top1_agreement,
                 max_accuracy_drop=g.max_accuracy_drop or d.max_accuracy_drop,
                 min_samples=int(g.min_samples or d.min_samples),
                 confidence=g.confidence or d.confidence,
                 failure_threshold=int(g.failure_threshold or d.failure_threshold),
                 warmup_calls=max(0, int(g.warmup_calls or d.warmup_calls)),
                 max_loss_increase=g.max_loss_increase,
                 max_class_drop=max(0.0, g.max_class_drop or d.max_class_drop),
                 bias_must_pass=g.max_class_drop > 0,
                 min_class_samples=int(g.min_class_samples or d.min_class_samples),
                 max_cost_ratio=g.max_cost_ratio,
                 max_p99_increase_ms=max(0.0, g.max_p99_increase_ms or d.max_p99_increase_ms))
