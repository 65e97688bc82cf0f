"""``--prefer_tflite_model``: a version directory's ``model.tflite`` served through
``load_servable`` in process, against the SavedModel it was converted from (signatures,
answers, resizing, interpreter pools under 8 threads, bad shapes, load failures, warmup and
hooks), and TF Serving's generated ``serving_default`` for a model without signatures."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from protos.errors import Code, ServingError
from server.servables.loader import load_servable
from server.servables.saved_model import SavedModelServable
from server.servables.tflite_model import TfLiteServable, _generated_signature
from tests import models, tflite_models

INIT_OP = "__saved_model_init_op"  # a SavedModel's own bookkeeping signature, not a model signature


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """{"sig": version dir whose model.tflite has the SavedModel's three signatures,
    "nosig": version dir whose model.tflite has none}; never changed by a test."""
    root = tmp_path_factory.mktemp("tflite")
    return {"sig": tflite_models.save_version(str(root / "sig")),
            "nosig": tflite_models.save_version(str(root / "nosig"), signatures=False)}


def _load(path: str, **kw):
    return load_servable(path, warmup=False, prefer_tflite=True, **kw)


def _batch(n: int, seed: int = 0) -> np.ndarray:
    # Small integers: exact in float32 through TF's and TFLite's kernels alike.
    return np.random.default_rng(seed).integers(-8, 9, size=(n, 2)).astype(np.float32)


def _without_output_names(sig):
    copy = type(sig)()
    copy.CopyFrom(sig)
    for info in copy.outputs.values():
        info.name = ""
    return copy


def test_the_tflite_signatures_equal_the_saved_models_and_answer_alike_at_batch_1_and_3(versions):
    saved = load_servable(versions["sig"], warmup=False)
    lite = _load(versions["sig"])
    assert isinstance(saved, SavedModelServable) and isinstance(lite, TfLiteServable)
    assert sorted(lite.signature_defs) == sorted(set(saved.signature_defs) - {INIT_OP}) == \
        ["double", "echo", "serving_default"]
    for name, sig in lite.signature_defs.items():
        # Aliases, dtypes, shapes (-1 where dynamic), method and the input tensors' names are
        # the SavedModel's; an output's name is TFLite's tensor (echo's "same" output *is* its
        # input tensor there), so names are compared for inputs only.
        want = saved.signature_defs[name]
        assert _without_output_names(sig) == _without_output_names(want), name
        assert sig.inputs == want.inputs, name
    for n in (1, 3, 1):  # 3 then 1 again: the interpreter resizes both ways
        x = _batch(n, seed=n)
        got = lite.run("serving_default", {"x": x}, ["y", "s"])
        want = saved.run("serving_default", {"x": x}, ["y", "s"])
        assert list(got) == ["y", "s"]
        for alias in ("y", "s"):
            assert got[alias].dtype == np.float32 and got[alias].shape == want[alias].shape
            np.testing.assert_array_equal(got[alias], want[alias])
        np.testing.assert_array_equal(got["y"], tflite_models.affine(x)["y"])
        v = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(lite.run("double", {"v": v}, ["z"])["z"], 2 * v)
        text = np.array([f"w{i}\xe9".encode() for i in range(n)] + [b"\xff\x00"], dtype=object)
        got = lite.run("echo", {"text": text}, ["reversed", "same"])
        want = saved.run("echo", {"text": text}, ["reversed", "same"])
        for alias in ("reversed", "same"):  # strings as numpy object arrays of bytes, like TF's
            assert got[alias].dtype == object and all(type(b) is bytes for b in got[alias])
            assert got[alias].tolist() == want[alias].tolist()
    # An output filter returns only what was asked for.
    assert list(lite.run("serving_default", {"x": _batch(2)}, ["s"])) == ["s"]
    with pytest.raises(ServingError) as e:
        lite.run("nope", {"x": _batch(1)}, ["y"])
    assert (e.value.code, e.value.message) == (Code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    lite.unload()


def test_a_model_without_signatures_gets_tf_servings_generated_serving_default(versions):
    saved = load_servable(versions["nosig"], warmup=False)
    lite = _load(versions["nosig"])
    assert list(lite.signature_defs) == ["serving_default"]
    sig = lite.signature_defs["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    # The input tensor "serving_default_x:0" is aliased without its ":0", as TF Serving's
    # TfToTfLiteLegacyTensorName does; the TensorInfo keeps the tensor's name.
    assert list(sig.inputs) == ["serving_default_x"]
    assert sig.inputs["serving_default_x"] == saved.signature_defs["serving_default"].inputs["x"]
    # Both outputs are tensors "<op>:0" and "<op>:1" of one op: without their suffixes they would
    # share one alias (TF Serving keeps only the last), so their aliases are their full names.
    saved_outputs = saved.signature_defs["serving_default"].outputs
    names = {alias: info.name for alias, info in saved_outputs.items()}
    assert len({n.split(":")[0] for n in names.values()}) == 1, names  # the premise of this check
    assert sorted(sig.outputs) == sorted(names.values())
    for alias, name in names.items():
        assert sig.outputs[name] == saved_outputs[alias]
    for n in (1, 3):
        x = _batch(n, seed=10 + n)
        got = lite.run("serving_default", {"serving_default_x": x}, list(sig.outputs))
        want = saved.run("serving_default", {"x": x}, list(names))
        for alias, name in names.items():
            np.testing.assert_array_equal(got[name], want[alias])


def _details(name, index, dtype=np.float32, shape=(-1, 2)):
    return {"name": name, "index": index, "dtype": dtype, "shape": np.array([1, 2]),
            "shape_signature": np.array(shape)}


def test_generated_signature_naming_and_tf_servings_errors():
    sig, ins, outs = _generated_signature(
        [_details("x:0", 0), _details("tokens", 1, np.bytes_, (-1,))],
        [_details("Identity:0", 5), _details("out:0", 6, np.int64, (3,)), _details("out:1", 7)], "m")
    assert (ins, outs) == ({"x": 0, "tokens": 1}, {"Identity": 5, "out:0": 6, "out:1": 7})
    assert sig.inputs["x"].name == "x:0" and sig.inputs["tokens"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, 2]
    assert sig.outputs["out:0"].dtype == tf.int64.as_datatype_enum
    assert [d.size for d in sig.outputs["out:0"].tensor_shape.dim] == [3]
    with pytest.raises(ServingError) as e:
        _generated_signature([_details("", 3)], [], "m")
    assert (e.value.code, e.value.message) == (Code.INTERNAL, "Input name missing for tensor index: 3")
    with pytest.raises(ServingError) as e:
        _generated_signature([_details("x", 0)], [_details("y", 1), _details("y", 2)], "m")
    assert (e.value.code, e.value.message) == (Code.ALREADY_EXISTS, "Output tensor name: y has multiple indices")


@pytest.mark.parametrize("kind, pools, per_pool", [("sig", 1, 1), ("sig", 2, 1), ("nosig", 1, 1), ("nosig", 1, 2)])
def test_eight_threads_at_once_each_get_their_own_answers(versions, kind, pools, per_pool):
    lite = _load(versions[kind], tflite_pools=pools, tflite_interpreters_per_pool=per_pool)
    assert lite.interpreters == pools * per_pool
    sig = lite.signature_defs["serving_default"]
    (x_alias,) = sig.inputs
    y_alias = next(a for a, i in sig.outputs.items() if len(i.tensor_shape.dim) == 2)
    errors: list = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(30):
                x = _batch(1 + (t + i) % 4, seed=1000 * t + i)  # sizes change call to call: resizes
                got = lite.run("serving_default", {x_alias: x}, [y_alias])[y_alias]
                if not np.array_equal(got, tflite_models.affine(x)["y"]):
                    errors.append((t, i, x, got))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads)
    assert errors == []


@pytest.mark.parametrize("kind", ["sig", "nosig"])
def test_a_shape_the_model_cannot_take_is_invalid_argument_and_the_interpreter_serves_on(versions, kind):
    lite = _load(versions[kind])  # one interpreter: the failed one is the one that serves next
    (x_alias,) = lite.signature_defs["serving_default"].inputs
    outputs = list(lite.signature_defs["serving_default"].outputs)
    messages = []
    for _ in range(3):
        with pytest.raises(ServingError) as e:
            lite.run("serving_default", {x_alias: np.ones((3, 3), np.float32)}, outputs)  # matmul needs 2 columns
        assert e.value.code == Code.INVALID_ARGUMENT
        messages.append(e.value.message)
    assert "\n" not in messages[0] and "failed to prepare" in messages[0], messages[0]
    # TFLite's error reporter would prepend every earlier error to the next one's text.
    assert messages[0] == messages[1] == messages[2]
    x = _batch(3)
    got = lite.run("serving_default", {x_alias: x}, outputs)
    assert any(np.array_equal(v, tflite_models.affine(x)["y"]) for v in got.values())


def test_without_the_flag_or_without_model_tflite_the_saved_model_is_served(versions, tmp_path):
    assert isinstance(load_servable(versions["sig"], warmup=False), SavedModelServable)
    assert isinstance(load_servable(versions["sig"], warmup=False, prefer_tflite=False), SavedModelServable)
    plain = tmp_path / "plain"
    shutil.copytree(versions["sig"], plain)
    os.remove(plain / "model.tflite")
    servable = _load(str(plain))
    assert isinstance(servable, SavedModelServable)
    np.testing.assert_array_equal(servable.run("serving_default", {"x": _batch(2)}, ["y"])["y"],
                                  tflite_models.affine(_batch(2))["y"])


def test_a_model_tflite_that_cannot_serve_fails_its_load_with_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ServingError) as e:
        _load(str(bad))
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message.startswith(f"Failed to load TFLite model {bad}/model.tflite: ValueError: ")
    assert "\n" not in e.value.message

    # Select TF ops: TF Serving's builtin op resolver lacks them, and so does tf.lite.Interpreter.
    class Flex(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
        def predict(self, s):
            return {"n": tf.strings.length(s)}

    flex = tmp_path / "flex"
    m = Flex()
    tf.saved_model.save(m, str(flex), signatures={"serving_default": m.predict})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(flex))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (flex / "model.tflite").write_bytes(converter.convert())
    with pytest.raises(ServingError) as e:
        _load(str(flex))
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message.startswith(f"Failed to load TFLite model {flex}/model.tflite: RuntimeError: ")
    assert "FlexStringLength" in e.value.message and "\n" not in e.value.message
    # The SavedModel beside it still serves without the flag.
    assert isinstance(load_servable(str(flex), warmup=False), SavedModelServable)


def _warmup_record(x: np.ndarray) -> prediction_log_pb2.PredictionLog:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    record = prediction_log_pb2.PredictionLog()
    record.predict_log.request.CopyFrom(req)
    return record


def test_warmup_and_hooks_work_on_a_tflite_version(versions, tmp_path):
    version = tmp_path / "1"
    shutil.copytree(versions["sig"], version)
    models.write_warmup(str(version), [_warmup_record(_batch(2))])
    models.write_hooks(str(version), "def postprocess(outputs, signature_name):\n"
                                     "    return {k: v * 10 for k, v in outputs.items()}\n")
    servable = load_servable(str(version), prefer_tflite=True)  # warmup runs on the interpreters
    x = _batch(3)
    assert isinstance(servable.inner, TfLiteServable)
    got = servable.run("serving_default", {"x": x}, ["y"])
    np.testing.assert_array_equal(got["y"], tflite_models.affine(x)["y"] * 10)
    # A warmup record the model cannot run (3 values cannot make rows of 2) fails the load,
    # as for a SavedModel.
    models.write_warmup(str(version), [_warmup_record(np.ones((1, 3), np.float32))])
    with pytest.raises(ServingError) as e:
        load_servable(str(version), prefer_tflite=True)
    assert e.value.code == Code.INVALID_ARGUMENT
