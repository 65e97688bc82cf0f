"""Fixtures shared by end-to-end tests."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.server_proc import ServerProcess

VENV_BIN = os.path.dirname(sys.executable)


def script(name: str) -> str:
    """The path of an installed console script (``verso``, ``tensorflow_model_server``)."""
    path = shutil.which(name, path=VENV_BIN) or shutil.which(name)
    assert path, f"console script {name} is not installed (pip install -e .)"
    return path


@pytest.fixture(scope="session")
def bundled():
    """``verso serve`` on the bundled model repository (gRPC + REST), shared by the tests that
    only read from it; tests that change a server's models start their own."""
    srv = ServerProcess([], entry=[script("verso"), "serve"], rest=True)
    srv.start()
    yield srv
    srv.stop()
