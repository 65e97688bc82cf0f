"""TF Serving's REST JSON <-> numpy arrays and protos (``json_tensor.cc``), without TensorFlow calls.

Pure functions for the REST handler:

* ``parse_json``: request bytes -> Python JSON values (orjson; ``NaN``/``Infinity`` accepted);
* ``signature_name``: the body's optional ``"signature_name"``;
* ``decode_predict``: a Predict body (``instances`` row format or ``inputs`` columnar) -> arrays
  typed by the signature's inputs;
* ``encode_predict_response``: output arrays -> ``{"predictions": ...}`` / ``{"outputs": ...}``;
* ``input_from_json`` / ``encode_classify_results`` / ``encode_regress_results``: Classify and
  Regress bodies and results.

Every failure is a ``ServingError`` carrying TF Serving's wire text (``tfserving-behaviour.md``
section 3). ``JSON Value: <v>`` prefixes echo the offending value as compact JSON, cut to
``_ECHO_LIMIT`` characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from collections.abc import Mapping
from itertools import chain

import ml_dtypes
import numpy as np
import orjson
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import input_pb2

from protos import tensor_codec
from protos.errors import Code, ServingError, invalid_argument

# Verso's REST extension: the response header naming the version that answered.
VERSION_HEADER = "Verso-Model-Version"
_ECHO_LIMIT = 256
# numpy's own limit (NPY_MAXDIMS); TF allows more, but no servable takes such inputs.
_MAX_RANK = 64
_BOM = b"\xef\xbb\xbf"
_JSON_WS = " \t\n\r"

# ---- value typing tables (AddValueToTensor) ----------------------------------------------------

_FLOAT_TYPES = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE}
# Largest integer a JSON integer may have to reach the float type exactly (TF's IsLosslessDecimal:
# 2**digits - 1), and the largest finite value of the type.
_EXACT_INT = {types_pb2.DT_FLOAT: 2**24 - 1, types_pb2.DT_DOUBLE: 2**53 - 1}
_FINITE_MAX = {types_pb2.DT_FLOAT: float(np.finfo(np.float32).max),
               types_pb2.DT_DOUBLE: float(np.finfo(np.float64).max)}
_INT_RANGE = {
    e: (int(np.iinfo(tensor_codec.BY_ENUM[e].np_dtype).min), int(np.iinfo(tensor_codec.BY_ENUM[e].np_dtype).max))
    for e in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_UINT8,
              types_pb2.DT_UINT16, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64)
}
_SUPPORTED = _FLOAT_TYPES | set(_INT_RANGE) | {types_pb2.DT_BOOL, types_pb2.DT_STRING}
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


class JsonObject(dict):
    """A JSON object as ``parse_json`` returns it at the top level: a plain dict plus a hint.

    ``bool_free`` is True when the body has no ``true``/``false`` token at all, which lets
    ``decode_predict`` skip looking for booleans hidden in numeric lists (numpy turns ``True``
    into ``1.0`` silently). Any other dict works too; it is just checked the slower way.
    """

    __slots__ = ("bool_free",)

    def __init__(self, *args, bool_free: bool = False):
        super().__init__(*args)
        self.bool_free = bool_free


# ---- parsing -----------------------------------------------------------------------------------

def parse_json(body: bytes) -> object:
    """Parse a request body. orjson first; only when that fails and the body holds a ``NaN`` or
    ``Infinity`` token (which rapidjson accepts with kParseNanAndInfFlag, orjson does not) is it
    parsed again with Python's ``json``, so a normal body is parsed once.

    A top-level object comes back as a ``JsonObject`` (a dict). Raises INVALID_ARGUMENT
    ``JSON Parse error: The document is empty`` for an empty or whitespace-only body and
    ``JSON Parse error: <reason> at offset: <byte offset>`` otherwise.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    base = 0
    if body.startswith(_BOM):  # rapidjson's UTF-8 input stream skips a BOM; orjson refuses it
        body, base = body[3:], 3
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        doc = _parse_slow(body, base, err)
    if isinstance(doc, dict):
        return JsonObject(doc, bool_free=b"true" not in body and b"false" not in body)
    return doc


def _parse_slow(body: bytes, base: int, err: orjson.JSONDecodeError) -> object:
    """The error path of ``parse_json``: a precise error, or the fallback parse for NaN/Infinity."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {base + bad.start}") from None
    if not text.strip(_JSON_WS):
        raise invalid_argument("JSON Parse error: The document is empty")
    if b"NaN" not in body and b"Infinity" not in body:
        raise invalid_argument(
            f"JSON Parse error: {err.msg} at offset: {base + _byte_offset(text, err.pos)}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as bad:
        raise invalid_argument(
            f"JSON Parse error: {bad.msg} at offset: {base + _byte_offset(text, bad.pos)}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply at offset: 0") from None
    except ValueError as bad:  # e.g. an integer literal longer than Python's int-string limit
        raise invalid_argument(f"JSON Parse error: {bad} at offset: 0") from None
    # Python's json keeps unpaired \uD800-\uDFFF escapes as lone surrogates (orjson and rapidjson
    # reject them); they would break every later UTF-8 encode, so refuse them here.
    hit = re.search(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}", text)
    if hit is not None:
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_argument(
                "JSON Parse error: The surrogate pair in string is invalid. at offset: "
                f"{base + _byte_offset(text, hit.start())}") from None
        except (RecursionError, ValueError):
            pass
    return doc


def _byte_offset(text: str, pos: int) -> int:
    """Parsers report character positions; TF reports byte offsets."""
    return len(text[:pos].encode("utf-8", "surrogatepass"))


# ---- JSON echo for error messages --------------------------------------------------------------

class _Full(Exception):
    pass


def _echo(value, limit: int = _ECHO_LIMIT) -> str:
    """Compact JSON text of a parsed value for ``JSON Value: ...`` messages, cut to ``limit``
    characters (+ ``...``). Stops writing as soon as the limit is passed, so echoing a whole
    large request costs nothing."""
    out: list[str] = []
    size = 0

    def put(s: str) -> None:
        nonlocal size
        out.append(s)
        size += len(s)
        if size > limit:
            raise _Full

    def walk(v) -> None:
        if isinstance(v, dict):
            put("{")
            for i, (k, x) in enumerate(v.items()):
                put(("," if i else "") + _str_text(k, limit) + ":")
                walk(x)
            put("}")
        elif isinstance(v, list):
            put("[")
            for i, x in enumerate(v):
                if i:
                    put(",")
                walk(x)
            put("]")
        else:
            put(_scalar_text(v, limit))

    try:
        walk(value)
    except _Full:
        return "".join(out)[:limit] + "..."
    return "".join(out)


def _str_text(s, limit: int) -> str:
    s = str(s)[: limit + 1]
    try:
        return orjson.dumps(s).decode("utf-8")
    except orjson.JSONEncodeError:  # lone surrogates: escape them instead
        return json.dumps(s)


def _float_text(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return repr(f)


def _scalar_text(v, limit: int) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        try:
            return str(v)
        except ValueError:  # beyond Python's int-string digit limit
            return "<integer too large to print>"
    if isinstance(v, float):
        return _float_text(v)
    if isinstance(v, str):
        return _str_text(v, limit)
    return repr(v)[: limit + 1]


def _json_type(v) -> str:
    """rapidjson's type names, as TF prints them."""
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def _format_error(doc, text: str) -> ServingError:
    return invalid_argument(f"JSON Value: {_echo(doc)} {text}")


# ---- request body helpers ----------------------------------------------------------------------

def signature_name(doc) -> str:
    """The body's ``"signature_name"``, ``""`` when absent.

    Raises INVALID_ARGUMENT ``JSON Value: <doc> Is not object`` when the body is not a JSON object
    and ``JSON Value: <doc> not formatted correctly. 'signature_name' key must be a string value.``
    when the name is not a string.
    """
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise _format_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return name


def _is_b64(v) -> bool:
    """``{"b64": "<string>"}`` with no other key: a (binary) string value, never a row object."""
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _b64decode(v: dict) -> bytes:
    """absl::Base64Unescape: the standard alphabet, padding optional."""
    s = v["b64"]
    try:
        data = s.encode("ascii")
        if len(data) % 4:
            data += b"=" * (-len(data) % 4)
        return base64.b64decode(data, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogate: only reachable with a doc not from parse_json
        raise invalid_argument(f"JSON Value: {_str_text(s, _ECHO_LIMIT)} is not valid UTF-8") from None


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---- predict: JSON -> arrays -------------------------------------------------------------------

def decode_predict(doc, input_infos: Mapping) -> tuple[dict[str, np.ndarray], bool]:
    """Convert a Predict body to input arrays: ``({alias: array}, row_format)``.

    ``input_infos`` maps each signature input alias to its TensorInfo; values are checked
    against and converted to each input's dtype (strings become object arrays of bytes).
    ``row_format`` is True for ``"instances"`` (arrays are ``[len(instances)] + row shape``),
    False for ``"inputs"`` (shapes from the nesting). Checks run in TF Serving's order (body is
    an object, signature_name type, non-empty input map, the instances/inputs keys, values);
    every failure is a ServingError: INVALID_ARGUMENT with TF's text, UNIMPLEMENTED for dtypes
    JSON cannot carry (half, bfloat16, complex, ...).
    """
    sig = signature_name(doc)
    if not input_infos:
        raise invalid_argument(f"Failed to get input map for signature: {sig or 'DEFAULT'}")
    dtypes = {alias: input_infos[alias].dtype for alias in input_infos}
    bool_free = getattr(doc, "bool_free", False)
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise _format_error(
            doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    try:
        if has_rows:
            instances = doc["instances"]
            if not isinstance(instances, list):
                # sic: TF's text says "Excepting"
                raise _format_error(doc, "Excepting 'instances' to be an list/array")
            if not instances:
                raise _format_error(doc, "No values in 'instances' array")
            return _decode_rows(instances, dtypes, bool_free), True
        if has_cols:
            return _decode_columns(doc["inputs"], dtypes, bool_free), False
    except RecursionError:
        raise invalid_argument("JSON value is nested too deeply") from None
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_row_object(v) -> bool:
    return isinstance(v, dict) and not _is_b64(v)


def _decode_columns(value, dtypes: dict[str, int], bool_free: bool) -> dict[str, np.ndarray]:
    names = sorted(dtypes)
    if not isinstance(value, dict) or _is_b64(value):
        if len(names) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   "input tensors required as per tensorinfo_map")
        return {names[0]: _convert(value, dtypes[names[0]], bool_free)}
    out = {}
    for name in names:  # keys that are not inputs are ignored, as TF does
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _convert(value[name], dtypes[name], bool_free)
    return out


def _decode_rows(instances: list, dtypes: dict[str, int], bool_free: bool) -> dict[str, np.ndarray]:
    names = sorted(dtypes)
    first = instances[0]
    objects = _is_row_object(first)
    # TF lets a lone {"b64": ..} first element through here and then feeds only one of several
    # inputs; refusing it now gives the same 400 with a clearer message.
    if len(names) > 1 and not objects:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                               "input tensors required as per tensorinfo_map")
    # Fast path: every row well-formed -> one numpy conversion per input over the whole column
    # (its shape is [rows] + row shape exactly when all rows share a shape). Anything doubtful
    # goes to the exact element-by-element path below, which finds TF's first error.
    wanted = set(names)
    if objects:
        if all(_is_row_object(e) and e.keys() == wanted for e in instances):
            columns = {n: [e[n] for e in instances] for n in names}
        else:
            columns = None
    else:
        columns = None if any(_is_row_object(e) for e in instances) else {names[0]: instances}
    if columns is not None:
        out = {}
        for name in names:
            arr = _fast_array(columns[name], dtypes[name], bool_free)
            if arr is None:
                break
            out[name] = arr
        else:
            return out
    return _decode_rows_exact(instances, names, objects, dtypes, bool_free)


def _decode_rows_exact(instances, names, objects, dtypes, bool_free) -> dict[str, np.ndarray]:
    wanted = set(names)
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    shapes: dict[str, tuple] = {}
    for i, elem in enumerate(instances):
        if objects:
            if not _is_row_object(elem):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            if elem.keys() != wanted:
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {_echo(elem)} "
                    f"keys must be equal to: {','.join(names)}")
            items = elem.items()
        else:
            if _is_row_object(elem):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
            items = ((names[0], elem),)
        for name, value in items:
            try:
                arr = _convert(value, dtypes[name], bool_free)
                expected = shapes.setdefault(name, arr.shape)
                if arr.shape != expected:
                    raise invalid_argument(f"Expecting shape {_shape_text(expected)} but got: {_shape_text(arr.shape)}")
            except ServingError as err:
                if err.code != Code.INVALID_ARGUMENT:  # UNIMPLEMENTED dtypes keep their code
                    raise
                where = f"{i} key: {name}" if objects else str(i)
                raise invalid_argument(
                    f"Failed to process element: {where} of 'instances' list. Error: {err}") from None
            rows[name].append(arr)
    out = {}
    for name in names:
        if len(shapes[name]) >= _MAX_RANK:
            raise invalid_argument(f"Instances of input {name} have rank {len(shapes[name])}; "
                                   f"at most {_MAX_RANK - 1} dimensions per instance are supported")
        out[name] = np.stack(rows[name])
    return out


def _convert(value, enum: int, bool_free: bool) -> np.ndarray:
    """One JSON value (scalar or nested lists) -> array of the input dtype."""
    arr = _fast_array(value, enum, bool_free)
    return arr if arr is not None else _walk(value, enum)


def _leaf_types(value: list, ndim: int) -> set:
    """The Python types of the leaves of a regular nested list (C-level iteration)."""
    leaves = value
    for _ in range(ndim - 1):
        leaves = chain.from_iterable(leaves)
    return set(map(type, leaves))


def _fast_array(value, enum: int, bool_free: bool) -> np.ndarray | None:
    """``np.asarray`` on a nested list, returned only when it is certainly what the exact walk
    would build; None means "use the walk" (which then also produces TF's error text).

    What it checks: the list is regular (numpy raises on ragged lists) with a numeric kind
    (object / str results -> walk); the kind suits the dtype (ints only for integer dtypes,
    ints or floats for float/double, all-bool for bool); integers lie in the dtype's range;
    for float/double, finite magnitudes above 2**24-1 / 2**53-1 either are floats (checked by
    type) or go to the walk for TF's lossless-conversion check; no bool hides among the
    numbers (numpy silently makes True 1 / 1.0): skipped when the parse saw no true/false
    token or no element equals 0 or 1, else the leaf types are scanned.
    """
    if enum == types_pb2.DT_STRING or enum not in _SUPPORTED or not isinstance(value, list) or not value:
        return None
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if enum == types_pb2.DT_BOOL:
        return arr if kind == "b" else None
    if kind not in "iuf" or (kind == "f" and enum not in _FLOAT_TYPES):
        return None
    types = None
    if enum in _FLOAT_TYPES:
        exact = _EXACT_INT[enum]
        if kind == "f":
            mag = np.abs(arr)
            big = mag > exact  # NaN compares False; +-inf is "big" but always fine
            if big.any():
                finite_big = big & np.isfinite(arr)
                if finite_big.any():
                    if (mag[finite_big] > _FINITE_MAX[enum]).any():
                        return None
                    types = _leaf_types(value, arr.ndim)
                    if int in types:  # maybe a JSON integer too large for exact conversion
                        return None
        elif int(arr.max()) > exact or int(arr.min()) < -exact:
            return None
    else:
        lo, hi = _INT_RANGE[enum]
        if int(arr.min()) < lo or int(arr.max()) > hi:
            return None
    if not bool_free and ((arr == 0) | (arr == 1)).any():
        if types is None:
            types = _leaf_types(value, arr.ndim)
        if bool in types:
            return None
    return arr.astype(tensor_codec.BY_ENUM[enum].np_dtype, copy=False)


def _dense_shape(value) -> list[int]:
    """TF's GetDenseTensorShape: each level's size, following first elements."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _walk(value, enum: int) -> np.ndarray:
    """TF's FillTensorProto: depth-first over the value, checking each list's level and size
    against the shape taken from first elements and each leaf's type; the first error wins."""
    shape = _dense_shape(value)
    rank = len(shape)
    if rank > _MAX_RANK:
        raise invalid_argument(f"JSON Value: {_echo(value)} is nested {rank} lists deep; "
                               f"at most {_MAX_RANK} dimensions are supported")
    leaf = _leaf_checker(enum)
    out: list = []

    def fill(v, level: int) -> None:
        if not isinstance(v, list):
            if level != rank:
                raise invalid_argument(f"JSON Value: {_echo(v)} found at incorrect level: {level + 1} "
                                       f"in the JSON DOM. Expected at level: {rank}")
            out.append(leaf(v))
            return
        if level >= rank:
            raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(v) != shape[level]:
            raise invalid_argument(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                                   f"expected size: {shape[level]}")
        for x in v:
            fill(x, level + 1)

    fill(value, 0)
    d = tensor_codec.BY_ENUM.get(enum)
    if d is None or enum not in _SUPPORTED:  # no leaf reached the converter (an empty list)
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {_echo(value)} to type: "
                                               f"{tensor_codec.dtype_name(enum)}")
    if d.is_string:
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return arr.reshape(shape)
    if not out:
        return np.zeros(shape, dtype=d.np_dtype)
    return np.array(out, dtype=d.np_dtype).reshape(shape)


def _type_error(v, enum: int) -> ServingError:
    return invalid_argument(f"JSON Value: {_echo(v)} Type: {_json_type(v)} is not of expected type: "
                            f"{tensor_codec.dtype_name(enum)}")


def _lossy_error(v, target: str) -> ServingError:
    return invalid_argument(f"Cannot convert JSON value: {_echo(v)} to {target} without loss of precision.")


def _leaf_checker(enum: int):
    """A function checking one JSON scalar (or object) for ``enum`` and returning the value to store."""
    if enum in _FLOAT_TYPES:
        exact, fmax, target = _EXACT_INT[enum], _FINITE_MAX[enum], tensor_codec.dtype_name(enum)

        def number(v):
            t = type(v)
            if t is float:
                if abs(v) > fmax and math.isfinite(v):
                    raise _lossy_error(v, target)
                return v
            if t is int:
                if _INT64_MIN <= v <= _UINT64_MAX:  # rapidjson holds it as an integer
                    if abs(v) > exact:
                        raise _lossy_error(v, target)
                    return v
                try:  # wider integers are doubles to rapidjson
                    f = float(v)
                except OverflowError:
                    raise _lossy_error(v, target) from None
                if abs(f) > fmax:
                    raise _lossy_error(v, target)
                return f
            raise _type_error(v, enum)
        return number
    if enum in _INT_RANGE:
        lo, hi = _INT_RANGE[enum]

        def integer(v):
            # Out-of-range integers are refused (TF would wrap int8/16 and uint8 values silently).
            if type(v) is int and lo <= v <= hi:
                return v
            raise _type_error(v, enum)
        return integer
    if enum == types_pb2.DT_BOOL:
        def boolean(v):
            if type(v) is bool:
                return v
            raise _type_error(v, enum)
        return boolean
    if enum == types_pb2.DT_STRING:
        def string(v):
            if isinstance(v, str):
                return _utf8(v)
            if isinstance(v, dict):
                if not _is_b64(v):
                    raise invalid_argument(f"JSON Value: {_echo(v)} not formatted correctly for base64 data")
                return _b64decode(v)
            raise _type_error(v, enum)
        return string

    def unsupported(v):
        if isinstance(v, dict):
            raise _type_error(v, enum)
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {_echo(v)} to type: "
                                               f"{tensor_codec.dtype_name(enum)}")
    return unsupported


# ---- predict: arrays -> JSON -------------------------------------------------------------------

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2
# orjson writes non-finite floats as null. Those elements become these strings (random per
# process, so no real output string can equal one) and are swapped for the bare tokens after
# serialisation.
_TOKEN = secrets.token_hex(8)
_NAN, _POS_INF, _NEG_INF = (f"@@verso-nonfinite-{_TOKEN}-{s}@@" for s in ("nan", "pinf", "ninf"))
_SWAPS = [(orjson.dumps(_NAN), b"NaN"), (orjson.dumps(_POS_INF), b"Infinity"), (orjson.dumps(_NEG_INF), b"-Infinity")]


def _dumps(obj, nonfinite: bool, option: int = _OPTS) -> bytes:
    data = orjson.dumps(obj, option=option)
    if nonfinite:
        for placeholder, token in _SWAPS:
            data = data.replace(placeholder, token)
    return data


def _nonfinite_placeholder(f: float) -> str:
    return _NAN if math.isnan(f) else (_POS_INF if f > 0 else _NEG_INF)


def _text(x) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return x if isinstance(x, str) else str(x)


def _b64_object(x) -> dict:
    if isinstance(x, str):
        x = x.encode("utf-8", "surrogatepass")
    elif not isinstance(x, bytes):
        x = str(x).encode("utf-8", "surrogatepass")
    return {"b64": base64.b64encode(x).decode("ascii")}


def _request_string(x) -> object:
    return _b64_object(bytes(x)) if isinstance(x, (bytes, bytearray)) else _text(x)


def _jsonable(alias: str, arr, request: bool = False) -> tuple[object, bool]:
    """(what orjson should serialise for this tensor, whether it holds non-finite placeholders).

    Numeric arrays stay arrays (C-contiguous, native byte order: what orjson needs); strings
    become nested lists of text, or of ``{"b64": ...}`` when the alias ends in ``_bytes``
    (responses) or the element is bytes (``request``: binary-safe for any input).
    """
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind in "OSU":
        conv = _request_string if request else (_b64_object if alias.endswith("_bytes") else _text)
        flat = np.empty(arr.size, dtype=object)
        flat[:] = [conv(x) for x in arr.ravel().tolist()]
        return flat.reshape(arr.shape).tolist(), False
    if arr.dtype == np.float16 or arr.dtype == ml_dtypes.bfloat16:
        arr = arr.astype(np.float32)  # written as the float value, like TF's half support
        kind = "f"
    if kind not in "biuf":
        try:
            name = tensor_codec.dtype_for_array(arr).name
        except tensor_codec.TensorCodecError:
            name = str(arr.dtype)
        raise invalid_argument(f"Failed to write JSON value for tensor type: {name}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # (only here: it would turn a 0-d array into 1-d)
    if kind == "f" and not np.isfinite(arr).all():
        flat = arr.ravel()
        obj = np.empty(flat.size, dtype=object)
        obj[:] = list(flat)  # numpy scalars: orjson prints float32 shortest as float32
        obj[np.isnan(flat)] = _NAN
        obj[np.isposinf(flat)] = _POS_INF
        obj[np.isneginf(flat)] = _NEG_INF
        return obj.reshape(arr.shape).tolist(), True
    if arr.ndim == 0:  # orjson serialises numpy scalars, not 0-d arrays
        return arr[()], False
    return arr, False


def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """Predict outputs as TF Serving's response JSON (pretty-printed bytes).

    Row format: ``{"predictions": [...]}`` with one entry per batch row, the row's value when
    there is one output, else ``{alias: value}`` per row (every output needs a batch dimension
    of the same size, else INVALID_ARGUMENT). Columnar: ``{"outputs": value}`` or
    ``{"outputs": {alias: value}}``. Floats print shortest-round-trip for their own width with
    ``.0`` on whole numbers, non-finite as ``NaN``/``Infinity``/``-Infinity``; string tensors
    print as text (invalid UTF-8 replaced), or ``{"b64": ...}`` when the alias ends in ``_bytes``.
    Aliases appear in sorted order.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if row_format:
        batch = -1
        for name in names:
            shape = np.shape(outputs[name])
            if not shape:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and shape[0] != batch:
                raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                                       f"expecting: {batch}")
            batch = shape[0]
    nonfinite = False
    values = {}
    for name in names:
        values[name], flag = _jsonable(name, outputs[name])
        nonfinite = nonfinite or flag
    if row_format:
        if len(names) == 1:
            body = values[names[0]]
        else:
            body = [{name: values[name][i] for name in names} for i in range(batch)]
        return _dumps({"predictions": body}, nonfinite)
    body = values[names[0]] if len(names) == 1 else values
    return _dumps({"outputs": body}, nonfinite)


def encode_predict_request(inputs: Mapping[str, np.ndarray], signature_name: str = "") -> bytes:
    """A columnar Predict body for a client: ``{"signature_name": s, "inputs": {alias: value}}``
    (compact). Values are written as in ``encode_predict_response``, except that bytes elements
    become ``{"b64": ...}`` whatever the alias (the server decodes b64 for any string input) and
    str elements are sent as text. Raises INVALID_ARGUMENT for dtypes JSON cannot carry."""
    nonfinite = False
    values = {}
    for name in inputs:
        values[name], flag = _jsonable(name, inputs[name], request=True)
        nonfinite = nonfinite or flag
    doc = {"inputs": values}
    if signature_name:
        doc["signature_name"] = signature_name
    return _dumps(doc, nonfinite, orjson.OPT_SERIALIZE_NUMPY)


# ---- classify / regress ------------------------------------------------------------------------

def input_from_json(doc, method: str) -> input_pb2.Input:
    """A Classify/Regress body as an ``Input``: ``example_list``, or ``example_list_with_context``
    when the body has ``"context"``.

    Feature values: a string or ``{"b64": ...}`` -> bytes_list, a float (JSON number with ``.``
    or an exponent) -> float_list, an integer -> int64_list, a bool -> int64 0/1; a list gives
    all its values, a scalar one. ``method`` is ``"classify"`` or ``"regress"``; TF Serving's
    missing-examples message says ``classify`` for both, and so does this one.
    """
    if method not in ("classify", "regress"):
        raise ValueError(f"method must be 'classify' or 'regress', not {method!r}")
    signature_name(doc)  # object and signature_name checks come first, as in TF
    result = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _fill_example(doc["context"], result.example_list_with_context.context)
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = result.example_list_with_context.examples if has_context else result.example_list.examples
    for value in examples:
        _fill_example(value, target.add())
    return result


def _fill_example(value, example) -> None:
    """TF's MakeExampleFromJsonObject."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        _utf8(name)
        kind, values = _feature_values(name, content if isinstance(content, list) else (content,))
        feature = features[name]  # created even when empty (a Feature with no kind), as TF does
        if kind is not None:
            getattr(feature, f"{kind}_list").value.extend(values)


def _feature_values(name: str, items) -> tuple[str | None, list]:
    """TF's AddValueToFeature over a feature's elements: (kind, values); the first element's kind
    decides, and each element is checked in order (type, then kind, then value)."""
    kind = None
    values: list = []
    for v in items:
        t = type(v)
        if t is bool:
            k, x = "int64", int(v)
        elif t is str:
            k, x = "bytes", None
        elif t is float:
            k, x = "float", v
        elif t is int:
            k, x = ("int64", v) if v <= _UINT64_MAX and v >= _INT64_MIN else ("float", v)
        elif _is_b64(v):
            k, x = "bytes", None
        else:
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
        if kind is None:
            kind = k
        elif k != kind:
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")
        if t is str:
            x = _utf8(v)
        elif k == "bytes":
            x = _b64decode(v)
        elif k == "float":
            try:
                x = float(x)
            except OverflowError:
                raise _lossy_error(v, "float") from None
            if math.isfinite(x) and abs(x) > _FINITE_MAX[types_pb2.DT_FLOAT]:
                raise _lossy_error(v, "float")
        elif t is int and x > _INT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        values.append(x)
    return kind, values


def _score(f: float):
    """A proto float for orjson: float32 (printed shortest as float32) or a non-finite placeholder."""
    return np.float32(f) if math.isfinite(f) else _nonfinite_placeholder(f)


def encode_classify_results(result) -> bytes:
    """A ClassificationResult as ``{"results": [[["label", score], ...], ...]}``, one list per example."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = [[[c.label, _score(c.score)] for c in cls.classes] for cls in result.classifications]
    nonfinite = any(not math.isfinite(c.score) for cls in result.classifications for c in cls.classes)
    return _dumps({"results": rows}, nonfinite)


def encode_regress_results(result) -> bytes:
    """A RegressionResult as ``{"results": [v1, v2, ...]}``."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = [_score(r.value) for r in result.regressions]
    nonfinite = any(not math.isfinite(r.value) for r in result.regressions)
    return _dumps({"results": values}, nonfinite)
