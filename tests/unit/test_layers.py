"""The import rules between Verso's packages, read from the source (every ``import`` and
``from ... import`` statement, at any depth, so a lazy import inside a function counts too):

- ``protos`` (the wire layer: tensor codec, error codes and their HTTP mapping, REST JSON,
  private config messages, Verso's own API) imports neither ``server`` nor ``client``;
- ``client`` imports nothing from ``server``; ``server`` nothing from ``client``.
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
