"""Prometheus metrics: TF Serving's names and labels, and Verso's per-version extras.

Two ``prometheus_client`` registries:

* ``tf``: TF Serving's metrics under its names (``:tensorflow:serving:request_count`` ...),
  rendered as TF Serving prints them: ``# TYPE`` lines only, counters without prometheus
  client's ``_total`` suffix and without ``_created`` samples, latencies in microseconds
  on TF Serving's buckets (10 x 1.8^i, 33 of them);
* ``verso``: Verso's own, in Prometheus' usual style (``verso_*``, ``_total`` counters,
  seconds): per-version request counts and latencies, each version's state and age, the
  adaptive batch size, and the process collector (``process_start_time_seconds`` ...).

With ``--num_workers`` (``multiprocess_dir`` set by the supervisor) the counters, histograms
and the batch-cap gauge live in prometheus_client's multiprocess files, and a scrape that
reaches any worker answers the sums over every worker, dead ones included (counters never go
back). What is read at scrape time (version states and ages, rollout evidence, ``process_*``)
stays the answering worker's own.

Callers cannot inflate them (every label value a caller could choose is bounded):

* a request's ``model_name`` is its own only for a model the server serves (``known``: in the
  model config or known to the manager); every other name a caller makes up is counted under
  the one label value ``UNKNOWN_MODEL`` (``__unknown__``), so a million made-up names add one
  series, not a million (TF Serving labels them with the name as sent);
* a version's series (``verso_request_*{version}``, ``verso_batch*{queue}``, the state and age
  gauges, ``:tensorflow:cc:saved_model:load_*{model_path}``) and what the rollout, cost and
  drift code keeps per version (``on_forget`` hooks) go ``VERSION_GRACE_S`` (5 minutes) after
  the version unloads, unless it loaded again: a scrape in that time still reads its final
  values; swaps do not grow the page or the process.

Threads: recording methods may be called from any thread (prometheus_client locks);
``render()``, ``version_unloaded()`` and ``sweep()`` run on the event loop (they read the
manager).
"""

from __future__ import annotations

import math
import operator
import time
import warnings
from typing import Callable, Iterable, Optional, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from server.lifecycle.policy import State

DEFAULT_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))
# TF Serving's batch-size histograms: powers of two up to 2^16 (execution sizes are bounded).
BATCH_SIZE_BUCKETS = tuple(float(2 ** i) for i in range(17))
# Example counts per Classify/Regress request.
EXAMPLE_COUNT_BUCKETS = tuple(float(2 ** i) for i in range(17))

# Label-set -> metric children cache bound (a safety net: every label value is bounded).
_MAX_CACHED = 10000
# The model_name label of every request naming a model the server does not serve. Not a name a
# model would have, and plain in PromQL: request_count{model_name="__unknown__"}.
UNKNOWN_MODEL = "__unknown__"
# How long a version's series outlive its unload (so a scrape still reads its final values).
VERSION_GRACE_S = 300.0

# name -> the text TF Serving exposes for it (prometheus_client renames counters).
_TF_COUNTERS: dict[str, str] = {}


def _tf_counter(name: str, doc: str, labels: Iterable[str], registry) -> Counter:
    c = Counter(name, doc, list(labels), registry=registry)
    _TF_COUNTERS[c._name] = name
    return c


class Metrics:
    def __init__(self, *, versions: Optional[Callable[[], Iterable[tuple[str, int, State, Optional[float]]]]] = None,
                 clock: Callable[[], float] = time.time, multiprocess_dir: Optional[str] = None,
                 known: Optional[Callable[[str], bool]] = None,
                 live: Optional[Callable[[], Iterable[tuple[str, int, str]]]] = None,
                 grace_s: float = VERSION_GRACE_S, monotonic: Callable[[], float] = time.monotonic):
        """``versions()`` lists (model, version, state, directory mtime or None) for the
        state and age gauges; it is called on the loop at each scrape. ``multiprocess_dir``:
        the workers' shared prometheus_client directory (it must also be the process's
        ``PROMETHEUS_MULTIPROC_DIR`` before prometheus_client is imported).

        ``known(name)``: whether the server serves a model of that name (None: every name
        counts as its own, for tests). ``live()`` lists (model, version, path) of the versions
        whose series stay whatever their age (loading, loaded, or failed to load); an unloaded
        version's go ``grace_s`` seconds of ``monotonic()`` after ``version_unloaded``."""
        self.tf = CollectorRegistry(auto_describe=True)
        self.verso = CollectorRegistry(auto_describe=True)
        self.local = CollectorRegistry(auto_describe=True)  # read at scrape time, per process
        self._shared: Optional[CollectorRegistry] = None
        if multiprocess_dir:
            self._shared = CollectorRegistry()
            MultiProcessCollector(self._shared, path=multiprocess_dir)
        t = self.tf
        self.request_count = _tf_counter(":tensorflow:serving:request_count",
                                         "The total number of requests.", ["model_name", "status"], t)
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Distribution of wall time (in microseconds) for Tensorflow Serving "
                                         "request.", ["model_name", "API", "entrypoint"],
                                         buckets=LATENCY_BUCKETS_US, registry=t)
        self.runtime_latency = Histogram(":tensorflow:serving:runtime_latency",
                                         "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                                         ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=t)
        self.example_counts = Histogram(":tensorflow:serving:request_example_counts",
                                        "The number of tensorflow.Examples per request.", ["model"],
                                        buckets=EXAMPLE_COUNT_BUCKETS, registry=t)
        self.example_count_total = _tf_counter(":tensorflow:serving:request_example_count_total",
                                               "The total number of tensorflow.Examples.", ["model"], t)
        self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                         "Distribution of wall time spent (in microseconds) in queuing",
                                         ["thread_pool_name"], buckets=LATENCY_BUCKETS_US, registry=t)
        self.wrapped_run_count = _tf_counter(":tensorflow:serving:batching_session:wrapped_run_count",
                                             "Counts the number of batched runs.", [], t)
        self.input_batch_size = Histogram(":tensorflow:serving:batching_session:input_batch_size",
                                          "Tracks the batch size distribution on the inputs.", [],
                                          buckets=BATCH_SIZE_BUCKETS, registry=t)
        self.processed_batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                              "Tracks the batch size distribution on processing.", [],
                                              buckets=BATCH_SIZE_BUCKETS, registry=t)
        self.padding_size = Histogram(":tensorflow:serving:batching_session:padding_size",
                                      "Tracks the padding size distribution on batches.", ["execution_batch_size"],
                                      buckets=BATCH_SIZE_BUCKETS, registry=t)
        self.load_attempt_count = _tf_counter(":tensorflow:cc:saved_model:load_attempt_count",
                                              "The number of times a SavedModel was successfully loaded.",
                                              ["model_path", "status"], t)
        self.load_latency = _tf_counter(":tensorflow:cc:saved_model:load_latency",
                                        "Latency in microseconds for SavedModels that were successfully loaded.",
                                        ["model_path"], t)

        self._children: dict[tuple, object] = {}
        self._known = known
        self._live = live
        self.grace_s = grace_s
        self.monotonic = monotonic
        # (model, version) -> the (metric, label values) of its own series, and cache keys.
        self._series: dict[tuple[str, int], set] = {}
        self._queues: dict[str, tuple[str, int]] = {}   # batch queue name -> (model, version)
        self._retiring: dict[tuple[str, int], tuple[float, str]] = {}  # -> (unloaded at, path)
        self._on_forget: list[Callable[[Callable[[str, int], bool]], None]] = []
        v = self.verso
        self.version_requests = Counter("verso_request_count", "Requests by model version, API, transport "
                                        "and status code.", ["model_name", "version", "api", "entrypoint", "status"],
                                        registry=v)
        self.version_latency = Histogram("verso_request_latency_seconds", "Latency of successful requests by model "
                                         "version, API and transport.", ["model_name", "version", "api",
                                                                          "entrypoint"], registry=v)
        self.batch_cap = Gauge("verso_batch_size_cap", "The batch size the scheduler aims for (adaptive batching "
                               "moves it).", ["queue"], registry=v, multiprocess_mode="livemax")
        self.batches = Counter("verso_batches", "Batches run by queue.", ["queue"], registry=v)
        self.batch_rows = Counter("verso_batch_rows", "Rows run in batches by queue (padding excluded).",
                                  ["queue"], registry=v)
        # The label order each metric was declared with: multiprocess files give labels sorted.
        self._label_order = {m._name: m._labelnames for m in vars(self).values() if isinstance(m, MetricWrapperBase)}
        if versions is not None:
            self.local.register(_VersionCollector(versions, clock, self))
        ProcessCollector(registry=self.local)

    def add_rollouts(self, statuses: Callable[[], Iterable]) -> None:
        """Export rollout evidence: ``statuses()`` yields a ``verso.rollout.RolloutStatus`` per
        model under rollout (called on the loop at each scrape)."""
        self.local.register(_RolloutCollector(statuses))

    def add_costs(self, versions: Callable[[], Iterable[tuple]]) -> None:
        """Export what each version costs and whether it drifts: ``versions()`` yields
        (model, version, {kind: (cpu seconds, predictions)}, resident bytes or None,
        drifting or None (no reference sample), worst PSI or None), on the loop at each scrape.
        Counted by this process (under ``--num_workers``, the answering worker's own)."""
        self.local.register(_CostCollector(versions))

    # ---- what callers may name, and versions that went -------------------------------------------

    def model_label(self, name: str) -> str:
        """``name`` when the server serves it, else ``UNKNOWN_MODEL``."""
        return name if self._known is None or self._known(name) else UNKNOWN_MODEL

    def on_forget(self, hook: Callable[[Callable[[str, int], bool]], None]) -> None:
        """``hook(keep)`` runs (on the loop) whenever unloaded versions' grace ends: it drops
        what it holds of every (model, version) for which ``keep(model, version)`` is false."""
        self._on_forget.append(hook)

    def version_unloaded(self, name: str, version: int, path: str = "") -> None:
        """A version unloaded (on the loop): its series go once ``grace_s`` has passed (if it
        has not loaded again by then). ``path``: its directory (the load metrics' label)."""
        self._retiring[(name, version)] = (self.monotonic(), path)
        self.sweep()

    def sweep(self) -> list[tuple[str, int]]:
        """Forget the versions whose grace has ended (called at each unload and each scrape);
        returns them."""
        now = self.monotonic()
        due = [k for k, (t, _) in self._retiring.items() if now - t >= self.grace_s]
        if not due:
            return []
        live = {(n, v) for n, v, _ in self._live()} if self._live is not None else set()
        gone = []
        for key in due:
            _, path = self._retiring.pop(key)
            if key not in live:  # not loaded again meanwhile
                self._forget(key, path)
                gone.append(key)
        keep = self.keeper(live)
        for hook in self._on_forget:
            hook(keep)
        return gone

    def keeper(self, live: Optional[set] = None) -> Callable[[str, int], bool]:
        """``keep(model, version)``: the version is live or in its grace period (always true
        without a ``live`` callable, when ``live`` is not given)."""
        if live is None:
            if self._live is None:
                return lambda name, version: True
            live = {(n, v) for n, v, _ in self._live()}
        retiring = set(self._retiring)
        return lambda name, version: (name, version) in live or (name, version) in retiring

    def _forget(self, key: tuple[str, int], path: str) -> None:
        with warnings.catch_warnings():  # multiprocess mode: the files keep them; render filters
            warnings.simplefilter("ignore")
            for metric, labels, cache_key in self._series.pop(key, ()):
                if labels is not None:
                    metric.remove(*labels)
                self._children.pop(cache_key, None)
            if path:
                for status in ("success", "fail"):
                    self.load_attempt_count.remove(path, status)
                self.load_latency.remove(path)

    def _own(self, name: str, version: Optional[int], *series) -> None:
        """Note a version's series: (metric or None, label values or None, cache key)."""
        if version is not None:
            self._series.setdefault((name, version), set()).update(series)

    # ---- recording ------------------------------------------------------------------------------

    def _cached(self, key: tuple, make: Callable[[], object]):
        """The metric children of a label set, made by ``make()`` once: ``.labels()`` validates
        and locks on every call, and a request's or a batch's label set repeats. Bounded by
        ``_MAX_CACHED`` distinct keys (a safety net: no key holds a caller's free text, see
        ``model_label``, and a forgotten version's keys go with its series); past it,
        children are made each time."""
        children = self._children.get(key)
        if children is None:
            children = make()
            if len(self._children) < _MAX_CACHED:
                self._children[key] = children
        return children

    def request(self, model: str, version: Optional[int], api: str, entrypoint: str, status: str,
                seconds: float, *, tf_api: Optional[str] = None, count_tf: bool = True) -> None:
        """One finished request. ``tf_api`` is TF Serving's API label (REST uses the lower-case
        verb, empty for GETs); latency is recorded for successes only, as TF Serving does."""
        model = self.model_label(model)
        if model == UNKNOWN_MODEL:
            version = None
        key = (model, version, api, entrypoint, status, tf_api, count_tf)

        def make():
            ok = status == "OK"
            ver = "" if version is None else str(version)
            self._own(model, version, (self.version_requests, (model, ver, api, entrypoint, status), key),
                      *([(self.version_latency, (model, ver, api, entrypoint), key)] if ok else []))
            return (
                self.request_count.labels(model, status) if count_tf else None,
                self.request_latency.labels(model, api if tf_api is None else tf_api, entrypoint)
                if count_tf and ok else None,
                self.version_requests.labels(model, ver, api, entrypoint, status),
                self.version_latency.labels(model, ver, api, entrypoint) if ok else None,
            )
        children = self._cached(key, make)
        tf_count, tf_latency, v_count, v_latency = children
        if tf_count is not None:
            tf_count.inc()
        if tf_latency is not None:
            tf_latency.observe(seconds * 1e6)
        v_count.inc()
        if v_latency is not None:
            v_latency.observe(seconds)

    def runtime(self, model: str, api: str, seconds: float) -> None:
        model = self.model_label(model)
        self._cached((model, api), lambda: self.runtime_latency.labels(model, api, "TF1")).observe(seconds * 1e6)

    def examples(self, model: str, n: int) -> None:
        model = self.model_label(model)
        self.example_counts.labels(model).observe(n)
        self.example_count_total.labels(model).inc(n)

    def batch(self, queue: str, thread_pool_name: str, task_sizes: list[int], waits_s: list[float],
              rows: int, padded: int, cap: int, version: Optional[tuple[str, int]] = None) -> None:
        """One batch run (called on the loop when it finishes). ``version``: the (model,
        version) whose queue it is (else read from the queue's name, ``model/version/...``)."""
        key = ("batch", queue, thread_pool_name)

        def make():
            owner = version or _queue_owner(queue)
            if owner is not None:
                self._own(*owner, *((m, (queue,), key) for m in (self.batch_cap, self.batches, self.batch_rows)))
            return (self.queuing_latency.labels(thread_pool_name), self.batch_cap.labels(queue),
                    self.batches.labels(queue), self.batch_rows.labels(queue))
        queuing, batch_cap, batches, batch_rows = self._cached(key, make)
        observe_size, observe_wait = self.input_batch_size.observe, queuing.observe
        for size, wait in zip(task_sizes, waits_s):
            observe_size(size)
            observe_wait(wait * 1e6)
        self.wrapped_run_count.inc()
        self.processed_batch_size.observe(padded)
        self._cached(("padding", padded), lambda: self.padding_size.labels(str(padded))).observe(padded - rows)
        batch_cap.set(cap)
        batches.inc()
        batch_rows.inc(rows)

    def load(self, path: str, ok: bool, seconds: float) -> None:
        """One SavedModel load attempt (called from the load executor)."""
        self.load_attempt_count.labels(path, "success" if ok else "fail").inc()
        if ok:
            self.load_latency.labels(path).inc(seconds * 1e6)

    # ---- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        self.sweep()
        if self._shared is None:
            return render(self.tf.collect()) + render(self.verso.collect()) + render(self.local.collect())
        # The workers' files keep every series ever written: a forgotten version's are left out here.
        families = list(self._shared.collect())
        if self._live is not None:
            families = _without_gone(families, self._live(), self._retiring)
        tf = [f for f in families if f.name.startswith(":")]
        verso = [f for f in families if not f.name.startswith(":")]
        by_name = operator.attrgetter("name")
        order = self._label_order
        return (render(sorted(tf, key=by_name), order) + render(sorted(verso, key=by_name), order)
                + render(self.local.collect()))

    def add_rollout_safety(self, state: Callable[[], dict]) -> None:
        """Export where rollouts fail closed: ``state()`` (``RolloutManager.safety``, on the loop
        at each scrape) gives whether rollouts can change, the rollouts whose state holds in
        memory only, failed state-file writes, and the prediction log's state and drops by
        reason. Counted by this process (under ``--num_workers``, the answering worker's own)."""
        self.local.register(_RolloutSafetyCollector(state))

    def rejected(self, transport: str, reason: str) -> None:
        """A call refused to protect the server (``verso_requests_rejected_total``, by transport
        and a server-chosen reason: ``concurrency``, ``memory``, ``elements``, ``body_size``,
        ``body_timeout``), so that overload is never silent. Made on first use."""
        counter = self.__dict__.get("_rejected")
        if counter is None:
            counter = self._rejected = Counter("verso_requests_rejected", "Calls refused to protect the server, "
                                               "by transport and reason.", ["transport", "reason"],
                                               registry=self.verso)
        counter.labels(transport, reason).inc()


class _VersionCollector:
    """``verso_model_version_state`` (1 for the state each version is in) and
    ``verso_model_version_age_seconds`` (since it was trained, as its ``verso_model.json`` says,
    else since its model files were written), read at scrape time."""

    def __init__(self, versions, clock, metrics: "Metrics"):
        self._versions = versions
        self._clock = clock
        self._metrics = metrics

    def describe(self):
        return []

    def collect(self):
        state = GaugeMetricFamily("verso_model_version_state", "1 for the state each model version is in.",
                                  labels=["model_name", "version", "state"])
        age = GaugeMetricFamily("verso_model_version_age_seconds",
                                "Seconds since the version was trained (verso_model.json), else since its model "
                                "files were written.",
                                labels=["model_name", "version"])
        now = self._clock()
        keep = self._metrics.keeper()
        for name, version, st, born in self._versions():
            if st == State.END and not keep(name, version):
                continue  # unloaded, past its grace (the manager keeps END entries forever)
            state.add_metric([name, str(version), st.name], 1)
            if born is not None:
                age.add_metric([name, str(version)], max(0.0, now - born))
        yield state
        yield age


class _RolloutCollector:
    """``verso_rollout_*``: per model and version, the rollout's window of evidence; unknown
    figures (no successful call yet, no feedback ...) are left out rather than written as 0."""

    _GAUGES = (  # (metric suffix, VersionEvidence field, scale, help)
        ("traffic_percent", "traffic_percent", 1.0, "Configured share of routed requests, percent."),
        ("window_requests", "requests", 1.0, "Calls in the evidence window."),
        ("error_rate", "error_rate", 1.0,
         "The version's own (server-side) failures / judged calls in the evidence window (caller errors apart)."),
        ("latency_p50_seconds", "p50_ms", 1e-3, "Median latency of successful calls in the window."),
        ("latency_p99_seconds", "p99_ms", 1e-3, "99th percentile latency of successful calls in the window."),
        ("top1_agreement", "top1_agreement", 1.0, "Shadow rows whose top-1 matched the stable answer / rows."),
        ("max_abs_diff", "max_abs_diff", 1.0, "Largest absolute output difference of shadow calls in the window."),
        ("accuracy", "accuracy", 1.0, "Correct rows / rows with feedback in the window."),
        ("stale", "stale", 1.0, "1 when the version is older than max_age_seconds."),
        ("shadow_dropped", "shadow_dropped", 1.0, "Shadow calls dropped (budget full or failed)."),
        ("available", "available", 1.0, "1 when the version is AVAILABLE; 0 for a rollout's stable or canary "
                                        "that is not (an alarm: its traffic goes to the other)."),
    )

    _NESTED = (  # (metric suffix, VersionEvidence message.field, help)
        ("log_loss", "loss.log_loss", "Mean log-loss (cross-entropy) of the feedback rows with class scores."),
        ("brier", "loss.brier", "Mean Brier score of the feedback rows with class scores."),
        ("mse", "loss.mse", "Mean squared error of the feedback rows with a numeric target."),
        ("mae", "loss.mae", "Mean absolute error of the feedback rows with a numeric target."),
        ("cpu_seconds_per_1000_predictions", "cost.cpu_seconds_per_1000",
         "Process CPU seconds the version's model calls took per 1000 predictions."),
        ("money_per_1000_predictions", "cost.money_per_1000",
         "Money per 1000 predictions at the rollout's prices (CPU and resident memory)."),
    )

    def __init__(self, statuses):
        self._statuses = statuses

    def describe(self):
        return []

    def collect(self):
        families = {name: GaugeMetricFamily(f"verso_rollout_{name}", text, labels=["model_name", "version", "role"])
                    for name, _, _, text in self._GAUGES}
        verdict = GaugeMetricFamily("verso_rollout_verdict", "1 for the current verdict of each rollout.",
                                    labels=["model_name", "decision"])
        recall = GaugeMetricFamily("verso_rollout_class_recall", "Recall of each class from feedback in the window.",
                                   labels=["model_name", "version", "role", "class"])
        nested = {name: GaugeMetricFamily(f"verso_rollout_{name}", text, labels=["model_name", "version", "role"])
                  for name, _, text in self._NESTED}
        alarms = GaugeMetricFamily("verso_rollout_alarms", "Alarms raised by each rollout now (staleness, "
                                   "an older canary, a stable or canary that is not available).",
                                   labels=["model_name"])
        for st in self._statuses():
            model = st.config.model
            for v in st.versions:
                labels = [model, str(v.version), v.role]
                for name, field, scale, _ in self._GAUGES:
                    value = float(getattr(v, field))
                    if value >= 0:  # -1 marks an unknown figure
                        families[name].add_metric(labels, value * scale)
                for name, path, _ in self._NESTED:
                    message, field = path.split(".")
                    value = float(getattr(getattr(v, message), field))
                    if value >= 0:
                        nested[name].add_metric(labels, value)
                for c in v.classes:
                    if c.recall >= 0:
                        recall.add_metric(labels + [c.label], c.recall)
            verdict.add_metric([model, st.verdict.decision], 1)
            alarms.add_metric([model], len(st.alarms))
        yield from families.values()
        yield from nested.values()
        yield recall
        yield verdict
        yield alarms


class _CostCollector:
    """``verso_version_*``: CPU and predictions per version and kind (serve, shadow), resident
    memory, drift."""

    def __init__(self, versions):
        self._versions = versions

    def describe(self):
        return []

    def collect(self):
        labels = ["model_name", "version"]
        cpu = CounterMetricFamily("verso_version_cpu_seconds", "Process CPU seconds of the version's model calls "
                                  "(shared among the calls running at once).", labels=labels + ["kind"])
        rows = CounterMetricFamily("verso_version_predictions", "Predictions (rows) the version's model calls made.",
                                   labels=labels + ["kind"])
        memory = GaugeMetricFamily("verso_version_resident_memory_bytes", "Resident memory the version's load added.",
                                   labels=labels)
        drifting = GaugeMetricFamily("verso_version_drifting", "1 when the version's live inputs drift from its "
                                     "reference sample (versions with one).", labels=labels)
        psi = GaugeMetricFamily("verso_version_drift_psi", "Population stability index of the version's most "
                                "drifted input feature.", labels=labels)
        for name, version, kinds, resident, drift, worst in self._versions():
            v = [name, str(version)]
            for kind, (seconds, n) in sorted(kinds.items()):
                cpu.add_metric(v + [kind], seconds)
                rows.add_metric(v + [kind], n)
            if resident is not None and resident >= 0:
                memory.add_metric(v, resident)
            if drift is not None:
                drifting.add_metric(v, 1.0 if drift else 0.0)
            if worst is not None:
                psi.add_metric(v, worst)
        yield from (cpu, rows, memory, drifting, psi)


def _queue_owner(queue: str) -> Optional[tuple[str, int]]:
    """(model, version) of a batch queue named ``model/version/signature``, or None."""
    parts = queue.split("/")
    for i in range(1, len(parts)):
        if parts[i].isdigit():
            return "/".join(parts[:i]), int(parts[i])
    return None


def _without_gone(families, live, retiring) -> list:
    """Multiprocess families without the samples of versions that are neither live nor in their
    grace period (their ``version`` label, their batch ``queue``, their ``model_path``)."""
    live = list(live)
    kept = {(n, v) for n, v, _ in live} | set(retiring)
    paths = {p for _, _, p in live} | {p for _, p in retiring.values()}

    def gone(labels: dict) -> bool:
        if labels.get("version"):
            try:
                return (labels.get("model_name", ""), int(labels["version"])) not in kept
            except ValueError:
                return False
        if "queue" in labels:
            owner = _queue_owner(labels["queue"])
            return owner is not None and owner not in kept
        if "model_path" in labels:
            return labels["model_path"] not in paths
        return False

    out = []
    for family in families:
        family.samples = [s for s in family.samples if not gone(s.labels)]
        out.append(family)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(value)


def render(families: Iterable, label_order: Optional[dict[str, Sequence[str]]] = None) -> bytes:
    """Metric families (``registry.collect()``) as Prometheus text as TF Serving prints it: a
    ``# TYPE`` line per metric, no ``_created`` samples, integral values without ``.0``. TF
    Serving's counters keep their own name (no ``_total``); Verso's counters end in ``_total``
    as prometheus_client names them. ``label_order`` (metric name -> label names) puts each
    sample's labels in that order, ``le`` last."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        tf_counter = family.type == "counter" and family.name in _TF_COUNTERS
        if tf_counter:
            name = _TF_COUNTERS[family.name]
        elif family.type == "counter":
            name = family.name + "_total"
        else:
            name = family.name
        lines.append(f"# TYPE {name} {family.type}")
        order = (label_order or {}).get(family.name)
        rank = {k: i for i, k in enumerate(order)} if order is not None else None
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            if rank is not None:
                s = s._replace(labels=dict(sorted(s.labels.items(), key=lambda kv: rank.get(kv[0], len(rank)))))
            sample = name if tf_counter else s.name
            labels = ",".join(f'{k}="{_escape(v if k != "le" else _number(float(v)))}"'
                              for k, v in s.labels.items())
            lines.append(f"{sample}{{{labels}}} {_number(s.value)}" if labels else f"{sample} {_number(s.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""



class _RolloutSafetyCollector:
    """``verso_rollouts_available``, ``verso_rollout_state_unsaved``,
    ``verso_rollout_state_write_failures_total``, ``verso_prediction_log_failing``,
    ``verso_prediction_log_waiting`` and ``verso_prediction_log_dropped_total{reason}``."""

    def __init__(self, state):
        self._state = state

    def describe(self):
        return []

    def collect(self):
        s = self._state()
        yield GaugeMetricFamily("verso_rollouts_available", "1 when rollouts can change; 0 when the rollout state "
                                "file could not be used at start-up (the server runs without rollout changes).",
                                value=1 if s["available"] else 0)
        yield GaugeMetricFamily("verso_rollout_state_unsaved", "Rollouts whose state (a ROLLBACK, failed analyses) "
                                "holds in memory only: the state file cannot be written; retried every second.",
                                value=s["unsaved"])
        yield CounterMetricFamily("verso_rollout_state_write_failures", "Writes of the rollout state file that "
                                  "failed (the change refused, or retried).", value=s["write_failures"])
        yield GaugeMetricFamily("verso_prediction_log_failing", "1 while the prediction log cannot be written.",
                                value=1 if s["log_failing"] else 0)
        yield GaugeMetricFamily("verso_prediction_log_waiting", "Answers waiting in memory to be written to the "
                                "prediction log.", value=s["log_waiting"])
        dropped = CounterMetricFamily("verso_prediction_log_dropped", "Answers under a rollout not logged (they got no "
                                      "request id), or lost at exit after their id was given, by reason.",
                                      labels=["reason"])
        for reason in ("queue full", "lost at exit"):
            dropped.add_metric([reason], s["log_dropped"].get(reason, 0))
        yield dropped
