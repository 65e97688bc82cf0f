"""What the ``verso`` command line prints on a terminal, whoever wrote it.

Much of what the CLI shows was written by callers of the server, not by the operator who runs
it: slice keys, feedback labels, model and alias names, error messages, alarms and decisions
that quote them. None of it may steer the terminal: ``console()`` is a rich ``Console`` with
markup and emoji codes off (``[/]`` or ``[link=...]`` is text, ``:smile:`` is text; the CLI's
own styling is the tables', it writes no markup), and every string it renders passes through
``printable`` first, so control characters (an escape sequence that clears the screen, sets
the window title or writes the clipboard; a carriage return or newline that forges a line)
and bidirectional overrides are shown as escapes. ``printable`` is also for the few lines the
CLI writes with ``print``.
"""

from __future__ import annotations

import re
from typing import Optional

# C0 controls but tab, DEL, C1 controls, and the bidirectional embeddings/overrides/isolates.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character that would act on a terminal written as ``\\xNN`` or
    ``\\uNNNN`` (newlines included: a caller's text never starts a line of its own)."""
    return _UNPRINTABLE.sub(_escape, text)


def console(stderr: bool = False, width: Optional[int] = None):
    """A rich Console for the CLI's output: no markup, no emoji codes, no highlighting, and no
    control character from any string it renders (tables, titles, ``print`` arguments)."""
    from rich.console import Console

    class _Console(Console):
        def render_str(self, text: str, **kwargs):
            return super().render_str(printable(text), **kwargs)

    return _Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=False, width=width)
