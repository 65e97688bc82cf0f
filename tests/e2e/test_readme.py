"""The README's "Using the client" section runs as written: its Python snippets as doctests
and its ``verso`` command lines as subprocesses, against ``verso serve`` on the bundled repository."""

from __future__ import annotations

import doctest
import io
import os
import re
import shlex
import subprocess
from pathlib import Path

from tests.e2e.conftest import script

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = README.parent


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _local(text: str, srv) -> str:
    return (text.replace("localhost:8500", f"127.0.0.1:{srv.port}")
                .replace("localhost:8501", f"127.0.0.1:{srv.rest_port}"))


def test_readme_client_snippets_run_as_written(bundled):
    blocks = re.findall(r"```pycon\n(.*?)```", _section("Using the client"), flags=re.S)
    text = _local("\n".join(blocks), bundled)  # one session: later blocks use earlier names
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md#using-the-client", str(README), 0)
    assert len(test.examples) >= 15
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def test_readme_client_command_lines_run_as_written(bundled):
    blocks = re.findall(r"```sh\n(.*?)```", _section("Using the client"), flags=re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines() if ln.startswith("verso ")]
    assert len(lines) >= 6
    env = dict(os.environ, VERSO_TARGET=f"127.0.0.1:{bundled.port}")
    for line in lines:
        argv = shlex.split(_local(line, bundled))
        r = subprocess.run([script("verso"), *argv[1:]], capture_output=True, text=True, timeout=120,
                           cwd=ROOT, env=env)
        assert r.returncode == 0 and r.stdout, (line, r.stdout, r.stderr)
