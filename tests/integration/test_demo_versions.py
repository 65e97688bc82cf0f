"""The bundled demo versions for rollouts and drift (model_repository/README.md "Provenance and
reference samples"): the biased digits version `model_repository/biased_digits.py` writes, the
provenance and reference-sample assets of digits/1 and /2, and the inverted drift dataset.
In process, TensorFlow only; no server."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

REPO = Path(__file__).resolve().parents[2] / "model_repository"
DIGITS = REPO / "digits"
HOLDOUT = REPO / "digits_holdout.npz"


def _load_biased_module():
    spec = importlib.util.spec_from_file_location("biased_digits", REPO / "biased_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _signature_defs(export_dir: Path) -> dict:
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return {k: v for k, v in sm.meta_graphs[0].signature_def.items() if k != "__saved_model_init_op"}


def _predict(export_dir: Path, images: np.ndarray) -> np.ndarray:
    fn = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    out = fn(images=tf.constant(images))
    assert set(out) == {"scores", "classes"}
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (len(images), 10)
    assert out["classes"].dtype == tf.int64 and out["classes"].shape == (len(images),)
    classes = out["classes"].numpy()
    assert np.array_equal(classes, out["scores"].numpy().argmax(axis=1))
    return classes


def _seconds(value) -> float:
    """A verso_model.json time: Unix seconds, or ISO 8601 (no zone: UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)).timestamp()


def _recall(pred: np.ndarray, labels: np.ndarray, digit: int) -> float:
    return float(np.mean(pred[labels == digit] == digit))


@pytest.fixture(scope="module")
def holdout():
    with np.load(HOLDOUT) as data:
        return data["images"], data["labels"]


def test_biased_version_hides_a_seven_to_one_bias(tmp_path, holdout):
    images, labels = holdout
    dest = tmp_path / "4"
    _load_biased_module().save_biased_digits(str(dest), source=str(DIGITS / "2"))
    assert not list(tmp_path.glob(".*.tmp")), "the temporary directory is renamed into place"

    assert _signature_defs(dest) == _signature_defs(DIGITS / "2")

    v2, v4 = _predict(DIGITS / "2", images), _predict(dest, images)
    drop = np.mean(v2 == labels) - np.mean(v4 == labels)
    assert 0.005 <= drop <= 0.03, drop
    assert _recall(v2, labels, 7) - _recall(v4, labels, 7) >= 0.10
    for digit in set(range(10)) - {7}:
        assert _recall(v4, labels, digit) == _recall(v2, labels, digit), digit
    # Only "7" answers change, and only to "1".
    changed = v2 != v4
    assert changed.any() and np.all(v2[changed] == 7) and np.all(v4[changed] == 1)


@pytest.mark.parametrize("version", [1, 2])
def test_digits_versions_ship_provenance_and_reference(version):
    extra = DIGITS / str(version) / "assets.extra"
    info = json.loads((extra / "verso_model.json").read_text())
    assert _seconds(info["data_until"]) <= _seconds(info["trained_at"])
    assert info["metrics"] and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in info["metrics"].values())
    assert 0 < info["metrics"]["holdout_accuracy"] <= 1
    assert isinstance(info.get("description", ""), str)

    with np.load(extra / "reference.npz") as ref:
        assert ref.files == ["images"]
        images = ref["images"]
    assert images.dtype == np.float32 and images.ndim == 2 and images.shape[1] == 64
    assert 100 <= len(images) <= 1000
    assert images.min() >= 0 and images.max() <= 16


def test_inverted_dataset_is_the_holdout_inverted(holdout):
    images, labels = holdout
    with np.load(REPO / "digits_inverted.npz") as inv:
        assert inv["images"].dtype == np.float32
        np.testing.assert_array_equal(inv["images"], 16 - images)
        np.testing.assert_array_equal(inv["labels"], labels)
