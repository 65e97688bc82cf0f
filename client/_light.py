"""Import TF Serving's generated protos without starting TensorFlow (command-line processes only).

``tensorflow_serving.apis.*_pb2`` import ``tensorflow.core.framework.*_pb2``, and importing
any ``tensorflow.*`` submodule first runs ``tensorflow/__init__.py``, which loads the whole
runtime: 7 s on this machine against 0.45 s for the protos alone. The protos need nothing from
that runtime, so a command-line process that never runs TensorFlow registers an empty
``tensorflow`` package whose ``__path__`` is the installed one: its ``*_pb2`` submodules then
import as plain files.

Never call this in a process that may import TensorFlow itself (a server, a user's script,
tests): ``import tensorflow`` would then return the empty package. The ``verso`` client
commands are such processes; the library never calls it.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def use_protos_without_runtime() -> bool:
    """Register the empty ``tensorflow`` package; False (and nothing done) when TensorFlow is
    already imported or not installed."""
    if "tensorflow" in sys.modules:
        return False
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    package = types.ModuleType("tensorflow", "TensorFlow's protos only (see client._light)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["tensorflow"] = package
    return True
