"""Safety fails closed over the real transports (issue 26, item 6): the real server in process
with its rollout state file on a small tmpfs of the test's own, filled to the last block.

SetRollout (gRPC and REST) answers UNAVAILABLE / 503 and the split stays as it was (before: 503,
and the new split was applied in memory, to be reverted silently by a restart). Answers whose
prediction-log row cannot be kept carry no request id (gRPC ``verso-request-id`` metadata, REST
``Verso-Request-Id`` header), the drops are exported; once the disk has room, every id that was
handed out names a written answer."""

from __future__ import annotations

import grpc
import pytest

from client import Client
from client.errors import VersoError
from tests.helpers import X, predict_request
from tests.security.conftest import rollout_configs
from tests.server_proc import InProcessServer, wait_until
from tests.tmpfs import small_tmpfs


def test_a_full_state_disk_refuses_changes_and_hands_out_no_id_it_cannot_log(repo, tmp_path):
    flags = rollout_configs(repo, tmp_path, "stable: 1 canary: 2 canary_percent: 10")
    with small_tmpfs() as fs:
        srv = InProcessServer([*flags, f"--rollout_state_file={fs.path('state.sqlite')}"], rest=True)
        srv.start()
        try:
            rollout_log = srv.app.rollouts.log
            rollout_log.capacity = 2  # answers that may wait in memory while the log cannot be written
            fs.fill()
            with Client(f"127.0.0.1:{srv.port}") as c:
                with pytest.raises(VersoError) as e:
                    c.set_rollout("m", stable=1, canary=2, canary_percent=90)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE and "cannot be written" in e.value.message
                status, _, body = srv.http("POST", "/v1/rollouts/m",
                                           {"model": "m", "stable": 1, "canary": 2, "canary_percent": 90},
                                           headers={"Content-Type": "application/json"})
                assert status == 503, body
                assert c.rollout("m").config.canary_percent == 10.0  # nothing changed

                ids = []
                for i in range(8):
                    _, call = srv.predict_stub.Predict.with_call(predict_request("m", {"x": X}), timeout=30)
                    ids.append(dict(call.trailing_metadata()).get("verso-request-id"))
                given = [rid for rid in ids if rid]
                assert 1 <= len(given) <= 2 and ids[-1] is None, ids
                status, headers, _ = srv.http("POST", "/v1/models/m:predict", {"instances": [[2.0]]},
                                              headers={"Content-Type": "application/json"})
                assert status == 200 and "verso-request-id" not in headers
                wait_until(lambda: rollout_log.failing is not None, timeout=10, what="the log's failed write")
                _, _, metrics = srv.http("GET", "/monitoring/prometheus/metrics")
                text = metrics.decode()
                assert "verso_prediction_log_failing 1" in text
                assert f'verso_prediction_log_dropped_total{{reason="queue full"}} {9 - len(given)}' in text
                assert any("got no request id" in a for a in c.rollout("m").alarms)

                fs.free()
                wait_until(lambda: rollout_log.failing is None and rollout_log.waiting == 0, timeout=10,
                           what="the prediction log written again")
                for rid in given:  # every id handed out names a written answer
                    assert c.feedback(rid, targets=[2.0]).rows == 1
                _, call = srv.predict_stub.Predict.with_call(predict_request("m", {"x": X}), timeout=30)
                assert dict(call.trailing_metadata()).get("verso-request-id")
                assert c.set_rollout("m", stable=1, canary=2, canary_percent=90).config.canary_percent == 90.0
        finally:
            srv.stop()
