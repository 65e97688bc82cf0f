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
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "chain" base_path: "{root / "chain"}" model_platform: "tensorflow" '
        f'model_version_policy {{ all {{}} }} }} }}')
    (root / "batching.config").write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } "
                                          "max_enqueued_batches { value: 1000 } num_batch_threads { value: 2 }")
    return root


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
def test_a_version_twice_as_expensive_per_row_costs_twice_the_cpu(chain_repo, batching):
    args = [f"--model_config_file={chain_repo / 'models.config'}"]
    if batching:
        args += ["--enable_batching", f"--batching_parameters_file={chain_repo / 'batching.config'}"]
    srv = InProcessServer(args)
    srv.start()
    try:
        env = {"VERSO_TARGET": f"127.0.0.1:{srv.port}"}
        r = run_verso("rollout", "set", "chain", "--stable", "1", "--canary", "2", "--percent", "50",
                      "--warmup-calls", "-1", "--json", env=env)
        assert r.returncode == 0, r.stderr
        r = run_verso("bench", "chain", "--rows", "16", "-n", "200", "-c", "4", "--json", env=env)
        assert r.returncode == 0, r.stderr
        r = run_verso("compare", "chain", "--json", env=env)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        cost = {int(v["version"]): v["cost"] for v in doc["versions"]}
        per_1000 = {v: c["cpu_seconds_per_1000"] for v, c in cost.items()}
        assert min(int(c["predictions"]) for c in cost.values()) >= 1000, cost  # both sides served (~1600 rows each)
        ratio = per_1000[2] / per_1000[1]
        print(f"batching={batching}: CPU s per 1000 {per_1000}, ratio {ratio:.2f}")
        assert ratio >= 1.7, (ratio, cost)
        table = run_verso("compare", "chain", env=env)
        assert table.returncode == 0 and f"{per_1000[2]:.3f}" in table.stdout, table.stdout
    finally:
        srv.stop()
