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
    __slots__ = ("model", "stable", "canary", "canary_percent", "labels", "shadow_percent", "shadow_max_in_flight", "evidence_output", "max_age_seconds", "gates", "auto", "window", "scores_output", "prices")
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
    SCORES_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
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
    scores_output: str
    prices: Prices
    def __init__(self, model: _Optional[str] = ..., stable: _Optional[int] = ..., canary: _Optional[int] = ..., canary_percent: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., shadow_percent: _Optional[float] = ..., shadow_max_in_flight: _Optional[int] = ..., evidence_output: _Optional[str] = ..., max_age_seconds: _Optional[float] = ..., gates: _Optional[_Union[Gates, _Mapping]] = ..., auto: _Optional[_Union[Auto, _Mapping]] = ..., window: _Optional[int] = ..., scores_output: _Optional[str] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ...) -> None: ...

class Prices(_message.Message):
    __slots__ = ("cost_per_cpu_hour", "cost_per_gib_hour", "currency")
    COST_PER_CPU_HOUR_FIELD_NUMBER: _ClassVar[int]
    COST_PER_GIB_HOUR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    cost_per_cpu_hour: float
    cost_per_gib_hour: float
    currency: str
    def __init__(self, cost_per_cpu_hour: _Optional[float] = ..., cost_per_gib_hour: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...

class Gates(_message.Message):
    __slots__ = ("max_error_rate_increase", "max_p99_ratio", "min_top1_agreement", "max_accuracy_drop", "min_samples", "confidence", "failure_threshold", "warmup_calls", "max_loss_increase", "max_class_drop", "min_class_samples", "max_cost_ratio", "max_p99_increase_ms")
    MAX_ERROR_RATE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WARMUP_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_LOSS_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_CLASS_DROP_FIELD_NUMBER: _ClassVar[int]
    MIN_CLASS_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_INCREASE_MS_FIELD_NUMBER: _ClassVar[int]
    max_error_rate_increase: float
    max_p99_ratio: float
    min_top1_agreement: float
    max_accuracy_drop: float
    min_samples: int
    confidence: float
    failure_threshold: int
    warmup_calls: int
    max_loss_increase: float
    max_class_drop: float
    min_class_samples: int
    max_cost_ratio: float
    max_p99_increase_ms: float
    def __init__(self, max_error_rate_increase: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., min_top1_agreement: _Optional[float] = ..., max_accuracy_drop: _Optional[float] = ..., min_samples: _Optional[int] = ..., confidence: _Optional[float] = ..., failure_threshold: _Optional[int] = ..., warmup_calls: _Optional[int] = ..., max_loss_increase: _Optional[float] = ..., max_class_drop: _Optional[float] = ..., min_class_samples: _Optional[int] = ..., max_cost_ratio: _Optional[float] = ..., max_p99_increase_ms: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("version", "role", "traffic_percent", "requests", "errors", "error_rate", "p50_ms", "p99_ms", "requests_per_second", "shadow_compared", "max_abs_diff", "top1_agreement", "feedback", "accuracy", "age_seconds", "stale", "shadow_dropped", "latency_deciles_ms", "outputs", "accuracy_history", "available", "loss", "classes", "slices", "confusion", "cost", "drift", "info", "caller_errors", "evidence_since_unix_time", "load_id", "latency_quantile_levels", "latency_quantiles_ms")
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
    class CallerErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
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
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    CALLER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_SINCE_UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    LOAD_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_QUANTILES_MS_FIELD_NUMBER: _ClassVar[int]
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
    loss: Loss
    classes: _containers.RepeatedCompositeFieldContainer[ClassStats]
    slices: _containers.RepeatedCompositeFieldContainer[SliceStats]
    confusion: _containers.RepeatedCompositeFieldContainer[ConfusionCell]
    cost: Cost
    drift: Drift
    info: VersionInfo
    caller_errors: _containers.ScalarMap[str, int]
    evidence_since_unix_time: float
    load_id: str
    latency_quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    latency_quantiles_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, version: _Optional[int] = ..., role: _Optional[str] = ..., traffic_percent: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[_Mapping[str, int]] = ..., error_rate: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., requests_per_second: _Optional[float] = ..., shadow_compared: _Optional[int] = ..., max_abs_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., feedback: _Optional[int] = ..., accuracy: _Optional[float] = ..., age_seconds: _Optional[float] = ..., stale: _Optional[bool] = ..., shadow_dropped: _Optional[int] = ..., latency_deciles_ms: _Optional[_Iterable[float]] = ..., outputs: _Optional[_Mapping[str, OutputDivergence]] = ..., accuracy_history: _Optional[_Iterable[_Union[AccuracyPoint, _Mapping]]] = ..., available: _Optional[bool] = ..., loss: _Optional[_Union[Loss, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[ClassStats, _Mapping]]] = ..., slices: _Optional[_Iterable[_Union[SliceStats, _Mapping]]] = ..., confusion: _Optional[_Iterable[_Union[ConfusionCell, _Mapping]]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ..., drift: _Optional[_Union[Drift, _Mapping]] = ..., info: _Optional[_Union[VersionInfo, _Mapping]] = ..., caller_errors: _Optional[_Mapping[str, int]] = ..., evidence_since_unix_time: _Optional[float] = ..., load_id: _Optional[str] = ..., latency_quantile_levels: _Optional[_Iterable[float]] = ..., latency_quantiles_ms: _Optional[_Iterable[float]] = ...) -> None: ...

class Loss(_message.Message):
    __slots__ = ("rows", "log_loss", "brier", "mse", "mae")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    BRIER_FIELD_NUMBER: _ClassVar[int]
    MSE_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    log_loss: float
    brier: float
    mse: float
    mae: float
    def __init__(self, rows: _Optional[int] = ..., log_loss: _Optional[float] = ..., brier: _Optional[float] = ..., mse: _Optional[float] = ..., mae: _Optional[float] = ...) -> None: ...

class ClassStats(_message.Message):
    __slots__ = ("label", "support", "predicted", "recall", "precision")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    label: str
    support: int
    predicted: int
    recall: float
    precision: float
    def __init__(self, label: _Optional[str] = ..., support: _Optional[int] = ..., predicted: _Optional[int] = ..., recall: _Optional[float] = ..., precision: _Optional[float] = ...) -> None: ...

class SliceStats(_message.Message):
    __slots__ = ("slice", "rows", "accuracy", "loss")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    slice: str
    rows: int
    accuracy: float
    loss: float
    def __init__(self, slice: _Optional[str] = ..., rows: _Optional[int] = ..., accuracy: _Optional[float] = ..., loss: _Optional[float] = ...) -> None: ...

class ConfusionCell(_message.Message):
    __slots__ = ("label", "predicted", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    predicted: str
    count: int
    def __init__(self, label: _Optional[str] = ..., predicted: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("predictions", "cpu_seconds", "cpu_seconds_per_1000", "shadow_predictions", "shadow_cpu_seconds", "shadow_cpu_seconds_per_1000", "resident_bytes", "money_per_1000", "currency", "cpu_alone_calls", "training", "training_money_per_1000", "total_money_per_1000")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_1000_FIELD_NUMBER: _ClassVar[int]
    SHADOW_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_CPU_SECONDS_PER_1000_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MONEY_PER_1000_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CPU_ALONE_CALLS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_MONEY_PER_1000_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MONEY_PER_1000_FIELD_NUMBER: _ClassVar[int]
    predictions: int
    cpu_seconds: float
    cpu_seconds_per_1000: float
    shadow_predictions: int
    shadow_cpu_seconds: float
    shadow_cpu_seconds_per_1000: float
    resident_bytes: int
    money_per_1000: float
    currency: str
    cpu_alone_calls: int
    training: TrainingCost
    training_money_per_1000: float
    total_money_per_1000: float
    def __init__(self, predictions: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., cpu_seconds_per_1000: _Optional[float] = ..., shadow_predictions: _Optional[int] = ..., shadow_cpu_seconds: _Optional[float] = ..., shadow_cpu_seconds_per_1000: _Optional[float] = ..., resident_bytes: _Optional[int] = ..., money_per_1000: _Optional[float] = ..., currency: _Optional[str] = ..., cpu_alone_calls: _Optional[int] = ..., training: _Optional[_Union[TrainingCost, _Mapping]] = ..., training_money_per_1000: _Optional[float] = ..., total_money_per_1000: _Optional[float] = ...) -> None: ...

class TrainingCost(_message.Message):
    __slots__ = ("cpu_hours", "gpu_hours", "money", "currency")
    CPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    MONEY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    cpu_hours: float
    gpu_hours: float
    money: float
    currency: str
    def __init__(self, cpu_hours: _Optional[float] = ..., gpu_hours: _Optional[float] = ..., money: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi", "ks_statistic", "ks_pvalue")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., ks_statistic: _Optional[float] = ..., ks_pvalue: _Optional[float] = ...) -> None: ...

class Drift(_message.Message):
    __slots__ = ("has_reference", "live_rows", "drifting", "worst", "problem")
    HAS_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    LIVE_ROWS_FIELD_NUMBER: _ClassVar[int]
    DRIFTING_FIELD_NUMBER: _ClassVar[int]
    WORST_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    has_reference: bool
    live_rows: int
    drifting: bool
    worst: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    problem: str
    def __init__(self, has_reference: _Optional[bool] = ..., live_rows: _Optional[int] = ..., drifting: _Optional[bool] = ..., worst: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., problem: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("age_source", "trained_at", "data_until", "metrics", "problems")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AGE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_UNTIL_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    age_source: str
    trained_at: float
    data_until: float
    metrics: _containers.ScalarMap[str, float]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, age_source: _Optional[str] = ..., trained_at: _Optional[float] = ..., data_until: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class OutputDivergence(_message.Message):
    __slots__ = ("max_abs_diff", "top1_agreement")
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    max_abs_diff: float
    top1_agreement: float
    def __init__(self, max_abs_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ...) -> None: ...

class AccuracyPoint(_message.Message):
    __slots__ = ("seconds_ago", "accuracy", "rows", "loss")
    SECONDS_AGO_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    seconds_ago: float
    accuracy: float
    rows: int
    loss: float
    def __init__(self, seconds_ago: _Optional[float] = ..., accuracy: _Optional[float] = ..., rows: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "result", "statistic", "low", "high", "limit", "canary_samples", "stable_samples", "subject", "canary_p99_ms", "stable_p99_ms", "allowance_ms", "more_canary_samples", "more_stable_samples", "samples_unit", "forecast")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CANARY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STABLE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CANARY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    STABLE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_MS_FIELD_NUMBER: _ClassVar[int]
    MORE_CANARY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MORE_STABLE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_UNIT_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    name: str
    result: str
    statistic: float
    low: float
    high: float
    limit: float
    canary_samples: int
    stable_samples: int
    subject: str
    canary_p99_ms: float
    stable_p99_ms: float
    allowance_ms: float
    more_canary_samples: int
    more_stable_samples: int
    samples_unit: str
    forecast: str
    def __init__(self, name: _Optional[str] = ..., result: _Optional[str] = ..., statistic: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., limit: _Optional[float] = ..., canary_samples: _Optional[int] = ..., stable_samples: _Optional[int] = ..., subject: _Optional[str] = ..., canary_p99_ms: _Optional[float] = ..., stable_p99_ms: _Optional[float] = ..., allowance_ms: _Optional[float] = ..., more_canary_samples: _Optional[int] = ..., more_stable_samples: _Optional[int] = ..., samples_unit: _Optional[str] = ..., forecast: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("decision", "reasons", "checks", "failed_analyses", "final", "tradeoff", "worst_drop", "next_analysis_unix_time", "next_analysis_in_seconds", "next_step", "failure_threshold", "checks_note", "promoted_version", "promoted_from", "promoted_unix_time", "promoted_by")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ANALYSES_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    TRADEOFF_FIELD_NUMBER: _ClassVar[int]
    WORST_DROP_FIELD_NUMBER: _ClassVar[int]
    NEXT_ANALYSIS_UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_ANALYSIS_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CHECKS_NOTE_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FROM_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_BY_FIELD_NUMBER: _ClassVar[int]
    decision: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    failed_analyses: int
    final: bool
    tradeoff: str
    worst_drop: str
    next_analysis_unix_time: float
    next_analysis_in_seconds: float
    next_step: str
    failure_threshold: int
    checks_note: str
    promoted_version: int
    promoted_from: int
    promoted_unix_time: float
    promoted_by: str
    def __init__(self, decision: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ..., failed_analyses: _Optional[int] = ..., final: _Optional[bool] = ..., tradeoff: _Optional[str] = ..., worst_drop: _Optional[str] = ..., next_analysis_unix_time: _Optional[float] = ..., next_analysis_in_seconds: _Optional[float] = ..., next_step: _Optional[str] = ..., failure_threshold: _Optional[int] = ..., checks_note: _Optional[str] = ..., promoted_version: _Optional[int] = ..., promoted_from: _Optional[int] = ..., promoted_unix_time: _Optional[float] = ..., promoted_by: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("unix_time", "text", "who", "earlier_rollout")
    UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    EARLIER_ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    unix_time: float
    text: str
    who: str
    earlier_rollout: bool
    def __init__(self, unix_time: _Optional[float] = ..., text: _Optional[str] = ..., who: _Optional[str] = ..., earlier_rollout: _Optional[bool] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("config", "versions", "verdict", "decisions", "alarms", "rollout_started_unix_time", "state_file")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_STARTED_UNIX_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FILE_FIELD_NUMBER: _ClassVar[int]
    config: ModelRollout
    versions: _containers.RepeatedCompositeFieldContainer[VersionEvidence]
    verdict: Verdict
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    alarms: _containers.RepeatedScalarFieldContainer[str]
    rollout_started_unix_time: float
    state_file: str
    def __init__(self, config: _Optional[_Union[ModelRollout, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionEvidence, _Mapping]]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., alarms: _Optional[_Iterable[str]] = ..., rollout_started_unix_time: _Optional[float] = ..., state_file: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "labels", "targets")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    targets: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., targets: _Optional[_Iterable[float]] = ...) -> None: ...

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
