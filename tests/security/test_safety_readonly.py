"""A rollout state directory that is read-only at start-up (issue 26, item 6): before, the whole
server did not start. Now it starts without rollout changes and says so: Predict works, the
rollout config file's rollout serves its stable version only, GetRollout carries the reason,
SetRollout and Feedback answer FAILED_PRECONDITION with it, answers carry no request id
(no one could give feedback for them), a log line and ``verso_rollouts_available 0``.

The directory is a tmpfs of the test's own remounted read-only (``chmod`` does not stop root)."""

from __future__ import annotations

import grpc
import pytest

from client import Client
from client.errors import VersoError
from server.rollout.store import RolloutStore
from tests.helpers import X, predict_request
from tests.security.conftest import rollout_configs
from tests.server_proc import ServerProcess
from tests.tmpfs import small_tmpfs


def test_a_read_only_state_directory_runs_the_server_without_rollout_changes(repo, tmp_path):
    flags = rollout_configs(repo, tmp_path, "stable: 1 canary: 2 canary_percent: 50 auto { enabled: true }")
    with small_tmpfs() as fs:
        state = fs.path("state.sqlite")
        RolloutStore(state).close()  # the state file of an earlier run
        fs.read_only()
        srv = ServerProcess([*flags, f"--rollout_state_file={state}"], rest=True)
        try:
            srv.start()
            assert "the server runs without rollout changes" in srv.output()
            # Predict works; the canary (the version under test) gets nothing; no request id.
            for _ in range(20):
                response, call = srv.predict_stub.Predict.with_call(predict_request("m", {"x": X}), timeout=30)
                assert response.model_spec.version.value == 1
                assert "verso-request-id" not in dict(call.trailing_metadata())
            status, headers, _ = srv.http("POST", "/v1/models/m:predict", {"instances": [[2.0]]},
                                          headers={"Content-Type": "application/json"})
            assert status == 200 and "verso-request-id" not in headers
            with Client(f"127.0.0.1:{srv.port}") as c:
                st = c.rollout("m")
                assert (st.config.stable, st.config.canary, st.config.canary_percent) == (1, 2, 0.0)
                assert any(a.startswith("rollouts cannot change on this server: --rollout_state_file")
                           for a in st.alarms)
                with pytest.raises(VersoError) as e:
                    c.set_rollout("m", stable=1, canary=2, canary_percent=90)
                assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
                assert f"--rollout_state_file {state} cannot be used" in e.value.message
                with pytest.raises(VersoError) as e:
                    c.feedback("0" * 32, ["1"])
                assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            _, _, metrics = srv.http("GET", "/monitoring/prometheus/metrics")
            assert "verso_rollouts_available 0" in metrics.decode()
            assert srv.alive()
        finally:
            srv.stop()


def test_a_corrupt_state_file_runs_the_server_without_rollout_changes_and_is_left_alone(repo, tmp_path):
    repo.put("m", 1, "hp1")
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"not a database " * 100)
    srv = ServerProcess([f"--model_base_path={repo.path('m')}", "--model_name=m", f"--rollout_state_file={state}"])
    try:
        srv.start()
        assert srv.predict_stub.Predict(predict_request("m", {"x": X}), timeout=30).model_spec.version.value == 1
        with Client(f"127.0.0.1:{srv.port}") as c, pytest.raises(VersoError) as e:
            c.set_rollout("m", stable=1)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cannot be used" in e.value.message
    finally:
        srv.stop()
    assert state.read_bytes() == b"not a database " * 100  # for the operator to look at
