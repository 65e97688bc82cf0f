"""Shared fixtures: test models (built once per session) and the real server as a subprocess."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `verso serve` keeps rollout state under $XDG_STATE_HOME: a directory of this test run's own, so
# that no run (or a user's own server) sees another's rollouts. Servers started by tests inherit it.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="verso-test-state-")

import pytest  # noqa: E402

from tests import models  # noqa: E402
from tests.server_proc import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def built_models(tmp_path_factory):
    """Pristine model versions to copy from: {key: directory}."""
    root = tmp_path_factory.mktemp("built")
    out = {}
    for n in (1, 2, 3, 4):
        out[f"hp{n}"] = str(root / f"hp{n}")
        models.save_half_plus(out[f"hp{n}"], float(n))
    out["multi"] = str(root / "multi")
    models.save_multi(out["multi"])
    out["ids"] = str(root / "ids")
    models.save_identities(out["ids"])
    out["examples"] = str(root / "examples")
    models.save_examples_model(out["examples"])
    out["corrupt"] = str(root / "corrupt")
    models.corrupt_copy(out["hp1"], out["corrupt"])
    return out


@pytest.fixture(scope="session")
def format_models(tmp_path_factory):
    """Keras and ONNX versions (built on first use): {key: version directory}."""
    root = tmp_path_factory.mktemp("formats")
    out = {}
    for n in (1, 2):
        out[f"keras{n}"] = str(root / f"keras{n}")
        models.save_keras_affine(out[f"keras{n}"], scale=float(n), offset=10.0 * n)
        out[f"onnx{n}"] = str(root / f"onnx{n}")
        models.save_onnx_half_plus(out[f"onnx{n}"], float(n))
    return out


@pytest.fixture
def repo(tmp_path, built_models):
    """A fresh model repository: ``put(model, version, key)`` copies a built version into it."""

    class Repo:
        root = tmp_path / "models"

        def path(self, model: str) -> str:
            return str(self.root / model)

        def put(self, model: str, version: int, key: str) -> str:
            dest = self.root / model / str(version)
            tmp = self.root / model / f".{version}.tmp"
            shutil.copytree(built_models[key], tmp)
            os.rename(tmp, dest)  # appears whole, like an operator's atomic move
            return str(dest)

        def remove(self, model: str, version: int) -> None:
            shutil.rmtree(self.root / model / str(version))

    Repo.root.mkdir()
    return Repo()


@pytest.fixture
def server_factory():
    """Start real servers; every one is stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, wait: bool = True, **kw) -> ServerProcess:
        proc = ServerProcess(list(args), **kw)
        started.append(proc)
        proc.start(wait=wait)
        return proc

    yield start
    for p in started:
        p.stop()
