"""Two replicas over one shared model repository, called through the client's multi-replica
target: a new version published on disk is picked up by both replicas, which converge on it,
while traffic spread over both sees no failed request (deploy/README.md's rollout recipe)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from client import Client
from server.lifecycle.policy import State
from tests.helpers import states
from tests.helpers import scrape
from tests.server_proc import READY_LINE, START_TIMEOUT_S, wait_until

X = np.array([1.0], np.float32)  # a numpy array: the client sends it as is, no metadata call first
TRAFFIC_LIMIT_S = 90.0           # the traffic thread stops by itself after this, whatever happens
TRAFFIC_LIMIT_REQUESTS = 100_000


def expected(version: int) -> float:
    return 0.5 * float(X[0]) + version  # half_plus_N: version N of "hp" is hpN


class Traffic(threading.Thread):
    """Blocking Predict calls in a loop, each answer or failure recorded in order."""

    def __init__(self, client: Client):
        super().__init__(daemon=True, name="replica-traffic")
        self.client = client
        self.stop = threading.Event()
        self.versions: list[int] = []      # the answering version of each successful call, in order
        self.failures: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.versions) < TRAFFIC_LIMIT_REQUESTS:
            try:
                p = self.client.predict("hp", X, details=True)
            except Exception as e:  # every exception is a failed request, whatever its kind
                self.failures.append(f"call {len(self.versions) + len(self.failures)}: {type(e).__name__}: {e}")
                continue
            y = float(p.outputs["y"][0])
            if y != expected(p.version):  # the answer must come from the version it names
                self.failures.append(f"v{p.version} answered {y}, expected {expected(p.version)}")
            self.versions.append(p.version)

    def wait_for(self, n: int, what: str) -> None:
        wait_until(lambda: len(self.versions) >= n or self.failures or not self.is_alive(), timeout=60, what=what)
        assert len(self.versions) >= n, (what, self.failures[:5])


def serving(server) -> set[int]:
    """The versions a replica reports in any state but END (unloaded, or failed to load)."""
    return {v for v, s in states(server, "hp").items() if s != State.END}


def served(server) -> dict[tuple[str, str], float]:
    """{(version, status): Predict calls} this replica answered, from its Prometheus metrics."""
    samples, _ = scrape(server)
    out: dict[tuple[str, str], float] = {}
    for (name, labels), value in samples.items():
        lab = dict(labels)
        if name == "verso_request_count_total" and lab.get("model_name") == "hp" and lab.get("api") == "Predict":
            key = (lab["version"], lab["status"])
            out[key] = out.get(key, 0.0) + value
    return out


@pytest.mark.parametrize("remove_old", [
    "after_convergence",  # the careful order
    # Publish v2 and delete v1 in one breath: each replica keeps v1 serving while v2 settles
    # (--version_settle_seconds), then loads v2 before unloading v1.
    "at_once",
])
def test_two_replicas_converge_on_a_new_version_without_a_failed_request(repo, server_factory, tmp_path,
                                                                          remove_old):
    """Both replicas answer (round_robin), both load v2 and drop v1 by themselves, every call
    succeeds with the answer of the version it names, and once both report only v2 every answer
    is v2's. Each replica's own metrics agree call for call with what the client saw."""
    repo.put("hp", 1, "hp1")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    args = ("--model_name=hp", f"--model_base_path={repo.path('hp')}", "--file_system_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring}")
    # Both start at once (TensorFlow's import dominates a start), then both must be up.
    replicas = [server_factory(*args, rest=True, wait=False) for _ in range(2)]
    for r in replicas:
        wait_until(lambda: READY_LINE in r.output() or r.proc.poll() is not None, timeout=START_TIMEOUT_S,
                   interval=0.1, what="replica start")
        assert r.proc.poll() is None, r.output()

    client = Client(",".join(f"127.0.0.1:{r.port}" for r in replicas))
    traffic = Traffic(client)
    traffic.start()
    try:
        # round_robin: both replicas answer before anything changes.
        wait_until(lambda: all(served(r).get(("1", "OK"), 0) >= 20 for r in replicas) or not traffic.is_alive(),
                   timeout=60, what="both replicas answering v1")

        repo.put("hp", 2, "hp2")
        if remove_old == "at_once":
            repo.remove("hp", 1)
        for r in replicas:
            wait_until(lambda: serving(r) == {2}, timeout=60, what=f"replica :{r.port} serving only v2")
        # One traffic thread has at most one call in flight: only the next answer may predate this.
        converged = len(traffic.versions) + 1
        if remove_old == "after_convergence":
            repo.remove("hp", 1)
        traffic.wait_for(converged + 200, "answers after convergence")
        assert all(serving(r) == {2} for r in replicas)
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
        client.close()
    assert not traffic.is_alive()

    assert traffic.failures == [], f"{len(traffic.failures)} failed, first: {traffic.failures[:5]}"
    answers = traffic.versions
    assert answers[0] == 1 and 2 in answers
    assert set(answers[converged:]) == {2}, "an answer from v1 after both replicas reported only v2"

    # Per replica, from its own metrics: each served v1 and then v2, nothing but OK (a failed
    # call the client's retry hid would show here), and together exactly the calls the client saw.
    per_replica = [served(r) for r in replicas]
    for r, counts in zip(replicas, per_replica):
        assert {status for _, status in counts} == {"OK"}, (r.port, counts)
        assert counts.get(("1", "OK"), 0) > 0 and counts.get(("2", "OK"), 0) > 0, (r.port, counts)
    for version in (1, 2):
        assert sum(c.get((str(version), "OK"), 0) for c in per_replica) == answers.count(version)
    print(f"{len(answers)} calls over 2 replicas, v1 -> v2, 0 failed; per replica: {per_replica}")
