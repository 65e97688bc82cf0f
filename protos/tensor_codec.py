"""numpy <-> ``tensorflow.TensorProto``: the one tensor codec of the repository.

Pure numpy (no TensorFlow runtime call), so it is cheap enough for the request hot path
and usable by clients: ``np.frombuffer`` on ``tensor_content``, typed ``*_val`` fields
otherwise. Decoding follows TensorFlow's ``Tensor::FromProto``:

* the shape must be fully known (no unknown rank, no negative dimension);
* ``tensor_content`` must hold exactly ``num_elements * itemsize`` bytes;
* typed fields: no value -> zeros; fewer values than elements -> the last value repeats;
  more values than elements -> the extra values are ignored.

Every failure raises ``TensorCodecError``; callers turn it into TF Serving's
``tensor parsing error: ALIAS``. Arrays decoded from ``tensor_content`` are read-only views
of the request bytes (no copy). Little-endian hosts only, like TF Serving's wire format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

TensorProto = tensor_pb2.TensorProto


class TensorCodecError(ValueError):
    """The TensorProto cannot be turned into an array (or the array into a proto)."""


class TensorTooLarge(TensorCodecError):
    """Decoding would need more memory than the caller allows (``to_ndarray(max_bytes=)``)."""


class TensorRankTooLarge(TensorCodecError):
    """The shape has more dimensions than numpy can hold (TensorFlow allows more)."""


MAX_RANK = 64  # numpy's limit


@dataclass(frozen=True)
class DType:
    enum: int          # tensorflow.DataType value
    name: str          # TF's DataTypeString(), as used in TF error messages
    np_dtype: np.dtype
    field: str         # the typed TensorProto field holding values
    bits16: bool = False    # stored as uint16 bit patterns in ``half_val``
    complex_: bool = False  # stored as (real, imag) pairs

    @property
    def is_string(self) -> bool:
        return self.enum == types_pb2.DT_STRING


_DTYPES = [
    DType(types_pb2.DT_FLOAT, "float", np.dtype(np.float32), "float_val"),
    DType(types_pb2.DT_DOUBLE, "double", np.dtype(np.float64), "double_val"),
    DType(types_pb2.DT_INT32, "int32", np.dtype(np.int32), "int_val"),
    DType(types_pb2.DT_UINT8, "uint8", np.dtype(np.uint8), "int_val"),
    DType(types_pb2.DT_INT16, "int16", np.dtype(np.int16), "int_val"),
    DType(types_pb2.DT_INT8, "int8", np.dtype(np.int8), "int_val"),
    DType(types_pb2.DT_STRING, "string", np.dtype(object), "string_val"),
    DType(types_pb2.DT_COMPLEX64, "complex64", np.dtype(np.complex64), "scomplex_val", complex_=True),
    DType(types_pb2.DT_INT64, "int64", np.dtype(np.int64), "int64_val"),
    DType(types_pb2.DT_BOOL, "bool", np.dtype(np.bool_), "bool_val"),
    DType(types_pb2.DT_BFLOAT16, "bfloat16", np.dtype(ml_dtypes.bfloat16), "half_val", bits16=True),
    DType(types_pb2.DT_UINT16, "uint16", np.dtype(np.uint16), "int_val"),
    DType(types_pb2.DT_COMPLEX128, "complex128", np.dtype(np.complex128), "dcomplex_val", complex_=True),
    DType(types_pb2.DT_HALF, "half", np.dtype(np.float16), "half_val", bits16=True),
    DType(types_pb2.DT_UINT32, "uint32", np.dtype(np.uint32), "uint32_val"),
    DType(types_pb2.DT_UINT64, "uint64", np.dtype(np.uint64), "uint64_val"),
]
BY_ENUM: dict[int, DType] = {d.enum: d for d in _DTYPES}
_BY_NUMPY: dict[np.dtype, DType] = {d.np_dtype: d for d in _DTYPES if not d.is_string}
_STRING = BY_ENUM[types_pb2.DT_STRING]

# A shape whose element count does not fit TF's int64 is malformed, whatever its payload.
_MAX_ELEMENTS = 2**63 - 1


def dtype_name(enum: int) -> str:
    """TF's ``DataTypeString`` for an enum value (``float``, ``string`` ...)."""
    d = BY_ENUM.get(enum)
    if d is not None:
        return d.name
    name = types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else f"unknown dtype {enum}"
    return name[3:].lower() if name.startswith("DT_") else name


def dtype_for_array(arr: np.ndarray) -> DType:
    """The TF dtype an array is sent as. Object, bytes and str arrays are DT_STRING."""
    if arr.dtype.kind in "OSU":
        return _STRING
    d = _BY_NUMPY.get(arr.dtype)
    if d is None:
        raise TensorCodecError(f"numpy dtype {arr.dtype} has no TensorFlow equivalent")
    return d


def shape_of(proto: TensorProto) -> tuple[int, ...]:
    """The proto's shape as a tuple; raises on unknown rank, negative dims or overflow."""
    shp = proto.tensor_shape
    if shp.unknown_rank:
        raise TensorCodecError("tensor shape has unknown rank")
    shape = tuple(d.size for d in shp.dim)
    for s in shape:
        if s < 0:
            raise TensorCodecError(f"tensor shape has a negative dimension: {list(shape)}")
    if math.prod(shape) > _MAX_ELEMENTS:
        raise TensorCodecError(f"tensor shape {list(shape)} has too many elements")
    return shape


# What a string element costs decoded beyond its bytes: the object array's pointer and the
# bytes object's header.
STRING_ELEMENT_OVERHEAD = 8 + 33


def filled_size(proto: TensorProto) -> tuple[int, int]:
    """(elements, bytes) the decoded array of ``proto`` will take, as filled (typed fields may
    name a shape far larger than the values sent), computed from the shape alone before
    anything is allocated; strings count their bytes and a per-element overhead. Raises
    ``TensorCodecError`` for an unknown dtype or a malformed shape (as ``to_ndarray`` does)."""
    d = BY_ENUM.get(proto.dtype)
    if d is None:
        raise TensorCodecError(f"unsupported dtype {dtype_name(proto.dtype)}")
    n = math.prod(shape_of(proto))
    if d.is_string:
        return n, n * STRING_ELEMENT_OVERHEAD + sum(map(len, proto.string_val))
    return n, n * d.np_dtype.itemsize


def to_ndarray(proto: TensorProto, max_bytes: Optional[int] = None) -> np.ndarray:
    """Decode a TensorProto into a numpy array (see the module contract).

    ``max_bytes``: refuse (TensorTooLarge) a tensor whose array would take more, checked before
    anything is allocated. Typed fields let a few request bytes name any shape (missing values
    are filled in), so without a limit one small request can ask for terabytes. String elements
    count as one pointer each.
    """
    d = BY_ENUM.get(proto.dtype)
    if d is None:
        raise TensorCodecError(f"unsupported dtype {dtype_name(proto.dtype)}")
    shape = shape_of(proto)
    if len(shape) > MAX_RANK:
        raise TensorRankTooLarge(f"has {len(shape)} dimensions; at most {MAX_RANK} are supported")
    n = math.prod(shape)
    # numpy sizes an array by its dimensions times the item size, zero dimensions or not: an
    # empty [0, 2**62] int64 array is "too big" for it. Such shapes are malformed here.
    if math.prod(max(s, 1) for s in shape) * d.np_dtype.itemsize > _MAX_ELEMENTS:
        raise TensorCodecError(f"tensor shape {list(shape)} of {d.name} is too large to represent")
    if max_bytes is not None and n * d.np_dtype.itemsize > max_bytes:
        raise TensorTooLarge(f"shape {list(shape)} of {d.name} needs {n * d.np_dtype.itemsize} bytes, "
                             f"more than the limit of {max_bytes}")
    content = proto.tensor_content
    if n == 0:
        # As TensorFlow's decoder: an empty tensor's payload is not looked at.
        return np.empty(shape, dtype=d.np_dtype)
    if content:
        if d.is_string:
            raise TensorCodecError("string tensors cannot be sent in tensor_content")
        if len(content) != n * d.np_dtype.itemsize:
            raise TensorCodecError(
                f"tensor_content holds {len(content)} bytes, shape {list(shape)} of {d.name} "
                f"needs {n * d.np_dtype.itemsize}")
        if d.enum == types_pb2.DT_BOOL and content.translate(None, b"\x00\x01"):
            # TensorFlow refuses bool bytes other than 0 and 1 (numpy would take them as True).
            raise TensorCodecError("bool tensor_content holds a byte other than 0 and 1")
        return np.frombuffer(content, dtype=d.np_dtype).reshape(shape)
    field = getattr(proto, d.field)
    if d.is_string:
        values = np.empty(len(field), dtype=object)
        values[:] = list(field)
        fill = b""
    elif d.bits16:
        values = np.asarray(field, dtype=np.int32).astype(np.uint16).view(d.np_dtype)
        fill = 0
    elif d.complex_:
        part = np.float32 if d.np_dtype == np.complex64 else np.float64
        flat = np.asarray(field, dtype=part)
        values = flat[: len(flat) // 2 * 2].view(d.np_dtype)
        fill = 0
    else:
        values = np.asarray(field, dtype=d.np_dtype)
        fill = 0
    m = len(values)
    if m >= n:
        out = values[:n] if m > n else values
    elif m == 0:
        out = np.full(n, fill, dtype=d.np_dtype)
    else:
        out = np.empty(n, dtype=d.np_dtype)
        out[:m] = values
        out[m:] = values[-1]
    return out.reshape(shape)


# Typed fields whose packed encoding is the little-endian values themselves.
_FIXED_WIDTH = {"float_val": np.dtype("<f4"), "double_val": np.dtype("<f8"), "scomplex_val": np.dtype("<c8"),
                "dcomplex_val": np.dtype("<c16"), "bool_val": np.dtype(np.uint8)}
_FIELD_NUMBER = {f.name: f.number for f in TensorProto.DESCRIPTOR.fields}
# From these sizes on, writing the packed bytes beats protobuf's extend (measured: fixed-width
# fields from ~64 elements; varints, computed with numpy, only from ~4 096).
_PACKED_FROM_FIXED = 64
_PACKED_FROM_VARINT = 4096


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of an integer array, vectorised (signed values as 64-bit two's complement,
    as protobuf encodes int32 and int64)."""
    v = values.astype(np.int64, copy=False).view(np.uint64) if values.dtype.kind == "i" else \
        values.astype(np.uint64, copy=False)
    size = np.ones(v.shape, np.int64)
    for k in range(1, 10):
        size += v >= np.uint64(1 << (7 * k))
    starts = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.uint8)
    for k in range(10):
        has = size > k
        if not has.any():
            break
        group = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (size[has] > k + 1).astype(np.uint8) << 7
        out[starts[has] + k] = group | more
    return out.tobytes()


def _as_bytes(v) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytearray, memoryview, np.bytes_)):
        return bytes(v)
    raise TensorCodecError(f"string tensor element of type {type(v).__name__} is not bytes or str")


def from_ndarray(arr, *, tensor_content: bool = False, dtype: DType | None = None) -> TensorProto:
    """Encode an array as a new TensorProto (see ``fill_proto``)."""
    proto = TensorProto()
    fill_proto(proto, arr, tensor_content=tensor_content, dtype=dtype)
    return proto


def fill_proto(proto: TensorProto, arr, *, tensor_content: bool = False, dtype: DType | None = None) -> None:
    """Encode an array into an empty TensorProto (e.g. a response map entry, saving a copy).

    Typed ``*_val`` fields by default (as TF Serving's ``AsProtoField``); raw little-endian
    bytes in ``tensor_content`` when asked (``AsProtoTensorContent``). Strings always go to
    ``string_val`` (str elements are UTF-8 encoded).
    """
    arr = np.asarray(arr)
    d = dtype or dtype_for_array(arr)
    proto.dtype = d.enum
    dims = proto.tensor_shape.dim
    for s in arr.shape:
        dims.add(size=s)
    if d.is_string:
        flat = arr.ravel()
        if flat.dtype.kind == "S":
            proto.string_val.extend(flat.tolist())
        else:
            proto.string_val.extend([_as_bytes(v) for v in flat.tolist()])
        return
    if arr.dtype != d.np_dtype:
        arr = arr.astype(d.np_dtype)
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(arr).tobytes()
        return
    flat = np.ascontiguousarray(arr).ravel()
    fixed = _FIXED_WIDTH.get(d.field)
    if flat.size < (_PACKED_FROM_FIXED if fixed is not None else _PACKED_FROM_VARINT):
        # Small tensors (the usual answer): protobuf's own extend is the fastest.
        if d.bits16:
            values = flat.view(np.uint16).tolist()
        elif d.complex_:
            values = flat.view(np.float32 if d.np_dtype == np.complex64 else np.float64).tolist()
        else:
            values = flat.tolist()
        getattr(proto, d.field).extend(values)
        return
    # Large ones: the packed field's wire bytes, merged into the message, with no Python object
    # per element (a list of floats took ~12x the tensor's size at its peak).
    if fixed is not None:
        payload = flat.astype(fixed, copy=False).tobytes()
    else:  # int_val, int64_val, uint32_val, uint64_val, half_val: varints
        payload = _varints(flat.view(np.uint16) if d.bits16 else flat)
    tag = _FIELD_NUMBER[d.field] << 3 | 2  # length-delimited (packed)
    proto.MergeFromString(_varint_bytes(tag) + _varint_bytes(len(payload)) + payload)
