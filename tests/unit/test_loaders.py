"""The Keras and ONNX loaders' failures: each fails the load with one line and its code."""

from __future__ import annotations

import pytest

from protos.errors import Code, ServingError
from server.servables.loader import load_servable


@pytest.mark.parametrize("platform, files, code, text", [
    ("onnx", {}, Code.NOT_FOUND, "Expected one .onnx file in {path}, found 0"),
    ("onnx", {"a.onnx": b"x", "b.onnx": b"y"}, Code.NOT_FOUND, "Expected one .onnx file in {path}, found 2"),
    ("onnx", {"model.onnx": b"not an onnx graph"}, Code.INVALID_ARGUMENT,
     "Failed to load ONNX model {path}/model.onnx: "),
    ("keras", {}, Code.NOT_FOUND, "Expected one .keras file in {path}, found 0"),
    ("keras", {"model.keras": b"not a zip"}, Code.INVALID_ARGUMENT, "Failed to load Keras model {path}/model.keras: "),
], ids=["onnx-none", "onnx-two", "onnx-corrupt", "keras-none", "keras-corrupt"])
def test_a_version_directory_the_loader_cannot_use_fails_with_one_line(tmp_path, platform, files, code, text):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ServingError) as e:
        load_servable(str(tmp_path), platform, warmup=False)
    assert e.value.code == code
    assert e.value.message.startswith(text.format(path=tmp_path)), e.value.message
    assert "\n" not in e.value.message
