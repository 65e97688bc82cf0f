"""--num_workers: two processes share the ports, a crashed worker is replaced, SIGTERM drains all."""

from __future__ import annotations

import os
import signal

import numpy as np

from client import Client, RestClient
from tests.server_proc import wait_until

READY = "Running gRPC ModelServer at"


def _ready(srv) -> int:
    """Workers that printed the ready line (each also logs it, with a prefix: not counted)."""
    return sum(1 for line in srv.output().splitlines() if line.startswith(READY))


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _answers(srv, n: int = 10) -> None:
    for _ in range(n):  # a new client, so a new connection, each time: the kernel picks a worker
        with Client(f"127.0.0.1:{srv.port}") as c:
            np.testing.assert_array_equal(c.predict("hp", [2.0]), [2.0])
        with RestClient(f"http://127.0.0.1:{srv.rest_port}") as r:
            np.testing.assert_array_equal(r.predict("hp", [4.0]), [3.0])


def test_two_workers_share_the_ports_replace_a_crashed_one_and_drain(server_factory, repo):
    repo.put("hp", 1, "hp1")
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--num_workers=2", rest=True)
    wait_until(lambda: _ready(srv) >= 2, timeout=120, what="both workers")
    workers = _children(srv.proc.pid)
    assert len(workers) == 2, srv.output()
    _answers(srv)

    os.kill(workers[0], signal.SIGKILL)
    _answers(srv)  # the other worker keeps serving while the first is replaced
    wait_until(lambda: _ready(srv) >= 3, timeout=120, what="the replacement worker")
    replaced = _children(srv.proc.pid)
    assert len(replaced) == 2 and workers[1] in replaced and workers[0] not in replaced
    assert "Worker 0" in srv.output() and "restarting it" in srv.output()
    _answers(srv)

    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(timeout=90) == 0
    assert not any(_alive(p) for p in replaced)
