"""Tiny SavedModels for the tests, built with tf.Module + tf.saved_model.save."""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

# Every dtype the tensor codec handles, by TF name, with a signature ``id_<name>`` each.
IDENTITY_DTYPES = {
    "float": tf.float32, "double": tf.float64, "int32": tf.int32, "uint8": tf.uint8,
    "int16": tf.int16, "int8": tf.int8, "string": tf.string, "complex64": tf.complex64,
    "int64": tf.int64, "bool": tf.bool, "bfloat16": tf.bfloat16, "uint16": tf.uint16,
    "complex128": tf.complex128, "half": tf.float16, "uint32": tf.uint32, "uint64": tf.uint64,
}


def save_half_plus(path: str, offset: float) -> None:
    """Version whose ``serving_default`` maps x [None] float -> y = 0.5 * x + offset."""

    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + offset}

    m = HalfPlus()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def save_multi(path: str) -> None:
    """Two inputs, two outputs: a, b -> sum, diff."""

    class Multi(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def serve(self, a, b):
            return {"sum": a + b, "diff": a - b}

    m = Multi()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def save_identities(path: str) -> None:
    """One identity signature per dtype (``id_float`` ...), input x of unknown shape -> y."""

    class Identities(tf.Module):
        pass

    m = Identities()
    signatures = {}
    for name, dtype in IDENTITY_DTYPES.items():
        fn = tf.function(lambda x: {"y": tf.identity(x)},
                         input_signature=[tf.TensorSpec(None, dtype, name="x")])
        setattr(m, f"fn_{name}", fn)
        signatures[f"id_{name}"] = fn.get_concrete_function()
    tf.saved_model.save(m, path, signatures=signatures)


def save_examples_model(path: str) -> None:
    """Signatures over serialized tf.Examples with a float feature ``x`` of 2 values:

    * ``classify``: inputs -> classes [[b"neg", b"pos"]] per example, scores [x0, x1];
    * ``scores_only``: inputs -> scores [x0, x1];
    * ``regress``: inputs -> outputs x0 + x1, shape [batch];
    * ``regress_col``: inputs -> outputs x0 - x1, shape [batch, 1];
    * ``two_outputs``: inputs -> outputs, extra (not a valid regression signature);
    * ``serving_default``: predict on x [None, 2] float -> y = x0 * x1;
    * ``echo_bytes``: data [None] string -> data_bytes (the same bytes), length (int32).
    """
    spec = {"x": tf.io.FixedLenFeature([2], tf.float32)}

    def parse(serialized):
        return tf.io.parse_example(serialized, spec)["x"]

    class Examples(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            x = parse(inputs)
            classes = tf.tile(tf.constant([[b"neg", b"pos"]]), [tf.shape(x)[0], 1])
            return {"classes": classes, "scores": x}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def scores_only(self, inputs):
            return {"scores": parse(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            x = parse(inputs)
            return {"outputs": x[:, 0] + x[:, 1]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_col(self, inputs):
            x = parse(inputs)
            return {"outputs": x[:, 0:1] - x[:, 1:2]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def two_outputs(self, inputs):
            x = parse(inputs)
            return {"outputs": x[:, 0], "extra": x[:, 1]}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def predict(self, x):
            return {"y": x[:, 0] * x[:, 1]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
        def echo_bytes(self, data):
            return {"data_bytes": tf.identity(data), "length": tf.strings.length(data)}

    m = Examples()
    tf.saved_model.save(m, path, signatures={
        "classify": m.classify, "scores_only": m.scores_only, "regress": m.regress,
        "regress_col": m.regress_col, "two_outputs": m.two_outputs, "serving_default": m.predict,
        "echo_bytes": m.echo_bytes})


def corrupt_copy(good: str, dest: str) -> None:
    """A version directory whose saved_model.pb is garbage."""
    shutil.copytree(good, dest)
    with open(os.path.join(dest, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel protobuf")


def write_warmup(version_dir: str, records) -> str:
    """Write ``records`` (PredictionLog messages or raw bytes) as the version's warmup file."""
    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r if isinstance(r, bytes) else r.SerializeToString())
    return path


def save_keras_affine(path: str, scale: float, offset: float) -> None:
    """A Keras 3 functional model in ``path/model.keras``: x [None, 2] float -> y = scale * x +
    offset (a Dense layer with fixed weights, so answers are known)."""
    import keras
    import numpy as np

    os.makedirs(path, exist_ok=True)
    x = keras.Input(shape=(2,), name="x", dtype="float32")
    dense = keras.layers.Dense(2, name="y")
    model = keras.Model(x, dense(x))
    dense.set_weights([np.eye(2, dtype=np.float32) * scale, np.full(2, offset, np.float32)])
    model.save(os.path.join(path, "model.keras"))


def save_onnx_half_plus(path: str, offset: float) -> None:
    """An ONNX graph in ``path/model.onnx``: x [N] float -> y = 0.5 * x + offset."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(path, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "half"], ["scaled"]), helper.make_node("Add", ["scaled", "offset"], ["y"])],
        "half_plus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        initializer=[numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                     numpy_helper.from_array(np.array(offset, np.float32), "offset")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(path, "model.onnx"))


def write_hooks(version_dir: str, source: str) -> str:
    """Write ``source`` as the version's ``assets.extra/verso_hooks.py``."""
    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "verso_hooks.py")
    with open(path, "w") as f:
        f.write(source)
    return path
