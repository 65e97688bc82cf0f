"""What the version lifecycle and the data plane need of a loaded version, whatever its format.

``Servable`` is the contract every format implements (SavedModel, TFLite, Keras, ONNX, and
``HookedServable`` around any of them): the manager only loads and unloads it, the data plane
only reads its SignatureDefs and runs it. ``Hooked`` is the extra a servable with Python hooks
offers, so that batching can batch its model call alone. Pure typing: imports nothing heavy.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Servable(Protocol):
    """One loaded version. ``run`` and ``unload`` block (executor threads, never the loop);
    ``run`` may be called from several threads at once; ``unload`` is called once, after the
    last lease is released. Errors are ``ServingError``s with TF Serving's codes."""

    path: str
    # name -> tensorflow.SignatureDef: what GetModelMetadata reports and requests are checked against
    signature_defs: Mapping

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_aliases: Sequence[str]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


@runtime_checkable
class Hooked(Protocol):
    """A servable with pre/post-processing hooks (``server.servables.hooks.HookedServable``).
    With batching, ``preprocess`` and ``postprocess`` run per request around the batched
    ``run_model`` (the model's own signature, ``model_aliases`` its outputs)."""

    def hooked(self, signature_name: str) -> bool: ...

    def has_preprocess(self) -> bool: ...

    def has_postprocess(self) -> bool: ...

    def preprocess(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def postprocess(self, signature_name: str, outputs: Mapping[str, np.ndarray],
                    output_aliases: Sequence[str]) -> dict[str, np.ndarray]: ...

    def run_model(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                  output_aliases: Sequence[str]) -> dict[str, np.ndarray]: ...

    def model_aliases(self, signature_name: str) -> list[str]: ...


_hooked_types: dict[type, bool] = {}


def is_hooked(servable) -> bool:
    """``isinstance(servable, Hooked)``, decided once per class: a runtime Protocol check
    costs ~10 us (it looks up every member), too much for each request. Hooked classes
    define the members as methods, so the class decides."""
    kind = type(servable)
    hooked = _hooked_types.get(kind)
    if hooked is None:
        hooked = _hooked_types[kind] = isinstance(servable, Hooked)
    return hooked
