"""One loader per ``model_platform`` behind one interface, and the hooks on top.

``load_servable`` is what the manager's load executor calls for every version, whatever its
format: the format's loader (``tensorflow``: SavedModel, ``keras``: a ``.keras`` file,
``onnx``: a ``.onnx`` file through onnxruntime), then the version's hooks
(``assets.extra/verso_hooks.py``), then warmup. Every servable has ``path``,
``signature_defs`` (what GetModelMetadata reports and requests are checked against),
``run(signature, inputs, output_aliases)`` and ``unload()``; the version lifecycle, batching,
metrics and rollouts only use those.
"""

from __future__ import annotations

from typing import Sequence

from server.core.errors import invalid_argument
from server.core.model_config import KERAS_PLATFORM as KERAS
from server.core.model_config import ONNX_PLATFORM as ONNX
from server.core.model_config import TENSORFLOW_PLATFORM as TENSORFLOW


def load_servable(path: str, platform: str = TENSORFLOW, *, tags: Sequence[str] = ("serve",), warmup: bool = True,
                  warmup_iterations: int = 1):
    """Load one version directory; raises ``ServingError`` on any failure (the load fails)."""
    if platform == TENSORFLOW:
        from server.servables.saved_model import load_saved_model
        servable = load_saved_model(path, tags)
    elif platform == KERAS:
        from server.servables.keras_model import load_keras
        servable = load_keras(path)
    elif platform == ONNX:
        from server.servables.onnx_model import load_onnx
        servable = load_onnx(path)
    else:
        raise invalid_argument(f"Unsupported model platform {platform}")
    from server.servables.hooks import HookedServable, load_hooks
    try:
        hooks = load_hooks(path)
        if warmup:
            # Warmup records address the model's own signatures (as in TF Serving), not the hooks'.
            from server.servables.warmup import run_warmup
            run_warmup(servable, path, warmup_iterations)
        if hooks is not None:
            servable = HookedServable(servable, hooks)
    except BaseException:
        servable.unload()
        raise
    return servable
