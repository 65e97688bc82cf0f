"""``--num_workers N``: N server processes on one machine, sharing the gRPC and REST ports.

The supervisor (the process the operator started) loads no model. It starts N workers, each
``server.cli.launch_command()`` with the same flags and ``VERSO_WORKER=i``; a worker binds its ports with
SO_REUSEPORT, so the kernel spreads connections over the workers, and each worker has its own
models, batching and rollout state. Request and batch metrics are shared: workers write them
to prometheus_client's multiprocess files in a directory the supervisor owns
(``PROMETHEUS_MULTIPROC_DIR``), so a scrape reaching any worker answers the totals.

The supervisor restarts a worker that exits on its own (after a short pause; one that keeps
dying within seconds of its start is restarted at most ``MAX_QUICK_RESTARTS`` times in a row,
then the supervisor stops everything and exits 255). On SIGTERM or SIGINT it forwards the
signal, so every worker drains as a single server does, waits for them up to their grace
period plus a margin, kills stragglers and exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

log = logging.getLogger("verso.workers")

WORKER_ENV = "VERSO_WORKER"
BUNDLED_ENV = "VERSO_BUNDLED_DEFAULTS"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
QUICK_EXIT_S = 10.0
MAX_QUICK_RESTARTS = 5
RESTART_PAUSE_S = 1.0


def worker_args(argv: list[str]) -> list[str]:
    """The command line of a worker: the operator's flags without ``--num_workers``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if name == "num_workers":
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


class Supervisor:
    """Starts, watches and stops the workers. ``spawn(i)`` starts worker i (a Popen);
    ``clock`` is monotonic seconds. ``step()`` checks the workers once (restarts the dead);
    ``run()`` steps until a stop signal, then ``stop()``."""

    def __init__(self, n: int, spawn: Callable[[int], subprocess.Popen], *, grace_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 on_exit: Callable[[int], None] = lambda pid: None):
        """``on_exit(pid)`` is told of each worker that exited on its own."""
        self.n = n
        self.on_exit = on_exit
        self.spawn = spawn
        self.grace_s = grace_s
        self.clock, self.sleep = clock, sleep
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, float] = {}
        self.quick: dict[int, int] = {}
        self.stopping = False
        self.failed = False

    def start(self) -> None:
        for i in range(self.n):
            self._start(i)

    def _start(self, i: int) -> None:
        self.procs[i] = self.spawn(i)
        self.started[i] = self.clock()

    def step(self) -> None:
        for i, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None or self.stopping:
                continue
            quick = self.clock() - self.started[i] < QUICK_EXIT_S
            self.quick[i] = self.quick.get(i, 0) + 1 if quick else 0
            if self.quick[i] > MAX_QUICK_RESTARTS:
                log.error("Worker %d exited with %d %d times within %.0f s of starting; stopping", i, code,
                          self.quick[i], QUICK_EXIT_S)
                self.failed = True
                self.stopping = True
                return
            self.on_exit(proc.pid)
            log.error("Worker %d (pid %d) exited with %d; restarting it", i, proc.pid, code)
            self.sleep(RESTART_PAUSE_S if quick else 0.0)
            self._start(i)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)
        deadline = self.clock() + self.grace_s + 15.0
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.error("Worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()

    def run(self, poll_s: float = 0.5) -> int:
        received: list[int] = []

        def on_signal(signum, frame):
            received.append(signum)
            self.stopping = True

        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, on_signal)
        self.start()
        while not self.stopping:
            self.sleep(poll_s)
            self.step()
        self.stop(received[0] if received else signal.SIGTERM)
        return 255 if self.failed else 0


def supervise(argv: list[str], n: int, *, grace_s: float, bundled_default: bool) -> int:
    """Run ``n`` workers with ``argv`` (the operator's flags) until a stop signal."""
    args = worker_args(argv)
    metrics_dir = tempfile.mkdtemp(prefix="verso-metrics-")

    def spawn(i: int) -> subprocess.Popen:
        env = dict(os.environ, **{WORKER_ENV: str(i), METRICS_DIR_ENV: metrics_dir})
        if bundled_default:
            env[BUNDLED_ENV] = "1"
        from server.cli import launch_command
        return subprocess.Popen([*launch_command(), *args], env=env)

    def on_exit(pid: int) -> None:
        # The dead worker's counters stay (totals never go back); its live gauges go.
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid, metrics_dir)

    log.info("Starting %d workers sharing the ports (SO_REUSEPORT)", n)
    try:
        return Supervisor(n, spawn, grace_s=grace_s, on_exit=on_exit).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def metrics_dir() -> Optional[str]:
    """The shared metrics directory of a worker (None in a single process)."""
    return os.environ.get(METRICS_DIR_ENV) if worker_number() is not None else None


def worker_number() -> Optional[int]:
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None
