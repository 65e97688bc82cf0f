"""The real Verso server as a subprocess on a free 127.0.0.1 port, with official TF Serving stubs."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

READY_LINE = "Running gRPC ModelServer at"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``cond`` against the server subprocess until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ServerClient:
    """Talking to a running server on 127.0.0.1: the official gRPC stubs and plain HTTP.
    Subclasses set ``port`` and ``rest_port``."""

    port: int
    rest_port: Optional[int]
    _channel: Optional[grpc.Channel] = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self._channel

    @property
    def predict_stub(self):
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def model_stub(self):
        return model_service_pb2_grpc.ModelServiceStub(self.channel)

    def http(self, method: str, path: str, body=None, headers: Optional[dict] = None,
             timeout: float = 30) -> tuple[int, dict, bytes]:
        """One plain HTTP request to the REST port: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def rest_json(self, method: str, path: str, body=None, **kw) -> tuple[int, object]:
        """(status, parsed JSON body) of a REST call; NaN/Infinity accepted as TF Serving prints them."""
        status, _, data = self.http(method, path, body, **kw)
        return status, json.loads(data)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class ServerProcess(ServerClient):
    def __init__(self, args: list[str], *, entry: Optional[list[str]] = None, port: Optional[int] = None,
                 with_port: bool = True, rest: bool = False, cwd: Optional[str] = None):
        self.cwd = cwd
        self.port = port or free_port()
        self.rest_port = free_port() if rest else None
        base = entry or [sys.executable, "-m", "server"]
        net = [f"--port={self.port}", "--bind_address=127.0.0.1"] if with_port else []
        if rest:
            net.append(f"--rest_api_port={self.rest_port}")
        self.cmd = base + net + args
        self.log = tempfile.NamedTemporaryFile("w+", prefix="verso-", suffix=".log", delete=False)
        self.proc: Optional[subprocess.Popen] = None
        self._channel: Optional[grpc.Channel] = None

    def start(self, wait: bool = True) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        if wait:
            wait_until(lambda: READY_LINE in self.output() or self.proc.poll() is not None,
                       timeout=START_TIMEOUT_S, interval=0.1, what="server start")
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self._close_channel()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class InProcessServer(ServerClient):
    """The real server, in this process: ``App(server_config(flags))`` built, started and
    stopped on its own event loop in a thread, serving the same gRPC and REST ports with the
    same code as ``python -m server``, without a process start (TensorFlow is imported once
    for all tests). For tests of the data plane and the transports (tests/integration); what
    needs a process of its own (flags and start-up errors, signals and drain, workers, TLS,
    the console scripts) stays in tests/e2e. ``output()`` is the server's log records."""

    def __init__(self, args: list[str], *, rest: bool = False, bundled: bool = False):
        self.bundled = bundled  # `verso serve`'s defaults: the bundled repository without model flags
        self.port = free_port()
        self.rest_port = free_port() if rest else None
        net = [f"--port={self.port}", "--bind_address=127.0.0.1"]
        if rest:
            net.append(f"--rest_api_port={self.rest_port}")
        self.argv = net + list(args)
        self.app = None
        self._log: list[str] = []
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def start(self) -> "InProcessServer":
        from server.app import App
        from server.settings import parse_flags, server_config
        self.app = App(server_config(parse_flags(self.argv), bundled_default=self.bundled))
        handler = _ListHandler(self._log)
        logger = logging.getLogger("verso")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self._handler = handler
        started = threading.Event()
        failure: list[BaseException] = []

        async def life():
            self.app.build()
            try:
                await self.app.start()
            except BaseException as e:  # reported by start() below
                failure.append(e)
                started.set()
                await self.app.stop()
                return
            started.set()
            await self.app.stopping.wait()
            await self.app.stop()

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(life())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="in-process-server", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S):
            raise AssertionError("the in-process server did not start")
        if failure:
            self._thread.join(30)
            raise failure[0]
        return self

    def output(self) -> str:
        return "\n".join(self._log)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._close_channel()
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.app.stopping.set)
            self._thread.join(60)
        logging.getLogger("verso").removeHandler(self._handler)


class _ListHandler(logging.Handler):
    """Keeps the formatted records: the in-process server's log."""

    def __init__(self, records: list):
        super().__init__(level=logging.INFO)
        self.records = records
        self.setFormatter(logging.Formatter("%(levelname).1s %(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))  # with the traceback of a logged exception
