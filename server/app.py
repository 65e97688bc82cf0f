"""Composition root: ``App`` builds every component from the checked configuration, starts
and stops them in order. ``serve()`` is the process's life: ``build()``, ``start()``, wait for
SIGTERM/SIGINT, ``stop()``; tests drive the three steps themselves (in-process servers).

- build: configure TF's sessions, make the thread pools, the manager, source, served config,
  metrics, batching, rollouts and the data plane (``ServingCore``). Nothing listens yet.
- start: apply the model config (first scan of every model, initial loads on a wide pool
  until every version was tried once; failed models are logged one line each and answer
  NOT_FOUND) -> freeze the collector -> bind gRPC (+ socket, profiler, health) and REST ->
  background loops (manager ticks, file-system polls, watchdog, config-file polls) -> ready.
- stop: health NOT_SERVING, both transports stop accepting, in-flight calls finish within
  ``--shutdown_grace_seconds``, the loops stop, the pools shut down.

Threads: one asyncio loop owns all mutable state. Named executors do blocking work:
``verso-load`` (SavedModel loads and warmup), ``verso-unload``, ``verso-fs`` (directory
scans) and ``verso-predict`` (TF signature runs).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from server.lifecycle.model_config import TENSORFLOW_PLATFORM
from server.settings import ServerConfig

log = logging.getLogger("verso")


class StartupError(Exception):
    """Start-up cannot complete; ``str()`` is the one line for the operator."""


async def _apply_rollouts(rollouts, text: str, path: str) -> None:
    from server.rollout.config import parse_rollout_config

    rollouts.apply(parse_rollout_config(text, path), source=path)


class App:
    """One server's components and their order. Owned by one asyncio loop: every method runs
    on it. ``build`` once, then ``start`` (raises ``StartupError`` for the operator), then
    ``stop`` (also after a failed ``start``)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.settings = config.settings
        self.tls = config.tls  # server.tls.TlsConfig (--ssl_config_file) or None
        self.prometheus_path = config.prometheus_path
        self.batching_options = config.batching
        self.models = list(config.models)
        self.config_root = config.config_root  # where relative base paths resolve (bundled repository)
        self.stopping = asyncio.Event()
        self.address: Optional[str] = None  # the gRPC host:port, once started (None: socket only)
        self.socket_path: Optional[str] = None
        self._pools: dict[str, ThreadPoolExecutor] = {}
        # (model, version, load identity) -> VersionFacts, read at each load: what a version says
        # about itself belongs to the build loaded (server/lifecycle/manager.py, load_identity)
        self._facts: dict[tuple[str, int, str], object] = {}
        self._facts_read: dict[tuple[str, int], object] = {}  # read by a load thread, until on_loaded
        self.rollouts = None
        self._tasks: list[asyncio.Task] = []
        self._grpc = None
        self._rest = None
        self._health = None
        self._watcher = None

    async def serve(self) -> None:
        """The process's life: build, start, wait for SIGTERM/SIGINT, stop."""
        self.build()
        try:
            await self.start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            await self.stopping.wait()
        finally:
            await self.stop()

    # ---- build --------------------------------------------------------------------------

    def build(self) -> None:
        """Make every component (TensorFlow is imported here: it takes seconds)."""
        from server.dataplane.core import ServingCore
        from server.transports.metrics import Metrics
        from server.lifecycle.manager import Manager
        from server.lifecycle.model_config import ServedModels
        from server.lifecycle.source import FileSystemSource
        from server.servables import saved_model
        from server.workers import metrics_dir, worker_number

        s = self.settings
        session = self.config.session
        saved_model.configure_runtime(session.intra_op_threads, session.inter_op_threads, config=session.config,
                                      gpu_memory_fraction=session.gpu_memory_fraction)
        self.worker = worker_number()  # None in a single process
        self.metrics = Metrics(versions=self._version_births, multiprocess_dir=metrics_dir(), known=self._serves,
                               live=self._live_versions)
        # TF Serving: 0 load/unload threads = one at a time; the initial loads use 4 x CPUs.
        cpus = os.cpu_count() or 1
        pools = self._pools
        pools["initial_load"] = ThreadPoolExecutor(4 * cpus, thread_name_prefix="verso-load-initial")
        pools["load"] = ThreadPoolExecutor(max(1, s.num_load_threads), thread_name_prefix="verso-load")
        pools["unload"] = ThreadPoolExecutor(max(1, s.num_unload_threads), thread_name_prefix="verso-unload")
        pools["fs"] = ThreadPoolExecutor(1, thread_name_prefix="verso-fs")
        pools["predict"] = ThreadPoolExecutor(8, thread_name_prefix="verso-predict")
        pools["shadow"] = ThreadPoolExecutor(1, thread_name_prefix="verso-shadow")
        self.manager = Manager(self._load_version, load_executor=pools["initial_load"],
                               unload_executor=pools["unload"], max_load_retries=s.max_num_load_retries,
                               load_retry_interval_s=s.load_retry_interval_micros / 1e6, on_unloaded=self._unloaded,
                               on_loaded=self._loaded)
        self.source = FileSystemSource([], self.manager.set_aspired_versions,
                                       settle_seconds=s.version_settle_seconds, executor=pools["fs"],
                                       clock=time.monotonic, failed=self.manager.failed_versions)
        self.served = ServedModels(self.source, self.manager,
                                   allow_unavailable_labels=s.allow_version_labels_for_unavailable_models)
        self.rollouts = self._build_rollouts()
        self.limits = self._build_limits()
        self.core = ServingCore(self.manager, pools["predict"], self.served,
                                tensor_content_outputs=s.enable_serialization_as_tensor_content,
                                config_root=self.config_root, batching=self._build_batching(),
                                max_tensor_bytes=s.max_tensor_bytes,
                                metrics=self.metrics, rollouts=self.rollouts, admin_token=self.config.admin_token,
                                limits=self.limits)

    def _build_limits(self):
        """--max_request_elements and --max_inflight_bytes, 0 derived from the memory this
        process may use (each --num_workers worker derives them from the whole of it)."""
        from server.dataplane.limits import RequestLimits, derived_defaults
        s = self.settings
        self.limit_defaults = d = derived_defaults()
        limits = RequestLimits.from_flags(s.max_request_elements, s.max_inflight_bytes, d)
        log.info("Request limits: %d elements per request, %d bytes in flight (%s: %d bytes)",
                 limits.max_elements, limits.budget.capacity, d.source, d.memory)
        return limits

    def _build_batching(self):
        if self.batching_options is None:
            return None
        from server.batching.scheduler import BatchScheduler
        o = self.batching_options
        self._pools["batch"] = ThreadPoolExecutor(o.num_batch_threads, thread_name_prefix=f"verso-{o.thread_pool_name}")
        log.info("Batching on: %s", o)
        return BatchScheduler(self._pools["batch"], o.num_batch_threads, observer=self.metrics.batch), o

    def _build_rollouts(self):
        from server.rollout.manager import RolloutManager
        from server.rollout.pins import Pins
        from protos.errors import ServingError
        from server.rollout.store import MEMORY, RolloutStore, StoreError
        from server.workers import metrics_dir
        # Workers share one state file: the flag's, else one in the supervisor's directory (gone
        # at exit), so that feedback reaches the answer whichever worker gave it.
        path = self.settings.rollout_state_file or (os.path.join(metrics_dir(), "rollouts.sqlite")
                                                    if self.worker is not None and metrics_dir() else MEMORY)
        # A state file that cannot be used (read-only, unreadable, corrupt) must not stop the
        # serving of models: the server runs without rollout changes and says so (status, log,
        # verso_rollouts_available 0). The file is left as it is for the operator to look at.
        if path == MEMORY:
            log.info("Rollout state: in memory (--rollout_state_file to keep it across restarts)")
        else:  # which file: `verso serve`'s default is one per served configuration
            log.info("Rollout state file: %s%s", path, "" if "rollout_state_file" in self.settings.explicit
                     or not self.settings.rollout_state_file else " (this configuration's own; --rollout_state_file "
                     "to choose another)")
        unavailable = None
        try:
            store = RolloutStore(path)
        except StoreError as e:
            unavailable = str(e)
            log.error("%s: the server runs without rollout changes (the rollout config file's rollouts serve their "
                      "stable version only; SetRollout and Feedback answer FAILED_PRECONDITION) until the file is "
                      "usable and the server restarts", e)
            store = RolloutStore(MEMORY)
        rollouts = RolloutManager(self.manager, shadow_executor=self._pools["shadow"], version_age=self._version_age,
                                  workers=self.worker is not None, pins=Pins(self.source, self.manager), store=store,
                                  facts=self._facts_of, unavailable=unavailable)
        rollouts.restore()  # the state kept across restarts first; then the file's entries, if newer
        if self.config.rollouts:
            try:
                rollouts.apply(dict(self.config.rollouts), source=self.settings.rollout_config_file)
            except ServingError as e:  # not durable: not applied; tried again every round (run_auto)
                log.error("%s", e.message)
        self.metrics.add_rollouts(lambda: [rollouts.status(name) for name in list(rollouts.configs)])
        self.metrics.add_rollout_safety(rollouts.safety)
        self.metrics.add_costs(self._version_costs)
        self.metrics.on_forget(rollouts.forget_versions)  # per-version state goes with its series
        return rollouts

    def _load_version(self, name: str, version: int, path: str):
        """The manager's loader (runs in a load pool thread): the version's platform from the
        applied config, the load flags, and the load metrics."""
        from server.rollout.cost import resident_bytes
        from server.rollout.facts import read_facts
        from server.servables.loader import load_servable
        s = self.settings
        t0 = time.perf_counter()
        # Resident memory the load adds (process-wide: loads running at the same time blur it).
        rss_before = resident_bytes()
        platform = next((e.platform for e in self.served.entries if e.name == name), TENSORFLOW_PLATFORM)
        try:
            servable = load_servable(path, platform, tags=s.saved_model_tag_list, warmup=s.enable_model_warmup,
                                     warmup_iterations=s.num_request_iterations_for_warmup or 1,
                                     prefer_tflite=s.prefer_tflite_model, tflite_pools=s.num_tflite_pools,
                                     tflite_interpreters_per_pool=s.num_tflite_interpreters_per_pool,
                                     keep_meta_graph=not s.remove_unused_fields_from_bundle_metagraph)
        except BaseException:
            self.metrics.load(path, False, time.perf_counter() - t0)
            raise
        self.metrics.load(path, True, time.perf_counter() - t0)
        rss_after = resident_bytes()
        # One load of a version at a time: ``_loaded`` files it under the load's identity.
        self._facts_read[(name, version)] = read_facts(
            path, None if rss_before is None or rss_after is None else max(0, rss_after - rss_before))
        return servable

    def _loaded(self, name: str, version: int, load_id: str) -> None:
        """After a version loads (on the loop, before it serves): its facts are this load's, and
        what the rollouts kept about an earlier build of it goes."""
        facts = self._facts_read.pop((name, version), None)
        if facts is not None:
            self._facts[(name, version, load_id)] = facts
        if self.rollouts is not None:
            self.rollouts.loaded(name, version, load_id)

    def _unloaded(self, name: str, version: int) -> None:
        """After a version unloads (on the loop): what was kept about it goes (its reference
        sample, its drift reservoir), and the heap frozen after start-up may be collected."""
        serving = self._load_id(name, version)  # a newer load of the version may be serving already
        for key in [k for k in self._facts if k[:2] == (name, version) and k[2] != serving]:
            del self._facts[key]
        if self.rollouts is not None:
            self.rollouts.forget_version(name, version)
        path = next((st.path for st in self.manager.status(name) if st.version == version), "")
        self.metrics.version_unloaded(name, version, path)
        gc.unfreeze()

    def _serves(self, name: str) -> bool:
        """Whether ``name`` is a model this server serves (configured, or known to the manager):
        request metrics label only those by name (server/transports/metrics.py)."""
        return name in self.manager.snapshot or bool(self.manager.status(name)) \
            or any(e.name == name for e in self.served.entries)

    def _live_versions(self):
        """(model, version, path) of every version loading, loaded, or that failed to load: the
        ones whose metrics stay (an unloaded version's go after a grace period)."""
        from server.lifecycle.policy import State
        for name in self.manager.model_names():
            for st in self.manager.status(name):
                if st.state != State.END or st.error is not None:
                    yield name, st.version, st.path

    def _load_id(self, name: str, version: int):
        model = self.manager.snapshot.get(name)
        handle = model.versions.get(version) if model is not None else None
        return handle.load_id if handle is not None else None

    def _facts_of(self, name: str, version: int):
        """What the loaded ``version`` said about itself at its load (``VersionFacts``), or None
        (not loaded now)."""
        load_id = self._load_id(name, version)
        return self._facts.get((name, version, load_id)) if load_id is not None else None

    def _version_costs(self):
        """(model, version, {kind: (cpu s, predictions)}, resident bytes, drifting, worst PSI)
        per version that served or loaded, for ``verso_version_*``."""
        kinds: dict[tuple[str, int], dict] = {}
        for name, version, kind, seconds, rows in self.rollouts.costs.all_totals():
            kinds.setdefault((name, version), {})[kind] = (seconds, rows)
        loaded = {(n, st.version) for n in self.manager.model_names() for st in self.manager.status(n)}
        for name, version in sorted(loaded | set(kinds)):
            facts = self._facts_of(name, version)
            report = self.rollouts.drift(name, version)
            yield (name, version, kinds.get((name, version), {}),
                   getattr(facts, "resident_bytes", None), None if report is None else report.drifting,
                   report.worst[0].psi if report is not None and report.worst else None)

    def _version_births(self):
        """(model, version, state, the time its age counts from) for the state and age gauges."""
        now = time.time()
        for name in self.manager.model_names():
            for st in self.manager.status(name):
                age = self.rollouts.age(name, st.version) if self.rollouts is not None else None
                yield name, st.version, st.state, None if age is None else now - age

    def _version_age(self, name: str, version: int):
        """A version not loaded (yet): the age of its model files on disk."""
        from server.rollout.facts import files_time
        path = next((v.path for v in self.manager.status(name) if v.version == version), "")
        born = files_time(path) if path else None
        return None if born is None else max(0.0, time.time() - born)

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version and no stop was asked for."""
        return not self.stopping.is_set() and not self.served.unavailable([e.name for e in self.served.entries])

    # ---- start --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models, then listen; prints TF Serving's ready lines. Raises StartupError."""
        from protos.errors import ServingError
        try:
            await self.served.apply(self.models, initial=True)
        except ServingError as e:
            raise StartupError(str(e)) from None
        for name, why in self.served.unavailable([m.name for m in self.models]).items():
            log.error("Model %s has no available version at start-up (%s); it answers NOT_FOUND until a "
                      "version loads", name, why)
        self.manager.set_load_executor(self._pools["load"])
        self._pools.pop("initial_load").shutdown(wait=False)
        # TensorFlow leaves hundreds of thousands of long-lived objects behind a load; CPython's
        # collector re-walks them and stalls every request (benchmarks/README.md). Freeze them
        # once after start-up; the first unload unfreezes, so an unloaded model's cycles stay
        # collectable (no leak), at the price of losing the benefit after version changes.
        gc.collect()
        gc.freeze()
        await self._start_grpc()
        self._start_loops()
        await self._start_rest()
        await self._grpc.start()
        s = self.settings
        if self.address is not None:
            log.info("Running gRPC ModelServer at %s ...", self.address)
            print(f"Running gRPC ModelServer at {self.address} ...", flush=True)
        if self.socket_path is not None:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", self.socket_path)
            print(f"Running gRPC ModelServer at UNIX socket {self.socket_path} ...", flush=True)
        if self._rest is not None:
            print(f"Exporting HTTP/REST API at:{s.bind_address}:{s.rest_api_port} ...", flush=True)

    async def _start_grpc(self) -> None:
        """Bind the gRPC server (port and/or socket) with its services; not started yet."""
        from grpc_health.v1 import health, health_pb2_grpc

        from server.transports.grpc_service import create_server
        from server.settings import grpc_channel_arguments
        s = self.settings
        self.address = f"{s.bind_address}:{s.port}" if s.port else None
        self.socket_path = s.grpc_socket_path or None
        if self.socket_path is not None:
            if self.worker is not None:
                self.socket_path = f"{self.socket_path}.{self.worker}"  # a UNIX socket cannot be shared
        self._grpc = create_server(self.core, self.address, reuse_port=self.worker is not None,
                                   channel_arguments=grpc_channel_arguments(s),
                                   max_concurrent_rpcs=s.grpc_max_concurrent_rpcs,
                                   max_receive_bytes=self.limits.budget.capacity,
                                   credentials=self.tls.grpc_credentials() if self.tls else None,
                                   socket_path=self.socket_path)
        if s.enable_profiler:  # TensorFlow's profiler service on the gRPC port, behind the admin rule
            from server.transports.profiler import add_profiler_service, prepare_log_dir
            source = self.source
            try:
                log_dir = prepare_log_dir(s.profiler_log_dir, [m.base_path for m in source.models])
            except ValueError as e:
                raise StartupError(str(e)) from None
            log.info("Profiler service on: profiles are written under %s", log_dir)
            add_profiler_service(self._grpc, log_dir, admin_token=self.config.admin_token,
                                 base_paths=lambda: [m.base_path for m in source.models])
        if s.enable_grpc_healthcheck_service:
            from server.transports.health import HealthReporter
            self._health = health.aio.HealthServicer()
            reporter = HealthReporter(self._health, self.ready)
            await reporter.start()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
            self._spawn(reporter.run(), "verso-health")

    def _start_loops(self) -> None:
        """The background loops: manager ticks, file-system polls and watch, config-file polls,
        automatic rollout steps."""
        from server.lifecycle.config_file import ConfigFileWatch
        from server.lifecycle.source import DirectoryWatcher
        s = self.settings
        loop = asyncio.get_running_loop()
        self._spawn(self.manager.run(), "verso-manager")
        if s.file_system_poll_wait_seconds > 0:
            source = self.source
            if s.enable_file_system_watch:
                self._watcher = DirectoryWatcher(lambda: loop.call_soon_threadsafe(source.trigger))
                self._watcher.sync([m.base_path for m in source.models])
                source.trigger()  # a version that arrived before the watch began is not missed
            self._spawn(self._poll_forever(), "verso-source")
        if s.model_config_file_poll_wait_seconds > 0 and s.model_config_file:
            watch = ConfigFileWatch(s.model_config_file, lambda text: self.core.apply_config_text(
                text, s.model_config_file), "model config file",
                applied=self.config.file_texts.get(s.model_config_file))
            self._spawn(watch.run(s.model_config_file_poll_wait_seconds), "verso-config-poll")
        self._spawn(self.rollouts.run_auto(), "verso-rollout-auto")
        if s.rollout_config_file and s.rollout_config_file_poll_wait_seconds > 0:
            watch = ConfigFileWatch(s.rollout_config_file, lambda text: _apply_rollouts(
                self.rollouts, text, s.rollout_config_file), "rollout config file",
                applied=self.config.file_texts.get(s.rollout_config_file))
            self._spawn(watch.run(s.rollout_config_file_poll_wait_seconds), "verso-rollout-config-poll")

    async def _poll_forever(self) -> None:
        while True:
            await self.source.run_once(self.settings.file_system_poll_wait_seconds)
            if self._watcher is not None:
                self._watcher.sync([m.base_path for m in self.source.models])

    def _spawn(self, coro, name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def _start_rest(self) -> None:
        s = self.settings
        if s.rest_api_port and s.rest_api_port == s.port:
            log.error("--rest_api_port must differ from --port; the REST API is not started")
        elif s.rest_api_port:
            from server.transports.rest import RestApi, start as start_rest
            api = RestApi(self.core, timeout_ms=s.rest_api_timeout_in_ms, cors=s.rest_api_enable_cors_support,
                          metrics=self.metrics, metrics_path=self.prometheus_path, ready=self.ready,
                          executor=self._pools["predict"],
                          cors_origins=s.rest_api_cors_allowed_origins, allowed_hosts=s.rest_api_allowed_hosts,
                          max_body_bytes=s.rest_api_max_body_bytes or self.limit_defaults.rest_max_body_bytes,
                          body_timeout_s=s.rest_api_body_timeout_seconds)
            self._rest = await start_rest(api, s.bind_address, s.rest_api_port, reuse_port=self.worker is not None,
                                          grace_s=s.shutdown_grace_seconds,
                                          header_timeout_s=s.rest_api_header_timeout_seconds,
                                          ssl_context=self.tls.ssl_context() if self.tls else None)
        elif self.prometheus_path:
            log.error("Prometheus metrics need a REST port (--rest_api_port); they are not served")

    # ---- stop ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Drain and close everything ``start`` opened (safe after a partial start)."""
        s = self.settings
        self.stopping.set()
        log.info("Shutting down: draining in-flight requests (grace %.1fs)", s.shutdown_grace_seconds)
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        # Both transports stop accepting at once (new gRPC calls get UNAVAILABLE, new REST
        # connections are refused); then the calls in flight, queued batches included, finish
        # within the grace period, while the batch threads and the manager still run.
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(s.shutdown_grace_seconds))
        if self._rest is not None:
            stops.append(self._rest.shutdown())
        await asyncio.gather(*stops)
        if self._rest is not None:
            await self._rest.cleanup()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hasattr(self, "manager"):
            await self.manager.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if getattr(self, "rollouts", None) is not None:
            # The answers logged so far, and rollout state not written yet, reach the state file
            # before the process goes (or the loss is logged).
            await self.rollouts.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
