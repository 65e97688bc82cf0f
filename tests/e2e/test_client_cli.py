"""The ``verso`` client command as its own process against the real server: the progress bar
on a terminal, and no TensorFlow runtime in a command's process. Its commands' outputs and
errors are checked in process: tests/integration/test_client_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import script
from tests.helpers import table_rows as _rows


def at(srv):
    return ["--target", f"127.0.0.1:{srv.port}"]


def _on_a_terminal(cmd: list[str]) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run ``cmd`` with its stderr on a pseudo-terminal; (result, what the terminal showed)."""
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
        os.close(slave)
        slave = None
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return r, shown


def test_bench_shows_a_progress_bar_on_a_terminal(bundled):
    r, shown = _on_a_terminal([script("verso"), "bench", "half_plus_two", "-n", "30", "-c", "2", *at(bundled)])
    assert r.returncode == 0
    assert b"30/30" in shown and b"bench" in shown  # the bar reached the count, on the terminal only
    assert dict(_rows(r.stdout))["ok"] == "30"


def test_an_open_loop_shows_a_live_table_on_a_terminal(bundled):
    r, shown = _on_a_terminal([script("verso"), "bench", "half_plus_two", "--rate", "20", "-d", "3s", *at(bundled)])
    assert r.returncode == 0, r.stdout
    assert b"verso bench (live)" in shown and b"sent/s" in shown and b"v2:20" in shown  # a full second, by version
    assert b"verso bench (live)" not in r.stdout.encode()  # the summary alone on stdout
    assert dict(_rows(r.stdout))["requests"] == "60"


# ---- the command line does not start TensorFlow ----------------------------------------------------

def test_client_commands_import_tf_protos_without_the_tensorflow_runtime(bundled):
    code = ("import sys; from client.cli import main; rc = main(['status', 'half_plus_two', '--json', "
            f"'--target', '127.0.0.1:{bundled.port}']); "
            "print('RUNTIME' if 'tensorflow.python' in sys.modules else 'PROTOS ONLY', rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "PROTOS ONLY 0", (r.stdout, r.stderr)
