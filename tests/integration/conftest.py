"""In-process servers for the integration tier: ``server_factory`` starts the real ``App`` in
this process (tests/server_proc.py ``InProcessServer``) instead of a subprocess, so a test
module moved here from tests/e2e runs unchanged and without a process start."""

from __future__ import annotations

import pytest

from tests.server_proc import InProcessServer


@pytest.fixture
def server_factory():
    """Start real servers in process; every one is stopped at the end of the test."""
    started: list[InProcessServer] = []

    def start(*args: str, rest: bool = False) -> InProcessServer:
        srv = InProcessServer(list(args), rest=rest)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def bundled():
    """The bundled model repository with `verso serve`'s defaults (gRPC + REST, Prometheus),
    in process, shared by the tests that only read from it."""
    srv = InProcessServer([], rest=True, bundled=True).start()
    yield srv
    srv.stop()
