"""--num_workers: two processes share the ports, a crashed worker is replaced, SIGTERM drains all."""

from __future__ import annotations

import glob
import os
import signal

import grpc
import numpy as np
import pytest

from client import Client, RestClient, VersoError
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


def _counts(srv) -> set[tuple[int, int]]:
    """(gRPC, REST) Predict counts as seen by five scrapes, each on a new connection, so each
    reaches whichever worker the kernel picks."""
    seen = set()
    for _ in range(5):
        status, _, body = srv.http("GET", "/metrics")
        assert status == 200
        lines = body.decode().splitlines()

        def count(api, entrypoint):  # TF Serving's API label: "Predict" over gRPC, "predict" over REST
            prefix = (f':tensorflow:serving:request_latency_count{{model_name="hp",API="{api}",'
                      f'entrypoint="{entrypoint}"}}')
            return next((int(float(x.split()[-1])) for x in lines if x.startswith(prefix + " ")), 0)
        seen.add((count("Predict", "GRPC"), count("predict", "REST")))
    return seen


def test_two_workers_share_the_ports_replace_a_crashed_one_and_drain(server_factory, repo, tmp_path):
    repo.put("hp", 1, "hp1")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    rollouts = tmp_path / "rollouts.config"
    rollouts.write_text('models { model: "hp" stable: 1 }')
    srv = server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--num_workers=2",
                         f"--monitoring_config_file={monitoring}", f"--rollout_config_file={rollouts}", rest=True)
    wait_until(lambda: _ready(srv) >= 2, timeout=120, what="both workers")
    workers = _children(srv.proc.pid)
    assert len(workers) == 2, srv.output()
    metrics_dir = next(iter(glob.glob(f"/tmp/verso-metrics-*/counter_{workers[0]}.db")), None)
    _answers(srv)
    # Whichever worker answers a scrape, it reports the totals of both.
    assert _counts(srv) == {(10, 10)}
    # The workers share the rollout state: a SetRollout through one worker reaches the other, and
    # each worker's status counts the calls both answered (each call on a new connection).
    with Client(f"127.0.0.1:{srv.port}") as c:
        assert c.rollout("hp").config.stable == 1
        c.set_rollout("hp", stable=1, window=500)

    def both_took_it_up() -> bool:
        for _ in range(6):
            with Client(f"127.0.0.1:{srv.port}") as c:
                if c.rollout("hp").config.window != 500:
                    return False
        return True
    wait_until(both_took_it_up, timeout=15, interval=0.5, what="the SetRollout on both workers")
    for _ in range(10):
        with Client(f"127.0.0.1:{srv.port}") as c:
            c.predict("hp", [2.0])

    def both_see_everything() -> bool:
        for _ in range(6):
            with Client(f"127.0.0.1:{srv.port}") as c:
                st = c.rollout("hp")
                if st.config.window != 500 or next(v.requests for v in st.versions if v.version == 1) != 10:
                    return False
        return True
    wait_until(both_see_everything, timeout=15, interval=0.5, what="both workers' status")
    # The workers share one state file: feedback finds an answer whichever worker gave it (each
    # call on a new connection, so the kernel picks the worker). hp's output has no top-1, so a
    # found answer is INVALID_ARGUMENT; an answer not found would be NOT_FOUND.
    for _ in range(10):
        with Client(f"127.0.0.1:{srv.port}") as c:
            request_id = c.predict("hp", [2.0], details=True).request_id
        with Client(f"127.0.0.1:{srv.port}") as c:
            e = pytest.raises(VersoError, c.feedback, request_id, [1]).value
        assert (e.code, e.message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "Answers of hp have no top-1 output to compare feedback with")

    os.kill(workers[0], signal.SIGKILL)
    _answers(srv)  # the other worker keeps serving while the first is replaced
    wait_until(lambda: _ready(srv) >= 3, timeout=120, what="the replacement worker")
    replaced = _children(srv.proc.pid)
    assert len(replaced) == 2 and workers[1] in replaced and workers[0] not in replaced
    assert "Worker 0" in srv.output() and "restarting it" in srv.output()
    _answers(srv)
    # Three rounds of 10 + 10, and the 20 gRPC calls of the rollout checks: the killed worker's
    # counts stay in the totals.
    assert _counts(srv) == {(50, 30)}

    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(timeout=90) == 0
    assert not any(_alive(p) for p in replaced)
    assert metrics_dir is not None and not os.path.exists(os.path.dirname(metrics_dir))  # removed at exit
