"""Rollout state across real process restarts (--rollout_state_file): an automatic ROLLBACK
survives SIGTERM and a restart with the same, unchanged rollout config file, and so does an
operator's promotion after it; a store written to by a process killed with SIGKILL mid-write
stays readable."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from client import Client
from server.rollout.store import RolloutStore
from tests.helpers import hp_answer
from tests.server_proc import ServerProcess, wait_until


def test_a_rollback_survives_sigterm_and_a_restart(repo, tmp_path):
    repo.put("m", 1, "hp1")
    repo.put("m", 2, "ids")  # takes no input "x": every call the canary gets is an error
    rollouts = tmp_path / "rollouts.config"
    rollouts.write_text('models { model: "m" stable: 1 canary: 2 canary_percent: 50 auto { enabled: true '
                        'interval_seconds: 1 } gates { min_samples: 5 failure_threshold: 2 '
                        'max_error_rate_increase: 0.5 max_accuracy_drop: 0.5 } }\n')
    state = tmp_path / "state.sqlite"
    args = [f"--model_config_file={tmp_path / 'models.config'}", f"--rollout_config_file={rollouts}",
            f"--rollout_state_file={state}", "--version_settle_seconds=0"]
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{repo.path("m")}" model_platform: "tensorflow" '
        'model_version_policy { all {} } } }\n')
    first = ServerProcess(args)
    first.start()
    try:
        with Client(f"127.0.0.1:{first.port}") as c:
            def rolled_back() -> bool:
                for _ in range(10):
                    try:
                        hp_answer(first, "m")
                    except Exception:
                        pass  # the canary's errors are the evidence
                return c.rollout("m").config.canary_percent == 0.0
            wait_until(rolled_back, timeout=60, interval=0.2, what="the automatic ROLLBACK")
            assert c.rollout("m").verdict.final
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait_exit(60) == 0
    finally:
        first.stop()
    second = ServerProcess(args)  # the same flags and the same, unchanged rollout config file
    second.start()
    try:
        with Client(f"127.0.0.1:{second.port}") as c:
            st = c.rollout("m")
            assert (st.config.stable, st.config.canary, st.config.canary_percent) == (1, 2, 0.0)
            assert st.verdict.decision == "ROLLBACK" and st.verdict.final
            assert any(d.text.startswith("ROLLBACK: canary v2 50 % -> 0 %") and d.who == "automatic"
                       for d in st.decisions)
        assert {hp_answer(second, "m")[0] for _ in range(20)} == {1}
        # An operator's promotion stands across a restart too, though the rollout config file
        # (unchanged) still says stable 1: the newer decision wins (automatic promotions across
        # a restart: tests/unit/test_rollout_store.py).
        repo.put("m", 3, "hp1")
        with Client(f"127.0.0.1:{second.port}") as c:
            c.set_rollout("m", stable=3)  # v3 is checked on disk and loaded (pinned) first
        assert {hp_answer(second, "m")[0] for _ in range(10)} == {3}
        second.proc.send_signal(signal.SIGTERM)
        assert second.wait_exit(60) == 0
    finally:
        second.stop()
    third = ServerProcess(args)
    third.start()
    try:
        with Client(f"127.0.0.1:{third.port}") as c:
            st = c.rollout("m")
            assert (st.config.stable, st.config.canary) == (3, 0) and not st.verdict.final
        assert {hp_answer(third, "m")[0] for _ in range(10)} == {3}
    finally:
        third.stop()


WRITER = """
import sys
from protos import rollout_pb2
from server.rollout.store import RolloutStore
store = RolloutStore(sys.argv[1])
mr = rollout_pb2.ModelRollout(model="m", stable=1, canary=2)
print("ready", flush=True)
i = 0
while True:
    i += 1
    mr.canary_percent = i % 100
    store.save("m", mr, file_entry=None, final_rollback=None, failed_analyses=i % 3, now=float(i))
    store.log("m", float(i), "automatic", "step %d" % i)
"""


def test_sigkill_mid_write_leaves_a_readable_store(tmp_path):
    path = tmp_path / "state.sqlite"
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # hundreds of writes in flight
        finally:
            writer.kill()  # SIGKILL: no cleanup, possibly inside a transaction
            writer.wait()
        store = RolloutStore(str(path))  # opens, passes quick_check, every row parses
        saved = store.load()["m"]
        steps = [text for _, _, text in store.decisions("m")]
        assert steps and all(t.startswith("step ") for t in steps)
        assert saved.config.stable == 1
        store.close()
