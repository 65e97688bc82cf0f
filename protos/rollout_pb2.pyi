from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutConfig(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelRollout]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelRollout, _Mapping]]] = ...) -> None: ...

class ModelRollout(_message.Message):
    __slots__ = ("model", "stable", "canary", "canary_percent", "labels", "shadow_percent", "shadow_max_in_flight", "evidence_output", "max_age_seconds", "gates", "auto", "window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    AUTO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    stable: int
    canary: int
    canary_percent: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    shadow_percent: float
    shadow_max_in_flight: int
    evidence_output: str
    max_age_seconds: float
    gates: Gates
    auto: Auto
    window: int
    def __init__(self, model: _Optional[str] = ..., stable: _Optional[int] = ..., canary: _Optional[int] = ..., canary_percent: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., shadow_percent: _Optional[float] = ..., shadow_max_in_flight: _Optional[int] = ..., evidence_output: _Optional[str] = ..., max_age_seconds: _Optional[float] = ..., gates: _Optional[_Union[Gates, _Mapping]] = ..., auto: _Optional[_Union[Auto, _Mapping]] = ..., window: _Optional[int] = ...) -> None: ...

class Gates(_message.Message):
    __slots__ = ("max_error_rate_increase", "max_p99_ratio", "min_top1_agreement", "max_accuracy_drop", "min_samples", "confidence", "failure_threshold", "warmup_calls")
    MAX_ERROR_RATE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WARMUP_CALLS_FIELD_NUMBER: _ClassVar[int]
    max_error_rate_increase: float
    max_p99_ratio: float
    min_top1_agreement: float
    max_accuracy_drop: float
    min_samples: int
    confidence: float
    failure_threshold: int
    warmup_calls: int
    def __init__(self, max_error_rate_increase: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., min_top1_agreement: _Optional[float] = ..., max_accuracy_drop: _Optional[float] = ..., min_samples: _Optional[int] = ..., confidence: _Optional[float] = ..., failure_threshold: _Optional[int] = ..., warmup_calls: _Optional[int] = ...) -> None: ...

class Auto(_message.Message):
    __slots__ = ("enabled", "steps", "interval_seconds")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    steps: _containers.RepeatedScalarFieldContainer[float]
    interval_seconds: float
    def __init__(self, enabled: _Optional[bool] = ..., steps: _Optional[_Iterable[float]] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionEvidence(_message.Message):
    __slots__ = ("version", "role", "traffic_percent", "requests", "errors", "error_rate", "p50_ms", "p99_ms", "requests_per_second", "shadow_compared", "max_abs_diff", "top1_agreement", "feedback", "accuracy", "age_seconds", "stale", "shadow_dropped", "latency_deciles_ms", "outputs", "accuracy_history", "available")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OutputDivergence
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OutputDivergence, _Mapping]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_DECILES_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_HISTORY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    version: int
    role: str
    traffic_percent: float
    requests: int
    errors: _containers.ScalarMap[str, int]
    error_rate: float
    p50_ms: float
    p99_ms: float
    requests_per_second: float
    shadow_compared: int
    max_abs_diff: float
    top1_agreement: float
    feedback: int
    accuracy: float
    age_seconds: float
    stale: bool
    shadow_dropped: int
    latency_deciles_ms: _containers.RepeatedScalarFieldContainer[float]
    outputs: _containers.MessageMap[str, OutputDivergence]
    accuracy_history: _containers.RepeatedCompositeFieldContainer[AccuracyPoint]
    available: bool
    def __init__(self, version: _Optional[int] = ..., role: _Optional[str] = ..., traffic_percent: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[_Mapping[str, int]] = ..., error_rate: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., requests_per_second: _Optional[float] = ..., shadow_compared: _Optional[int] = ..., max_abs_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., feedback: _Optional[int] = ..., accuracy: _Optional[float] = ..., age_seconds: _Optional[float] = ..., stale: _Optional[bool] = ..., shadow_dropped: _Optional[int] = ..., latency_deciles_ms: _Optional[_Iterable[float]] = ..., outputs: _Optional[_Mapping[str, OutputDivergence]] = ..., accuracy_history: _Optional[_Iterable[_Union[AccuracyPoint, _Mapping]]] = ..., available: _Optional[bool] = ...) -> None: ...

class OutputDivergence(_message.Message):
    __slots__ = ("max_abs_diff", "top1_agreement")
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    max_abs_diff: float
    top1_agreement: float
    def __init__(self, max_abs_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ...) -> None: ...

class AccuracyPoint(_message.Message):
    __slots__ = ("seconds_ago", "accuracy", "rows")
    SECONDS_AGO_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    seconds_ago: float
    accuracy: float
    rows: int
    def __init__(self, seconds_ago: _Optional[float] = ..., accuracy: _Optional[float] = ..., rows: _Optional[int] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "result", "statistic", "low", "high", "limit", "canary_samples", "stable_samples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CANARY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STABLE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    result: str
    statistic: float
    low: float
    high: float
    limit: float
    canary_samples: int
    stable_samples: int
    def __init__(self, name: _Optional[str] = ..., result: _Optional[str] = ..., statistic: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., limit: _Optional[float] = ..., canary_samples: _Optional[int] = ..., stable_samples: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("decision", "reasons", "checks", "failed_analyses", "final")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ANALYSES_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    decision: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    failed_analyses: int
    final: bool
    def __init__(self, decision: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ..., failed_analyses: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("unix_time", "text", "who")
    UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    unix_time: float
    text: str
    who: str
    def __init__(self, unix_time: _Optional[float] = ..., text: _Optional[str] = ..., who: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("config", "versions", "verdict", "decisions", "alarms")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    config: ModelRollout
    versions: _containers.RepeatedCompositeFieldContainer[VersionEvidence]
    verdict: Verdict
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    alarms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, config: _Optional[_Union[ModelRollout, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionEvidence, _Mapping]]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., alarms: _Optional[_Iterable[str]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "labels")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("model", "version", "rows", "correct")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    rows: int
    correct: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., rows: _Optional[int] = ..., correct: _Optional[int] = ...) -> None: ...
