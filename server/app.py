"""Composition root: builds every component from ``Settings``, starts and stops them in order.

Start-up: configure TF -> apply the model config (first scan of every model, initial loads
on a wide pool; failed models are logged in one line each and answer NOT_FOUND) -> open the
gRPC port with health SERVING -> background loops (manager ticks, file-system polls,
watchdog, config-file polls).
Shutdown on SIGTERM/SIGINT: health NOT_SERVING, stop accepting, let in-flight calls finish
(``--shutdown_grace_seconds``), stop the loops, exit 0.

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

from server.core.model_config import TENSORFLOW_PLATFORM, ModelEntry
from server.settings import Settings

log = logging.getLogger("verso")


class StartupError(Exception):
    """Start-up cannot complete; ``str()`` is the one line for the operator."""


async def _apply_rollouts(rollouts, text: str, path: str) -> None:
    from server.rollout.config import parse_rollout_config

    rollouts.apply(parse_rollout_config(text, path), source=path)


def _remove_stale_socket(path: str) -> None:
    """Remove a UNIX socket file left at ``path`` (by this server at exit, or by a crashed one
    at start); any other kind of file is left alone and the bind then fails with one line."""
    import stat
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


class App:
    def __init__(self, settings: Settings, models: list[ModelEntry], *, config_root: Optional[str] = None,
                 batching=None, prometheus_path: Optional[str] = None, rollout_configs: Optional[dict] = None,
                 tls=None, session_options=None):
        self.settings = settings
        self.session_options = session_options  # server.settings.SessionOptions, or None: from the flags
        self.tls = tls  # server.tls.TlsConfig (--ssl_config_file) or None
        self.rollout_configs = rollout_configs or {}  # model -> verso.rollout.ModelRollout, checked
        self.prometheus_path = prometheus_path
        self.batching_options = batching
        self.models = models
        self.config_root = config_root  # where relative base paths resolve (bundled repository)
        self._stopping: Optional[asyncio.Event] = None

    async def serve(self) -> None:
        # TensorFlow is imported here, after flags were checked, because it takes seconds.
        from grpc_health.v1 import health, health_pb2_grpc

        from server.api.grpc_service import create_server
        from server.api.handlers import ServingCore, poll_text_file
        from server.core.manager import Manager
        from server.core.model_config import ServedModels
        from server.core.source import DirectoryWatcher, FileSystemSource
        from server.servables import saved_model

        s = self.settings
        from server.core import predict
        predict.MAX_TENSOR_BYTES = s.max_tensor_bytes
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        from server.settings import SessionOptions
        session = self.session_options or SessionOptions(intra_op_threads=s.tensorflow_intra_op_parallelism,
                                                         inter_op_threads=s.tensorflow_inter_op_parallelism)
        saved_model.configure_runtime(session.intra_op_threads, session.inter_op_threads, config=session.config,
                                      gpu_memory_fraction=session.gpu_memory_fraction)
        tags = s.saved_model_tag_list
        warmup_iterations = s.num_request_iterations_for_warmup or 1

        from server.api.metrics import Metrics, version_mtime

        def versions():
            for name in manager.model_names():
                for st in manager.status(name):
                    yield name, st.version, st.state, version_mtime(st.path)

        from server.workers import metrics_dir
        metrics = Metrics(versions=versions, multiprocess_dir=metrics_dir())

        from server.servables.loader import load_servable

        def load(name: str, version: int, path: str):
            t0 = time.perf_counter()
            platform = next((e.platform for e in served.entries if e.name == name), TENSORFLOW_PLATFORM)
            try:
                servable = load_servable(path, platform, tags=tags, warmup=s.enable_model_warmup,
                                         warmup_iterations=warmup_iterations, prefer_tflite=s.prefer_tflite_model,
                                         tflite_pools=s.num_tflite_pools,
                                         tflite_interpreters_per_pool=s.num_tflite_interpreters_per_pool,
                                         keep_meta_graph=not s.remove_unused_fields_from_bundle_metagraph)
            except BaseException:
                metrics.load(path, False, time.perf_counter() - t0)
                raise
            metrics.load(path, True, time.perf_counter() - t0)
            return servable

        # TF Serving: 0 load/unload threads = one at a time; the initial loads use 4 x CPUs.
        cpus = os.cpu_count() or 1
        initial_load_pool = ThreadPoolExecutor(4 * cpus, thread_name_prefix="verso-load-initial")
        load_pool = ThreadPoolExecutor(max(1, s.num_load_threads), thread_name_prefix="verso-load")
        unload_pool = ThreadPoolExecutor(max(1, s.num_unload_threads), thread_name_prefix="verso-unload")
        fs_pool = ThreadPoolExecutor(1, thread_name_prefix="verso-fs")
        predict_pool = ThreadPoolExecutor(8, thread_name_prefix="verso-predict")

        manager = Manager(load, load_executor=initial_load_pool, unload_executor=unload_pool,
                          max_load_retries=s.max_num_load_retries,
                          load_retry_interval_s=s.load_retry_interval_micros / 1e6,
                          on_unloaded=gc.unfreeze)
        source = FileSystemSource([], manager.set_aspired_versions, settle_seconds=s.version_settle_seconds,
                                  executor=fs_pool, clock=time.monotonic)
        served = ServedModels(source, manager,
                              allow_unavailable_labels=s.allow_version_labels_for_unavailable_models)
        batching = None
        batch_pool = None
        if self.batching_options is not None:
            from server.batching.scheduler import BatchScheduler
            o = self.batching_options
            batch_pool = ThreadPoolExecutor(o.num_batch_threads, thread_name_prefix=f"verso-{o.thread_pool_name}")
            batching = (BatchScheduler(batch_pool, o.num_batch_threads, observer=metrics.batch), o)
            log.info("Batching on: %s", o)
        from server.rollout.manager import RolloutManager
        shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="verso-shadow")
        paths = {}

        def version_age(name: str, version: int):
            if (name, version) not in paths:
                paths.update({(name, v.version): v.path for v in manager.status(name)})
            mtime = version_mtime(paths.get((name, version), ""))
            return None if mtime is None else max(0.0, time.time() - mtime)

        from server.workers import worker_number
        worker = worker_number()  # None in a single process
        rollouts = RolloutManager(manager, shadow_executor=shadow_pool, version_age=version_age,
                                  workers=worker is not None)
        if self.rollout_configs:
            rollouts.apply(self.rollout_configs, source=s.rollout_config_file)
        metrics.add_rollouts(lambda: [rollouts.status(name) for name in list(rollouts.configs)])
        core = ServingCore(manager, predict_pool, served,
                           tensor_content_outputs=s.enable_serialization_as_tensor_content,
                           config_root=self.config_root, batching=batching, metrics=metrics, rollouts=rollouts)

        from protos.errors import ServingError
        try:
            await served.apply(self.models, initial=True)
        except ServingError as e:
            raise StartupError(str(e)) from None
        for name, why in served.unavailable([m.name for m in self.models]).items():
            log.error("Model %s has no available version at start-up (%s); it answers NOT_FOUND until a "
                      "version loads", name, why)
        manager.set_load_executor(load_pool)
        initial_load_pool.shutdown(wait=False)
        # TensorFlow leaves hundreds of thousands of long-lived objects behind a load; CPython's
        # collector re-walks them and stalls every request (benchmarks/README.md). Freeze them
        # once after start-up; the first unload unfreezes, so an unloaded model's cycles stay
        # collectable (no leak), at the price of losing the benefit after version changes.
        gc.collect()
        gc.freeze()

        address = f"{s.bind_address}:{s.port}" if s.port else None
        socket_path = s.grpc_socket_path or None
        if socket_path is not None and worker is not None:
            socket_path = f"{socket_path}.{worker}"  # a UNIX socket cannot be shared by workers
        from server.settings import grpc_channel_arguments
        if socket_path is not None:
            _remove_stale_socket(socket_path)
        server = create_server(core, address, metrics, reuse_port=worker is not None,
                               channel_arguments=grpc_channel_arguments(s),
                               credentials=self.tls.grpc_credentials() if self.tls else None,
                               socket_path=socket_path)
        if s.enable_profiler:  # TF Serving's default: TensorFlow's profiler service on the gRPC port
            from server.api.profiler import add_profiler_service
            add_profiler_service(server)

        def ready() -> bool:
            return not self._stopping.is_set() and not served.unavailable([e.name for e in served.entries])

        health_servicer = None
        if s.enable_grpc_healthcheck_service:
            from server.api.health import HealthReporter
            health_servicer = health.aio.HealthServicer()
            reporter = HealthReporter(health_servicer, ready)
            await reporter.start()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        tasks = [loop.create_task(manager.run(), name="verso-manager")]
        if health_servicer is not None:
            tasks.append(loop.create_task(reporter.run(), name="verso-health"))
        watcher = None
        if s.file_system_poll_wait_seconds > 0:
            if s.enable_file_system_watch:
                watcher = DirectoryWatcher(lambda: loop.call_soon_threadsafe(source.trigger))
                watcher.sync([m.base_path for m in source.models])
                source.trigger()  # a version that arrived before the watch began is not missed

            async def poll_forever():
                while True:
                    await source.run_once(s.file_system_poll_wait_seconds)
                    if watcher is not None:
                        watcher.sync([m.base_path for m in source.models])

            tasks.append(loop.create_task(poll_forever(), name="verso-source"))
        if s.model_config_file_poll_wait_seconds > 0 and s.model_config_file:
            tasks.append(loop.create_task(
                core.poll_config_file(s.model_config_file, s.model_config_file_poll_wait_seconds),
                name="verso-config-poll"))

        tasks.append(loop.create_task(rollouts.run_auto(), name="verso-rollout-auto"))
        if s.rollout_config_file and s.rollout_config_file_poll_wait_seconds > 0:
            tasks.append(loop.create_task(
                poll_text_file(s.rollout_config_file, s.rollout_config_file_poll_wait_seconds,
                               lambda text: _apply_rollouts(rollouts, text, s.rollout_config_file),
                               "rollout config file"),
                name="verso-rollout-config-poll"))

        rest_runner = None
        if s.rest_api_port and s.rest_api_port == s.port:
            log.error("--rest_api_port must differ from --port; the REST API is not started")
        elif s.rest_api_port:
            from server.api.rest import RestApi, start as start_rest

            api = RestApi(core, timeout_ms=s.rest_api_timeout_in_ms, cors=s.rest_api_enable_cors_support,
                          metrics=metrics, metrics_path=self.prometheus_path, ready=ready, executor=predict_pool)
            rest_runner = await start_rest(api, s.bind_address, s.rest_api_port, reuse_port=worker is not None,
                                           grace_s=s.shutdown_grace_seconds,
                                           ssl_context=self.tls.ssl_context() if self.tls else None)
        elif self.prometheus_path:
            log.error("Prometheus metrics need a REST port (--rest_api_port); they are not served")

        await server.start()
        if address is not None:
            log.info("Running gRPC ModelServer at %s ...", address)
            print(f"Running gRPC ModelServer at {address} ...", flush=True)
        if socket_path is not None:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", socket_path)
            print(f"Running gRPC ModelServer at UNIX socket {socket_path} ...", flush=True)
        if rest_runner is not None:
            print(f"Exporting HTTP/REST API at:{s.bind_address}:{s.rest_api_port} ...", flush=True)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()

        log.info("Shutting down: draining in-flight requests (grace %.1fs)", s.shutdown_grace_seconds)
        if health_servicer is not None:
            await health_servicer.enter_graceful_shutdown()
        # Both transports stop accepting at once (new gRPC calls get UNAVAILABLE, new REST
        # connections are refused); then the calls in flight, queued batches included, finish
        # within the grace period, while the batch threads and the manager still run.
        stops = [server.stop(s.shutdown_grace_seconds)]
        if rest_runner is not None:
            stops.append(rest_runner.shutdown())
        await asyncio.gather(*stops)
        if rest_runner is not None:
            await rest_runner.cleanup()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await manager.stop()
        if watcher is not None:
            watcher.stop()
        for pool in (predict_pool, load_pool, unload_pool, fs_pool, batch_pool, shadow_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if socket_path is not None:
            _remove_stale_socket(socket_path)
