"""Version directories holding both a SavedModel and the ``model.tflite`` converted from it
(TF Serving's layout for ``--prefer_tflite_model``), built with ``tf.lite.TFLiteConverter``."""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

WEIGHTS = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)


def affine(x: np.ndarray) -> dict[str, np.ndarray]:
    """What ``serving_default`` answers: y = x @ WEIGHTS + 1, s = the row sums of x."""
    return {"y": x @ WEIGHTS + 1.0, "s": x.sum(axis=1)}


def save_saved_model(path: str) -> None:
    """Three signatures: ``serving_default`` (x [None, 2] float -> y [None, 2], s [None]; a
    matmul, so a row of another width cannot run), ``double`` (v [None] float -> z = 2 v) and
    ``echo`` (text [None] string -> same (the input), reversed (rows in reverse order)). Only
    ops TFLite has built in, so the conversion needs no Select TF ops."""
    weights = tf.constant(WEIGHTS)

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def predict(self, x):  # not "serve": the converter takes that for a Keras export's endpoint
            return {"y": tf.matmul(x, weights) + 1.0, "s": tf.reduce_sum(x, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="v")])
        def double(self, v):
            return {"z": 2.0 * v}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def echo(self, text):
            return {"same": tf.identity(text), "reversed": tf.gather(text, tf.range(tf.shape(text)[0] - 1, -1, -1))}

    m = Affine()
    tf.saved_model.save(m, path, signatures={"serving_default": m.predict, "double": m.double, "echo": m.echo})


SIGNATURES = ("serving_default", "double", "echo")


def convert(saved_model: str, signature_keys=SIGNATURES) -> bytes:
    """``TFLiteConverter.from_saved_model``: the TFLite model keeps these signatures of the
    SavedModel (the converter's default is ``serving_default`` alone)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=list(signature_keys))
    return converter.convert()


def strip_signatures(model: bytes) -> bytes:
    """The same model without its SignatureDefs (the flatbuffer's ``signature_defs`` table
    emptied), as converters before signatures wrote them; checked to have none."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    obj.signatureDefs = []
    stripped = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert tf.lite.Interpreter(model_content=stripped).get_signature_list() == {}
    return stripped


def save_version(path: str, *, signatures: bool = True) -> str:
    """A version directory: the SavedModel and its ``model.tflite`` (with all three
    signatures, or ``serving_default`` only and then stripped of its signature)."""
    save_saved_model(path)
    if signatures:
        model = convert(path)
    else:
        model = strip_signatures(convert(path, ["serving_default"]))
    with open(os.path.join(path, "model.tflite"), "wb") as f:
        f.write(model)
    return path
