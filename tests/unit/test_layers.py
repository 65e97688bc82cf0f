"""The import rules between Verso's packages, read from the source (every ``import`` and
``from ... import`` statement, at any depth, so a lazy import inside a function counts too):

- ``protos`` (the wire layer: tensor codec, error codes and their HTTP mapping, REST JSON,
  private config messages, Verso's own API) imports neither ``server`` nor ``client``;
- ``client`` imports nothing from ``server``; ``server`` nothing from ``client``;
- inside ``server``: the lifecycle imports no other server layer, the data plane no transport,
  and nothing imports the composition root (``server.app``) but the entry point (``server.cli``).
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = {"protos": {"server", "client"}, "client": {"server"}, "server": {"client"}}


def imported_packages(package: str) -> dict[str, set[str]]:
    """{module path: top-level names it imports} for every .py file under ``package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            tops = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    tops.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops.add(node.module.split(".")[0])
            out[os.path.relpath(path, ROOT)] = tops
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_may(package):
    bad = {path: sorted(tops & FORBIDDEN[package]) for path, tops in imported_packages(package).items()
           if tops & FORBIDDEN[package]}
    assert not bad, bad


def test_the_walk_sees_lazy_imports():
    """The rule above would pass vacuously if the walk missed imports inside functions."""
    tops = imported_packages("client")[os.path.join("client", "cli.py")]
    assert {"client", "rich", "argparse"} <= tops  # rich and client are imported inside functions


def imported_modules(package: str) -> dict[str, set[str]]:
    """{module path: full dotted names it imports} for every .py file under ``package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                names = set()
                typing_only = {id(n) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                               and ast.unparse(guard.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                               for n in ast.walk(guard)}
                for node in ast.walk(tree):
                    if id(node) in typing_only:  # annotations only: no dependency when running
                        continue
                    if isinstance(node, ast.Import):
                        names.update(alias.name for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module)
                        names.update(f"{node.module}.{alias.name}" for alias in node.names)
                out[os.path.relpath(path, ROOT)] = names
    return out


SERVER_LAYERS = {  # layer: server packages it must not import
    "server/lifecycle": ("server.dataplane", "server.transports", "server.servables", "server.batching",
                         "server.rollout", "server.app", "server.settings"),
    "server/dataplane": ("server.transports", "server.app"),
    "server/transports": ("server.app",),
    "server/servables": ("server.transports", "server.app"),
    "server/batching": ("server.dataplane", "server.transports", "server.app"),
    "server/rollout": ("server.dataplane", "server.transports", "server.app"),
}


@pytest.mark.parametrize("layer", sorted(SERVER_LAYERS))
def test_server_layers_import_only_downwards(layer):
    banned = SERVER_LAYERS[layer]
    bad = {path: sorted(n for n in names if n.startswith(banned))
           for path, names in imported_modules(layer).items() if any(n.startswith(banned) for n in names)}
    assert not bad, bad

