"""Who may change the server: the rule for control-plane calls (SetRollout, Feedback,
ReloadConfig and their REST routes), the same for both transports. Pure.

With ``--admin_token_file``, a call must carry the token as a bearer credential (gRPC metadata
``authorization``, HTTP header ``Authorization``: ``Bearer <token>``), compared in constant time;
otherwise UNAUTHENTICATED (HTTP 401). Without a token file, a call is accepted from this machine
(a loopback address or the UNIX socket) or from a client whose certificate the server verified
(mutual TLS), and refused from anywhere else with PERMISSION_DENIED (HTTP 403) saying how to
enable it. Read-only calls (status, metadata, GetRollout) never come here.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Optional

from protos.errors import Code, ServingError

BEARER = "bearer "


def bearer_token(value: Optional[str]) -> Optional[str]:
    """The token of an ``authorization`` value ``Bearer <token>`` (scheme case-insensitive)."""
    if value and value[:len(BEARER)].lower() == BEARER:
        return value[len(BEARER):].strip()
    return None


def is_local(address: str) -> bool:
    """A peer address on this machine: a loopback IP (IPv4, IPv6, IPv4-mapped IPv6), with or
    without gRPC's ``ipv4:``/``ipv6:`` prefix and a port, or a UNIX socket (``unix:``)."""
    if address.startswith("unix:"):
        return True
    host = address
    for prefix in ("ipv4:", "ipv6:"):
        if host.startswith(prefix):
            host = host[len(prefix):]
            if host.startswith("["):  # ipv6:[::1]:port
                host = host[1:host.index("]")] if "]" in host else host
            elif prefix == "ipv4:":
                host = host.rsplit(":", 1)[0]
            host = host.split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check(what: str, *, expected_token: Optional[str], token: Optional[str], local: bool,
          verified_client: bool) -> None:
    """Raise unless the caller may make the control-plane call ``what`` (its API name)."""
    if expected_token is not None:
        if token is None or not hmac.compare_digest(token.encode("utf-8"), expected_token.encode("utf-8")):
            raise ServingError(Code.UNAUTHENTICATED,
                               f"{what} needs the server's admin token: send 'authorization: Bearer <token>' "
                               f"with the token of its --admin_token_file")
        return
    if not (local or verified_client):
        raise ServingError(Code.PERMISSION_DENIED,
                           f"{what} is accepted only from this machine or a mutual-TLS client while the server "
                           f"has no --admin_token_file; start it with --admin_token_file=FILE and send "
                           f"'authorization: Bearer <token>'")
