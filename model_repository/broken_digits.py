"""Write a deliberately broken ``digits`` version for the rollout demo (the README's rollout demo).

It has the demo model's ``serving_default`` signature (``images`` float32 [-1, 64] ->
``scores`` float32 [-1, 10], ``classes`` int64 [-1]) but ignores its input: every answer is
class 0 with certainty. A rollout should roll it back.

Usage: python model_repository/broken_digits.py model_repository/digits/3
The version appears whole (written beside, then renamed), as a careful operator would copy it.
"""

from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


class ConstantDigits(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="images")])
    def predict(self, images):
        rows = tf.shape(images)[0]
        scores = tf.tile(tf.one_hot([0], 10), [rows, 1])
        return {"scores": tf.identity(scores, name="scores"),
                "classes": tf.zeros([rows], tf.int64, name="classes")}


def save_broken_digits(dest: str) -> None:
    dest = os.path.abspath(dest)
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module = ConstantDigits()
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.predict})
    os.rename(tmp, dest)


if __name__ == "__main__":
    if len(sys.argv) != 2 or os.path.exists(sys.argv[1]):
        sys.exit("usage: python model_repository/broken_digits.py NEW_VERSION_DIR (must not exist)")
    save_broken_digits(sys.argv[1])
    print(f"wrote {sys.argv[1]}: a digits version that always answers 0")
