"""The README's rollout demo runs as written: ``verso serve`` as the Quickstart starts it (default
ports, state file and admin token) on a copy of the bundled repository, and the demo's lines as
a user types them, from ``localhost``, on a host where that is ``::1`` first
(tests/readme_text.py): v2 is promoted step by step, then a broken v3 is rolled back. And a
control call is accepted from both loopback families, gRPC's IPv6 peer form included."""

from __future__ import annotations

import json
import shlex
import shutil
import sys

from server.dataplane.admin import is_local
from tests.e2e.conftest import script
from tests.readme_text import ROOT, readme_machine, section, sh_lines, user_env
from tests.server_proc import ServerProcess, wait_until

DEMO = "Demo: promote a better model, roll back a broken one"


def demo_lines(title: str = DEMO) -> list[str]:
    """The shell lines of the README's ```sh block under the section ``title`` (comments cut)."""
    return sh_lines(section(title))


def argv_of(line: str) -> list[str]:
    """A demo line's argv with ``verso`` and ``python`` as installed (for tests that run a demo's
    lines against a server on free ports rather than in a loopback host)."""
    argv = shlex.split(line)
    if argv[0] == "verso":
        return [script("verso"), *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def demo_server(tmp_path) -> tuple[ServerProcess, object, object]:
    """``verso serve`` on free 127.0.0.1 ports on a copy of the bundled repository (digits only,
    every version loaded, no demo versions): (the started server, the working directory, the
    repository copy). For tests that need the demo's server beside their own checks
    (tests/e2e/test_dashboard.py); the README's demos themselves run in a loopback host."""
    work = tmp_path / "work"
    repo = work / "model_repository"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("3", "4", "*.tmp", "__pycache__"))
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "digits" base_path: "{repo}/digits" '
                      'model_platform: "tensorflow" model_version_policy { all {} } } }\n')
    srv = ServerProcess([f"--model_config_file={config}"], entry=[script("verso"), "serve"], rest=True)
    srv.start()
    return srv, work, repo


def test_readme_rollout_demo(tmp_path):
    with readme_machine(tmp_path) as m:
        server = m.serve("verso serve")  # the Quickstart's, with the README's defaults
        env = user_env(COLUMNS="200")
        outputs = {}
        lines = demo_lines()
        assert len(lines) == 9, lines
        for line in lines:
            r = m.shell(line, env=env)
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
        flat = " ".join(verdict.split())  # a reason longer than the terminal is wrapped
        assert "accuracy FAIL: stable - canary accuracy" in flat and "final" in flat, verdict
        final = m.shell("verso rollout status digits --json", env=env)
        doc = json.loads(final.stdout)
        assert (doc["config"]["stable"], doc["config"]["canary"], doc["config"]["canary_percent"]) == ("2", "3", 0.0)
        assert any(d["text"].startswith("ROLLBACK: canary v3 10 % -> 0 %") for d in doc["decisions"]), doc["decisions"]
        # The default state file is this configuration's own, and status names it.
        assert "/verso/rollouts-" in doc["state_file"], doc["state_file"]
        assert f"state file: {doc['state_file']}" in status
        assert f"Rollout state file: {doc['state_file']} (this configuration's own" in server.output()
        assert not (m.repo / "digits" / "3").exists()  # the demo's last line cleaned up
        # The dashboard outlives that `rm -r` (issue 27: once v3 unloaded, /dashboard/data.json was a
        # 500, KeyError 'info', and the page said "no model is loaded" until a restart).
        probe = ("python -c \"import json, urllib.request; r = urllib.request.urlopen("
                 "'http://localhost:8501/dashboard/data.json', timeout=30); print(json.dumps(json.load(r)))\"")

        def v3_gone_and_shown() -> bool:
            r = m.shell(probe, env=env)
            assert r.returncode == 0, (r.stdout, r.stderr)  # urlopen raises on a 500
            page = json.loads(r.stdout)
            digits = next(x for x in page["models"] if x["name"] == "digits")
            states = {v["version"]: v["state"] for v in digits["versions"]}
            assert states.get(2) == "AVAILABLE" and page["rollouts"], page
            return states.get(3) in (None, "END")

        wait_until(v3_gone_and_shown, timeout=60, interval=1.0, what="v3 unloaded, the dashboard still answering")
        # The calls came from localhost (gRPC picks ::1 or 127.0.0.1), with the default admin token.
        sets = [d["who"].split()[1] for d in doc["decisions"] if d["who"].startswith("gRPC")]
        assert len(sets) == 2 and all(is_local(peer) for peer in sets), sets
        # docs/rollouts.md's REST call by hand, with the default token, as written.
        curl = sh_lines(section("The protected control plane", ROOT / "docs" / "rollouts.md"))
        assert len(curl) == 1 and curl[0].startswith("curl "), curl
        r = m.shell(curl[0], env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["config"]["stable"] == "2", (r.stdout, r.stderr)
        # The default token is found and sent for a target on ::1 too (and the call is accepted).
        r = m.shell("verso rollout set digits --stable 2 --target [::1]:8500", env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)
        doc = json.loads(m.shell("verso rollout status digits --json", env=env).stdout)
        assert doc["decisions"][-1]["who"].startswith("gRPC ipv6:%5B::1%5D:"), doc["decisions"][-1]


def test_a_control_call_from_either_loopback_family_is_local(tmp_path):
    """Without an admin token (the loopback rule alone), SetRollout over gRPC is accepted from
    ``[::1]``, ``127.0.0.1`` and ``localhost``, and over REST from both; gRPC reported the IPv6
    caller as ``ipv6:%5B::1%5D:PORT``, which was refused PERMISSION_DENIED (issue 27)."""
    with readme_machine(tmp_path) as m:
        m.serve("verso serve --admin_token_file=")
        env = user_env()
        for target in ("[::1]:8500", "127.0.0.1:8500", "localhost:8500"):
            r = m.shell(f"verso rollout set digits --stable 1 --canary 2 --percent 10 --target {target}", env=env)
            assert r.returncode == 0, (target, r.stdout, r.stderr)
        for host in ("127.0.0.1", "localhost"):
            r = m.shell(f"curl -sf -H 'Content-Type: application/json' -d '{{\"stable\": 2}}' "
                        f"{host}:8501/v1/rollouts/digits", env=env)
            assert r.returncode == 0, (host, r.stdout, r.stderr)
        doc = json.loads(m.shell("verso rollout status digits --json", env=env).stdout)
        who = [d["who"] for d in doc["decisions"]]
        grpc_peers = [w.split()[1] for w in who if w.startswith("gRPC")]
        assert grpc_peers[0].startswith("ipv6:%5B::1%5D:"), who  # gRPC's form of an IPv6 peer
        assert grpc_peers[1].startswith("ipv4:127.0.0.1:"), who
        assert len(grpc_peers) == 3 and is_local(grpc_peers[2]), who  # localhost: either family
        assert sum(w.startswith("REST") for w in who) == 2, who
