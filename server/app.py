"""Composition root: builds every component from ``Settings``, starts and stops them in order.

Start-up: configure TF -> first poll of every model -> wait for the initial loads (failed
ones end in END with their error; a missing base path only makes that model NOT_FOUND) ->
open the gRPC port -> background loops (manager ticks, file-system polls, watchdog).
Shutdown on SIGTERM/SIGINT: stop accepting, let in-flight calls finish (grace period),
stop the loops, exit 0.

Threads: one asyncio loop owns all mutable state. Named executors do blocking work:
``verso-load`` (SavedModel loads), ``verso-unload``, ``verso-fs`` (directory scans) and
``verso-predict`` (TF signature runs).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from server.settings import ModelEntry, Settings

log = logging.getLogger("verso")

SHUTDOWN_GRACE_SECONDS = 10.0


class App:
    def __init__(self, settings: Settings, models: list[ModelEntry]):
        self.settings = settings
        self.models = models
        self.grpc_port: Optional[int] = None
        self._stopping: Optional[asyncio.Event] = None

    async def serve(self) -> None:
        # TensorFlow is imported here, after flags were checked, because it takes seconds.
        from server.api.grpc_service import create_server
        from server.api.handlers import ServingCore
        from server.core.manager import Manager
        from server.core.source import DirectoryWatcher, FileSystemSource, ServableConfig
        from server.servables import saved_model

        s = self.settings
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        saved_model.configure_runtime(s.tensorflow_intra_op_parallelism, s.tensorflow_inter_op_parallelism)
        tags = s.saved_model_tag_list

        load_pool = ThreadPoolExecutor(2, thread_name_prefix="verso-load")
        unload_pool = ThreadPoolExecutor(1, thread_name_prefix="verso-unload")
        fs_pool = ThreadPoolExecutor(1, thread_name_prefix="verso-fs")
        predict_pool = ThreadPoolExecutor(8, thread_name_prefix="verso-predict")

        manager = Manager(lambda name, version, path: saved_model.load_saved_model(path, tags),
                          load_executor=load_pool, unload_executor=unload_pool,
                          max_load_retries=s.max_num_load_retries,
                          load_retry_interval_s=s.load_retry_interval_micros / 1e6)
        source = FileSystemSource(
            [ServableConfig(m.name, m.base_path, m.policy) for m in self.models],
            manager.set_aspired_versions, settle_seconds=s.version_settle_seconds,
            executor=fs_pool, clock=time.monotonic)
        core = ServingCore(manager, predict_pool,
                           tensor_content_outputs=s.enable_serialization_as_tensor_content,
                           labels={m.name: m.labels for m in self.models})

        await source.poll()
        await manager.run_until_idle()

        address = f"{s.bind_address}:{s.port}"
        server = create_server(core, address)
        await server.start()
        log.info("Running gRPC ModelServer at %s ...", address)
        print(f"Running gRPC ModelServer at {address} ...", flush=True)

        tasks = [loop.create_task(manager.run(), name="verso-manager")]
        watcher = None
        if s.file_system_poll_wait_seconds > 0:
            if s.enable_file_system_watch:
                watcher = DirectoryWatcher(lambda: loop.call_soon_threadsafe(source.trigger))
                watcher.sync([m.base_path for m in source.models])

            async def poll_forever():
                while True:
                    await source.run_once(s.file_system_poll_wait_seconds)
                    if watcher is not None:
                        watcher.sync([m.base_path for m in source.models])

            tasks.append(loop.create_task(poll_forever(), name="verso-source"))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()

        log.info("Shutting down: draining in-flight requests (grace %.0fs)", SHUTDOWN_GRACE_SECONDS)
        await server.stop(SHUTDOWN_GRACE_SECONDS)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await manager.stop()
        if watcher is not None:
            watcher.stop()
        for pool in (predict_pool, load_pool, unload_pool, fs_pool):
            pool.shutdown(wait=False, cancel_futures=True)
