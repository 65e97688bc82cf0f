"""Where a ``verso serve`` on this machine keeps what its local clients must find: the server
writes its default admin token there and the ``verso`` command line reads it from the same
place, so both sides compute the path here (the XDG base directory rules:
``$XDG_STATE_HOME/verso``, ``~/.local/state/verso`` without it). Paths only; nothing is created."""

from __future__ import annotations

import ipaddress
import os

ADMIN_TOKEN_NAME = "admin.token"


def state_dir() -> str:
    """``$XDG_STATE_HOME/verso`` (``~/.local/state/verso`` when the variable is unset or empty)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "verso")


def admin_token_file() -> str:
    """The admin token file ``verso serve`` creates by default (``state_dir()/admin.token``)."""
    return os.path.join(state_dir(), ADMIN_TOKEN_NAME)


def is_loopback_name(host: str) -> bool:
    """``localhost`` or a loopback IP literal, as a URL or a ``Host`` header spells it (case and
    IPv6 brackets ignored): a name that means this machine, for the server's Host check of
    control calls and the command line's choice to send the default token."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
