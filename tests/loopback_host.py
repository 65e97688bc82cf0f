"""A machine of the test's own for running the README's lines exactly as a user types them: a
network namespace with nothing but its loopback interface (127.0.0.1 and ::1), where
``localhost`` resolves to ``::1`` first, then ``127.0.0.1`` (as on most desktops), and where
the README's fixed ports 8500 and 8501 are always free, whatever else runs on this machine (other
tests in parallel, a user's own ``verso serve``). Needs root and ``ip`` (iproute2); skipped
without them, failed when VERSO_REQUIRE_TOOLS is set (CI), as tests/netns.py.

    with loopback_host() as host:
        server = host.serve(["verso", "serve"], env=...)   # on the default ports, inside
        host.run(["verso", "status", "digits"])            # a command line, inside

``ip netns exec`` mounts ``/etc/netns/NAME/hosts`` over ``/etc/hosts`` for the processes it starts:
that file names ``::1`` first. The namespace and the file are removed on exit, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from tests.netns import _unavailable

HOSTS = "::1 localhost ip6-localhost ip6-loopback\n127.0.0.1 localhost\n"


@dataclass(frozen=True)
class LoopbackHost:
    name: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 180, env: Optional[dict] = None,
            cwd=None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace (text output captured), bounded by ``timeout``."""
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@contextlib.contextmanager
def loopback_host() -> Iterator[LoopbackHost]:
    """A namespace with its loopback up and ``localhost`` naming ``::1`` first (see the module docstring)."""
    if shutil.which("ip") is None:
        _unavailable("iproute2's ip is not installed")
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    name = f"verso-lo-{os.getpid() % 100000}{os.urandom(2).hex()}"
    etc = os.path.join("/etc/netns", name)
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError as e:
        _unavailable(f"cannot make a network namespace: {e.stderr.decode(errors='replace').strip()}")
    try:
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "hosts"), "w") as f:
            f.write(HOSTS)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=10)
        host = LoopbackHost(name)
        resolved = host.run(["getent", "ahosts", "localhost"], timeout=10).stdout.split()
        if not resolved or resolved[0] != "::1":
            _unavailable(f"localhost does not resolve to ::1 first in a namespace here: {resolved[:3]}")
        yield host
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        shutil.rmtree(etc, ignore_errors=True)
