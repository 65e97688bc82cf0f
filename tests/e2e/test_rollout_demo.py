"""The README's rollout demo runs as written, against a copy of the bundled repository: v2 is
promoted step by step, then a broken v3 is rolled back."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from tests.e2e.conftest import script
from tests.e2e.test_readme import README, ROOT
from tests.server_proc import ServerProcess


def demo_lines(heading: str = "### Demo: promote a better model, roll back a broken one") -> list[str]:
    """The shell lines of the README's first ```sh block under ``heading`` (comments cut)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], flags=re.S).group(1)
    return [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def argv_of(line: str) -> list[str]:
    argv = shlex.split(line)
    if argv[0] == "verso":
        return [script("verso"), *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def demo_server(tmp_path) -> tuple[ServerProcess, object, object]:
    """``verso serve`` on a copy of the bundled repository (digits only, every version loaded,
    no demo versions): (the started server, the working directory, the repository copy)."""
    work = tmp_path / "work"
    repo = work / "model_repository"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("3", "4", "*.tmp", "__pycache__"))
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "digits" base_path: "{repo}/digits" '
                      'model_platform: "tensorflow" model_version_policy { all {} } } }\n')
    # A state file of its own: the session's default one holds other tests' rollouts of digits.
    srv = ServerProcess([f"--model_config_file={config}", f"--rollout_state_file={tmp_path}/rollouts.sqlite"],
                        entry=[script("verso"), "serve"], rest=True)
    srv.start()
    return srv, work, repo


def test_readme_rollout_demo(tmp_path):
    srv, work, repo = demo_server(tmp_path)
    try:
        env = dict(os.environ, VERSO_TARGET=f"127.0.0.1:{srv.port}", COLUMNS="200")
        outputs = {}
        lines = demo_lines()
        assert len(lines) == 9, lines
        for line in lines:
            r = subprocess.run(argv_of(line), capture_output=True, text=True, timeout=180, cwd=work, env=env)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
            outputs[line] = r.stdout
        compare = next(out for line, out in outputs.items() if line.startswith("verso compare"))
        assert compare.splitlines()[0] == "rollout of digits: stable v2 (promoted from v1), no canary, automatic", \
            compare
        assert "verdict: PROMOTED" in compare.splitlines() and "v2 vs stable" not in compare, compare
        status = next(out for line, out in outputs.items() if line.startswith("verso rollout status"))
        assert "PROMOTE: v2 is now stable (was v1)" in status, status
        for step in ("10 % -> 25 %", "25 % -> 50 %", "50 % -> 100 %"):
            assert step in status, (step, status)
        verdict = next(out for line, out in outputs.items() if line.startswith("verso rollout verdict"))
        assert verdict.splitlines()[0] == "ROLLBACK", verdict
        assert "accuracy FAIL: stable - canary accuracy" in verdict and "final" in verdict, verdict
        final = subprocess.run([script("verso"), "rollout", "status", "digits", "--json"], capture_output=True,
                               text=True, timeout=60, env=env)
        doc = json.loads(final.stdout)
        assert (doc["config"]["stable"], doc["config"]["canary"], doc["config"]["canary_percent"]) == ("2", "3", 0.0)
        assert any(d["text"].startswith("ROLLBACK: canary v3 10 % -> 0 %") for d in doc["decisions"]), doc["decisions"]
        assert not (repo / "digits" / "3").exists()  # the demo's last line cleaned up
    finally:
        srv.stop()
