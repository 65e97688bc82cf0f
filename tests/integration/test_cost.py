"""Cost you can believe (issue 27, friction 9): a version built to do twice the work per row of
another, for the same answers, costs about twice the CPU per 1000 predictions in ``verso
compare``, under a 50/50 split, with and without batching; and a version's training cost is shown
beside its serving cost, amortised over the predictions it has served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import models
from tests.helpers import run_verso
from tests.server_proc import InProcessServer


@pytest.fixture(scope="module")
def chain_repo(tmp_path_factory):
    """chain/1 does the work once per row, chain/2 twice (same answers)."""
    root = tmp_path_factory.mktemp("cost-repo")
    models.save_matmul_chain(str(root / "chain" / "1"), copies=1)
    models.save_matmul_chain(str(root / "chain" / "2"), copies=2)
    # What training cost: v2's as given; v1's malformed (a listed problem, the version serves).
    for version, training in ((1, {"money": "lots"}), (2, {"cpu_hours": 3, "gpu_hours": 0.5, "money": 1.5,
                                                            "currency": "USD"})):
        extra = root / "chain" / str(version) / "assets.extra"
        extra.mkdir()
        (extra / "verso_model.json").write_text(json.dumps({"training_cost": training}))
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "chain" base_path: "{root / "chain"}" model_platform: "tensorflow" '
        f'model_version_policy {{ all {{}} }} }} }}')
    (root / "batching.config").write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 2000 } "
                                          "max_enqueued_batches { value: 1000 } num_batch_threads { value: 2 }")
    return root


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
def test_a_version_twice_as_expensive_per_row_costs_twice_the_cpu(chain_repo, batching):
    args = [f"--model_config_file={chain_repo / 'models.config'}"]
    if batching:
        args += ["--enable_batching", f"--batching_parameters_file={chain_repo / 'batching.config'}"]
    srv = InProcessServer(args, rest=True)
    srv.start()
    try:
        env = {"VERSO_TARGET": f"127.0.0.1:{srv.port}"}
        r = run_verso("rollout", "set", "chain", "--stable", "1", "--canary", "2", "--percent", "50",
                      "--warmup-calls", "-1", "--cost-per-cpu-hour", "0.36", "--json", env=env)
        assert r.returncode == 0, r.stderr
        r = run_verso("bench", "chain", "--rows", "64", "-d", "4", "-c", "4", "--json", env=env)
        assert r.returncode == 0, r.stderr
        r = run_verso("compare", "chain", "--json", env=env)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        cost = {int(v["version"]): v["cost"] for v in doc["versions"]}
        per_1000 = {v: c["cpu_seconds_per_1000"] for v, c in cost.items()}
        assert min(int(c["predictions"]) for c in cost.values()) >= 500, cost  # both sides served
        # both figures rest on calls measured alone (server/rollout/cost.py), not on shares
        assert min(int(c["cpu_alone_calls"]) for c in cost.values()) >= 5, cost
        ratio = per_1000[2] / per_1000[1]
        print(f"batching={batching}: CPU s per 1000 {per_1000}, ratio {ratio:.2f}")
        assert ratio >= 1.7, (ratio, cost)
        table = run_verso("compare", "chain", env=env)
        assert table.returncode == 0 and f"{per_1000[2]:.3f}" in table.stdout, table.stdout
        # Training beside serving: v2's 1.5 USD over the predictions it served, per 1000.
        served = int(cost[2]["predictions"])
        assert cost[2]["training"] == {"cpu_hours": 3.0, "gpu_hours": 0.5, "money": 1.5, "currency": "USD"}
        assert cost[2]["training_money_per_1000"] == pytest.approx(1.5 / served * 1000)
        assert cost[2]["total_money_per_1000"] == pytest.approx(cost[2]["money_per_1000"]
                                                                 + cost[2]["training_money_per_1000"])
        assert "training" not in cost[1] and cost[1]["training_money_per_1000"] == -1
        assert "train/1k" in table.stdout and f"{1.5 / served * 1000:.6f} USD" in table.stdout
        assert (f"v2 training: CPU h 3, GPU h 0.5, 1.50 USD; {1.5 / served * 1000:.6f} USD per 1000 over the "
                f"{served} predictions served; serving + training") in " ".join(table.stdout.split())
        assert "training_cost.money must be a finite number >= 0, not 'lots'" in table.stdout
        import httpx
        doc = httpx.get(f"http://127.0.0.1:{srv.rest_port}/dashboard/data.json").json()
        (model,) = [m for m in doc["models"] if m["name"] == "chain"]
        dash = {int(v["version"]): v["cost"] for v in model["versions"]}
        assert dash[2]["training"]["money"] == 1.5 and dash[2]["training_money_per_1000"] > 0
    finally:
        srv.stop()
