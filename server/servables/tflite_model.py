"""TFLite models (``--prefer_tflite_model=true``): a ``tensorflow`` version directory's
``model.tflite``, served through TensorFlow's own ``tf.lite.Interpreter`` instead of its
SavedModel (TF Serving's ``saved_model_bundle_factory.cc``: ``prefer_tflite_model`` and a
``model.tflite`` in the version directory).

Signatures. Each of the model's TFLite signatures (its signature runners) is a SignatureDef
of its own key, method ``tensorflow/serving/predict``: aliases are the signature's input and
output names, TensorInfo names the TFLite tensor names, dtypes from the tensors, shapes from
``shape_signature`` (-1 for a dynamic dimension). A model without signatures gets
``serving_default`` made from its input and output tensors as TF Serving makes it
(``_generated_signature``).

Threads. An interpreter is not thread-safe, so a version holds ``pools * interpreters_per_pool``
interpreters in a queue: ``run`` (called from the request executor or the load executor for
warmup, never on the event loop) takes one, blocking until one is free, and gives it back
when done, so that many calls run at once. Outputs are copies, never views into an
interpreter's buffers.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import warnings
from typing import Mapping, Sequence

import numpy as np

from protos import tensor_codec
from protos.errors import Code, ServingError
from server.dataplane.predict import DEFAULT_SIGNATURE, signature_not_found
from server.servables.signatures import signature_def

log = logging.getLogger("verso.servables")

TFLITE_FILE = "model.tflite"  # TF Serving's kTfLiteModelFilename


def _silence_deprecation() -> None:
    # TF 2.21's tf.lite.Interpreter warns on every construction that it moves to LiteRT
    # (ai_edge_litert); it is still TF Serving's runtime and works. Only that warning is
    # silenced. Re-added on each load (filterwarnings drops an identical filter before adding
    # it, so this does not grow the list) because a test harness may reset warnings filters.
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
                            category=UserWarning)


# TFLite's Python error reporter joins its messages with no separator ("XNNPack delegate
# failed to reshape runtimeNode number 2 (TfLiteXNNPackDelegate) failed to prepare.").
_GLUED_NODE = re.compile(r"(?<=[^\s.])(?=Node number \d+ \()")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return _GLUED_NODE.sub(". ", text.splitlines()[0]) if text else type(e).__name__


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # The interpreter copies from a C-contiguous buffer; np.ascontiguousarray would also turn a
    # 0-d array into a 1-d one.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _dtype(details: Mapping, where: str) -> int:
    dtype = np.dtype(details["dtype"])
    try:
        return tensor_codec.dtype_for_array(np.empty(0, dtype=dtype)).enum
    except tensor_codec.TensorCodecError:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"{where}: tensor {details['name']} has unsupported type {dtype}") from None


def _shape(details: Mapping) -> list[int]:
    return [int(d) if d >= 0 else -1 for d in details["shape_signature"]]


def _legacy_name(tensor_name: str) -> str:
    # TF Serving's TfToTfLiteLegacyTensorName: the name up to the first ':'.
    return tensor_name.split(":", 1)[0]


def _generated_signature(inputs: Sequence[Mapping], outputs: Sequence[Mapping], where: str):
    """``serving_default`` for a model without signatures, as TF Serving generates it
    (tensorflow_serving/servables/tensorflow/tflite_session.cc, TfLiteSession::Create,
    "No signature def found in TFLite model. Generating one."): one alias per input and output
    tensor, the tensor's name without its ``:N`` suffix (TfToTfLiteLegacyTensorName); the
    TensorInfo keeps the full tensor name and the tensor's dtype; method
    ``tensorflow/serving/predict``. A tensor without a name fails the load with TF Serving's
    ``Input name missing for tensor index: N``, two tensors of one name with ``Input tensor
    name: X has multiple indices`` (GetTensorInfoMap).

    Two differences: the shape is ``shape_signature`` (-1 where dynamic), where TF Serving
    writes the tensor's allocated dims (1 for a dynamic batch, which reads as "batch of 1
    only"); and when two tensors of one side would get the same alias (``PartitionedCall:0``
    and ``:1``), those keep their full names as aliases, where TF Serving's map keeps only the
    last of them (the other output cannot be asked for).

    Returns (SignatureDef, {input alias: tensor index}, {output alias: tensor index}).
    """
    specs: dict[str, dict] = {}
    indices: dict[str, dict[str, int]] = {}
    for side, label, tensors in (("inputs", "Input", inputs), ("outputs", "Output", outputs)):
        names = [t["name"] for t in tensors]
        for t in tensors:
            if not t["name"]:
                raise ServingError(Code.INTERNAL, f"{label} name missing for tensor index: {t['index']}")
            if names.count(t["name"]) > 1:
                raise ServingError(Code.ALREADY_EXISTS, f"{label} tensor name: {t['name']} has multiple indices")
        legacy = [_legacy_name(n) for n in names]
        specs[side], indices[side] = {}, {}
        for t, short in zip(tensors, legacy):
            alias = short if legacy.count(short) == 1 else t["name"]
            specs[side][alias] = (_dtype(t, where), _shape(t), t["name"])
            indices[side][alias] = int(t["index"])
    return signature_def(specs["inputs"], specs["outputs"]), indices["inputs"], indices["outputs"]


class _Slot:
    """One interpreter and what a call on it needs; used by one thread at a time."""

    def __init__(self, model: bytes, signature_keys: Sequence[str], input_indices: Mapping[str, int]):
        import tensorflow as tf
        self.interpreter = tf.lite.Interpreter(model_content=model)
        # Allocate now so that ops this runtime lacks (Select TF ops, custom ops) fail the load,
        # as TF Serving's interpreter pool does, not the first request. The public call covers
        # the primary subgraph and must come before the runners exist (it refuses while anything
        # else holds the interpreter); the other signatures' subgraphs have no public call.
        self.interpreter.allocate_tensors()
        self.runners = {key: self.interpreter.get_signature_runner(key) for key in signature_keys}
        for runner in self.runners.values():
            wrapper, index = getattr(runner, "_interpreter_wrapper", None), getattr(runner, "_subgraph_index", None)
            if wrapper is not None and index is not None:
                wrapper.AllocateTensors(index)
        # Without signatures: the shape each input tensor is allocated for, so a call resizes
        # and reallocates only when the request's shape differs (TF Serving's check).
        by_index = {d["index"]: tuple(int(x) for x in d["shape"]) for d in self.interpreter.get_input_details()}
        self.shapes: dict[int, tuple] = {i: by_index[i] for i in input_indices.values()}


class TfLiteServable:
    """One loaded ``model.tflite``: its SignatureDefs and a queue of interpreters."""

    def __init__(self, path: str, model: bytes, pools: int, interpreters_per_pool: int):
        self.path = path
        self._model = model
        where = f"TFLite model {os.path.join(path, TFLITE_FILE)}"
        first = self._build(model, where)
        # TF Serving makes max(1, num_tflite_pools) interpreters and, with more than one per
        # pool, a batch scheduler in front of them; Verso batches before the servable
        # (--enable_batching), so every interpreter simply serves calls.
        self.interpreters = max(1, pools) * max(1, interpreters_per_pool)
        self._slots: "queue.SimpleQueue[_Slot]" = queue.SimpleQueue()
        self._slots.put(first)
        for _ in range(self.interpreters - 1):
            self._slots.put(self._new_slot(where))

    def _build(self, model: bytes, where: str) -> _Slot:
        """Make the first interpreter and read the signatures from it (load time)."""
        import tensorflow as tf
        try:
            probe = tf.lite.Interpreter(model_content=model)
        except Exception as e:  # ValueError for a buffer that is not a TFLite flatbuffer
            raise ServingError(Code.INVALID_ARGUMENT, f"Failed to load {where}: {type(e).__name__}: "
                                                      f"{_first_line(e)}") from None
        signature_list = probe.get_signature_list()
        self.signature_defs: Mapping = {}
        self._input_indices: dict[str, int] = {}
        self._output_indices: dict[str, int] = {}
        if signature_list:
            sigs = {}
            for key in signature_list:
                runner = probe.get_signature_runner(key)
                ins, outs = runner.get_input_details(), runner.get_output_details()
                sigs[key] = signature_def(
                    {alias: (_dtype(d, where), _shape(d), d["name"]) for alias, d in ins.items()},
                    {alias: (_dtype(d, where), _shape(d), d["name"]) for alias, d in outs.items()})
            self.signature_defs = sigs
        else:
            log.warning("No signature def found in TFLite model %s. Generating one.", self.path)  # TF Serving's line
            sig, self._input_indices, self._output_indices = _generated_signature(
                probe.get_input_details(), probe.get_output_details(), where)
            self.signature_defs = {DEFAULT_SIGNATURE: sig}
        self._signature_keys = list(signature_list)
        del probe
        return self._new_slot(where)

    def _new_slot(self, where: str) -> _Slot:
        try:
            return _Slot(self._model, self._signature_keys, self._input_indices)
        except Exception as e:  # RuntimeError: ops this runtime lacks, tensors it cannot allocate
            raise ServingError(Code.INVALID_ARGUMENT, f"Failed to load {where}: {type(e).__name__}: "
                                                      f"{_first_line(e)}") from None

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one signature on a free interpreter (blocks until one is free).

        The request path has checked the inputs' dtypes, not their shapes: as in TF Serving,
        each input tensor is resized to the request's shape and the model's ops decide (a
        fully-connected layer reads a [2, 3] input as 3 rows of 2). Raises FAILED_PRECONDITION
        for an unknown signature and INVALID_ARGUMENT with TFLite's one-line message for
        anything the interpreter rejects (a shape its ops cannot take, a wrong dtype).
        """
        if signature_name not in self.signature_defs:
            raise signature_not_found(signature_name)
        slots = self._slots
        if slots is None:
            raise ServingError(Code.UNAVAILABLE, f"TFLite model {self.path} is unloaded")
        arrays = {alias: _contiguous(v) for alias, v in inputs.items()}
        slot = slots.get()
        failed = False
        try:
            if slot.runners:
                result = slot.runners[signature_name](**arrays)
                return {alias: result[alias] for alias in output_aliases}
            return self._run_generated(slot, arrays, output_aliases)
        except Exception as e:  # RuntimeError / ValueError from the interpreter
            failed = True
            raise ServingError(Code.INVALID_ARGUMENT, _first_line(e)) from None
        finally:
            if failed:
                # The interpreter's error reporter keeps every earlier message and puts them in
                # front of the next error's text (it grows with each failed call), and a failed
                # resize leaves its tensors unallocated: a fresh interpreter takes its place.
                # Only failed calls pay for this; if even that fails, the old one goes back
                # and resizes every input on its next call.
                try:
                    slot = self._new_slot(f"TFLite model {os.path.join(self.path, TFLITE_FILE)}")
                except ServingError:
                    slot.shapes.clear()
            slots.put(slot)

    def _run_generated(self, slot: _Slot, arrays: Mapping[str, np.ndarray],
                       output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        # Without signatures: resize_tensor_input + allocate_tensors only when a shape changed
        # (TF Serving's SetInputAndInvokeMiniBatch), then set, invoke and copy the outputs out.
        interp = slot.interpreter
        changed = False
        for alias, arr in arrays.items():
            index = self._input_indices[alias]
            if slot.shapes.get(index) != arr.shape:
                interp.resize_tensor_input(index, list(arr.shape), strict=False)
                slot.shapes[index] = arr.shape
                changed = True
        if changed:
            interp.allocate_tensors()
        for alias, arr in arrays.items():
            interp.set_tensor(self._input_indices[alias], arr)
        interp.invoke()
        return {alias: interp.get_tensor(self._output_indices[alias]) for alias in output_aliases}

    def unload(self) -> None:
        """Drop the interpreters (the manager unloads once no call holds the version)."""
        self._slots = None
        self._model = b""


def load_tflite(path: str, pools: int = 1, interpreters_per_pool: int = 1) -> TfLiteServable:
    """Load ``<path>/model.tflite`` with ``pools * interpreters_per_pool`` interpreters.

    Called from the manager's load executor; raises ``ServingError`` (one line) on failure:
    NOT_FOUND without the file, INVALID_ARGUMENT for a file that is not a TFLite model or
    uses ops this runtime lacks (Select TF ops, custom ops: TF Serving's builtin resolver has
    none of them either).
    """
    _silence_deprecation()
    file = os.path.join(path, TFLITE_FILE)
    try:
        with open(file, "rb") as f:
            model = f.read()
    except FileNotFoundError:
        raise ServingError(Code.NOT_FOUND, f"Could not find TFLite model {file}") from None
    except OSError as e:
        raise ServingError(Code.INVALID_ARGUMENT, f"Failed to read TFLite model {file}: {e.strerror}") from None
    return TfLiteServable(path, model, pools, interpreters_per_pool)
