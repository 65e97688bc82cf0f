"""Faults that ``verso bench --fault`` injects into a model server on this machine, on time.

Kinds (``AT:KIND[:ARG]``, AT a duration from the start of the load):

* ``swap:PATH``: a new version (the SavedModel directory PATH) arrives in the model's base
  path as the next version number: copied beside it under a hidden name, then renamed into
  place in one step, as an operator's atomic ``mv`` (the server never sees half a copy);
* ``remove:VERSION``: the version directory leaves the base path (renamed away, then deleted);
* ``kill-worker``: one worker process of a ``--num_workers`` server is killed (SIGKILL), as an
  out-of-memory kill would; the supervisor restarts it;
* ``reload:CONFIG``: HandleReloadConfigRequest with the text-proto model config file CONFIG.

Faults act only on what is on this machine: swap and remove on a local ``--model-base-path``
while the server's address is a loopback one, kill-worker on ``--server-pid`` (a live process
on this machine with worker children), reload on a loopback server. ``check`` refuses anything
else before the load starts.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from typing import Optional

from client.stress import StressInputError, parse_duration

KINDS = ("swap", "remove", "kill-worker", "reload")


@dataclass(frozen=True)
class Fault:
    at: float   # seconds after the load starts
    kind: str
    arg: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def parse_fault(text: str) -> Fault:
    at, sep, rest = (text or "").partition(":")
    if not sep:
        raise StressInputError(f"fault {text!r}: expected AT:KIND[:ARG], e.g. 20s:swap:/models/new/2")
    kind, _, arg = rest.partition(":")
    if kind not in KINDS:
        raise StressInputError(f"fault {text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    when = parse_duration(at, f"fault {text!r}: time", zero=True)
    if kind == "kill-worker" and arg:
        raise StressInputError(f"fault {text!r}: kill-worker takes no argument")
    if kind != "kill-worker" and not arg:
        wanted = {"swap": "a version directory", "remove": "a version number", "reload": "a config file"}[kind]
        raise StressInputError(f"fault {text!r}: {kind} needs an argument ({wanted})")
    if kind == "remove" and not arg.isdigit():
        raise StressInputError(f"fault {text!r}: remove takes a version number")
    return Fault(when, kind, arg)


def is_loopback(target: str) -> bool:
    """Whether a gRPC target or REST address (``host:port``, ``[::1]:port``, a URL, ``unix:``)
    names this machine."""
    if target.startswith("unix:"):
        return True
    rest = target.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host = rest[1:].split("]", 1)[0]
    elif rest.count(":") == 1:
        host = rest.rsplit(":", 1)[0]
    else:
        host = rest
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a supervisor's workers: it starts them from its main thread)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@dataclass
class Controls:
    """What the tool may act on: the server's address, its model's base path, its PID."""

    target: str
    base_path: Optional[str] = None
    server_pid: Optional[int] = None


def check(faults: list[Fault], c: Controls) -> None:
    """Refuse (StressInputError) any fault the tool cannot or may not perform, before the run."""
    for f in faults:
        if f.kind in ("swap", "remove", "reload") and not is_loopback(c.target):
            raise StressInputError(f"fault {f.label}: the server at {c.target} is not on this machine's loopback; "
                                   f"faults act only on local servers")
        if f.kind in ("swap", "remove"):
            if not c.base_path:
                raise StressInputError(f"fault {f.label}: needs --model-base-path (the model's local directory)")
            if not os.path.isdir(c.base_path):
                raise StressInputError(f"fault {f.label}: --model-base-path {c.base_path} is not a directory")
        if f.kind == "swap":
            if not os.path.isfile(os.path.join(f.arg, "saved_model.pb")) and \
                    not os.path.isfile(os.path.join(f.arg, "saved_model.pbtxt")):
                raise StressInputError(f"fault {f.label}: {f.arg} is not a SavedModel directory")
        if f.kind == "reload" and not os.path.isfile(f.arg):
            raise StressInputError(f"fault {f.label}: no config file {f.arg}")
        if f.kind == "kill-worker":
            if c.server_pid is None:
                raise StressInputError("fault kill-worker: needs --server-pid (a server started with --num_workers)")
            if not _alive(c.server_pid):
                raise StressInputError(f"fault kill-worker: no process {c.server_pid} on this machine")
            if not _children(c.server_pid):
                raise StressInputError(f"fault kill-worker: process {c.server_pid} has no worker processes "
                                       f"(start the server with --num_workers)")


def _versions(base: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(base) if d.isdigit() and os.path.isdir(os.path.join(base, d)))


def swap(base: str, source: str) -> str:
    """Copy ``source`` in as the next version of ``base``; returns what was done."""
    version = max(_versions(base), default=0) + 1
    staging = os.path.join(base, f".verso-bench-{version}.tmp")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base, str(version)))
    return f"version {version} added from {source}"


def remove(base: str, version: str) -> str:
    path = os.path.join(base, str(int(version)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no version {version} in {base}")
    gone = os.path.join(base, f".verso-bench-removed-{int(version)}")
    os.rename(path, gone)
    shutil.rmtree(gone, ignore_errors=True)
    return f"version {version} removed"


def kill_worker(server_pid: int) -> str:
    workers = _children(server_pid)
    if not workers:
        raise ProcessLookupError(f"process {server_pid} has no workers left")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    return f"worker {victim} of {server_pid} killed (SIGKILL)"
