"""SavedModel loading and running: the only module that calls the TensorFlow runtime.

Thread contract: ``load_saved_model`` and ``SavedModelServable.run`` block and are called
from the manager's load executor and the request executor, never on the event loop. A
``SavedModelServable`` is immutable after load, so concurrent ``run`` calls are safe (TF
releases the GIL while it computes).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from server.core.errors import Code, ServingError
from server.core.predict import signature_not_found

log = logging.getLogger("verso.servables")

PREDICT_METHOD = "tensorflow/serving/predict"

_configured = False


def configure_runtime(intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
    """Apply TF thread settings once, before the first op runs (0 = TF's choice)."""
    global _configured
    if _configured:
        return
    _configured = True
    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    if inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)


def read_meta_graph(path: str, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of ``path`` whose tag set equals ``tags`` (TF's own lookup rule)."""
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved = saved_model_pb2.SavedModel()
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    elif os.path.isfile(pbtxt):
        with open(pbtxt, "r", encoding="utf-8") as f:
            text_format.Parse(f.read(), saved)
    else:
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    wanted = set(tags)
    for mg in saved.meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            return mg
    available = [",".join(mg.meta_info_def.tags) for mg in saved.meta_graphs]
    raise ServingError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli`. Available tag-sets: {available}")


class SavedModelServable:
    """One loaded version of a SavedModel: its SignatureDefs and their callables."""

    def __init__(self, path: str, meta_graph: meta_graph_pb2.MetaGraphDef, loaded):
        self.path = path
        self.meta_graph = meta_graph
        # name -> SignatureDef, exactly as stored in the bundle (what GetModelMetadata returns).
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(meta_graph.signature_def)
        self._loaded = loaded
        self._functions = {name: loaded.signatures[name]
                           for name in self.signature_defs if name in loaded.signatures}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one signature. Inputs are already validated against its SignatureDef.

        Raises ``ServingError`` with TF's status code for errors raised by TF ops, and
        INVALID_ARGUMENT for inputs the function rejects before running.
        """
        fn = self._functions.get(signature_name)
        if fn is None:
            raise signature_not_found(signature_name)
        try:
            result = fn(**inputs)
        except tf.errors.OpError as e:
            raise ServingError(Code(e.error_code), op_error_text(e.message)) from None
        except (TypeError, ValueError) as e:
            raise ServingError(Code.INVALID_ARGUMENT, str(e).strip().splitlines()[0]) from None
        return {alias: _numpy(result[alias]) for alias in output_aliases}

    def unload(self) -> None:
        """Drop every reference to the TF objects. No forced ``gc.collect()``: it measured
        ~170 ms of GIL pause per swap (every request stalls) and memory stays flat without
        it (benchmarks/README.md, memory)."""
        self._functions = {}
        self._loaded = None


def _numpy(t) -> np.ndarray:
    # TF's conversion of a string tensor of rank > 32 to numpy crashes the process: convert it
    # flat and reshape in numpy (found by tests/e2e/test_hypothesis_fuzz.py).
    if t.dtype == tf.string and t.shape.rank is not None and t.shape.rank > 32:
        return tf.reshape(t, [-1]).numpy().reshape(t.shape)
    return t.numpy()


_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")


def op_error_text(message: str) -> str:
    """The failing op's own message, as TF Serving's C++ session returns it: without the
    Python runtime's ``Graph execution error: / Detected at node ... defined at`` header (and
    its stack frames) and the trailing ``[Op:__inference_...]`` tag."""
    if message.startswith("Graph execution error:"):
        lines = message.split("\n")
        i = 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("Detected at node")
                                  or lines[i].startswith(" ") or lines[i] == "<stack traces unavailable>"):
            i += 1
        if i < len(lines):
            message = "\n".join(lines[i:])
    return _OP_SUFFIX.sub("", message)


def load_saved_model(path: str, tags: Sequence[str]) -> SavedModelServable:
    """Load a SavedModel version directory (warmup is the loader's: server/servables/loader.py).

    Raises ``ServingError`` on any failure.
    """
    meta_graph = read_meta_graph(path, tags)
    try:
        loaded = tf.saved_model.load(path, tags=list(tags))
    except tf.errors.OpError as e:
        raise ServingError(Code(e.error_code), e.message) from None
    except Exception as e:  # TF raises assorted types for corrupt bundles
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to load SavedModel at {path}: {type(e).__name__}: {e}") from None
    return SavedModelServable(path, meta_graph, loaded)
