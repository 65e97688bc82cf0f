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


def save_tf1_half_plus_two(path: str) -> None:
    """A TF 1.x-style export (``tf.compat.v1`` graph + ``SavedModelBuilder``), as an Estimator
    would write it: y = a * x + b with variables a = 0.5, b = 2.

    * ``serving_default`` (predict): ``x`` placeholder float ``[-1, 1]`` -> ``y``;
    * ``regress_x_to_y`` (regress): ``inputs`` serialized tf.Examples (feature ``x``, one float)
      -> ``outputs`` y ``[-1, 1]``;
    * ``classify_x_to_y`` (classify): ``inputs`` -> ``scores`` y ``[-1, 1]``.
    The examples are parsed by the TF 1 ``ParseExample`` op (what TF 1.x exports hold).
    """
    g = tf.Graph()
    with g.as_default():
        a = tf.compat.v1.get_variable("a", initializer=0.5)
        b = tf.compat.v1.get_variable("b", initializer=2.0)
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.add(a * x, b, name="y")
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.raw_ops.ParseExample(
            serialized=serialized, names=tf.constant([], tf.string), sparse_keys=[],
            dense_keys=[tf.constant("x")], dense_defaults=[tf.constant([], tf.float32)], sparse_types=[],
            dense_shapes=[[1]], name="ParseExample")
        y_ex = tf.add(a * parsed.dense_values[0], b, name="y_from_examples")
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        sig = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
                "regress_x_to_y": sig({"inputs": info(serialized)}, {"outputs": info(y_ex)},
                                      "tensorflow/serving/regress"),
                "classify_x_to_y": sig({"inputs": info(serialized)}, {"scores": info(y_ex)},
                                       "tensorflow/serving/classify"),
            })
            builder.save()


def make_legacy_export(path: str) -> None:
    """Rewrite the SavedModel at ``path`` the way TF 1.0 wrote it: GraphDef producer 21,
    Placeholders with the legacy ``shape {}`` attribute (which TensorFlow reads as *unknown*
    shape for producers <= 21, but as a scalar under today's producer), no ``_output_shapes``,
    and SignatureDef TensorInfos without ``tensor_shape``."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        sm.ParseFromString(f.read())
    for mg in sm.meta_graphs:
        mg.graph_def.versions.producer = 21
        mg.graph_def.versions.min_consumer = 0
        for node in mg.graph_def.node:
            node.attr.pop("_output_shapes", None)
            if node.op == "Placeholder":
                node.attr["shape"].shape.Clear()
        for sig in mg.signature_def.values():
            for info in list(sig.inputs.values()) + list(sig.outputs.values()):
                info.ClearField("tensor_shape")
    with open(pb, "wb") as f:
        f.write(sm.SerializeToString())
    fingerprint = os.path.join(path, "fingerprint.pb")
    if os.path.exists(fingerprint):
        os.remove(fingerprint)  # its checksum is of the old saved_model.pb; it is optional


def save_matmul_chain(path: str, copies: int = 1, width: int = 1024, layers: int = 8, seed: int = 0) -> None:
    """A deliberately compute-bound version: ``serving_default`` maps x [None, width] float ->
    y [None, width] = the mean of ``copies`` runs of the same chain of ``layers`` matmul + tanh
    layers. Every copy has its own variables holding the same values, so the graph optimiser
    cannot merge them: ``copies=2`` does twice the work per row of ``copies=1`` for the same
    answers (the cost tests: tests/integration/test_cost.py)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 1.0 / np.sqrt(width), (width, width)).astype(np.float32) for _ in range(layers)]

    class Chain(tf.Module):
        def __init__(self):
            super().__init__()
            self.copies = [[tf.Variable(w) for w in weights] for _ in range(copies)]

        @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32, name="x")])
        def serve(self, x):
            outs = []
            for ws in self.copies:
                h = x
                for w in ws:
                    h = tf.tanh(tf.matmul(h, w))
                outs.append(h)
            return {"y": tf.add_n(outs) / float(len(outs)) if len(outs) > 1 else tf.identity(outs[0])}

    m = Chain()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})
