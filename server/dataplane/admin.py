"""Who may change the server: the rule for control-plane calls (SetRollout, Feedback,
ReloadConfig and their REST routes), the same for both transports. Pure.

With ``--admin_token_file``, a call must carry the token as a bearer credential (gRPC metadata
``authorization``, HTTP header ``Authorization``: ``Bearer <token>``), compared in constant time;
otherwise UNAUTHENTICATED (HTTP 401). Without a token file, a call is accepted from this machine
(a loopback address or the UNIX socket) or from a client whose certificate the server verified
(mutual TLS), and refused from anywhere else with PERMISSION_DENIED (HTTP 403) saying how to
enable it. Read-only calls (status, metadata, GetRollout) never come here.

Over REST a control call must also come from no other web page (``check_browser``): a browser
sends a page's cross-origin ``text/plain`` POST without a preflight (CSRF), and after DNS
rebinding a page's own origin points at this server. So the call must say
``Content-Type: application/json`` (else 415), its ``Host`` must be a name of this server
(loopback, the address the connection came in on, this machine's host name, or one the
operator allowed), and its ``Origin``, when sent, must be the server's own origin or one the
operator allowed (else PERMISSION_DENIED, 403).
"""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse
from typing import Collection, Optional

from protos.errors import Code, ServingError
from protos.local_paths import is_loopback_name

BEARER = "bearer "


def bearer_token(value: Optional[str]) -> Optional[str]:
    """The token of an ``authorization`` value ``Bearer <token>`` (scheme case-insensitive)."""
    if value and value[:len(BEARER)].lower() == BEARER:
        return value[len(BEARER):].strip()
    return None


def is_local(address: str) -> bool:
    """A peer address on this machine, in every form the transports report one: a loopback IP
    (IPv4, IPv6, IPv4-mapped IPv6) alone (aiohttp's ``request.remote``), or gRPC's
    ``ipv4:HOST:PORT`` / ``ipv6:[HOST]:PORT``, whose IPv6 brackets gRPC percent-encodes
    (``ipv6:%5B::1%5D:PORT``, a URI), with or without a zone (``%25lo``); or a UNIX socket
    (``unix:``, ``unix-abstract:``). Anything else, a host name included, is not local."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address
    for prefix in ("ipv4:", "ipv6:"):
        if host.startswith(prefix):
            # gRPC's peer is a URI: ``%5B``/``%5D`` are the brackets, ``%25`` a zone's ``%``.
            host = urllib.parse.unquote(host[len(prefix):])
            if host.startswith("["):  # ipv6:[::1]:port
                host = host[1:host.index("]")] if "]" in host else host
            else:  # ipv4:127.0.0.1:port, or an IPv6 address without brackets or port
                head, sep, tail = host.rpartition(":")
                if sep and (prefix == "ipv4:" or tail.isdigit() and head.count(":") >= 2 and not
                            _is_ip(host)):
                    host = head
            break
    host = host.split("%")[0]  # an IPv6 zone (fe80::1%eth0) does not change loopback-ness
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class UnsupportedMediaType(ServingError):
    """A REST control call whose body is not declared JSON: HTTP 415 (INVALID_ARGUMENT on gRPC,
    which never raises it)."""

    def __init__(self, message: str):
        super().__init__(Code.INVALID_ARGUMENT, message)

    @property
    def http_status(self) -> int:
        return 415


def _host_port(netloc: str) -> tuple[str, Optional[int]]:
    """(host in lower case without IPv6 brackets, port or None) of ``host[:port]``; raises
    ValueError for a malformed one."""
    parts = urllib.parse.urlsplit("//" + netloc)
    if not parts.hostname or parts.username is not None or parts.password is not None \
            or parts.path or parts.query or parts.fragment:
        raise ValueError(netloc)
    return parts.hostname.lower(), parts.port


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case with the scheme's default port dropped; raises
    ValueError for anything else (a path, ``null``, another scheme)."""
    parts = urllib.parse.urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(origin)
    host, port = _host_port(parts.netloc)
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _shown(value: Optional[str]) -> str:
    """A caller's header value as an error message shows it: quoted, escaped, at most 100 characters."""
    if value is None:
        return "none"
    return repr(value[:100] + ("..." if len(value) > 100 else ""))


def check_browser(what: str, *, content_type: str, origin: Optional[str], host: Optional[str], scheme: str,
                  own_hosts: Collection[str], allowed_origins: Collection[str]) -> None:
    """Raise unless a REST control call ``what`` could not have come from another web page.

    ``content_type``: the request's media type (parameters dropped); ``origin``/``host``: its
    headers (None when absent); ``scheme``: ``http`` or ``https``; ``own_hosts``: the names
    and addresses (lower case, IPv6 without brackets) that mean this server besides loopback
    ones; ``allowed_origins``: normalized origins (``normalize_origin``) the operator allowed.
    PERMISSION_DENIED for a foreign Host or Origin, ``UnsupportedMediaType`` for a body not
    declared JSON (checked last: a foreign page learns nothing from the difference)."""
    try:
        name = _host_port(host or "")[0]
    except ValueError:
        name = None
    if name is None or not (is_loopback_name(name) or name in own_hosts):
        raise ServingError(Code.PERMISSION_DENIED,
                           f"{what} refused: Host {_shown(host)} is not a name of this server (a page after DNS "
                           f"rebinding?); call it as localhost or by its address, or list the name in "
                           f"--rest_api_allowed_hosts")
    if origin is not None:
        try:
            sent = normalize_origin(origin)
        except ValueError:
            sent = None
        if sent is None or (sent != normalize_origin(f"{scheme}://{host}") and sent not in allowed_origins):
            raise ServingError(Code.PERMISSION_DENIED,
                               f"{what} refused: a request from the web page {_shown(origin)}, another origin "
                               f"(allow it with --rest_api_cors_allowed_origins)")
    if content_type != "application/json":
        raise UnsupportedMediaType(f"{what} needs 'Content-Type: application/json', not "
                                   f"{_shown(content_type) if content_type else 'none'}")


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
