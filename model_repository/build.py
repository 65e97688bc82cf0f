"""Rebuild the demo TensorFlow SavedModels of the bundled model repository.

What it builds (all paths relative to this file's directory, ``model_repository/``):

* ``half_plus_two/1`` and ``half_plus_two/2``: version N computes ``y = 0.5 * x + N``
  (version 2 is the classic TF Serving ``half_plus_two``; version 1 answers visibly
  differently, which makes version switches easy to see).
  Signature ``serving_default``: input ``x`` (DT_FLOAT, [-1]) -> output ``y`` (DT_FLOAT, [-1]).

* ``digits/1`` and ``digits/2``: classifiers for scikit-learn's bundled 8x8 handwritten
  digits (``sklearn.datasets.load_digits``; no download). They are trained with
  scikit-learn (fixed seeds and a fixed stratified train/test split), and the learned
  weights are exported into a ``tf.Module`` that computes the same function in TF.
  Version 1 is deliberately weak (logistic regression on the first 60 training samples);
  version 2 is stronger (a one-hidden-layer MLP on the full training set).
  Inputs are raw pixel values 0..16 as float32; scaling to 0..1 happens inside the graph.
  Signatures:
    - ``serving_default`` (method ``tensorflow/serving/predict``): input ``images``
      (DT_FLOAT, [-1, 64]) -> ``scores`` (DT_FLOAT, [-1, 10], softmax probabilities) and
      ``classes`` (DT_INT64, [-1], argmax).
    - ``classify`` (method ``tensorflow/serving/classify``): input ``inputs``
      (DT_STRING, [-1], serialized ``tf.train.Example`` protos with a float_list
      feature ``pixels`` of length 64) -> ``classes`` (DT_STRING, [-1, 10], the labels
      "0".."9" on every row) and ``scores`` (DT_FLOAT, [-1, 10]).
      TF2's saver labels every signature ``tensorflow/serving/predict``, so this script
      patches the method name in ``saved_model.pb`` after saving (and rewrites
      ``fingerprint.pb`` to match).

* ``digits_png/1``: digits version 2's SavedModel with Python hooks
  (``assets.extra/verso_hooks.py``): clients send an 8x8 grayscale PNG per row (input
  ``image``, DT_STRING) and the hook decodes it into the model's 64 pixel values.

* ``half_plus_two_onnx/1/model.onnx``: ``y = 0.5 * x + 2`` as an ONNX graph
  (``model_platform: "onnx"``; needs onnxruntime, the ``onnx`` extra, to serve and the
  ``onnx`` package to build).

* ``digits/1/assets.extra`` and ``digits/2/assets.extra``: provenance and drift reference
  (README "Provenance and reference samples"): ``verso_model.json`` (fixed ``trained_at`` and
  ``data_until`` dates, so a rebuild is reproducible, and the held-out accuracy measured on
  the saved version) and ``reference.npz`` (``images``: a fixed sample of 1000 rows of the
  training split, float32 [1000, 64], pixels 0..16).

It also writes ``ACCURACY.md`` (held-out test accuracy of each digits version),
``digits_holdout.npz`` (those held-out images and labels, for the rollout demo),
``digits_inverted.npz`` (the same rows with inverted pixels, ``16 - x``: a drift demo) and
``samples/digit_N.png`` (the first held-out image of each digit, as the PNG hook expects).
``models.config`` and ``README.md`` next to this file are maintained by hand.

Each version is written to a temporary sibling directory (``<model>/.<version>.tmp``),
verified by loading it back, and only then renamed into place, replacing the old one.

Usage (needs the ``dev`` extra: scikit-learn, onnx)::

    python model_repository/build.py                # everything (retrains)
    python model_repository/build.py --assets-only  # only the digits assets.extra files and
                                                    # digits_inverted.npz, for the versions
                                                    # already there (no retraining)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import hashlib
import io
import json
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2

ROOT = Path(__file__).resolve().parent
SEED = 0
NUM_PIXELS = 64
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # load_digits pixel values are integers 0..16
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"


def set_seeds() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    tf.random.set_seed(SEED)


# --------------------------------------------------------------------------- helpers


def write_version(model_dir: Path, version: int, save_fn, verify_fn) -> Path:
    """Save into ``model_dir/.<version>.tmp``, verify, then rename to ``model_dir/<version>``.

    The temporary name is not an integer, so a model server scanning ``model_dir`` for
    versions never picks up a half-written one.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    tmp = model_dir / f".{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_fn(tmp)
    make_fingerprint_deterministic(tmp)
    # tf.saved_model.save always creates assets/; ours is empty, and git cannot store an
    # empty directory, so drop it: a fresh build then looks exactly like a checkout.
    assets = tmp / "assets"
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()
    verify_fn(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def make_fingerprint_deterministic(export_dir: Path) -> None:
    """Replace the random ``uuid`` in ``fingerprint.pb`` by one derived from its hashes.

    TF writes a fresh random UUID into every fingerprint, so without this each rebuild
    would change the four ``fingerprint.pb`` files even though nothing else changed.
    The other fields are content hashes computed by TF and are left alone.
    """
    path = export_dir / "fingerprint.pb"
    if not path.exists():
        return
    fp = fingerprint_pb2.FingerprintDef()
    fp.ParseFromString(path.read_bytes())
    content = ":".join(
        str(v)
        for v in (
            fp.saved_model_checksum, fp.graph_def_program_hash, fp.signature_def_hash,
            fp.saved_object_graph_hash, fp.checkpoint_hash,
        )
    )
    # Same format as TF's own: a 128-bit integer in decimal.
    fp.uuid = str(int.from_bytes(hashlib.sha256(content.encode()).digest()[:16], "big"))
    path.write_bytes(fp.SerializeToString(deterministic=True))


def set_method_name(export_dir: Path, signature_key: str, method_name: str) -> None:
    """Rewrite one signature's method_name in ``export_dir/saved_model.pb``."""
    pb_path = export_dir / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb_path.read_bytes())
    sig = sm.meta_graphs[0].signature_def[signature_key]
    sig.method_name = method_name
    pb_path.write_bytes(sm.SerializeToString(deterministic=True))
    # fingerprint.pb holds a checksum of saved_model.pb; recompute it so it matches the
    # patched file. (Private TF API; if it is missing, drop the stale fingerprint -- it is
    # optional and loaders fall back to parsing saved_model.pb.)
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(str(export_dir))
    except Exception as e:  # pragma: no cover - depends on TF internals
        print(f"  note: could not rewrite fingerprint.pb ({e!r}); removing it")
        (export_dir / "fingerprint.pb").unlink(missing_ok=True)


def read_signature_defs(export_dir: Path) -> dict:
    """The user-visible SignatureDefs (without TF2's internal ``__saved_model_init_op``)."""
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return {
        k: v for k, v in sm.meta_graphs[0].signature_def.items()
        if k != "__saved_model_init_op"
    }


# ---------------------------------------------------------------------- half_plus_two


class HalfPlusN(tf.Module):
    def __init__(self, n: float):
        super().__init__(name="half_plus_n")
        self.a = tf.Variable(0.5, dtype=tf.float32, trainable=False, name="a")
        self.b = tf.Variable(float(n), dtype=tf.float32, trainable=False, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.identity(self.a * x + self.b, name="y")}


def build_half_plus_two() -> None:
    model_dir = ROOT / "half_plus_two"
    for version in (1, 2):

        def save(path: Path, version=version) -> None:
            module = HalfPlusN(version)
            tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})

        def verify(path: Path, version=version) -> None:
            sigs = read_signature_defs(path)
            assert set(sigs) == {"serving_default"}, set(sigs)
            sig = sigs["serving_default"]
            assert set(sig.inputs) == {"x"} and set(sig.outputs) == {"y"}, sig
            loaded = tf.saved_model.load(str(path))
            out = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.0, 5.0]))
            expected = np.array([0.5 + version, 1.0 + version, 2.5 + version], np.float32)
            np.testing.assert_allclose(out["y"].numpy(), expected)

        final = write_version(model_dir, version, save, verify)
        print(f"half_plus_two/{version}: y = 0.5 * x + {version} -> {final.relative_to(ROOT.parent)}")


# ----------------------------------------------------------------------------- digits


class DigitsClassifier(tf.Module):
    """softmax(dense stack) over pixels scaled to 0..1, with weights copied from sklearn.

    ``layers`` is a list of (W, b) pairs; ReLU between layers, softmax at the end (this
    is exactly sklearn's LogisticRegression (one layer, multinomial) and MLPClassifier
    with activation="relu" (several layers)).
    """

    def __init__(self, layers):
        super().__init__(name="digits_classifier")
        self.weights = [
            tf.Variable(np.asarray(w, np.float32), trainable=False, name=f"W{i}")
            for i, (w, _) in enumerate(layers)
        ]
        self.biases = [
            tf.Variable(np.asarray(b, np.float32), trainable=False, name=f"b{i}")
            for i, (_, b) in enumerate(layers)
        ]
        self.labels = tf.constant([str(i) for i in range(NUM_CLASSES)], dtype=tf.string)

    def _scores(self, images):
        h = images / PIXEL_MAX
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = tf.matmul(h, w) + b
            if i < last:
                h = tf.nn.relu(h)
        return tf.nn.softmax(h, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None, NUM_PIXELS], tf.float32, name="images")])
    def predict(self, images):
        scores = self._scores(images)
        return {
            "scores": tf.identity(scores, name="scores"),
            "classes": tf.argmax(scores, axis=-1, output_type=tf.int64, name="classes"),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        features = tf.io.parse_example(
            inputs, {"pixels": tf.io.FixedLenFeature([NUM_PIXELS], tf.float32)}
        )
        scores = self._scores(features["pixels"])
        classes = tf.tile(tf.expand_dims(self.labels, 0), [tf.shape(scores)[0], 1])
        return {
            "classes": tf.identity(classes, name="classes"),
            "scores": tf.identity(scores, name="scores"),
        }


def make_example(pixels) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "pixels": tf.train.Feature(
                    float_list=tf.train.FloatList(value=[float(p) for p in pixels])
                )
            }
        )
    ).SerializeToString()


def sklearn_layers(clf):
    if isinstance(clf, LogisticRegression):
        return [(clf.coef_.T, clf.intercept_)]
    if isinstance(clf, MLPClassifier):
        assert clf.activation == "relu" and clf.out_activation_ == "softmax"
        return list(zip(clf.coefs_, clf.intercepts_))
    raise TypeError(type(clf))


def write_holdout(x_test: np.ndarray, y_test: np.ndarray) -> Path:
    """``digits_holdout.npz``: the held-out images (``images``, float32 [n, 64], pixels 0..16)
    and their true digits (``labels``, int64 [n]) that ACCURACY.md is measured on. The rollout
    demo sends them as labelled traffic (the README's rollout demo)."""
    path = ROOT / "digits_holdout.npz"
    np.savez_compressed(path, images=x_test.astype(np.float32), labels=y_test.astype(np.int64))
    return path


def digits_split():
    """``x_train, x_test, y_train, y_test``: the fixed stratified split every digits file uses."""
    digits = load_digits()
    x = digits.data.astype(np.float32)  # raw pixel values 0..16
    y = digits.target
    return train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)


def build_digits() -> list[dict]:
    x_train, x_test, y_train, y_test = digits_split()
    x_train_scaled = x_train / PIXEL_MAX
    write_holdout(x_test, y_test)
    write_inverted(x_test, y_test)

    n_small = 60
    specs = {
        1: dict(
            kind="LogisticRegression (multinomial, C=1.0)",
            n_train=n_small,
            make=lambda: LogisticRegression(C=1.0, max_iter=2000, random_state=SEED),
            x=x_train_scaled[:n_small],
            y=y_train[:n_small],
        ),
        2: dict(
            kind="MLPClassifier (64-32-10, ReLU)",
            n_train=len(x_train),
            make=lambda: MLPClassifier(
                hidden_layer_sizes=(32,), activation="relu", alpha=1e-3,
                max_iter=1000, random_state=SEED,
            ),
            x=x_train_scaled,
            y=y_train,
        ),
    }

    results = []
    model_dir = ROOT / "digits"
    for version, spec in specs.items():
        set_seeds()
        clf = spec["make"]().fit(spec["x"], spec["y"])
        assert list(clf.classes_) == list(range(NUM_CLASSES)), clf.classes_
        sk_pred = clf.predict(x_test / PIXEL_MAX)
        sk_proba = clf.predict_proba(x_test / PIXEL_MAX)
        accuracy = float(np.mean(sk_pred == y_test))

        def save(path: Path, clf=clf, version=version, accuracy=accuracy) -> None:
            module = DigitsClassifier(sklearn_layers(clf))
            tf.saved_model.save(
                module,
                str(path),
                signatures={"serving_default": module.predict, "classify": module.classify},
            )
            set_method_name(path, "classify", CLASSIFY_METHOD_NAME)
            write_digits_assets(path, version, x_train, accuracy, len(x_test))

        def verify(path: Path, sk_pred=sk_pred, sk_proba=sk_proba, version=version) -> None:
            verify_digits_assets(path, version)
            sigs = read_signature_defs(path)
            assert set(sigs) == {"serving_default", "classify"}, set(sigs)
            assert sigs["classify"].method_name == CLASSIFY_METHOD_NAME
            assert sigs["serving_default"].method_name == "tensorflow/serving/predict"
            loaded = tf.saved_model.load(str(path))
            out = loaded.signatures["serving_default"](images=tf.constant(x_test))
            tf_classes = out["classes"].numpy()
            assert out["classes"].dtype == tf.int64 and out["scores"].shape == (len(x_test), 10)
            assert np.array_equal(tf_classes, sk_pred), (
                f"TF argmax differs from sklearn on {np.sum(tf_classes != sk_pred)} test rows"
            )
            np.testing.assert_allclose(out["scores"].numpy(), sk_proba, atol=1e-4)
            examples = tf.constant([make_example(row) for row in x_test[:3]])
            cls = loaded.signatures["classify"](inputs=examples)
            labels = cls["classes"].numpy()
            assert labels.shape == (3, 10) and all(
                [v.decode() for v in r] == [str(i) for i in range(10)] for r in labels
            ), labels
            np.testing.assert_allclose(cls["scores"].numpy(), out["scores"].numpy()[:3], atol=1e-6)

        final = write_version(model_dir, version, save, verify)
        results.append(
            dict(version=version, kind=spec["kind"], n_train=spec["n_train"],
                 accuracy=accuracy, n_test=len(x_test))
        )
        print(
            f"digits/{version}: {spec['kind']}, trained on {spec['n_train']} samples, "
            f"held-out accuracy {accuracy:.4f} on {len(x_test)} -> {final.relative_to(ROOT.parent)}"
        )
    return results


def write_accuracy(results: list[dict]) -> None:
    lines = [
        "# digits: held-out accuracy",
        "",
        "Generated by `python model_repository/build.py`; do not edit by hand.",
        "Test set: 30% stratified split of `sklearn.datasets.load_digits()`"
        f" (`train_test_split(test_size=0.3, random_state={SEED}, stratify=y)`).",
        "",
        "| version | model | training samples | held-out accuracy | test samples |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['version']} | {r['kind']} | {r['n_train']} | {r['accuracy']:.4f} | {r['n_test']} |"
        )
    (ROOT / "ACCURACY.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------- digits provenance and drift assets

# Fixed dates (not the build's clock), so rebuilding writes the same bytes.
DIGITS_PROVENANCE = {
    1: dict(
        trained_at="2026-11-01T00:00:00Z",
        data_until="2026-10-28T00:00:00Z",
        training_samples=60,
        description="LogisticRegression (multinomial, C=1.0) on the first 60 images of the "
                    "training split of sklearn's load_digits (deliberately weak).",
    ),
    2: dict(
        trained_at="2026-11-20T00:00:00Z",
        data_until="2026-11-17T00:00:00Z",
        training_samples=1257,
        description="MLPClassifier (64-32-10, ReLU) on the full training split (1257 images) "
                    "of sklearn's load_digits.",
    ),
}
REFERENCE_ROWS = 1000
INFO_FILE = "verso_model.json"
REFERENCE_FILE = "reference.npz"


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An ``.npz`` (deflated, readable by ``np.load``) with fixed zip timestamps:
    ``np.savez_compressed`` stamps each member with the current time, so the same arrays
    would give different bytes (and a git diff) on every build."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write beside, then rename over ``path``: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def reference_sample(x_train: np.ndarray) -> np.ndarray:
    """A fixed sample of ``REFERENCE_ROWS`` training rows (in split order), float32 [n, 64].

    Both versions get this sample of the whole training split. Version 1 was fitted on only
    its first 60 rows, but those are a stratified random draw from the same split, so they
    come from the same input distribution; 60 rows are too few to describe it per pixel
    (the drift check bins each feature at the reference's deciles and runs a KS test against
    it), so the larger sample of that distribution is the better reference for both."""
    n = min(REFERENCE_ROWS, len(x_train))
    rows = np.sort(np.random.default_rng(SEED).choice(len(x_train), size=n, replace=False))
    return np.asarray(x_train[rows], np.float32)


def holdout_accuracy(version_dir: Path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out accuracy of the SavedModel at ``version_dir`` (``serving_default``)."""
    loaded = tf.saved_model.load(str(version_dir))
    pred = loaded.signatures["serving_default"](images=tf.constant(x_test))["classes"].numpy()
    return float(np.mean(pred == y_test))


def write_digits_assets(version_dir: Path, version: int, x_train: np.ndarray,
                        accuracy: float, n_test: int) -> dict:
    """Write ``assets.extra/verso_model.json`` and ``assets.extra/reference.npz`` into the
    digits version at ``version_dir`` (each file written beside and renamed).

    ``accuracy`` is the version's held-out accuracy: the full build passes scikit-learn's
    (its ``verify`` checks the SavedModel's answers equal them; loading the model here would
    shift the traced functions' numbering and so change the next version's saved_model.pb),
    ``--assets-only`` measures the SavedModel already there (``holdout_accuracy``)."""
    prov = DIGITS_PROVENANCE[version]
    info = {
        "trained_at": prov["trained_at"],
        "data_until": prov["data_until"],
        "metrics": {
            "holdout_accuracy": round(float(accuracy), 4),
            "holdout_samples": int(n_test),
            "training_samples": prov["training_samples"],
        },
        "description": prov["description"],
    }
    extra = version_dir / "assets.extra"
    write_file_atomic(extra / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    write_file_atomic(extra / REFERENCE_FILE, npz_bytes(images=reference_sample(x_train)))
    return info


def verify_digits_assets(version_dir: Path, version: int) -> None:
    info = json.loads((version_dir / "assets.extra" / INFO_FILE).read_text())
    assert info["trained_at"] == DIGITS_PROVENANCE[version]["trained_at"], info
    assert all(isinstance(v, (int, float)) for v in info["metrics"].values()), info
    with np.load(version_dir / "assets.extra" / REFERENCE_FILE) as ref:
        assert set(ref.files) == {"images"}, ref.files
        images = ref["images"]
    assert images.dtype == np.float32 and images.ndim == 2 and images.shape[1] == NUM_PIXELS, images.shape
    assert 0 <= images.min() and images.max() <= PIXEL_MAX


def write_inverted(x_test: np.ndarray, y_test: np.ndarray) -> Path:
    """``digits_inverted.npz``: the held-out rows with inverted pixels (``16 - x``; float32
    [n, 64]) and their labels: the same digits, drawn light on dark, so the inputs drift far
    from every version's reference sample (README "Provenance and reference samples")."""
    path = ROOT / "digits_inverted.npz"
    write_file_atomic(path, npz_bytes(images=(PIXEL_MAX - x_test).astype(np.float32),
                                      labels=y_test.astype(np.int64)))
    return path


def build_digits_assets() -> None:
    """``--assets-only``: the digits versions' assets.extra files and digits_inverted.npz,
    for the versions already built (nothing is retrained)."""
    x_train, x_test, _, y_test = digits_split()
    for version in sorted(DIGITS_PROVENANCE):
        version_dir = ROOT / "digits" / str(version)
        accuracy = holdout_accuracy(version_dir, x_test, y_test)
        info = write_digits_assets(version_dir, version, x_train, accuracy, len(y_test))
        verify_digits_assets(version_dir, version)
        print(f"digits/{version}/assets.extra: {INFO_FILE} (trained_at {info['trained_at']}, "
              f"holdout_accuracy {info['metrics']['holdout_accuracy']}), {REFERENCE_FILE}")
    path = write_inverted(x_test, y_test)
    print("wrote", path.relative_to(ROOT.parent))


# ----------------------------------------------------------------------------- hooks, ONNX

DIGITS_PNG_HOOKS = '''"""Verso hooks: the digits model takes 8x8 grayscale PNG images (one per row) instead of
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
'''


def digits_png(pixels: np.ndarray) -> bytes:
    """An 8x8 grayscale PNG of one digits image (pixel values 0..16)."""
    gray = np.round(pixels.reshape(8, 8, 1) * (255.0 / PIXEL_MAX)).astype(np.uint8)
    return tf.io.encode_png(gray).numpy()


def build_digits_png() -> None:
    from server.servables.loader import load_servable

    holdout = np.load(ROOT / "digits_holdout.npz")
    samples = ROOT / "samples"
    samples.mkdir(exist_ok=True)
    for digit in range(NUM_CLASSES):
        first = int(np.flatnonzero(holdout["labels"] == digit)[0])
        (samples / f"digit_{digit}.png").write_bytes(digits_png(holdout["images"][first]))

    def save(path: Path) -> None:
        # Not digits/2's assets.extra: its reference sample is keyed by `images`, which the
        # hooked signature does not take (clients send `image`, PNG bytes).
        shutil.copytree(ROOT / "digits" / "2", path, ignore=shutil.ignore_patterns("assets.extra"))
        (path / "assets.extra").mkdir()
        (path / "assets.extra" / "verso_hooks.py").write_text(DIGITS_PNG_HOOKS)

    def verify(path: Path) -> None:
        servable = load_servable(str(path), warmup=False)
        assert list(servable.signature_defs["serving_default"].inputs) == ["image"]
        pngs = np.array([(samples / f"digit_{d}.png").read_bytes() for d in range(NUM_CLASSES)], dtype=object)
        out = servable.run("serving_default", {"image": pngs}, ["classes"])
        assert out["classes"].tolist() == list(range(NUM_CLASSES)), out

    final = write_version(ROOT / "digits_png", 1, save, verify)
    print(f"digits_png/1: digits v2 + PNG hooks -> {final.relative_to(ROOT.parent)}")


def build_half_plus_two_onnx() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(path: Path) -> None:
        path.mkdir()
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "half"], ["scaled"]), helper.make_node("Add", ["scaled", "two"], ["y"])],
            "half_plus_two",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
            initializer=[numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="verso-build")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path / "model.onnx"))

    def verify(path: Path) -> None:
        from server.servables.onnx_model import load_onnx
        out = load_onnx(str(path)).run("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)}, ["y"])
        np.testing.assert_allclose(out["y"], [2.5, 3.0, 4.5])

    final = write_version(ROOT / "half_plus_two_onnx", 1, save, verify)
    print(f"half_plus_two_onnx/1: y = 0.5 * x + 2 (ONNX) -> {final.relative_to(ROOT.parent)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild the bundled demo models.")
    parser.add_argument("--assets-only", action="store_true",
                        help="only write digits/{1,2}/assets.extra (verso_model.json, reference.npz) "
                             "and digits_inverted.npz for the existing versions; no retraining")
    args = parser.parse_args()
    if args.assets_only:
        build_digits_assets()
        return
    set_seeds()
    build_half_plus_two()
    results = build_digits()
    build_digits_png()
    build_half_plus_two_onnx()
    write_accuracy(results)
    print("wrote", (ROOT / "ACCURACY.md").relative_to(ROOT.parent))


if __name__ == "__main__":
    main()
