"""The numpy tensor codec against TensorFlow's own make_tensor_proto / make_ndarray as oracle."""

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from protos import tensor_codec as codec

SAMPLES = {
    "float": np.array([[0.5, -1.25, np.inf], [np.nan, 0.0, 3e38]], np.float32),
    "double": np.array([1e-300, -2.5, 7.0], np.float64),
    "int32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "uint8": np.array([0, 7, 255], np.uint8),
    "int16": np.array([-32768, 1, 32767], np.int16),
    "int8": np.array([-128, 1, 127], np.int8),
    "int64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
    "uint16": np.array([0, 1, 65535], np.uint16),
    "uint32": np.array([0, 1, 2**32 - 1], np.uint32),
    "uint64": np.array([0, 1, 2**64 - 1], np.uint64),
    "bool": np.array([[True, False], [False, True]]),
    "half": np.array([0.5, -65504, 1e-3], np.float16),
    "bfloat16": np.array([0.5, -3.0, 1e30], ml_dtypes.bfloat16),
    "complex64": np.array([1 + 2j, -3.5j, 0], np.complex64),
    "complex128": np.array([[1e200 + 2j], [-3.5j]], np.complex128),
    "string": np.array([[b"a", b"\x00\xff"], [b"", "é".encode()]], dtype=object),
}


def _equal(a, b):
    assert a.shape == b.shape
    assert a.dtype == b.dtype or (a.dtype == object and b.dtype == object)
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("content", [False, True])
def test_round_trip_every_dtype_both_encodings(name, content):
    arr = SAMPLES[name]
    proto = codec.from_ndarray(arr, tensor_content=content)
    assert codec.dtype_name(proto.dtype) == name
    if name == "string" or not content:
        assert proto.tensor_content == b""
    else:
        assert len(proto.tensor_content) == arr.nbytes
    _equal(codec.to_ndarray(proto), arr)
    # TensorFlow reads what we write ...
    _equal(tf.make_ndarray(proto), arr)
    # ... and we read what TensorFlow writes.
    _equal(codec.to_ndarray(tf.make_tensor_proto(arr)), arr)


def test_typed_fields_fill_and_truncate_like_tensorflow():
    proto = tf.make_tensor_proto(0.0, shape=[4])  # one value for four elements
    proto.float_val[:] = [1.5, 2.5]
    np.testing.assert_array_equal(codec.to_ndarray(proto), [1.5, 2.5, 2.5, 2.5])  # last value repeats
    proto.ClearField("float_val")
    np.testing.assert_array_equal(codec.to_ndarray(proto), [0, 0, 0, 0])  # no value: zeros
    proto.float_val[:] = [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(codec.to_ndarray(proto), [1, 2, 3, 4])  # extra values ignored
    empty = codec.from_ndarray(np.zeros((0, 3), np.float32))
    assert codec.to_ndarray(empty).shape == (0, 3)
    scalar = codec.from_ndarray(np.float32(7))
    assert codec.to_ndarray(scalar).shape == () and codec.to_ndarray(scalar) == 7


def test_tensor_content_is_decoded_without_copy():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    proto = codec.from_ndarray(arr, tensor_content=True)
    out = codec.to_ndarray(proto)
    assert not out.flags.writeable and not out.flags.owndata


@pytest.mark.parametrize("mutate", [
    lambda p: setattr(p, "tensor_content", p.tensor_content[:-1]),
    lambda p: p.tensor_shape.dim.__getitem__(0).__setattr__("size", -1),
    lambda p: setattr(p.tensor_shape, "unknown_rank", True),
    lambda p: setattr(p, "dtype", types_pb2.DT_RESOURCE),
    lambda p: setattr(p, "dtype", 999),
    lambda p: [p.tensor_shape.dim.add(size=2**40) for _ in range(2)],  # element count overflows int64
])
def test_malformed_protos_raise(mutate):
    proto = codec.from_ndarray(np.ones(3, np.float32), tensor_content=True)
    mutate(proto)
    with pytest.raises(codec.TensorCodecError):
        codec.to_ndarray(proto)


def test_string_tensor_content_is_rejected_and_str_is_utf8():
    proto = codec.from_ndarray(np.array(["é", "b"]))
    assert list(proto.string_val) == ["é".encode(), b"b"]
    proto.tensor_content = b"xx"
    with pytest.raises(codec.TensorCodecError):
        codec.to_ndarray(proto)


def test_what_the_fuzzer_found_decodes_as_tensorflow_does():
    """Found by tests/e2e/test_hypothesis_fuzz.py: each answer is now TensorFlow's."""
    from protos import tensor_codec as tc
    from tensorflow.core.framework import tensor_pb2, types_pb2

    def proto(dtype, dims, content=b""):
        p = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
        for d in dims:
            p.tensor_shape.dim.add(size=d)
        return p

    # An empty tensor's payload is ignored (numpy would have refused the length).
    assert tc.to_ndarray(proto(types_pb2.DT_FLOAT, [0], b"A")).shape == (0,)
    # Bool bytes other than 0 and 1 are malformed (numpy would have read True).
    with pytest.raises(tc.TensorCodecError):
        tc.to_ndarray(proto(types_pb2.DT_BOOL, [2], b"\x01\xff"))
    assert tc.to_ndarray(proto(types_pb2.DT_BOOL, [2], b"\x01\x00")).tolist() == [True, False]
    # More dimensions than numpy holds: its own error, not numpy's ValueError.
    with pytest.raises(tc.TensorRankTooLarge):
        tc.to_ndarray(proto(types_pb2.DT_FLOAT, [1] * 65))
    assert tc.to_ndarray(proto(types_pb2.DT_FLOAT, [1] * 64, b"\x00\x00\x80\x3f")).ndim == 64


@pytest.mark.parametrize("repeat", [1, 200], ids=["small", "large"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "int16", "int8", "int64", "bool",
                                   "uint16", "uint32", "uint64", "float16", "bfloat16", "complex64", "complex128"])
def test_typed_fields_are_written_packed_exactly_as_extend_would(dtype, repeat):
    """fill_proto writes large tensors' packed wire bytes itself (no Python object per element)
    and small ones with protobuf's extend: either way the message equals the one protobuf builds
    from a list, extremes and negatives included."""
    from protos import tensor_codec as tc
    rng = np.random.default_rng(0)
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        arr = np.concatenate([rng.integers(info.min, info.max, 200, dtype=dt, endpoint=True),
                              np.array([info.min, info.max, 0, 1, min(127, info.max), min(128, info.max)], dt)])
    elif dt.kind == "b":
        arr = rng.random(50) < 0.5
    elif dt.kind == "c":
        arr = (rng.normal(size=40) + 1j * rng.normal(size=40)).astype(dt)
    else:
        with np.errstate(over="ignore"):  # 1e30 is inf in float16: an extreme on purpose
            arr = np.concatenate([rng.normal(size=60), [0.0, -0.0, np.inf, -np.inf, 1e30]]).astype(dt)
    arr = np.tile(arr, repeat)  # "large" is past both thresholds of the packed path
    assert repeat == 1 or arr.size >= tc._PACKED_FROM_VARINT
    arr = arr.reshape(-1, 1) if arr.size % 2 else arr.reshape(2, -1)
    d = tc.dtype_for_array(arr)
    got = tc.from_ndarray(arr)
    expected = type(got)(dtype=d.enum)
    for n in arr.shape:
        expected.tensor_shape.dim.add(size=n)
    flat = arr.ravel()
    if d.bits16:
        values = flat.view(np.uint16).tolist()
    elif d.complex_:
        values = flat.view(np.float32 if dt == np.complex64 else np.float64).tolist()
    else:
        values = flat.tolist()
    getattr(expected, d.field).extend(values)
    assert got == expected
    np.testing.assert_array_equal(tc.to_ndarray(got), arr)
