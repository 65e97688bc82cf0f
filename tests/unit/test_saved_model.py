"""SavedModelServable on a tiny model: outputs TensorFlow cannot hand to numpy directly."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from server.servables.loader import load_servable


def test_a_string_output_of_rank_33_comes_back_instead_of_crashing_the_process(tmp_path):
    """TF's own conversion of such a tensor segfaults (found by the hypothesis fuzzer)."""

    class Deep(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
        def serve(self, x):
            return {"y": tf.reshape(x, [1] * 32 + [-1])}

    m = Deep()
    tf.saved_model.save(m, str(tmp_path / "1"), signatures={"serving_default": m.serve})
    servable = load_servable(str(tmp_path / "1"), warmup=False)
    out = servable.run("serving_default", {"x": np.array([b"a", b"b"], object)}, ["y"])["y"]
    assert out.shape == (1,) * 32 + (2,) and out.ravel().tolist() == [b"a", b"b"]
