"""Python pre- and post-processing hooks that travel with a model version.

A version directory may hold ``assets.extra/verso_hooks.py`` (the directory TF Serving keeps
for serving-side extras, next to warmup requests). It is imported when the version loads; a
file that does not import fails the load like a corrupt model. It may define:

``SIGNATURES``
    ``{signature name: {"inputs": {alias: (dtype, shape)}, "outputs": {alias: (dtype, shape)}}}``
    -- the signatures the hooks apply to, as clients see them (dtype as TF prints it:
    ``"float"``, ``"string"`` ...; shape a list with -1 for any size, or None). A side left out
    keeps the model's own. Without ``SIGNATURES`` the hooks apply to every signature and the
    signatures are the model's.
``preprocess(inputs, signature_name) -> dict``
    the request's decoded inputs (numpy arrays by alias; strings as ``bytes`` objects) to the
    model's inputs.
``postprocess(outputs, signature_name) -> dict``
    the model's outputs (all of the signature's) to the response's tensors.

Either function may be left out (identity). They run per request, off the event loop, before
batching and after the batch is split, so the model call is still batched; several requests
may run them at once in different threads. A hook that raises ``ValueError`` gives the caller
INVALID_ARGUMENT with its message; any other exception is a bug in the hook: INTERNAL, and the
traceback in the server's log. Hooks are code: they are only ever loaded from the model
repository the operator configured, never from a request.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from protos import tensor_codec
from protos.errors import Code, ServingError
from server.dataplane.predict import check_inputs
from server.servables.signatures import dtype_enum, signature_def, tensor_info

log = logging.getLogger("verso.hooks")

HOOKS_FILE = os.path.join("assets.extra", "verso_hooks.py")


class Hooks:
    """One version's imported hook module: what it applies to and its two functions."""

    def __init__(self, path: str, module):
        self.path = path
        self.declared: Optional[dict] = getattr(module, "SIGNATURES", None)
        self.pre = _call_form(module, "preprocess", path)
        self.post = _call_form(module, "postprocess", path)


def _call_form(module, name: str, path: str) -> Optional[Callable]:
    fn = getattr(module, name, None)
    if fn is None:
        return None
    if not callable(fn):
        raise ServingError(Code.INVALID_ARGUMENT, f"Hooks {path}: {name} is not a function")
    try:
        takes_signature = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        takes_signature = True
    return fn if takes_signature else (lambda tensors, signature_name: fn(tensors))


def load_hooks(version_path: str) -> Optional[Hooks]:
    """Import the version's hook file, if it has one. Raises ``ServingError`` (the load fails)
    when it does not import."""
    path = os.path.join(version_path, HOOKS_FILE)
    if not os.path.isfile(path):
        return None
    # A module name of its own per file: two versions' hooks never share a module object.
    name = "verso_hooks_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # SyntaxError, ImportError, whatever its top level raises
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to import hooks {path}: {type(e).__name__}: {e}") from None
    finally:
        sys.modules.pop(name, None)
    return Hooks(path, module)


def _specs(side: Mapping, where: str) -> dict:
    out = {}
    if not isinstance(side, Mapping):
        raise ServingError(Code.INVALID_ARGUMENT, f"{where} must be a dict of alias: (dtype, shape)")
    for alias, spec in side.items():
        try:
            dtype, shape = spec
        except (TypeError, ValueError):
            raise ServingError(Code.INVALID_ARGUMENT, f"{where}[{alias!r}] must be (dtype, shape)") from None
        out[str(alias)] = (dtype_enum(dtype, f"{where}[{alias!r}]"), None if shape is None else list(shape), alias)
    return out


class HookedServable:
    """A loaded version with hooks: the client-facing ``signature_defs`` (after hooks) over the
    model's own (``model_signature_defs``). ``run`` is the whole path (pre, model, post);
    ``preprocess`` / ``run_model`` / ``postprocess`` are its three steps, for batching.
    Thread-safe as far as the hooks are."""

    def __init__(self, inner, hooks: Hooks):
        self.inner = inner
        self.hooks = hooks
        self.path = inner.path
        self.model_signature_defs = inner.signature_defs
        declared = hooks.declared
        if declared is None:
            self._hooked = set(inner.signature_defs)
            self.signature_defs = dict(inner.signature_defs)
            return
        if not isinstance(declared, Mapping):
            raise ServingError(Code.INVALID_ARGUMENT, f"Hooks {hooks.path}: SIGNATURES must be a dict")
        self._hooked = set(declared)
        self.signature_defs = dict(inner.signature_defs)
        for name, sides in declared.items():
            model_sig = inner.signature_defs.get(name)
            if model_sig is None:
                have = ", ".join(sorted(inner.signature_defs))
                raise ServingError(Code.INVALID_ARGUMENT, f"Hooks {hooks.path}: SIGNATURES names {name!r}, "
                                                          f"which the model does not have ({have})")
            where = f"Hooks {hooks.path}: SIGNATURES[{name!r}]"
            sig = signature_def({}, {}, model_sig.method_name)
            for side in ("inputs", "outputs"):
                if side in sides:
                    for alias, spec in _specs(sides[side], f"{where}[{side!r}]").items():
                        getattr(sig, side)[alias].CopyFrom(tensor_info(*spec))
                else:
                    for alias, info in getattr(model_sig, side).items():
                        getattr(sig, side)[alias].CopyFrom(info)
            self.signature_defs[name] = sig

    def has_preprocess(self) -> bool:
        return self.hooks.pre is not None

    def has_postprocess(self) -> bool:
        return self.hooks.post is not None

    def hooked(self, sig_name: str) -> bool:
        return sig_name in self._hooked

    def model_aliases(self, sig_name: str) -> list[str]:
        return list(self.model_signature_defs[sig_name].outputs)

    def preprocess(self, sig_name: str, inputs: dict) -> dict:
        """The request's inputs -> the model's, checked against the model's signature."""
        if self.hooks.pre is None:
            return inputs
        out = self._call("preprocess", self.hooks.pre, dict(inputs), sig_name)
        model_sig = self.model_signature_defs[sig_name]
        try:
            arrays = {alias: np.asarray(out[alias]) for alias in model_sig.inputs}
        except KeyError as e:
            raise ServingError(Code.INTERNAL, f"preprocess hook returned no input {e.args[0]!r} for the model "
                                              f"(it needs {', '.join(sorted(model_sig.inputs))})") from None
        try:
            dtypes = {a: tensor_codec.dtype_for_array(arr).enum for a, arr in arrays.items()}
        except tensor_codec.TensorCodecError as e:
            raise ServingError(Code.INTERNAL, f"preprocess hook returned {e}") from None
        try:
            check_inputs(model_sig, arrays, dtypes)
        except ServingError as e:
            raise ServingError(e.code, f"after preprocess: {e.message}") from None
        return arrays

    def run_model(self, sig_name: str, inputs: dict, aliases: Sequence[str]) -> dict:
        return self.inner.run(sig_name, inputs, aliases)

    def postprocess(self, sig_name: str, outputs: dict, aliases: Sequence[str]) -> dict:
        """The model's outputs -> the response's ``aliases``."""
        if self.hooks.post is None:
            return {a: outputs[a] for a in aliases}
        out = self._call("postprocess", self.hooks.post, dict(outputs), sig_name)
        try:
            return {alias: np.asarray(out[alias]) for alias in aliases}
        except KeyError as e:
            raise ServingError(Code.INTERNAL, f"postprocess hook returned no output {e.args[0]!r}") from None

    def run(self, sig_name: str, inputs: dict, aliases: Sequence[str]) -> dict:
        if sig_name not in self._hooked:
            return self.inner.run(sig_name, inputs, aliases)
        model_inputs = self.preprocess(sig_name, inputs)
        return self.postprocess(sig_name, self.run_model(sig_name, model_inputs, self.model_aliases(sig_name)),
                                aliases)

    def _call(self, what: str, fn, tensors: dict, sig_name: str):
        try:
            out = fn(tensors, sig_name)
        except ServingError:
            raise
        except ValueError as e:
            raise ServingError(Code.INVALID_ARGUMENT, str(e) or f"{what} hook rejected the request") from None
        except Exception as e:
            log.exception("%s hook of %s failed", what, self.hooks.path)
            raise ServingError(Code.INTERNAL, f"{what} hook failed: {type(e).__name__}: {e}") from None
        if not isinstance(out, Mapping):
            raise ServingError(Code.INTERNAL, f"{what} hook returned {type(out).__name__}, not a dict of arrays")
        return out

    def unload(self) -> None:
        self.inner.unload()
