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
