"""Verso hooks: the digits model takes 8x8 grayscale PNG images (one per row) instead of
64 raw pixel values. Built by model_repository/build.py."""

import numpy as np
import tensorflow as tf

# The client-facing serving_default: PNG bytes in; the model's own outputs (scores, classes).
SIGNATURES = {"serving_default": {"inputs": {"image": ("string", [-1])}}}


def preprocess(inputs, signature_name):
    rows = []
    for png in inputs["image"]:
        try:
            pixels = tf.io.decode_png(png, channels=1).numpy()
        except (tf.errors.InvalidArgumentError, TypeError):
            raise ValueError("image is not a PNG") from None
        if pixels.shape[:2] != (8, 8):
            raise ValueError(f"expected an 8x8 image, got {pixels.shape[1]}x{pixels.shape[0]}")
        rows.append(pixels.reshape(64).astype(np.float32) * (16.0 / 255.0))  # 0..255 -> 0..16
    return {"images": np.stack(rows) if rows else np.zeros((0, 64), np.float32)}
