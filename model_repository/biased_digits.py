"""Write a subtly biased ``digits`` version for the rollout demo: it passes a glance, not a slice check.

It is version 2 with one planted fault: for a deterministic subset of inputs that version 2
answers "7", it answers "1" instead (the scores of classes 7 and 1 are swapped on those rows,
and ``classes`` follows). The subset is a pure function of the input row, computed in the
graph: the pixel sum (pixels rounded to integers; load_digits pixels already are) is a
multiple of ``K`` = 6. Every other row's answer is version 2's.

Measured on the 540 held-out rows (``digits_holdout.npz``; rerun this script to print them):

| | overall accuracy | digit-7 recall | digit-1 precision |
|---|---:|---:|---:|
| v2 | 0.9778 (528/540) | 0.9815 (53/54) | 0.9153 (54/59) |
| biased | 0.9630 (520/540) | 0.8333 (45/54) | 0.8060 (54/67) |

So overall accuracy drops by only 1.48 points -- within what a rollout could mistake for
noise on a small sample -- while sevens lose 14.8 points of recall (8 of the 54 sevens now
read "1") and "1" answers lose 10.9 points of precision; every other class's recall is unchanged.

It keeps version 2's signatures exactly: ``serving_default`` (``images`` float32 [-1, 64] ->
``scores`` float32 [-1, 10], ``classes`` int64 [-1]) and ``classify`` (``inputs`` string [-1]
of serialized ``tf.train.Example``s -> ``classes`` string [-1, 10], ``scores`` float32
[-1, 10]; method ``tensorflow/serving/classify``), both biased alike. Version 2's weights are
copied in (its signatures are called from the new module and re-saved), so the version
stands alone. If the source ships ``assets.extra/reference.npz`` it is copied (same training
data), and ``assets.extra/verso_model.json`` describes the new version.

Usage: python model_repository/biased_digits.py model_repository/digits/4
The version appears whole (written beside, then renamed), as a careful operator would copy it.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.join(HERE, "digits", "2")
HOLDOUT = os.path.join(HERE, "digits_holdout.npz")
K = 6                      # rows whose pixel sum is a multiple of K are the biased subset
FROM_CLASS, TO_CLASS = 7, 1
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"

# Column permutation that swaps classes 7 and 1.
_SWAP = [TO_CLASS if i == FROM_CLASS else FROM_CLASS if i == TO_CLASS else i for i in range(10)]


def in_subset(images):
    """The biased subset, per row: round(pixels) sums to a multiple of K (bool [n])."""
    total = tf.reduce_sum(tf.round(images), axis=-1)
    return tf.equal(tf.math.floormod(total, float(K)), 0.0)


def _bias(images, scores):
    """Scores with the 7 and 1 columns swapped on subset rows that score highest on 7."""
    flip = tf.logical_and(in_subset(images),
                          tf.equal(tf.argmax(scores, axis=-1, output_type=tf.int64), FROM_CLASS))
    return tf.where(flip[:, None], tf.gather(scores, _SWAP, axis=-1), scores)


class BiasedDigits(tf.Module):
    def __init__(self, source: str):
        super().__init__(name="biased_digits")
        self.base = tf.saved_model.load(source)  # tracked, so its variables are saved with us
        self._predict = self.base.signatures["serving_default"]
        self._classify = self.base.signatures["classify"]

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="images")])
    def predict(self, images):
        scores = _bias(images, self._predict(images=images)["scores"])
        return {"scores": tf.identity(scores, name="scores"),
                "classes": tf.argmax(scores, axis=-1, output_type=tf.int64, name="classes")}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        out = self._classify(inputs=inputs)
        pixels = tf.io.parse_example(inputs, {"pixels": tf.io.FixedLenFeature([64], tf.float32)})["pixels"]
        return {"classes": tf.identity(out["classes"], name="classes"),
                "scores": tf.identity(_bias(pixels, out["scores"]), name="scores")}


def _set_classify_method(export_dir: str) -> None:
    """TF2 labels every signature predict; restore ``classify``'s method name (as build.py does)."""
    pb_path = os.path.join(export_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as f:
        sm.ParseFromString(f.read())
    sm.meta_graphs[0].signature_def["classify"].method_name = CLASSIFY_METHOD_NAME
    with open(pb_path, "wb") as f:
        f.write(sm.SerializeToString(deterministic=True))
    try:  # fingerprint.pb checksums saved_model.pb: recompute it, or drop it (it is optional)
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(export_dir)
    except Exception:  # pragma: no cover - depends on TF internals
        fp = os.path.join(export_dir, "fingerprint.pb")
        if os.path.exists(fp):
            os.remove(fp)


def holdout_metrics(export_dir: str, holdout: str = HOLDOUT) -> dict:
    """Overall accuracy, 7-recall and 1-precision of the version at ``export_dir`` on the holdout."""
    data = np.load(holdout)
    x, y = data["images"], data["labels"]
    pred = tf.saved_model.load(export_dir).signatures["serving_default"](images=tf.constant(x))["classes"].numpy()
    return {
        "holdout_accuracy": float(np.mean(pred == y)),
        "recall_7": float(np.mean(pred[y == FROM_CLASS] == FROM_CLASS)),
        "precision_1": float(np.mean(y[pred == TO_CLASS] == TO_CLASS)),
    }


def save_biased_digits(dest: str, source: str = DEFAULT_SOURCE) -> None:
    dest = os.path.abspath(dest)
    source = os.path.abspath(source)
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module = BiasedDigits(source)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.predict,
                                                 "classify": module.classify})
    _set_classify_method(tmp)
    assets = os.path.join(tmp, "assets")
    if os.path.isdir(assets) and not os.listdir(assets):
        os.rmdir(assets)
    extra = os.path.join(tmp, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    reference = os.path.join(source, "assets.extra", "reference.npz")
    if os.path.exists(reference):
        shutil.copyfile(reference, os.path.join(extra, "reference.npz"))
    info = {
        "trained_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": f"digits v2 with a planted bias: answers 1 instead of 7 when the pixel sum "
                       f"is a multiple of {K} (model_repository/biased_digits.py)",
    }
    try:
        with open(os.path.join(source, "assets.extra", "verso_model.json")) as f:
            src_info = json.load(f)
        if "data_until" in src_info:
            info["data_until"] = src_info["data_until"]
    except (OSError, ValueError):
        pass
    if os.path.exists(HOLDOUT):
        info["metrics"] = {k: round(v, 4) for k, v in holdout_metrics(tmp).items()}
    with open(os.path.join(extra, "verso_model.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.rename(tmp, dest)


if __name__ == "__main__":
    if len(sys.argv) != 2 or os.path.exists(sys.argv[1]):
        sys.exit("usage: python model_repository/biased_digits.py NEW_VERSION_DIR (must not exist)")
    save_biased_digits(sys.argv[1])
    before, after = holdout_metrics(DEFAULT_SOURCE), holdout_metrics(sys.argv[1])
    print(f"wrote {sys.argv[1]}: digits v2 that answers 1 instead of 7 when the pixel sum is a multiple of {K}")
    for name in ("holdout_accuracy", "recall_7", "precision_1"):
        change = 100 * (after[name] - before[name])
        print(f"  {name:17s} v2 {before[name]:.4f} -> {after[name]:.4f} ({change:+.1f} points)")
