"""Keras 3 models (``model_platform: "keras"``): one ``*.keras`` file per version directory.

The version's single signature, ``serving_default`` (Predict), is made from the model's own
inputs and outputs: input aliases are the ``keras.Input`` names, output aliases the model's
``output_names`` (a Sequential model's single output is named after its last layer). Runs on
the TensorFlow backend (the one Verso ships). Thread contract as ``SavedModelServable``.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping, Sequence

import numpy as np

from protos import tensor_codec
from protos.errors import Code, ServingError
from server.dataplane.predict import DEFAULT_SIGNATURE, signature_not_found
from server.servables.signatures import signature_def


def _dtype(name: str, where: str) -> int:
    try:
        return tensor_codec.dtype_for_array(np.empty(0, dtype=np.dtype(name))).enum
    except (TypeError, tensor_codec.TensorCodecError):
        raise ServingError(Code.INVALID_ARGUMENT, f"{where}: dtype {name} is not supported") from None


class KerasServable:
    def __init__(self, path: str, model):
        self.path = path
        self._model = model
        where = f"Keras model {path}"
        self._inputs = [t.name for t in model.inputs]
        names = getattr(model, "output_names", None)
        if not names:
            names = [model.layers[-1].name] if len(model.outputs) == 1 else [f"output_{i}" for i in
                                                                              range(len(model.outputs))]
        self._outputs = list(names)
        sig = signature_def(
            {t.name: (_dtype(t.dtype, where), list(t.shape), t.name) for t in model.inputs},
            {alias: (_dtype(t.dtype, where), list(t.shape), alias) for alias, t in zip(self._outputs, model.outputs)})
        self.signature_defs: Mapping = {DEFAULT_SIGNATURE: sig}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_aliases: Sequence[str]) -> dict:
        if signature_name not in self.signature_defs:
            raise signature_not_found(signature_name)
        args = [inputs[name] for name in self._inputs]
        try:
            result = self._model(args[0] if len(args) == 1 else args, training=False)
        except (TypeError, ValueError) as e:
            raise ServingError(Code.INVALID_ARGUMENT, str(e).strip().splitlines()[0]) from None
        except Exception as e:  # the backend's op errors
            raise ServingError(Code.INVALID_ARGUMENT, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") \
                from None
        if isinstance(result, Mapping):
            values = [result[name] for name in self._outputs]
        elif isinstance(result, (list, tuple)):
            values = list(result)
        else:
            values = [result]
        by_alias = dict(zip(self._outputs, values))
        return {alias: np.asarray(by_alias[alias]) for alias in output_aliases}

    def unload(self) -> None:
        self._model = None


def load_keras(path: str) -> KerasServable:
    """Load the one ``*.keras`` file of a version directory; ``ServingError`` on failure."""
    files = sorted(glob.glob(os.path.join(path, "*.keras")))
    if len(files) != 1:
        raise ServingError(Code.NOT_FOUND, f"Expected one .keras file in {path}, found {len(files)}")
    try:
        import keras
        model = keras.saving.load_model(files[0], compile=False)
    except Exception as e:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to load Keras model {files[0]}: {type(e).__name__}: {e}") from None
    return KerasServable(path, model)
