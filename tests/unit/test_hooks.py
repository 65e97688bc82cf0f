"""Hooks over a fake model: loading a hook file, the client-facing signatures it declares, and
every way a hook can go wrong, each with its code and text."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from protos.errors import Code, ServingError
from server.servables.hooks import HookedServable, load_hooks
from server.servables.signatures import signature_def
from tests.models import write_hooks


class Model:
    """x float [-1] -> y = x + 1; another signature ``raw`` left to itself."""

    path = "/fake/1"

    def __init__(self):
        sig = signature_def({"x": (types_pb2.DT_FLOAT, [-1], "x:0")}, {"y": (types_pb2.DT_FLOAT, [-1], "y:0")})
        self.signature_defs = {"serving_default": sig, "raw": sig}
        self.calls = []
        self.unloaded = False

    def run(self, sig_name, inputs, aliases):
        self.calls.append((sig_name, {k: v.tolist() for k, v in inputs.items()}, list(aliases)))
        return {"y": inputs["x"] + 1}

    def unload(self):
        self.unloaded = True


def hooked(tmp_path, source: str) -> HookedServable:
    write_hooks(str(tmp_path), source)
    return HookedServable(Model(), load_hooks(str(tmp_path)))


DECLARED = '''
import numpy as np
SIGNATURES = {"serving_default": {"inputs": {"text": ("string", [-1])},
                                  "outputs": {"y": ("float", [-1]), "sign": ("string", None)}}}

def preprocess(inputs, signature_name):
    return {"x": np.array([float(t) for t in inputs["text"]], np.float32)}

def postprocess(outputs, signature_name):
    return {"y": outputs["y"], "sign": np.array([b"+" if v > 0 else b"-" for v in outputs["y"]], object)}
'''


def test_declared_signatures_face_the_client_and_the_rest_stay_the_models(tmp_path):
    s = hooked(tmp_path, DECLARED)
    sig = s.signature_defs["serving_default"]
    assert dict((a, i.dtype) for a, i in sig.inputs.items()) == {"text": types_pb2.DT_STRING}
    assert sig.outputs["sign"].tensor_shape.unknown_rank and sig.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert s.signature_defs["raw"] == s.model_signature_defs["raw"]
    assert s.hooked("serving_default") and not s.hooked("raw")
    out = s.run("serving_default", {"text": np.array([b"1", b"-3"], object)}, ["sign", "y"])
    assert out["sign"].tolist() == [b"+", b"-"] and out["y"].tolist() == [2.0, -2.0]
    assert s.inner.calls == [("serving_default", {"x": [1.0, -3.0]}, ["y"])]  # all model outputs
    assert s.run("raw", {"x": np.array([1.0], np.float32)}, ["y"])["y"].tolist() == [2.0]  # no hooks
    s.unload()
    assert s.inner.unloaded


def test_without_signatures_hooks_apply_everywhere_and_one_argument_hooks_work(tmp_path):
    s = hooked(tmp_path, "def preprocess(inputs):\n    return {'x': inputs['x'] * 10}\n")
    assert s.signature_defs == dict(s.model_signature_defs)
    assert s.hooked("raw") and s.hooked("serving_default")
    assert s.run("raw", {"x": np.array([1.0], np.float32)}, ["y"])["y"].tolist() == [11.0]


@pytest.mark.parametrize("source, code, text", [
    ("def preprocess(inputs, sig):\n    raise ValueError('too dark')\n", Code.INVALID_ARGUMENT, "too dark"),
    ("def preprocess(inputs, sig):\n    return {}['x']\n", Code.INTERNAL, "preprocess hook failed: KeyError: 'x'"),
    ("def preprocess(inputs, sig):\n    return [1]\n", Code.INTERNAL,
     "preprocess hook returned list, not a dict of arrays"),
    ("def preprocess(inputs, sig):\n    return {'z': inputs['x']}\n", Code.INTERNAL,
     "preprocess hook returned no input 'x' for the model (it needs x)"),
    ("import numpy as np\ndef preprocess(inputs, sig):\n    return {'x': inputs['x'].astype(np.float64)}\n",
     Code.INVALID_ARGUMENT, "after preprocess: Expects arg[0] to be float but double is provided"),
    ("def postprocess(outputs, sig):\n    return {'w': outputs['y']}\n", Code.INTERNAL,
     "postprocess hook returned no output 'y'"),
    ("def postprocess(outputs, sig):\n    raise ValueError('')\n", Code.INVALID_ARGUMENT,
     "postprocess hook rejected the request"),
])
def test_each_way_a_hook_fails_has_its_code_and_text(tmp_path, source, code, text):
    s = hooked(tmp_path, source)
    with pytest.raises(ServingError) as e:
        s.run("serving_default", {"x": np.array([1.0], np.float32)}, ["y"])
    assert (e.value.code, e.value.message) == (code, text)


def test_a_preprocessed_shape_other_than_the_declared_one_reaches_the_model(tmp_path):
    """As a request's input does: the model decides, not a check against the TensorInfo shape."""
    s = hooked(tmp_path, "def preprocess(inputs, sig):\n    return {'x': inputs['x'].reshape(1, 1)}\n")
    out = s.run("serving_default", {"x": np.array([1.0], np.float32)}, ["y"])
    assert out["y"].tolist() == [[2.0]] and s.inner.calls == [("serving_default", {"x": [[1.0]]}, ["y"])]


@pytest.mark.parametrize("source, text", [
    ("def preprocess(:\n", "Failed to import hooks {path}: SyntaxError: "),
    ("import no_such_module_anywhere\n", "Failed to import hooks {path}: ModuleNotFoundError: "),
    ("raise SystemExit(3)\n", "Failed to import hooks {path}: SystemExit: 3"),
    ("preprocess = 3\n", "Hooks {path}: preprocess is not a function"),
    ("SIGNATURES = {'nope': {}}\n", "Hooks {path}: SIGNATURES names 'nope', which the model does not have "
                                    "(raw, serving_default)"),
    ("SIGNATURES = {'raw': {'inputs': {'x': ('floaty', [-1])}}}\n",
     "Hooks {path}: SIGNATURES['raw']['inputs']['x']: unknown dtype 'floaty'"),
    ("SIGNATURES = {'raw': {'inputs': {'x': 'float'}}}\n",
     "Hooks {path}: SIGNATURES['raw']['inputs']['x'] must be (dtype, shape)"),
    ("SIGNATURES = ['raw']\n", "Hooks {path}: SIGNATURES must be a dict"),
])
def test_a_hook_file_that_cannot_be_used_fails_the_load_with_one_line(tmp_path, source, text):
    path = write_hooks(str(tmp_path), source)
    with pytest.raises(ServingError) as e:
        HookedServable(Model(), load_hooks(str(tmp_path)))
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message.startswith(text.format(path=path)), e.value.message
    assert "\n" not in e.value.message


def test_a_version_without_a_hook_file_has_no_hooks(tmp_path):
    assert load_hooks(str(tmp_path)) is None
