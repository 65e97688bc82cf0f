"""TF Text ops, which TF Serving links into its binary: a SavedModel using them loads through
``load_servable`` (which imports tensorflow_text itself), and a SavedModel needing an op
that is not registered fails its load with one line naming the op and where it comes from.

The cases that depend on what a process has imported run in a fresh Python process, since
this one may already have imported tensorflow_text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from protos.errors import Code, ServingError
from server.servables.loader import TF_TEXT_OPS, explain_missing_op, load_servable
from tests import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAD = re.compile(r"^Op type not registered '([^']+)' in binary running on (\S+)\. ")


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; its last stdout line is JSON."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _save_with_op(path: str, op: str) -> None:
    """A SavedModel (x [None] float -> y = sin(x)) whose graph then has its Sin node's op
    renamed to ``op``: loading it needs an op of that name registered."""

    class Sine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": tf.math.sin(x)}

    m = Sine()
    tf.saved_model.save(m, path, signatures={"serving_default": m.predict})
    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    renamed = 0
    for meta_graph in saved.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for fn in meta_graph.graph_def.library.function:
            nodes.extend(fn.node_def)
        for node in nodes:
            if node.op == "Sin":
                node.op = op
                renamed += 1
    assert renamed == 1
    with open(pb, "wb") as f:
        f.write(saved.SerializeToString())


# Loads the model in a process where tensorflow_text cannot be imported (as if not installed):
# TensorFlow's own error from load_saved_model, then load_servable's.
_LOAD_WITHOUT_TF_TEXT = """
import json, sys
sys.modules["tensorflow_text"] = None  # "import tensorflow_text" now raises ModuleNotFoundError
from protos.errors import ServingError
from server.servables.saved_model import load_saved_model
from server.servables.loader import load_servable
out = {}
for name, load in (("raw", lambda: load_saved_model(sys.argv[1], ["serve"])),
                   ("verso", lambda: load_servable(sys.argv[1], warmup=False))):
    try:
        load()
        out[name] = None
    except ServingError as e:
        out[name] = [int(e.code), e.message]
print(json.dumps(out))
"""


def test_a_tf_text_op_missing_names_its_package_in_one_line(tmp_path):
    path = str(tmp_path / "needs_text")
    _save_with_op(path, "ConstrainedSequence")
    result = _python(_LOAD_WITHOUT_TF_TEXT.replace("sys.argv[1]", repr(path)))
    code, raw = result["raw"]
    # TensorFlow's own text: several sentences and tf.contrib advice that does not apply.
    assert code == Code.NOT_FOUND and raw.startswith("Op type not registered 'ConstrainedSequence' in binary")
    assert "tf.contrib" in raw
    host = HEAD.match(raw).group(2)
    code, message = result["verso"]
    assert code == Code.NOT_FOUND
    assert message == (f"Op type not registered 'ConstrainedSequence' in binary running on {host}. This op is "
                       f"provided by tensorflow-text; install it with pip install 'verso[text]'")
    # The same rewrite, fed TensorFlow's real text, for the other states of tensorflow-text.
    assert explain_missing_op(raw, "absent") == message
    assert explain_missing_op(raw, "broken") == (
        f"Op type not registered 'ConstrainedSequence' in binary running on {host}. This op is provided by "
        f"tensorflow-text, which is installed but failed to import (see the server log); reinstall it with "
        f"pip install 'verso[text]'")
    if _tf_text_version() is not None:
        assert explain_missing_op(raw, "loaded") == (
            f"Op type not registered 'ConstrainedSequence' in binary running on {host}. This op is provided by "
            f"tensorflow-text, but the installed tensorflow-text {_tf_text_version()} does not register it; "
            f"install the version matching TensorFlow with pip install 'verso[text]'")
    # Other load errors pass unchanged.
    assert explain_missing_op("Could not find SavedModel .pb", "absent") == "Could not find SavedModel .pb"


def test_an_op_from_nowhere_says_this_tensorflow_lacks_it(tmp_path):
    path = str(tmp_path / "unknown_op")
    _save_with_op(path, "VersoNoSuchOp")
    with pytest.raises(ServingError) as e:
        load_servable(path, warmup=False)
    assert e.value.code == Code.NOT_FOUND
    m = HEAD.match(e.value.message)
    assert m and m.group(1) == "VersoNoSuchOp"
    assert e.value.message == (f"Op type not registered 'VersoNoSuchOp' in binary running on {m.group(2)}. "
                               f"This op is not in this TensorFlow build (TensorFlow {tf.__version__})")


def _tf_text_version():
    try:
        import tensorflow_text
    except ImportError:
        return None
    return tensorflow_text.__version__


_SAVE_TEXT_MODEL = """
import json, sys
import tensorflow as tf
import tensorflow_text as text

class Text(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def predict(self, sentences):
        folded = text.case_fold_utf8(sentences)  # op CaseFoldUTF8
        tokens = text.WhitespaceTokenizer().tokenize(folded)
        return {"folded": folded, "tokens": tokens.to_tensor(default_value=b"")}

m = Text()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.predict})
print(json.dumps(sorted({n.op for f in tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
                         .graph.as_graph_def().library.function for n in f.node_def})))
"""

_LOAD_TEXT_MODEL = """
import json, sys
import numpy as np
from server.servables.loader import load_servable
load_servable(sys.argv[2], warmup=False)  # a model without TF Text's ops: no import (~117 MiB)
before = "tensorflow_text" in sys.modules
servable = load_servable(sys.argv[1], warmup=False)  # imports tensorflow_text itself, on first need
out = servable.run("serving_default", {"sentences": np.array([b"Hello  World", "ÉCOLE d'Été".encode()],
                                                               dtype=object)}, ["folded", "tokens"])
print(json.dumps({"before": before, "after": "tensorflow_text" in sys.modules,
                  "folded": [b.decode() for b in out["folded"]],
                  "tokens": [[b.decode() for b in row] for row in out["tokens"]]}))
"""


def test_a_saved_model_using_tf_text_ops_loads_and_answers(tmp_path):
    pytest.importorskip("tensorflow_text", reason="tensorflow-text is not installed (pip install 'verso[text]')")
    path = str(tmp_path / "text_model")
    ops = _python(_SAVE_TEXT_MODEL.replace("sys.argv[1]", repr(path)))
    assert "CaseFoldUTF8" in ops and set(ops) & TF_TEXT_OPS  # the model really needs TF Text's ops
    plain = str(tmp_path / "plain")
    models.save_half_plus(plain, 1.0)
    result = _python(_LOAD_TEXT_MODEL.replace("sys.argv[1]", repr(path)).replace("sys.argv[2]", repr(plain)))
    assert (result["before"], result["after"]) == (False, True)
    assert result["folded"] == ["hello  world", "école d'été"]
    assert result["tokens"] == [["hello", "world"], ["école", "d'été"]]


_LIST_TF_TEXT_OPS = """
import glob, json, os
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session

def registered():
    ops = op_def_pb2.OpList()
    ops.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    return {op.name for op in ops.op}

before = registered()
import tensorflow_text
for library in glob.glob(os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "**", "_*.so"),
                         recursive=True):
    tf.load_op_library(library)  # any op library the import itself left unloaded
print(json.dumps(sorted(registered() - before)))
"""


def test_the_table_of_tf_text_ops_is_what_the_installed_tensorflow_text_registers():
    pytest.importorskip("tensorflow_text", reason="tensorflow-text is not installed (pip install 'verso[text]')")
    assert set(_python(_LIST_TF_TEXT_OPS)) == TF_TEXT_OPS


def test_tf_text_is_imported_once_and_its_absence_is_silent():
    code = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
sys.modules["tensorflow_text"] = None
from server.servables.loader import import_tf_text
print(json.dumps([import_tf_text(), import_tf_text()]))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == ["absent", "absent"]
    assert not [line for line in lines if line.startswith("LOG")]


def test_a_tensorflow_text_that_fails_to_import_is_logged_once(tmp_path):
    fake = tmp_path / "site" / "tensorflow_text"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('built for another TensorFlow')\n")
    code = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
from server.servables.loader import import_tf_text
print(json.dumps([import_tf_text(), import_tf_text()]))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == ["broken", "broken"]
    logged = [line for line in lines if line.startswith("LOG")]
    assert logged == ["LOG ERROR tensorflow-text is installed but does not import: RuntimeError: built for "
                      "another TensorFlow; SavedModels using its ops will not load"]
