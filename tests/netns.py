"""A second host for tests that need a non-loopback peer: a network namespace of the test's own,
joined to this one by a veth pair with addresses the test chooses (never this machine's outward
address). Needs root and ``ip`` (iproute2); skipped without them, failed when
VERSO_REQUIRE_TOOLS is set (CI).

    with peer_namespace() as peer:
        server binds 0.0.0.0 (or peer.host_ip); the peer reaches it at peer.host_ip
        peer.run([sys.executable, "-c", "..."])   # a process inside the namespace

The namespace, the veth pair and its addresses are removed on exit, also after a failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import pytest


@dataclass(frozen=True)
class Peer:
    """The namespace ``name``; this host's side ``host_ip``, the peer's ``peer_ip``."""

    name: str
    host_ip: str
    peer_ip: str

    def run(self, argv: Sequence[str], *, timeout: float = 60, env: Optional[dict] = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace (text output captured), bounded by ``timeout``."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, check=check)

    def python(self, code: str, *, timeout: float = 60, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run Python ``code`` inside the namespace with this interpreter and the repository on its path."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        full = dict(os.environ if env is None else env)
        full["PYTHONPATH"] = root + os.pathsep + full.get("PYTHONPATH", "")
        return self.run([sys.executable, "-c", code], timeout=timeout, env=full)


def _unavailable(why: str) -> None:
    if os.environ.get("VERSO_REQUIRE_TOOLS"):
        pytest.fail(f"{why} (VERSO_REQUIRE_TOOLS is set)")
    pytest.skip(why)


def _ip(*args: str, ns: Optional[str] = None) -> None:
    argv = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.213.0.0/16 that no route of this machine overlaps."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, timeout=10).stdout
    taken = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        try:
            taken.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    start = os.getpid() % 16000
    for i in range(16000):
        n = (start + i) % 16000
        net = ipaddress.ip_network(f"10.213.{n // 64}.{(n % 64) * 4}/30")
        if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
            return net
    raise RuntimeError("no free /30 in 10.213.0.0/16")


@contextlib.contextmanager
def peer_namespace() -> Iterator[Peer]:
    """A namespace with a veth link to this host (see the module docstring)."""
    if shutil.which("ip") is None:
        _unavailable("iproute2's ip is not installed")
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    tag = f"{os.getpid() % 100000}{os.urandom(2).hex()}"
    name, host_if, peer_if = f"verso-{tag}", f"vh{tag}", f"vp{tag}"
    net = _free_subnet()
    host_ip, peer_ip = str(net[1]), str(net[2])
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as e:
        _unavailable(f"cannot make a network namespace: {e.stderr.decode(errors='replace').strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{peer_ip}/30", "dev", peer_if, ns=name)
        _ip("link", "set", peer_if, "up", ns=name)
        _ip("link", "set", "lo", "up", ns=name)
        yield Peer(name, host_ip, peer_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
