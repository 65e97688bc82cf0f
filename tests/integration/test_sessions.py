"""SavedModel sessions in process: their configuration, what a loaded version keeps, and
signatures prepared at load."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.protobuf import config_pb2

from server.servables import saved_model
from server.servables.loader import load_servable
from tests import models


@pytest.fixture
def hp(tmp_path):
    models.save_half_plus(str(tmp_path / "1"), 2.0)
    return str(tmp_path / "1")


@pytest.fixture
def restore_runtime():
    yield
    saved_model.configure_runtime()


def test_sessions_take_the_config_file_then_the_flags(hp, restore_runtime):
    base = config_pb2.ConfigProto(inter_op_parallelism_threads=5, use_per_session_threads=True)
    saved_model.configure_runtime(3, 0, config=base.SerializeToString(), gpu_memory_fraction=0.25)
    s = load_servable(hp, warmup=False)
    try:
        c = s._session._config  # noqa: SLF001 (the ConfigProto the session was made with)
        assert (c.intra_op_parallelism_threads, c.inter_op_parallelism_threads) == (3, 5)
        assert c.use_per_session_threads and c.allow_soft_placement
        assert c.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.25)
        assert not c.gpu_options.allow_growth
        assert s.run("serving_default", {"x": np.array([2.0], np.float32)}, ["y"])["y"].tolist() == [3.0]
    finally:
        s.unload()


def test_a_version_keeps_its_signatures_not_its_graph_unless_asked(hp):
    s = load_servable(hp, warmup=False)
    kept = load_servable(hp, warmup=False, keep_meta_graph=True)
    try:
        assert s.meta_graph is None and set(s.signature_defs) == set(kept.signature_defs)
        assert kept.meta_graph.graph_def.node  # --remove_unused_fields_from_bundle_metagraph=false
    finally:
        s.unload()
        kept.unload()


def test_signatures_are_prepared_at_load_and_unload_refuses_later_calls(hp):
    from protos.errors import Code, ServingError
    s = load_servable(hp, warmup=False)
    assert ("serving_default", ("x",), ("y",)) in s._callables  # noqa: SLF001 (made at load)
    assert not any(k[0].startswith("__saved_model") for k in s._callables)  # noqa: SLF001
    # An output subset gets a callable of its own on first use; the answer is the same.
    assert s.run("serving_default", {"x": np.array([4.0], np.float32)}, ["y"])["y"].tolist() == [4.0]
    s.unload()
    with pytest.raises(ServingError) as e:
        s.run("serving_default", {"x": np.array([4.0], np.float32)}, ["y"])
    assert e.value.code == Code.UNAVAILABLE


def test_every_format_is_a_servable_and_only_hooked_ones_are_hooked(tmp_path):
    from server.lifecycle.servable import Hooked, Servable, is_hooked
    from tests import tflite_models
    models.save_half_plus(str(tmp_path / "sm"), 1.0)
    models.save_keras_affine(str(tmp_path / "keras"), 1.0, 0.0)
    models.save_onnx_half_plus(str(tmp_path / "onnx"), 1.0)
    tflite_models.save_version(str(tmp_path / "tflite"))
    models.save_half_plus(str(tmp_path / "hooked"), 1.0)
    models.write_hooks(str(tmp_path / "hooked"), "def postprocess(outputs, sig):\n    return outputs\n")
    loaded = [load_servable(str(tmp_path / "sm"), warmup=False),
              load_servable(str(tmp_path / "keras"), "keras", warmup=False),
              load_servable(str(tmp_path / "onnx"), "onnx", warmup=False),
              load_servable(str(tmp_path / "tflite"), warmup=False, prefer_tflite=True),
              load_servable(str(tmp_path / "hooked"), warmup=False)]
    try:
        kinds = [type(s).__name__ for s in loaded]
        assert len(set(kinds)) == 5, kinds
        assert all(isinstance(s, Servable) for s in loaded)
        assert [is_hooked(s) for s in loaded] == [False] * 4 + [True] and isinstance(loaded[-1], Hooked)
    finally:
        for s in loaded:
            s.unload()
