"""Every metric name the Grafana dashboard (deploy/grafana/verso-rollouts.json) and the alert
rules (deploy/prometheus/verso-alerts.yaml) use is in a live scrape of a real server with two
rollouts (a classifier and a regressor, priced, with feedback, a reference sample for drift) —
the names' real source, not tests/unit/test_monitoring_deploy.py's EXPORTED list alone."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client
from protos import rollout_pb2, rollout_pb2_grpc
from tests.helpers import scrape
from tests.server_proc import InProcessServer
from tests.unit.test_monitoring_deploy import EXPORTED, exported_name, used_names

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "model_repository" / "digits"
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"

ROLLOUTS = """\
models { model: "digits" stable: 1 canary: 2 canary_percent: 50 window: 500 gates { warmup_calls: -1 }
         prices { cost_per_cpu_hour: 0.05 cost_per_gib_hour: 0.01 currency: "USD" } }
models { model: "half" stable: 1 canary: 2 canary_percent: 50 window: 500 gates { warmup_calls: -1 }
         prices { cost_per_cpu_hour: 0.05 cost_per_gib_hour: 0.01 } }
"""


@pytest.fixture(scope="module")
def server(built_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("names-repo")
    data = np.load(HOLDOUT)
    for v in (1, 2):
        dest = root / "digits" / str(v)
        shutil.copytree(DIGITS / str(v), dest)
        # A reference sample (the inputs the version was trained on, by input alias): drift figures.
        (dest / "assets.extra").mkdir(exist_ok=True)
        np.savez(dest / "assets.extra" / "reference.npz", images=data["images"][:270])
        shutil.copytree(built_models[f"hp{v}"], root / "half" / str(v))
    (root / "models.config").write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" '
        f"model_version_policy {{ all {{}} }} }}\n" for m in ("digits", "half")) + "}\n")
    (root / "rollouts.config").write_text(ROLLOUTS)
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    srv = InProcessServer([f"--model_config_file={root}/models.config",
                           f"--rollout_config_file={root}/rollouts.config",
                           f"--monitoring_config_file={root}/monitoring.config"], rest=True)
    srv.start()
    yield srv
    srv.stop()


def _traffic(server) -> None:
    """Calls to both versions of both models, feedback for every one, and a few failed calls."""
    data = np.load(HOLDOUT)
    images, labels = data["images"][270:], data["labels"][270:]
    stub = rollout_pb2_grpc.RolloutServiceStub(server.channel)
    with Client(f"127.0.0.1:{server.port}") as c:
        seen = set()
        for i in range(0, 240, 4):  # 60 calls of 4 rows (a quarter drawn far off the reference)
            rows = images[i:i + 4] if i % 16 else np.clip(images[i:i + 4] * 0 + 16, 0, 16)
            p = c.predict("digits", {"images": rows.astype(np.float32)}, details=True)
            seen.add(p.version)
            c.feedback(p.request_id, labels[i:i + 4])
        for i in range(40):
            x = np.array([float(i), float(i) + 0.5], np.float32)
            p = c.predict("half", {"x": x}, details=True)
            seen.add(("half", p.version))
            try:  # numeric targets: MSE and MAE (a server without them: those names go missing below)
                stub.Feedback(rollout_pb2.FeedbackRequest(request_id=p.request_id,
                                                          targets=(0.5 * x + 1.5).tolist()), timeout=30)
            except grpc.RpcError:
                pass
        assert {1, 2, ("half", 1), ("half", 2)} <= seen, seen
        for _ in range(3):  # failed calls (status != OK), as the error rate and VersoErrorSpike read them
            with pytest.raises(Exception):
                c.predict("digits", {"images": np.zeros((1, 3), np.float32)})


def test_every_name_the_dashboard_and_rules_use_is_in_a_live_scrape(server):
    _traffic(server)
    needed = used_names()
    assert needed, "no names found in the dashboard and rules"
    missing = needed
    deadline = time.monotonic() + 20  # figures computed in the background (drift, cost) get time to appear
    while True:
        _, types = scrape(server)
        missing = sorted(n for n in needed if exported_name(n, types) is None)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"used by deploy/grafana or deploy/prometheus but not in the scrape: {missing}"
    # The unit tier's list is what the server exports, type for type, for every name used.
    for n in needed:
        name = exported_name(n, types)
        assert types[name] == EXPORTED[name], (name, types[name])
