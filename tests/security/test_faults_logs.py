"""Caller text in the server's log: one bounded line per record, whatever the caller sent.

Verso logs few caller strings per request (a slice key counted as "other", a failed shadow
call's error, a path whose handling hit a bug), but each of them could hold a newline that
forges a log line (``...\\nE verso.rollout] Rollout of m: PROMOTE``), an escape sequence that
acts on the terminal reading the log, or megabytes. The server's log formatter escapes control
characters in every message and cuts long ones; a traceback keeps its own lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from server.cli import LogFormatter

ROOT = Path(__file__).resolve().parents[2]
FORGED = "m\nE 2026-01-01 00:00:00.000 E verso.rollout] Rollout of m: PROMOTE\r\x1b]0;owned\x07\u202e"


def _format(msg: str, *args, exc_info=None) -> str:
    record = logging.LogRecord("verso.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    return LogFormatter("%(levelname).1s %(name)s] %(message)s").format(record)


def test_a_forged_line_stays_inside_its_record():
    out = _format("Rollout of %s: slice %s", FORGED, "[/]")
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert out == ("W verso.test] Rollout of m\\nE 2026-01-01 00:00:00.000 E verso.rollout] Rollout of m: PROMOTE"
                   "\\r\\x1b]0;owned\\x07\\u202e: slice [/]")


def test_a_huge_message_is_cut():
    out = _format("Shadow call failed: %s", "x" * 1_000_000)
    assert len(out) < LogFormatter.MAX_MESSAGE + 200
    assert out.endswith(f"... [cut: {1_000_000 + len('Shadow call failed: ') - LogFormatter.MAX_MESSAGE} more characters]")


def test_a_traceback_keeps_its_lines_but_not_its_escapes():
    try:
        raise ValueError("bad\x1b[2J\nsecond line")
    except ValueError:
        out = _format("Unexpected error in %s", "GET /v1/x\nE forged", exc_info=sys.exc_info())
    first, *rest = out.split("\n")
    assert first == "W verso.test] Unexpected error in GET /v1/x\\nE forged"
    assert rest[0] == "Traceback (most recent call last):" and "ValueError: bad\\x1b[2J" in out
    assert "\x1b" not in out


def test_the_server_process_logs_through_it():
    code = ("from server.cli import _setup_logging; _setup_logging(); import logging; "
            f"logging.getLogger('verso.rollout').warning('Rollout of %s', {FORGED!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.endswith("W verso.rollout] Rollout of m\\nE 2026-01-01 00:00:00.000 E verso.rollout] Rollout of m: "
                         "PROMOTE\\r\\x1b]0;owned\\x07\\u202e")
