"""Hostile-input fuzzing with hypothesis, shared by tests/e2e/test_hypothesis_fuzz.py and benchmarks/fuzz_bench.py.

Strategies (built structurally, so most draws get past parsing and reach the codec and the model):

* ``predict_requests()``: ``PredictRequest`` messages for the served models ``ids`` (identity signatures
  ``id_<dtype>``, input ``x`` of unknown shape -> ``y``) and ``hp`` (``serving_default``: x [None] float):
  valid ones, ones with one aspect wrong, and ones with every aspect drawn freely. Aspects: odd model names
  (``..``, ``a/b``, empty, unicode, 1 MB), signature names, versions and labels, input aliases, every
  ``DataType`` value and invalid ones, negative / zero / huge / overflowing dimensions, unknown rank, ranks
  30-70, ``tensor_content`` of the right or wrong length, typed ``*_val`` payloads (strings up to 4 MB,
  300 000 values), output filters.
* ``raw_predict_bytes()``: serialized valid requests with bit flips, truncation, insertions, deletions and
  duplicated spans, plus plain random bytes: sent as the Predict payload unparsed.
* ``rest_requests()``: (method, path, body, headers, expected body) for
  ``/v1/models/<name>[/versions/N|/labels/L]:<verb>`` and junk paths and methods: a well-formed Predict a
  third of the time, otherwise JSON bodies in row and columnar form (``st.recursive`` trees, rectangular
  arrays, b64 objects, signature names of any JSON type, NaN/Infinity tokens, huge numbers, nesting up to
  200 000 deep, truncation) and arbitrary bytes.

Checks (each raises AssertionError naming the input when the server misbehaves, else returns the status):

* ``check_grpc(stub, request)`` and ``check_raw(call, data)``: the gRPC code must be TF Serving's for bad
  input (``GRPC_ALLOWED``); INTERNAL only for bytes that do not parse as a PredictRequest (and then it must
  be INTERNAL); no hang (10 s per call). On an identity signature, TensorFlow's own ``Tensor::FromProto``
  is the oracle: an OK answer equals the input as it decodes it, an input it refuses is not OK, and an
  input it decodes is not ``tensor parsing error``.
* ``check_rest(conn, method, path, body, headers, expect)``: 200 with a JSON body, a 4xx with
  ``{"error": "..."}``, or 501 with one (TF Serving's UNIMPLEMENTED); no other 5xx, no hang (10 s), no
  connection dropped without ``Connection: close``; the expected body where the strategy knows it.

``GRPC_EXAMPLES``, ``RAW_EXAMPLES``, ``REST_EXAMPLES``: inputs this fuzzer found to break Verso, run first
(``with_examples``). ``Tally`` records codes and latencies; a check records into the tally it is given,
before asserting.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import grpc
import numpy as np
from google.protobuf import text_format
from hypothesis import example
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

CALL_TIMEOUT_S = 10
GRPC_ALLOWED = frozenset({grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          grpc.StatusCode.UNIMPLEMENTED})
# What the client must send and accept so that every code seen is the server's, not the client's limit.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"

# The served models (see ``server_args``): tests.models.save_identities' signatures and half_plus.
IDS, HP = "ids", "hp"
LABEL = "stable"  # a version label of ids, on version 1
IDENTITY_DTYPES = {
    "float": types_pb2.DT_FLOAT, "double": types_pb2.DT_DOUBLE, "int32": types_pb2.DT_INT32,
    "uint8": types_pb2.DT_UINT8, "int16": types_pb2.DT_INT16, "int8": types_pb2.DT_INT8,
    "string": types_pb2.DT_STRING, "complex64": types_pb2.DT_COMPLEX64, "int64": types_pb2.DT_INT64,
    "bool": types_pb2.DT_BOOL, "bfloat16": types_pb2.DT_BFLOAT16, "uint16": types_pb2.DT_UINT16,
    "complex128": types_pb2.DT_COMPLEX128, "half": types_pb2.DT_HALF, "uint32": types_pb2.DT_UINT32,
    "uint64": types_pb2.DT_UINT64,
}
# Item size of each decodable dtype (strings: one pointer), to keep the oracle's own decoding small.
_ITEMSIZE = {types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_INT32: 4, types_pb2.DT_UINT8: 1,
             types_pb2.DT_INT16: 2, types_pb2.DT_INT8: 1, types_pb2.DT_STRING: 8, types_pb2.DT_COMPLEX64: 8,
             types_pb2.DT_INT64: 8, types_pb2.DT_BOOL: 1, types_pb2.DT_BFLOAT16: 2, types_pb2.DT_UINT16: 2,
             types_pb2.DT_COMPLEX128: 16, types_pb2.DT_HALF: 2, types_pb2.DT_UINT32: 4, types_pb2.DT_UINT64: 8}
_ORACLE_MAX_BYTES = 64 * 2**20


def server_args(repo_root: str, max_tensor_bytes: int = 64 * 2**20) -> tuple[list[str], str]:
    """(server flags, models.config text) for a server over ``repo_root`` holding ``ids/1`` and ``hp/1``.

    ``max_tensor_bytes`` is the server's per-input decode limit: memory checks are relative to it.
    """
    config = f"""model_config_list {{
      config {{ name: "{IDS}" base_path: "{repo_root}/{IDS}" model_platform: "tensorflow"
               version_labels {{ key: "{LABEL}" value: 1 }} }}
      config {{ name: "{HP}" base_path: "{repo_root}/{HP}" model_platform: "tensorflow" }}
    }}"""
    return [f"--model_config_file={repo_root}/models.config", f"--max_tensor_bytes={max_tensor_bytes}"], config


# ---- tallies -------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Codes and call latencies of one kind of fuzz call."""

    codes: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)
    slowest: tuple = (0.0, "")

    def record(self, code, seconds: float, what: Callable[[], str]) -> None:
        """Count ``code``; ``what()`` describes the call, asked for only when it is the slowest so far."""
        self.codes[code] = self.codes.get(code, 0) + 1
        self.latencies.append(seconds)
        if seconds > self.slowest[0]:
            self.slowest = (seconds, what()[:300])

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.latencies, p)) if self.latencies else 0.0


# ---- gRPC Predict strategies -----------------------------------------------------------------------------

ALL_DTYPES = sorted(types_pb2.DataType.values())
_SIGNATURES = [f"id_{n}" for n in IDENTITY_DTYPES] + ["serving_default", "", "nope", "ID_FLOAT", "id_float "]
_ALIASES = ["x", "x", "x", "y", "", "X", "inputs", "\u00e9"]
_ODD_NAMES = ["..", "a/b", "../ids", "", "ids/1", "IDS", "ids\x00", "/", "hp/../ids", "\u00efds", " ids"]
_HUGE_DIMS = [10**6, 10**7, 2**31 - 1, 2**31, 10**9, 2**40, 2**62, 2**63 - 1]


def _text(max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def _long(unit: str, max_len: int) -> st.SearchStrategy[str]:
    # Long values come from one small draw: hypothesis's own buffer cannot hold megabytes.
    return st.integers(1000, max_len).map(lambda n: unit * n)


def model_names() -> st.SearchStrategy[str]:
    return st.one_of(st.just(IDS), st.just(IDS), st.just(IDS), st.just(HP), st.sampled_from(_ODD_NAMES),
                     _text(), _long("m", 2**20))


def dims() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 4), st.integers(0, 4), st.sampled_from([-1, -5, -(2**63)]),
                     st.sampled_from(_HUGE_DIMS), st.integers(-(2**63), 2**63 - 1))


def shapes() -> st.SearchStrategy[list[int]]:
    """Mostly small ranks of any dims; all-positive ones with a huge dim (past the decode limit, or
    overflowing together); some high ranks: past TF's Python string conversion (32), past numpy's
    64 dimensions (TensorFlow allows 254)."""
    return st.one_of(st.lists(dims(), max_size=4), st.lists(dims(), max_size=4),
                     st.lists(st.sampled_from(_HUGE_DIMS + [1, 2, 3]), min_size=1, max_size=3),
                     st.integers(30, 70).map(lambda r: [1] * r))


def _blob(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def _values(dtype: int) -> st.SearchStrategy:
    """(field name, values) for a typed payload, usually the dtype's own field."""
    f32 = st.floats(width=32)
    fields = {
        "float_val": st.lists(f32, max_size=8),
        "double_val": st.lists(st.floats(), max_size=8),
        "int_val": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
        "int64_val": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
        "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=8),
        "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=8),
        "bool_val": st.lists(st.booleans(), max_size=8),
        "half_val": st.lists(st.one_of(st.integers(0, 2**16 - 1), st.integers(-(2**31), 2**31 - 1)), max_size=8),
        "scomplex_val": st.lists(f32, max_size=9),
        "dcomplex_val": st.lists(st.floats(), max_size=9),
        "string_val": st.lists(st.one_of(st.binary(max_size=16), _long("s", 4 * 2**20).map(str.encode)),
                               max_size=4),
    }
    own = _OWN_FIELD.get(dtype, "int_val")
    return st.one_of(st.tuples(st.just(own), fields[own]), st.tuples(st.just(own), fields[own]),
                     st.sampled_from(sorted(fields)).flatmap(lambda f: st.tuples(st.just(f), fields[f])),
                     # Many values from one draw: a large repeated field.
                     st.tuples(st.just(own), st.integers(1000, 300_000).map(
                         lambda n: [b"v"] * n if own == "string_val" else [1] * n if own != "bool_val" else
                         [True] * n)))


# What a drawn request gets wrong: nothing, one aspect, or anything (each aspect drawn freely).
ASPECTS = ["name", "signature", "version", "aliases", "dtype", "shape", "payload", "filter"]


def _fill_values(dtype: int, n: int, seed: int) -> tuple[str, list]:
    """Values of the dtype's own field for n elements (complex: 2n parts), from a seed."""
    rng = np.random.default_rng(seed)
    name = _OWN_FIELD.get(dtype, "int_val")
    if dtype == types_pb2.DT_STRING:
        return name, [rng.bytes(int(rng.integers(0, 6))) for _ in range(n)]
    if dtype == types_pb2.DT_BOOL:
        return name, rng.integers(0, 2, n).astype(bool).tolist()
    if name in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
        return name, rng.normal(0, 1e3, n * (2 if "complex" in name else 1)).tolist()
    if name == "half_val":
        return name, rng.integers(0, 2**16, n).tolist()
    lo, hi = {types_pb2.DT_UINT8: (0, 256), types_pb2.DT_INT8: (-128, 128), types_pb2.DT_INT16: (-2**15, 2**15),
              types_pb2.DT_UINT16: (0, 2**16), types_pb2.DT_INT32: (-2**31, 2**31), types_pb2.DT_INT64: (-2**63, 2**63),
              types_pb2.DT_UINT32: (0, 2**32), types_pb2.DT_UINT64: (0, 2**64)}.get(dtype, (-2**31, 2**31))
    return name, [int(v) for v in rng.integers(lo, hi, n, dtype=np.uint64 if hi > 2**63 else np.int64)]


_OWN_FIELD = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT64: "int64_val",
              types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val", types_pb2.DT_HALF: "half_val",
              types_pb2.DT_BFLOAT16: "half_val", types_pb2.DT_COMPLEX64: "scomplex_val",
              types_pb2.DT_COMPLEX128: "dcomplex_val", types_pb2.DT_UINT32: "uint32_val",
              types_pb2.DT_UINT64: "uint64_val"}


@st.composite
def tensor_protos(draw, dtype: int, wrong: frozenset = frozenset(ASPECTS),
                  rank: Optional[int] = None) -> tensor_pb2.TensorProto:
    """A TensorProto of ``dtype`` (the signature's) with a small shape and a payload that fits it, except
    for the aspects in ``wrong`` ("dtype", "shape", "payload"), which are drawn from hostile values: any
    DataType value or an invalid enum; negative, huge, overflowing dims, unknown rank, ranks 30-70;
    ``tensor_content`` of any length, typed values in any field, large repeated fields, two payloads.
    ``rank``: the signature's rank, when it has one."""
    t = tensor_pb2.TensorProto()
    t.dtype = dtype
    if "dtype" in wrong:
        t.dtype = draw(st.one_of(st.just(dtype), st.sampled_from(ALL_DTYPES),
                                 st.sampled_from([-1, 24, 99, 199, 2**31 - 1, -(2**31)])))
    shape = draw(st.lists(st.integers(0, 4), min_size=rank or 0, max_size=3 if rank is None else rank))
    if "shape" in wrong:
        shape = draw(st.one_of(st.just(shape), shapes()))
    for s in shape:
        t.tensor_shape.dim.add(size=s)
    if "shape" in wrong and draw(st.integers(0, 9)) == 0:
        t.tensor_shape.unknown_rank = True
    n = math.prod(max(s, 0) for s in shape)
    item = _ITEMSIZE.get(t.dtype, 4)
    if "payload" not in wrong:
        how = draw(st.sampled_from(["values", "content"] if t.dtype != types_pb2.DT_STRING else ["values"]))
        if how == "content" and n * item <= 2**22:
            t.tensor_content = _blob(n * item, draw(st.integers(0, 2**16)))
            if t.dtype == types_pb2.DT_BOOL:  # TF's bool bytes are 0 or 1; others are the payload aspect's
                t.tensor_content = bytes(b & 1 for b in t.tensor_content)
        elif n <= 2**16:
            # TF's fill rule: fewer values than elements repeat the last one, none means zeros.
            name, values = _fill_values(t.dtype, n, draw(st.integers(0, 2**16)))
            getattr(t, name).extend(values[:draw(st.sampled_from([len(values), len(values), 1, 0]))])
        return t
    payload = draw(st.sampled_from(["content_exact", "content_off", "values", "values", "none"]))
    if payload == "content_exact" and n * item <= 2**22:
        t.tensor_content = _blob(n * item, draw(st.integers(0, 2**16)))
    elif payload.startswith("content"):
        size = draw(st.one_of(st.integers(0, 64), st.sampled_from([max(n * item - 1, 0), n * item + 1])))
        t.tensor_content = _blob(min(size, 2**22), draw(st.integers(0, 2**16)))
    elif payload == "values":
        name, values = draw(_values(t.dtype))
        getattr(t, name).extend(values)
    if draw(st.integers(0, 4)) == 0:  # a payload in a second field besides the first
        name, values = draw(_values(t.dtype))
        getattr(t, name).extend(values[:4])
    return t


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    """A PredictRequest (see the module docstring): a valid one for ``ids`` or ``hp``, one with one aspect
    wrong, or one with every aspect drawn freely, in about equal parts."""
    mode = draw(st.sampled_from(["valid", "one", "one", "any"]))
    wrong = frozenset() if mode == "valid" else frozenset(ASPECTS) if mode == "any" else \
        frozenset([draw(st.sampled_from(ASPECTS))])
    req = predict_pb2.PredictRequest()
    name = draw(st.sampled_from([IDS, IDS, IDS, HP]))
    if "name" in wrong:
        name = draw(model_names())
    req.model_spec.name = name
    kind = draw(st.sampled_from(sorted(IDENTITY_DTYPES)))
    sig = "" if name == HP else f"id_{kind}"
    if "signature" in wrong:
        sig = draw(st.one_of(st.just(sig), st.sampled_from(_SIGNATURES), _text()))
    req.model_spec.signature_name = sig
    version = draw(st.sampled_from(["none", "none", "value", "label"] if name == IDS else ["none", "value"]))
    if "version" in wrong:
        version = draw(st.sampled_from(["none", "value", "label", "no_spec"]))
    if version == "value":
        req.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1)) if "version" in wrong else 1
    elif version == "label":
        req.model_spec.version_label = draw(st.one_of(st.just(LABEL), _text())) if "version" in wrong else LABEL
    elif version == "no_spec":
        req.ClearField("model_spec")
    dtype = types_pb2.DT_FLOAT if name == HP else IDENTITY_DTYPES[kind]
    aliases = ["x"]
    if "aliases" in wrong:
        aliases = draw(st.one_of(st.lists(st.sampled_from(_ALIASES), max_size=3), st.lists(_text(8), max_size=2)))
    for alias in aliases:
        req.inputs[alias].CopyFrom(draw(tensor_protos(dtype, wrong, rank=1 if name == HP else None)))
    if "filter" in wrong:
        req.output_filter.extend(draw(st.lists(st.one_of(st.sampled_from(["y", "x", "", "z"]), _text(8)),
                                               max_size=3)))
    elif draw(st.booleans()):
        req.output_filter.append("y")
    return req


def _valid_request(kind: str, seed: int) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = IDS
    req.model_spec.signature_name = f"id_{kind}"
    t = req.inputs["x"]
    t.dtype = IDENTITY_DTYPES[kind]
    t.tensor_shape.dim.add(size=2)
    if kind == "string":
        t.string_val.extend([b"ab", b"c"])
    else:
        t.tensor_content = _blob(2 * _ITEMSIZE[t.dtype], seed)
    return req


@st.composite
def raw_predict_bytes(draw) -> bytes:
    """Bytes for the Predict method: a valid request (a small one or a drawn one), mutated; or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=256))
    base = draw(st.one_of(st.builds(_valid_request, st.sampled_from(sorted(IDENTITY_DTYPES)), st.integers(0, 99)),
                          predict_requests().filter(lambda r: r.ByteSize() <= 2**16)))
    data = bytearray(base.SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "duplicate", "byte"]))
        pos = draw(st.integers(0, 2**16)) % (len(data) + 1)
        if op == "flip" and data:
            data[pos % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[pos % len(data)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x22]))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 32))]
    return bytes(data)


# ---- REST strategies --------------------------------------------------------------------------------------


class Raw(str):
    """JSON text inserted into a body as it is (number literals Python's json never writes, bad escapes)."""


_RAW_LEAVES = ["1e999999", "-1e999999", "1E+400", "-0", "0.0000000000000000000000001e-400", "NaN", "Infinity",
               "-Infinity", "18446744073709551616", "-9223372036854775809", "9223372036854775807",
               "1" + "0" * 5000, "123456789012345678901234567890.5", '"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"']
_KEYS = ["x", "y", "b64", "instances", "inputs", "signature_name", "", "X"]


def json_leaves() -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), _text(),
        st.sampled_from(_RAW_LEAVES).map(Raw), _long("s", 3 * 2**20),
        st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=12)),
        st.builds(lambda s: {"b64": s}, st.one_of(_text(8), st.integers(), st.none())))


def _json_containers(kids: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(kids, max_size=4),
                     st.dictionaries(st.one_of(st.sampled_from(_KEYS), _text(6)), kids, max_size=3))


def json_trees() -> st.SearchStrategy:
    """Any JSON value: lists and objects (keys that matter to TF Serving, or any) over ``json_leaves``."""
    return st.recursive(json_leaves(), _json_containers, max_leaves=16)


def _nested(draw, shape: list[int], leaf: st.SearchStrategy):
    if not shape:
        return draw(leaf)
    return [_nested(draw, shape[1:], leaf) for _ in range(shape[0])]


@st.composite
def rectangular(draw):
    """A rectangular nested list of one leaf type: the shape a valid tensor has (a scalar at rank 0)."""
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    leaf = draw(st.sampled_from([st.floats(), st.integers(-(2**64), 2**64), st.booleans(), _text(6),
                                 st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=6)),
                                 st.floats(width=16), st.integers(0, 255)]))
    return _nested(draw, shape, leaf)


_INT_RANGES = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": -8, "uint16": -16, "uint32": -32,
               "uint64": -64}


def _leaf_for(kind: str) -> st.SearchStrategy:
    """JSON values TF Serving converts to the dtype (half, bfloat16 and complex have none: UNIMPLEMENTED)."""
    if kind in _INT_RANGES:
        bits = _INT_RANGES[kind]
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if bits > 0 else st.integers(0, 2**-bits - 1)
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.one_of(_text(8), st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=8)))
    return st.floats(width=32) if kind in ("float", "half", "bfloat16", "complex64") else st.floats()


def to_json(v, ascii_only: bool = True) -> str:
    """JSON text of ``v``; NaN/Infinity written as TF Serving prints them, ``Raw`` values as they are."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=ascii_only)}:{to_json(x, ascii_only)}"
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(to_json(x, ascii_only) for x in v) + "]"
    return json.dumps(v, ensure_ascii=ascii_only)


def _signature_value() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(_SIGNATURES), st.sampled_from(_SIGNATURES), json_trees())


@st.composite
def rest_bodies(draw, signature: str = "") -> bytes:
    """A predict/classify/regress body: mostly a JSON object in row or columnar form, else anything."""
    form = draw(st.sampled_from(["row", "row", "columnar", "named", "both", "examples", "tree", "bytes", "deep",
                                 "empty"]))
    value = draw(st.one_of(rectangular(), rectangular(), json_trees()))
    if form == "bytes":
        return draw(st.binary(max_size=200))
    if form == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n\t", b"\xef\xbb\xbf", b"{}", b"null"]))
    if form == "deep":
        depth = draw(st.integers(1, 200_000))
        inner = draw(st.sampled_from(["", "1", "NaN", "{}", '{"b64": "AA=="}', '"s"']))
        text = "[" * depth + inner + "]" * draw(st.sampled_from([depth, depth, 0, max(depth - 1, 0)]))
        return (('{"instances": ' + text + "}") if draw(st.booleans()) else text).encode()
    doc: dict = {}
    if form == "row":
        doc["instances"] = value if draw(st.booleans()) else [{"x": value}]
    elif form == "columnar":
        doc["inputs"] = value
    elif form == "named":
        doc["inputs"] = {draw(st.sampled_from(["x", "x", "y", ""])): value}
    elif form == "both":
        doc["instances"], doc["inputs"] = value, value
    elif form == "examples":
        doc["examples"] = draw(st.one_of(st.lists(st.dictionaries(st.sampled_from(["x", "y"]), json_trees(),
                                                                   max_size=2), max_size=3), json_trees()))
        if draw(st.booleans()):
            doc["context"] = draw(json_trees())
    else:
        tree = draw(json_trees())
        doc = tree if isinstance(tree, dict) else {"instances": tree}
        if not isinstance(tree, (dict, list)) and draw(st.booleans()):
            return to_json(tree).encode()
    if draw(st.integers(0, 2)) > 0:
        doc["signature_name"] = draw(st.one_of(st.just(signature), _signature_value()))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["extra", "instances", "inputs", "signature_name"]))] = draw(json_trees())
    text = to_json(doc, ascii_only=draw(st.booleans()))
    body = text.encode("utf-8")
    tweak = draw(st.sampled_from(["none"] * 6 + ["truncate", "bom", "space", "trailing"]))
    if tweak == "truncate":
        body = body[:draw(st.integers(0, max(len(body) - 1, 0)))]
    elif tweak == "bom":
        body = b"\xef\xbb\xbf" + body
    elif tweak == "space":
        body = b" \n" + body + b"\t\r\n"
    elif tweak == "trailing":
        body += draw(st.sampled_from([b"x", b"}", b",", b"\x00", b" {}"]))
    return body


_VERBS = ["predict", "predict", "predict", "classify", "regress", "PREDICT", "bogus", ""]
_METHODS = ["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def _quote(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")


@st.composite
def valid_rest_requests(draw) -> tuple[str, str, bytes, dict, Optional[dict]]:
    """A well-formed Predict call on ``ids`` or ``hp`` (row or columnar); ``expect`` is the exact 200 body
    where the output is the input unchanged (the integer and bool identities)."""
    name = draw(st.sampled_from([IDS, IDS, IDS, HP]))
    kind = "float" if name == HP else draw(st.sampled_from(sorted(IDENTITY_DTYPES)))
    path = "/v1/models/" + name + draw(st.sampled_from(["", "", "/versions/1"] + (["/labels/stable"] if name == IDS
                                                                                   else []))) + ":predict"
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=1 if name == HP else 3))
    if name == IDS and draw(st.integers(0, 9)) == 0:  # high ranks, as in ``shapes``
        shape = [1] * draw(st.integers(30, 70))
    value = _nested(draw, shape, _leaf_for(kind))
    key = draw(st.sampled_from(["instances", "inputs"]))
    doc: dict = {key: value}
    if name == IDS:
        doc["signature_name"] = f"id_{kind}"
    exact = name == IDS and (kind in _INT_RANGES or kind == "bool") and shape[0] > 0 and len(shape) <= 3
    expect = {"predictions" if key == "instances" else "outputs": value} if exact else None
    return "POST", path, to_json(doc).encode(), {"Content-Type": "application/json"}, expect


@st.composite
def rest_requests(draw) -> tuple[str, str, Optional[bytes], dict, Optional[dict]]:
    """(method, path, body or None, headers, expected 200 body or None) of one REST call: a well-formed
    Predict call a third of the time, otherwise anything (see the module docstring)."""
    if draw(st.integers(0, 2)) == 0:
        return draw(valid_rest_requests())
    name = draw(st.one_of(st.just(IDS), st.just(IDS), st.just(HP), st.sampled_from(_ODD_NAMES), _text(12)))
    kind = draw(st.sampled_from(sorted(IDENTITY_DTYPES)))
    signature = "" if name == HP else f"id_{kind}"
    path = "/v1/models/" + _quote(name)
    where = draw(st.sampled_from(["", "", "", "version", "label"]))
    if where == "version":
        path += "/versions/" + draw(st.one_of(st.just("1"), st.sampled_from(["0", "2", "-1", "01", "1.0", ""]),
                                              st.integers(0, 10**30).map(str)))
    elif where == "label":
        path += "/labels/" + _quote(draw(st.one_of(st.just(LABEL), _text(8))))
    verb = draw(st.sampled_from(_VERBS))
    path += (":" + verb) if verb else draw(st.sampled_from(["", "/metadata", "/"]))
    if draw(st.integers(0, 9)) == 0:  # a junk path, maybe outside /v1
        path = draw(st.sampled_from(["/v1", "/v1/", "/v1/models", "/v1/models/", "/V1/MODELS/ids:predict",
                                     "/v2/models/ids:predict", "/", "/v1/models/ids:predict?x=1", "/v1/%zz",
                                     "/v1/models/ids/versions/1/labels/x:predict", "/v1/models//versions/1:predict",
                                     "/v1/models/ids:predict:predict", "/readyz", "/monitoring/prometheus"]))
    method = draw(st.sampled_from(_METHODS))
    body = draw(rest_bodies(signature)) if method in ("POST", "PUT", "PATCH") or draw(st.integers(0, 9)) == 0 \
        else None
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 4 + ["text/plain", "", "x/y; a=b"]))}
    if method == "OPTIONS" and draw(st.booleans()):
        headers["Origin"] = "http://example.com"
    return method, path, body, headers, None


# ---- known hostile inputs ------------------------------------------------------------------------------


def _request(sig: str, dtype: int, shape: list[int], **payload) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = IDS
    req.model_spec.signature_name = sig
    t = req.inputs["x"]
    t.dtype = dtype
    for s in shape:
        t.tensor_shape.dim.add(size=s)
    for name, value in payload.items():
        if name == "tensor_content":
            t.tensor_content = value
        else:
            getattr(t, name).extend(value)
    return req


def _deep_string_body(depth: int) -> bytes:
    return b'{"signature_name": "id_string", "inputs": ' + b"[" * depth + b'"a"' + b"]" * depth + b"}"


# Inputs this fuzzer found to break Verso, sent first by every run (hypothesis's ``@example``), so the
# smaller CI count cannot miss them. The ones that crashed the server come last, so the others report too.
_STRING_RANK_33 = _request("id_string", types_pb2.DT_STRING, [1] * 33, string_val=[b"a"])
GRPC_EXAMPLES = [
    _request("id_float", types_pb2.DT_FLOAT, [1] * 65),                  # numpy: 64 dimensions at most
    _request("id_bool", types_pb2.DT_BOOL, [], tensor_content=b"\xff"),  # TF refuses bool bytes but 0 and 1
    _request("id_float", types_pb2.DT_FLOAT, [0], tensor_content=b"A"),  # TF ignores an empty tensor's payload
    _request("id_float", types_pb2.DT_FLOAT, [16 * 2**20]),              # 64 MiB: at the test server's limit
    _STRING_RANK_33,                                                     # TF's Python string conversion: rank 32
]
RAW_EXAMPLES = [b"", b"\x00", b"\n", _STRING_RANK_33.SerializeToString()]
_JSON_HEADERS = {"Content-Type": "application/json"}
REST_EXAMPLES = [
    ("POST", "/v1/models/a%0Ab:predict", b'{"instances": [1.0]}', _JSON_HEADERS, None),  # a newline in the name
    ("POST", "/v1/models/ids:predict", _deep_string_body(65), _JSON_HEADERS, None),
    ("POST", "/v1/models/ids:predict", _deep_string_body(33), _JSON_HEADERS, None),
]


def with_examples(argument: str, examples: list):
    """Decorator: hypothesis ``@example(argument=e)`` for each of ``examples`` (apply below ``@given``)."""
    def decorate(fn):
        for e in reversed(examples):
            fn = example(**{argument: e})(fn)
        return fn
    return decorate


# ---- checks ------------------------------------------------------------------------------------------------


def _short(obj, limit: int = 2000) -> str:
    """A one-line description of an input for failure messages, cut to ``limit`` characters."""
    if hasattr(obj, "DESCRIPTOR"):
        text = text_format.MessageToString(obj, as_one_line=True, as_utf8=False)
        text = re.sub(r"(dim \{ size: (-?\d+) \} )\1+", lambda m: f"{m.group(1)}x{len(m.group(0)) // len(m.group(1))} ",
                      text)
    elif isinstance(obj, (bytes, str)) and len(obj) > limit:
        return repr(obj[:limit]) + f"... ({len(obj)} long)"
    else:
        text = repr(obj)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _oracle(proto: tensor_pb2.TensorProto):
    """TensorFlow's own decoding of ``proto`` (``Tensor::FromProto`` via ParseTensor, what TF Serving runs):
    the array, ``None`` when TensorFlow refuses it, or ``...`` when it is too large or of too high a rank
    to check here."""
    import tensorflow as tf

    if proto.dtype not in _ITEMSIZE:
        return None
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims) or len(dims) > 254:
        return None
    if math.prod(dims) * _ITEMSIZE[proto.dtype] > _ORACLE_MAX_BYTES:
        return ...
    try:
        return _tf_decode(proto)
    except (tf.errors.InvalidArgumentError, ValueError):
        return None


def _tf_decode(proto: tensor_pb2.TensorProto):
    """ParseTensor's array, or ``...`` past numpy's 64 dimensions. Flattened before ``.numpy()``: TF's
    conversion of a string tensor of rank > 32 to numpy crashes the process (SIGSEGV)."""
    import tensorflow as tf

    tensor = tf.io.parse_tensor(proto.SerializeToString(), tf.dtypes.as_dtype(proto.dtype))
    if tensor.shape.rank > 64:
        return ...
    flat = tf.reshape(tensor, [-1]).numpy()
    return np.asarray(flat, dtype=object if proto.dtype == types_pb2.DT_STRING else None).reshape(tensor.shape)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "O":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def _check_identity(req: predict_pb2.PredictRequest, code, details: str, resp) -> None:
    """The identity signatures answer the input back, exactly as TensorFlow decodes it; an input that
    TensorFlow's decoder refuses is TF Serving's INVALID_ARGUMENT ``tensor parsing error``."""
    sig = req.model_spec.signature_name
    if req.model_spec.name != IDS or not sig.startswith("id_") or sig[3:] not in IDENTITY_DTYPES:
        return
    if list(req.inputs) != ["x"] or set(req.output_filter) - {"y"}:
        return
    proto = req.inputs["x"]
    if code == grpc.StatusCode.OK:
        want = _oracle(proto)
        assert want is not None, f"OK for an input TensorFlow cannot decode: {_short(req)}"
        got = _tf_decode(resp.outputs["y"])
        assert want is ... or got is ... or _same(want, got), \
            f"identity answered {_short(got)}, TF decodes {_short(want)}: {_short(req)}"
    elif code == grpc.StatusCode.INVALID_ARGUMENT and details == "tensor parsing error: x":
        want = _oracle(proto)
        assert want is None or want is ..., f"'{details}' for an input TensorFlow decodes: {_short(req)}"


def check_grpc(stub, req: predict_pb2.PredictRequest, tally: Optional[Tally] = None) -> grpc.StatusCode:
    """Send ``req`` with the official stub; the code must be in GRPC_ALLOWED (see the module docstring)."""
    t0 = time.monotonic()
    resp, details = None, ""
    try:
        resp = stub.Predict(req, timeout=CALL_TIMEOUT_S)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    if tally is not None:
        tally.record(code, time.monotonic() - t0, lambda: _short(req, 300))
    assert code in GRPC_ALLOWED, f"{code.name} '{details}' for {_short(req)}"
    _check_identity(req, code, details, resp)
    return code


def check_raw(call, data: bytes, tally: Optional[Tally] = None) -> grpc.StatusCode:
    """Send ``data`` unparsed as a Predict request (``call``: ``channel.unary_unary(PREDICT_METHOD)``).

    Bytes that parse must get a code in GRPC_ALLOWED; bytes that do not parse must get INTERNAL
    (TF Serving's C++ gRPC answer).
    """
    try:
        predict_pb2.PredictRequest.FromString(data)
        parses = True
    except Exception:  # the protobuf runtime's DecodeError, or an error of its C layer
        parses = False
    t0 = time.monotonic()
    details = ""
    try:
        predict_pb2.PredictResponse.FromString(call(data, timeout=CALL_TIMEOUT_S))
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    if tally is not None:
        tally.record(code, time.monotonic() - t0, lambda: _short(data, 300))
    if parses:
        assert code in GRPC_ALLOWED, f"{code.name} '{details}' for parsable bytes {_short(data)}"
    else:
        assert code == grpc.StatusCode.INTERNAL, f"{code.name} '{details}' for unparsable bytes {_short(data)}"
    return code


_V1 = "/v1/"


def check_rest(conn: http.client.HTTPConnection, method: str, path: str, body: Optional[bytes],
               headers: Optional[dict] = None, expect: Optional[dict] = None, tally: Optional[Tally] = None) -> int:
    """One call on a kept-alive connection (its timeout bounds the wait); returns the HTTP status.

    200 with a JSON body (an empty one for OPTIONS), or a 4xx with ``{"error": "<non-empty>"}``, or
    501 with one (TF Serving's HTTP status for UNIMPLEMENTED, e.g. JSON to a complex tensor); HEAD
    answers have no body. Plain text is allowed only for a 404 outside ``/v1/``, where TF Serving's API
    is not. The server may close the connection only after saying ``Connection: close``. With
    ``expect``, the answer must be 200 with exactly that JSON.
    """
    what = f"{method} {path} headers={headers} body={_short(body)}"
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    except (http.client.HTTPException, OSError) as e:
        conn.close()
        raise AssertionError(f"{type(e).__name__}: {e} (a hang, or the connection dropped) for {what}") from None
    if tally is not None:
        tally.record(resp.status, time.monotonic() - t0, lambda: what[:300])
    assert resp.status in (200, 501) or 400 <= resp.status < 500, f"{resp.status} {_short(data)} for {what}"
    if method == "HEAD" or (method == "OPTIONS" and resp.status == 200) or \
            (not path.lower().startswith(_V1) and resp.status in (200, 404)):
        return resp.status
    try:
        doc = json.loads(data)
    except ValueError:
        raise AssertionError(f"{resp.status} with a body that is not JSON {_short(data)} for {what}") from None
    if resp.status != 200:
        assert isinstance(doc, dict) and set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], \
            f"{resp.status} {_short(data)} for {what}"
        assert "Traceback" not in doc["error"], f"{resp.status} {_short(data)} for {what}"
    if expect is not None:
        assert resp.status == 200 and doc == expect, f"{resp.status} {_short(data)}, expected {expect} for {what}"
    return resp.status


def peak_rss_mib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) // 1024
