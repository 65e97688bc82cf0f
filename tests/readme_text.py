"""The README's and docs/'s text as the tests read it (sections, shell lines, Python snippets),
and a ``verso serve`` of the README's own: started as the Quickstart starts it (no flags: the
bundled repository, ports 8500 and 8501, the default state file and admin token), on a copy of
``model_repository/`` (the demos add and remove versions), inside a loopback host of its own
(tests/loopback_host.py) where ``localhost`` is ``::1`` first and the fixed ports are free.
The README's lines then run there as a user types them: through ``bash`` with the virtual
environment's ``bin`` first on PATH (an activated venv), from the copy's directory, without
``VERSO_TARGET`` or a token file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

from tests.loopback_host import LoopbackHost, loopback_host
from tests.server_proc import ServerProcess, wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
VENV_BIN = os.path.dirname(sys.executable)


def section(title: str, path: Path = README) -> str:
    """The text of the section headed ``## title`` (or ``# title``) of ``path``, up to the next
    heading of the same or a higher level."""
    text = path.read_text(encoding="utf-8")
    # Headings are looked for outside code blocks (a shell comment starts with '#' too).
    masked = re.sub(r"```.*?```", lambda c: re.sub(r"[^\n]", " ", c.group(0)), text, flags=re.S)
    m = re.search(rf"^(#+) {re.escape(title)}\n", masked, flags=re.M)
    assert m, f"{path.name} has no section {title!r}"
    level = len(m.group(1))
    end = re.search(rf"^#{{1,{level}}} ", masked[m.end():], flags=re.M)
    return text[m.start():m.end() + end.start() if end else None]


def sh_blocks(text: str) -> list[list[str]]:
    """Each ```sh block's command lines: continuations joined, comment-only lines dropped,
    trailing ``  # comments`` cut."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        out.append([ln.split("  #")[0].strip() for ln in joined.splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")])
    return out


def sh_lines(text: str) -> list[str]:
    return [ln for block in sh_blocks(text) for ln in block]


def user_env(**extra: str) -> dict:
    """A user's shell: the venv's ``bin`` first on PATH, no target or token file set."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERSO_TARGET", "VERSO_TOKEN_FILE")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


class ReadmeMachine:
    """A loopback host with the clone's copy at ``work`` (its ``model_repository/`` at ``repo``)."""

    def __init__(self, host: LoopbackHost, work: Path):
        self.host, self.work, self.repo = host, work, work / "model_repository"
        self.servers: list[ServerProcess] = []

    def shell(self, line: str, *, timeout: float = 180, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """``line`` as typed into a shell in the clone's directory, inside the host."""
        return self.host.run(["bash", "-c", line], timeout=timeout, env=env or user_env(), cwd=self.work)

    def serve(self, line: str = "verso serve", *, ready: str = "Exporting HTTP/REST API") -> ServerProcess:
        """Start a server command line as typed (``verso serve ...``) inside the host, serving
        this copy's repository (``VERSO_MODEL_REPOSITORY``: `verso serve` finds the bundled
        repository next to the ``server`` package, which the test must not change)."""
        env_prefix = ["env", f"PATH={user_env()['PATH']}", f"VERSO_MODEL_REPOSITORY={self.repo}"]
        srv = ServerProcess([], entry=self.host.argv([*env_prefix, "bash", "-c", "exec " + line]),
                            with_port=False, cwd=str(self.work))
        self.servers.append(srv)
        srv.start()
        wait_until(lambda: ready in srv.output() or not srv.alive(), timeout=60, what=ready)
        assert srv.alive(), srv.output()
        return srv


@contextlib.contextmanager
def readme_machine(tmp_path: Path, *, ignore=("3", "4")) -> Iterator[ReadmeMachine]:
    """A loopback host and a copy of the clone's ``model_repository/`` (without demo versions
    a failed run may have left); the servers started by ``serve`` are stopped on exit."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "model_repository", work / "model_repository",
                    ignore=shutil.ignore_patterns(*ignore, "*.tmp", "__pycache__"))
    with loopback_host() as host:
        machine = ReadmeMachine(host, work)
        try:
            yield machine
        finally:
            for srv in machine.servers:
                srv.stop()
