"""A user's own ``server.py`` and ``client/`` package next to their code (the working
directory) must not replace Verso's packages in ``verso``, ``tensorflow_model_server`` or the
worker processes Verso starts."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import script


def _users_project(tmp_path):
    (tmp_path / "server.py").write_text("raise SystemExit('the user\\'s server.py was imported')\n")
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "__init__.py").write_text("raise SystemExit('the user\\'s client/ was imported')\n")
    (tmp_path / "protos.py").write_text("raise SystemExit('the user\\'s protos.py was imported')\n")
    return tmp_path


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_commands_ignore_a_users_server_and_client_in_the_working_directory(tmp_path):
    cwd = _users_project(tmp_path)
    for cmd in ([script("tensorflow_model_server"), "--version"], [script("verso"), "serve", "--version"],
                [script("verso"), "--help"], [script("verso"), "status", "--help"]):
        r = _run(cmd, cwd)
        assert r.returncode == 0 and "was imported" not in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)
    assert "TensorFlow ModelServer:" in _run([script("verso"), "serve", "--version"], cwd).stdout


def test_the_worker_launch_command_ignores_them_too(tmp_path):
    from server.cli import launch_command
    cwd = _users_project(tmp_path)
    r = _run([*launch_command(), "--version"], cwd)
    assert r.returncode == 0 and "TensorFlow ModelServer:" in r.stdout, (r.stdout, r.stderr)
    # What the launch command avoids: `python -m server` takes the user's module.
    r = _run([sys.executable, "-m", "server", "--version"], cwd)
    assert "the user's server.py was imported" in r.stderr
