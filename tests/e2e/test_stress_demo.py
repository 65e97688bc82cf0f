"""The README's stress demo runs as written: its own `verso serve` (a directory of its own, ports
8600 and 8601) beside the Quickstart's server on 8500 and 8501, and the bench with a version
swapped in and the old one removed, from ``localhost``, in a loopback host (tests/readme_text.py)."""

from __future__ import annotations

import re

from tests.readme_text import readme_machine, section, sh_blocks, user_env


def test_readme_stress_demo(tmp_path):
    server_block, bench_block = sh_blocks(section("Demo: a version swap under load"))
    assert len(server_block) == 2 and server_block[1].startswith("verso serve "), server_block
    assert "--port=8600" in server_block[1] and "--rest_api_port=8601" in server_block[1]
    with readme_machine(tmp_path) as m:
        m.serve("verso serve")  # the Quickstart's server holds 8500 and 8501: the demo's must not need them
        r = m.shell(server_block[0])
        assert r.returncode == 0, r.stderr
        m.serve(server_block[1])
        [bench] = bench_block
        r = m.shell(bench, env=user_env(COLUMNS="120"), timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = r.stdout
        assert out.startswith("bench half_plus_two at localhost:8600: open loop at 200 req/s"), out
        assert re.search(r"│ errors\s+│\s+0 │", out), out
        assert re.search(r"versions\s+│\s+v1:\d+ v2:\d+", out), out
        assert "version 2 added from model_repository/half_plus_two/2" in out, out
        assert "fault remove:1 at 6s: version 1 removed" in out, out
        assert "threshold errors<0.1%: ok" in out, out
        assert sorted(p.name for p in (m.work / "stress-demo" / "hp").iterdir()) == ["2"]
