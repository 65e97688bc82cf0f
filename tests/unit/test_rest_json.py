"""protos.rest_json: TF Serving's REST JSON rules and messages (tfserving-behaviour.md section 3)."""

from __future__ import annotations

import base64
import json
import math

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from protos import rest_json
from protos.errors import Code, ServingError

T = types_pb2


def info(dtype):
    return meta_graph_pb2.TensorInfo(dtype=dtype)


def infos(**dtypes):
    return {name: info(d) for name, d in dtypes.items()}


F = infos(x=T.DT_FLOAT)
AB = infos(a=T.DT_FLOAT, b=T.DT_INT64)


def predict(body, input_infos=F):
    doc = rest_json.parse_json(body if isinstance(body, bytes) else json.dumps(body).encode())
    return rest_json.decode_predict(doc, input_infos)


def error(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as caught:
        fn(*args)
    return caught.value


def predict_error(body, input_infos=F, code=Code.INVALID_ARGUMENT) -> str:
    err = error(predict, body, input_infos)
    assert err.code == code, str(err)
    return err.message


def wrapped(i, inner, key=None):
    where = f"{i} key: {key}" if key else str(i)
    return f"Failed to process element: {where} of 'instances' list. Error: INVALID_ARGUMENT: {inner}"


# ---- parse_json -------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"   ", b" \t\r\n "])
def test_parse_empty_document(body):
    err = error(rest_json.parse_json, body)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == "JSON Parse error: The document is empty"


@pytest.mark.parametrize("body, offset", [
    (b'{"a":', 5),
    (b'{"a": 1,}', 7),  # orjson points at the trailing comma
    (b'[1] x', 4),
    ('["é", x]'.encode(), 7),  # a byte offset, not a character index
    (b"{'a': 1}", 1),
])
def test_parse_syntax_error_has_reason_and_byte_offset(body, offset):
    err = error(rest_json.parse_json, body)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message.startswith("JSON Parse error: ")
    assert err.message.endswith(f" at offset: {offset}")
    assert len(err.message) > len(f"JSON Parse error:  at offset: {offset}")


@pytest.mark.parametrize("body", [b'{"a": "\xff"}', b"\xc3\x28", b'{"a": NaN, "b": "\xfe"}', b"\x00\x00\x00["])
def test_parse_invalid_utf8_is_invalid_argument(body):
    err = error(rest_json.parse_json, body)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message.startswith("JSON Parse error: ")


def test_parse_nan_and_infinity_tokens():
    doc = rest_json.parse_json(b'{"inputs": [NaN, Infinity, -Infinity, 1.5]}')
    values = doc["inputs"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf and values[3] == 1.5


def test_parse_nan_fallback_still_reports_other_errors():
    err = error(rest_json.parse_json, b'{"a": NaN,,}')
    assert err.message.startswith("JSON Parse error: ") and " at offset: " in err.message


def test_parse_normal_body_is_parsed_once(monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("the fallback parser ran")

    monkeypatch.setattr(rest_json.json, "loads", fail)
    assert rest_json.parse_json(b'{"instances": [[1.0, 2.0]]}') == {"instances": [[1.0, 2.0]]}
    assert error(rest_json.parse_json, b"[1,").code == Code.INVALID_ARGUMENT  # no NaN token: no fallback


def test_parse_lone_surrogate_escape_rejected():
    assert error(rest_json.parse_json, b'{"a": NaN, "b": "\\ud800"}').code == Code.INVALID_ARGUMENT
    assert error(rest_json.parse_json, b'{"b": "\\ud800"}').code == Code.INVALID_ARGUMENT
    ok = rest_json.parse_json(b'{"a": NaN, "b": "\\ud83d\\ude00"}')  # a valid pair
    assert ok["b"] == "\U0001f600"


def test_parse_utf8_bom_skipped():
    assert rest_json.parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_parse_returns_plain_json_values():
    assert rest_json.parse_json(b"[1, 2]") == [1, 2]
    doc = rest_json.parse_json(b'{"a": [true]}')
    assert isinstance(doc, dict) and doc == {"a": [True]}
    assert doc.bool_free is False
    assert rest_json.parse_json(b'{"a": [1]}').bool_free is True


# ---- signature_name ---------------------------------------------------------------------------

def test_signature_name():
    assert rest_json.signature_name({"instances": [1]}) == ""
    assert rest_json.signature_name({"signature_name": "sig", "instances": [1]}) == "sig"
    err = error(rest_json.signature_name, {"signature_name": 3})
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == ('JSON Value: {"signature_name":3} not formatted correctly. '
                           "'signature_name' key must be a string value.")


@pytest.mark.parametrize("doc", [[1, 2], "text", 3, None, True])
def test_non_object_body(doc):
    err = error(rest_json.signature_name, doc)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message.endswith(" Is not object") and err.message.startswith("JSON Value: ")
    assert error(rest_json.decode_predict, doc, F).message == err.message
    assert error(rest_json.input_from_json, doc, "classify").message == err.message


# ---- decode_predict: keys -----------------------------------------------------------------------

def test_missing_both_keys():
    assert predict_error({"signature_name": "s"}) == "Missing 'inputs' or 'instances' key"


def test_both_keys():
    assert predict_error({"instances": [1], "inputs": [1]}) == (
        'JSON Value: {"instances":[1],"inputs":[1]} Not formatted correctly expecting only one of '
        "'inputs' or 'instances' keys to exist ")


def test_empty_instances():
    assert predict_error({"instances": []}) == "JSON Value: {\"instances\":[]} No values in 'instances' array"


def test_instances_not_a_list():
    assert predict_error({"instances": 3}) == "JSON Value: {\"instances\":3} Excepting 'instances' to be an list/array"


def test_empty_input_map():
    assert predict_error({"inputs": [1]}, {}) == "Failed to get input map for signature: DEFAULT"
    assert predict_error({"signature_name": "s", "inputs": [1]}, {}) == "Failed to get input map for signature: s"


def test_echo_truncated():
    big = {"instances": [[0.5] * 1000] * 10, "inputs": [1]}
    message = predict_error(big)
    assert message.startswith('JSON Value: {"instances":[[0.5,0.5,')
    assert message.endswith("... Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    assert len(message) < 400


# ---- decode_predict: row format -----------------------------------------------------------------

def test_row_single_input():
    arrays, row = predict({"instances": [[1, 2], [3.5, 4]]})
    assert row is True
    assert list(arrays) == ["x"]
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (2, 2)
    np.testing.assert_array_equal(arrays["x"], [[1, 2], [3.5, 4]])


def test_row_scalars():
    arrays, _ = predict({"instances": [1, 2, 3]}, infos(x=T.DT_INT32))
    assert arrays["x"].dtype == np.int32 and arrays["x"].shape == (3,)


def test_row_shape_mismatch():
    assert predict_error({"instances": [[1, 2], [1, 2, 3]]}) == wrapped(1, "Expecting shape [2] but got: [3]")
    assert predict_error({"instances": [[[1], [2]], [1, 2]]}) == wrapped(1, "Expecting shape [2,1] but got: [2]")


def test_row_multi_input():
    arrays, row = predict({"instances": [{"a": [1, 2], "b": 3}, {"b": 4, "a": [5, 6]}]}, AB)
    assert row is True
    assert arrays["a"].dtype == np.float32 and arrays["a"].shape == (2, 2)
    assert arrays["b"].dtype == np.int64 and arrays["b"].tolist() == [3, 4]


@pytest.mark.parametrize("elem, text", [
    ({"a": 1}, '{"a":1}'),
    ({"a": 1, "b": 2, "c": 3}, '{"a":1,"b":2,"c":3}'),
    ({"a": 1, "c": 3}, '{"a":1,"c":3}'),
])
def test_row_keys_must_equal_inputs(elem, text):
    assert predict_error({"instances": [{"a": 1, "b": 2}, elem]}, AB) == (
        f"Failed to process element: 1 of 'instances' list. JSON object: {text} keys must be equal to: a,b")


def test_row_multi_input_plain_list():
    assert predict_error({"instances": [[1, 2]]}, AB) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map")


def test_row_object_then_list():
    assert predict_error({"instances": [{"a": 1, "b": 2}, [1]]}, AB) == "Expecting object but got list at item 1 of input list"


def test_row_single_input_one_key_objects():
    arrays, _ = predict({"instances": [{"x": [1, 2]}, {"x": [3, 4]}]})
    assert arrays["x"].shape == (2, 2)
    assert predict_error({"instances": [{"y": [1, 2]}]}) == (
        "Failed to process element: 0 of 'instances' list. JSON object: {\"y\":[1,2]} keys must be equal to: x")
    assert predict_error({"instances": [[1], {"x": [1]}]}) == "Expecting value/list but got object at item 1 of input list"


def test_row_b64_is_a_value_not_an_object():
    s = infos(x=T.DT_STRING)
    arrays, _ = predict({"instances": [{"b64": base64.b64encode(b"\x00\xff").decode()}, "plain"]}, s)
    assert arrays["x"].dtype == object and arrays["x"].tolist() == [b"\x00\xff", b"plain"]
    arrays, _ = predict({"instances": [{"x": {"b64": "aGk="}}]}, s)
    assert arrays["x"].tolist() == [b"hi"]


def test_row_element_errors_are_wrapped():
    assert predict_error({"instances": [[1], ["a"]]}) == wrapped(
        1, 'JSON Value: "a" Type: String is not of expected type: float')
    assert predict_error({"instances": [{"a": 1, "b": 2.5}]}, AB) == wrapped(
        0, "JSON Value: 2.5 Type: Number is not of expected type: int64", key="b")
    assert predict_error({"instances": [[1, 2], [3]]}) == wrapped(1, "Expecting shape [2] but got: [1]")
    assert predict_error({"instances": [[[1, 2], [3]]]}) == wrapped(
        0, "Encountered list at unexpected size: 1 at level: 1 expected size: 2")


def test_row_hidden_bool_rejected_without_parse_hint():
    # A plain dict (no parse hint): numpy would silently make True 1.0.
    message = error(rest_json.decode_predict, {"instances": [[0.5, True]]}, F).message
    assert message == wrapped(0, "JSON Value: true Type: True is not of expected type: float")
    message = error(rest_json.decode_predict, {"instances": [[1, 0, False]]}, infos(x=T.DT_INT32)).message
    assert message == wrapped(0, "JSON Value: false Type: False is not of expected type: int32")


def test_row_large_batch_uses_fast_path(monkeypatch):
    rows = np.random.default_rng(0).random((64, 784)).round(4)
    rows[:, :100] = 0.0
    body = orjson.dumps({"instances": rows.tolist()})

    def no_walk(*_args):
        raise AssertionError("element walk used")

    monkeypatch.setattr(rest_json, "_walk", no_walk)
    monkeypatch.setattr(rest_json, "_decode_rows_exact", no_walk)
    arrays, _ = rest_json.decode_predict(rest_json.parse_json(body), F)
    np.testing.assert_array_equal(arrays["x"], rows.astype(np.float32))
    # Without the parse hint it still avoids the walk (leaf types are scanned at C speed).
    arrays, _ = rest_json.decode_predict(dict(orjson.loads(body)), F)
    assert arrays["x"].shape == (64, 784)


def test_row_unimplemented_dtype_not_wrapped():
    err = error(predict, {"instances": [[1.0]]}, infos(x=T.DT_HALF))
    assert err.code == Code.UNIMPLEMENTED
    assert err.message == "Conversion of JSON Value: 1.0 to type: half"


# ---- decode_predict: columnar -------------------------------------------------------------------

def test_columnar_bare_value():
    arrays, row = predict({"inputs": [[1, 2, 3]]})
    assert row is False and arrays["x"].shape == (1, 3) and arrays["x"].dtype == np.float32


def test_columnar_scalar_and_empty():
    assert predict({"inputs": 3})[0]["x"].shape == ()
    arrays, _ = predict({"inputs": []}, infos(x=T.DT_INT64))
    assert arrays["x"].shape == (0,) and arrays["x"].dtype == np.int64
    assert predict({"inputs": [[], []]})[0]["x"].shape == (2, 0)


def test_columnar_named_inputs():
    arrays, row = predict({"inputs": {"a": [[1.5]], "b": [1, 2, 3], "extra": "ignored"}}, AB)
    assert row is False
    assert arrays["a"].shape == (1, 1) and arrays["b"].tolist() == [1, 2, 3]


def test_columnar_single_input_by_name():
    arrays, _ = predict({"inputs": {"x": [1, 2]}})
    assert arrays["x"].tolist() == [1, 2]


def test_columnar_missing_input():
    assert predict_error({"inputs": {"a": [1]}}, AB) == "Missing named input: b in 'inputs' object."
    assert predict_error({"inputs": {"y": [1]}}) == "Missing named input: x in 'inputs' object."


def test_columnar_plain_value_with_several_inputs():
    assert predict_error({"inputs": [1, 2]}, AB) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
        "tensorinfo_map")


def test_columnar_errors_not_wrapped():
    assert predict_error({"inputs": [1.5]}, infos(x=T.DT_INT32)) == (
        "JSON Value: 1.5 Type: Number is not of expected type: int32")


def test_columnar_b64():
    s = infos(x=T.DT_STRING)
    assert predict({"inputs": {"b64": "aGk="}}, s)[0]["x"].tolist() == b"hi"
    assert predict({"inputs": [{"b64": "aGk"}]}, s)[0]["x"].tolist() == [b"hi"]  # padding optional


# ---- decode_predict: ragged ---------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ([[1, 2], [3]], "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ([[1], [2, 3]], "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
    ([[], [1]], "Encountered list at unexpected size: 1 at level: 1 expected size: 0"),
    ([[1, 2], 3], "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ([1, [2]], "Encountered list at unexpected level: 1 expected < 1"),
])
def test_ragged(value, message):
    assert predict_error({"inputs": value}) == message


# ---- decode_predict: value typing ---------------------------------------------------------------

def type_error(text, type_name, dtype):
    return f"JSON Value: {text} Type: {type_name} is not of expected type: {dtype}"


@pytest.mark.parametrize("dtype", [T.DT_FLOAT, T.DT_DOUBLE])
def test_float_takes_any_number(dtype):
    arrays, _ = predict({"inputs": [1, 2.5, -3, 1e-3]}, infos(x=dtype))
    assert arrays["x"].dtype == (np.float32 if dtype == T.DT_FLOAT else np.float64)
    np.testing.assert_allclose(arrays["x"], [1, 2.5, -3, 1e-3], rtol=1e-6)


@pytest.mark.parametrize("value, text, type_name", [
    (True, "true", "True"), (False, "false", "False"), (None, "null", "Null"),
    ("1.5", '"1.5"', "String"), ({"a": 1}, '{"a":1}', "Object"),
])
def test_float_rejects_non_numbers(value, text, type_name):
    assert predict_error({"inputs": [1.0, value]}) == type_error(text, type_name, "float")


def test_float_lossless_conversion():
    assert predict_error({"inputs": [16777217]}) == (
        "Cannot convert JSON value: 16777217 to float without loss of precision.")
    assert predict_error({"inputs": [0.5, 1e39]}) == "Cannot convert JSON value: 1e+39 to float without loss of precision."
    assert predict({"inputs": [16777217.0, 0.5]})[0]["x"].dtype == np.float32  # a float: rounds, as TF
    assert predict({"inputs": [1e39, 16777217]}, infos(x=T.DT_DOUBLE))[0]["x"].tolist() == [1e39, 16777217]


@pytest.mark.parametrize("dtype, name", [
    (T.DT_INT8, "int8"), (T.DT_INT16, "int16"), (T.DT_INT32, "int32"), (T.DT_UINT8, "uint8"),
    (T.DT_UINT16, "uint16"), (T.DT_INT64, "int64"), (T.DT_UINT32, "uint32"), (T.DT_UINT64, "uint64"),
])
def test_integer_dtypes_strict(dtype, name):
    arrays, _ = predict({"inputs": [[1, 2], [3, 0]]}, infos(x=dtype))
    assert arrays["x"].dtype.name == name and arrays["x"].tolist() == [[1, 2], [3, 0]]
    assert predict_error({"inputs": [1, 1.0]}, infos(x=dtype)) == type_error("1.0", "Number", name)
    assert predict_error({"inputs": [1, 1.5]}, infos(x=dtype)) == type_error("1.5", "Number", name)
    assert predict_error({"inputs": [1, True]}, infos(x=dtype)) == type_error("true", "True", name)
    assert predict_error({"inputs": ["1"]}, infos(x=dtype)) == type_error('"1"', "String", name)


@pytest.mark.parametrize("dtype, ok, bad", [
    (T.DT_UINT8, [0, 255], [256, -1]),
    (T.DT_INT8, [-128, 127], [128, -129]),
    (T.DT_INT32, [-(2**31), 2**31 - 1], [2**31]),
    (T.DT_INT64, [-(2**63), 2**63 - 1], [2**63]),
    (T.DT_UINT32, [0, 2**32 - 1], [-1, 2**32]),
    (T.DT_UINT64, [0, 2**64 - 1], [-1]),
])
def test_integer_ranges(dtype, ok, bad):
    assert predict({"inputs": ok}, infos(x=dtype))[0]["x"].tolist() == ok
    for value in bad:
        assert "is not of expected type" in predict_error({"inputs": [0, value]}, infos(x=dtype))


def test_bool():
    b = infos(x=T.DT_BOOL)
    arrays, _ = predict({"inputs": [[True, False]]}, b)
    assert arrays["x"].dtype == np.bool_ and arrays["x"].tolist() == [[True, False]]
    assert predict_error({"inputs": [True, 1]}, b) == type_error("1", "Number", "bool")
    assert predict_error({"inputs": [0]}, b) == type_error("0", "Number", "bool")


def test_string_unicode():
    arrays, _ = predict({"inputs": ["héllo", "日本", ""]}, infos(x=T.DT_STRING))
    assert arrays["x"].dtype == object
    assert arrays["x"].tolist() == ["héllo".encode(), "日本".encode(), b""]


def test_string_rejects_numbers_and_bad_b64():
    s = infos(x=T.DT_STRING)
    assert predict_error({"inputs": ["a", 1]}, s) == type_error("1", "Number", "string")
    assert predict_error({"inputs": [{"b64": "!!!"}]}, s) == "Unable to base64 decode"
    assert predict_error({"inputs": [{"b64": "aGk=", "x": 1}]}, s) == (
        'JSON Value: {"b64":"aGk=","x":1} not formatted correctly for base64 data')
    assert predict_error({"inputs": [{"b64": 3}]}, s) == 'JSON Value: {"b64":3} not formatted correctly for base64 data'


@pytest.mark.parametrize("dtype, name", [
    (T.DT_HALF, "half"), (T.DT_BFLOAT16, "bfloat16"), (T.DT_COMPLEX64, "complex64"), (T.DT_COMPLEX128, "complex128"),
])
def test_unimplemented_dtypes(dtype, name):
    err = error(predict, {"inputs": [1.5, 2]}, infos(x=dtype))
    assert err.code == Code.UNIMPLEMENTED and err.http_status == 501
    assert err.message == f"Conversion of JSON Value: 1.5 to type: {name}"


def test_nan_infinity_reach_float_arrays():
    arrays, _ = predict(b'{"instances": [[NaN, Infinity], [-Infinity, 1.5]]}')
    x = arrays["x"]
    assert x.dtype == np.float32 and math.isnan(x[0, 0]) and x[0, 1] == np.inf and x[1, 0] == -np.inf


def test_hidden_bool_with_parse():
    assert predict_error(b'{"inputs": [1.5, 0, true]}') == type_error("true", "True", "float")


def test_mixed_ints_and_floats_for_float():
    assert predict({"inputs": [[1, 2.5], [0, 1]]})[0]["x"].tolist() == [[1, 2.5], [0, 1]]


# ---- encode_predict_response --------------------------------------------------------------------

def decode(data: bytes):
    return json.loads(data)  # Python's json accepts NaN / Infinity


def test_row_single_output():
    data = rest_json.encode_predict_response({"y": np.array([[0.1, 2.0], [3.5, -1.0]], np.float32)}, True)
    assert decode(data) == {"predictions": [[0.1, 2.0], [3.5, -1.0]]}
    text = data.decode()
    assert "0.1," in text.replace("\n", "").replace(" ", "") and "2.0" in text  # shortest float32, whole .0
    assert "\n  " in text  # pretty-printed


def test_row_several_outputs():
    out = {"b": np.array([1, 2], np.int64), "a": np.array([[True], [False]])}
    assert decode(rest_json.encode_predict_response(out, True)) == {
        "predictions": [{"a": [True], "b": 1}, {"a": [False], "b": 2}]}


def test_row_batch_errors():
    err = error(rest_json.encode_predict_response, {"a": np.zeros(2), "b": np.zeros(3)}, True)
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    err = error(rest_json.encode_predict_response, {"a": np.zeros(2), "b": np.float32(1)}, True)
    assert err.message == "Tensor name: b has no shape information "
    assert decode(rest_json.encode_predict_response({"a": np.float32(1)}, False)) == {"outputs": 1.0}


def test_columnar_outputs():
    assert decode(rest_json.encode_predict_response({"y": np.array([1, 2], np.int32)}, False)) == {"outputs": [1, 2]}
    out = {"a": np.zeros((1, 2), np.float32), "b": np.array(7, np.uint64)}
    assert decode(rest_json.encode_predict_response(out, False)) == {"outputs": {"a": [[0.0, 0.0]], "b": 7}}


def test_empty_outputs():
    assert error(rest_json.encode_predict_response, {}, True).code == Code.INVALID_ARGUMENT


def test_string_outputs():
    out = {
        "img_bytes": np.array([b"\x00\xff", b"ok"], dtype=object),
        "label": np.array(["é".encode(), b"\xff"], dtype=object),
    }
    got = decode(rest_json.encode_predict_response(out, True))
    assert got == {"predictions": [
        {"img_bytes": {"b64": "AP8="}, "label": "é"},
        {"img_bytes": {"b64": "b2s="}, "label": "\ufffd"},
    ]}
    got = decode(rest_json.encode_predict_response({"s": np.array([[b"a"]], dtype=object)}, False))
    assert got == {"outputs": [["a"]]}


def test_non_finite_outputs():
    out = {"y": np.array([[np.nan, np.inf], [-np.inf, 0.1]], np.float32), "s": np.array([b"NaN", b"x"], dtype=object)}
    data = rest_json.encode_predict_response(out, True)
    text = data.decode()
    assert "NaN" in text and "-Infinity" in text and "null" not in text and "@@" not in text
    got = decode(data)["predictions"]
    assert math.isnan(got[0]["y"][0]) and got[0]["y"][1] == math.inf and got[1]["y"] == [-math.inf, 0.1]
    assert got[0]["s"] == "NaN"
    assert "0.1" in text and "0.10000000149" not in text  # float32 still printed shortest
    data = rest_json.encode_predict_response({"y": np.array(np.nan)}, False)
    assert data == b'{\n  "outputs": NaN\n}'


def test_numeric_output_kinds():
    out = {
        "u": np.array([2**64 - 1], np.uint64),
        "i8": np.array([-3], np.int8),
        "h": np.array([0.5], np.float16),
        "bf": np.array([1.5], ml_dtypes.bfloat16),
        "be": np.array([1.25], ">f4"),
        "t": np.arange(6, dtype=np.float64).reshape(2, 3).T[:1],  # not C-contiguous
    }
    got = decode(rest_json.encode_predict_response(out, False))["outputs"]
    assert got == {"u": [2**64 - 1], "i8": [-3], "h": [0.5], "bf": [1.5], "be": [1.25], "t": [[0.0, 3.0]]}


def test_complex_output_rejected():
    err = error(rest_json.encode_predict_response, {"c": np.array([1j], np.complex64)}, False)
    assert err.code == Code.INVALID_ARGUMENT and err.message == "Failed to write JSON value for tensor type: complex64"


# ---- classify / regress -------------------------------------------------------------------------

def features(example):
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value)) if kind else (None, [])
    return out


def test_input_from_json_example_list():
    doc = rest_json.parse_json(json.dumps({"examples": [
        {"s": "héllo", "b": {"b64": "AP8="}, "f": 1.5, "e": 2e0, "i": 3, "t": True, "fl": [1.5, 2.5], "il": [1, 2],
         "sl": ["a", {"b64": "aGk="}], "empty": []},
        {"x": False},
    ]}).encode())
    result = rest_json.input_from_json(doc, "classify")
    assert result.WhichOneof("kind") == "example_list"
    first, second = result.example_list.examples
    assert features(first) == {
        "s": ("bytes_list", ["héllo".encode()]), "b": ("bytes_list", [b"\x00\xff"]),
        "f": ("float_list", [1.5]), "e": ("float_list", [2.0]), "i": ("int64_list", [3]), "t": ("int64_list", [1]),
        "fl": ("float_list", [1.5, 2.5]), "il": ("int64_list", [1, 2]), "sl": ("bytes_list", [b"a", b"hi"]),
        "empty": (None, []),
    }
    assert features(second) == {"x": ("int64_list", [0])}


def test_input_from_json_with_context():
    result = rest_json.input_from_json({"context": {"c": 1}, "examples": [{"x": 0.5}]}, "regress")
    assert result.WhichOneof("kind") == "example_list_with_context"
    assert features(result.example_list_with_context.context) == {"c": ("int64_list", [1])}
    assert [features(e) for e in result.example_list_with_context.examples] == [{"x": ("float_list", [0.5])}]


@pytest.mark.parametrize("value, message", [
    (None, "Feature: f has element with unexpected JSON type: Null"),
    ([[1]], "Feature: f has element with unexpected JSON type: Array"),
    ({"a": 1}, "Feature: f has element with unexpected JSON type: Object"),
    ([1.5, 2], "Unexpected element type in feature: f expecting type: float"),
    ([1, 2.5], "Unexpected element type in feature: f expecting type: int64"),
    (["a", 1], "Unexpected element type in feature: f expecting type: bytes"),
    ([True, "a"], "Unexpected element type in feature: f expecting type: int64"),
    ([{"b64": "!"}], "Unable to base64 decode"),
    (2**63, "Feature: f has uint64 element. Only int64 is supported."),
    (1e39, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
])
def test_feature_errors(value, message):
    err = error(rest_json.input_from_json, {"examples": [{"f": value}]}, "classify")
    assert err.code == Code.INVALID_ARGUMENT and err.message == message


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_missing_examples(method):
    err = error(rest_json.input_from_json, {"context": {"a": 1}}, method)
    assert err.message == (
        'JSON Value: {"context":{"a":1}} When method is classify, key \'examples\' is expected and was not found')


def test_examples_shape_errors():
    assert error(rest_json.input_from_json, {"examples": 1}, "classify").message == (
        "JSON Value: {\"examples\":1} Expecting 'examples' value to be an list/array")
    assert error(rest_json.input_from_json, {"examples": []}, "classify").message == (
        "JSON Value: {\"examples\":[]} 'examples' value is an empty array")
    assert error(rest_json.input_from_json, {"examples": [3]}, "classify").message == (
        "Example must be JSON object but got JSON Number")
    assert "'signature_name' key must be a string" in error(
        rest_json.input_from_json, {"signature_name": [], "examples": [{}]}, "classify").message


def test_encode_classify_results():
    result = classification_pb2.ClassificationResult()
    first = result.classifications.add()
    first.classes.add(label="cat", score=0.1)
    first.classes.add(label="dog", score=0.9)
    result.classifications.add().classes.add(label="x", score=float("nan"))
    data = rest_json.encode_classify_results(result)
    got = decode(data)["results"]
    assert got[0] == [["cat", 0.1], ["dog", 0.9]] and got[1][0][0] == "x" and math.isnan(got[1][0][1])
    assert b"0.10000000149" not in data  # proto floats printed as float32, shortest
    assert error(rest_json.encode_classify_results, classification_pb2.ClassificationResult()).code == (
        Code.INVALID_ARGUMENT)


def test_encode_regress_results():
    result = regression_pb2.RegressionResult()
    for v in (1.5, 2.0, 0.3, float("-inf")):
        result.regressions.add(value=v)
    data = rest_json.encode_regress_results(result)
    assert decode(data) == {"results": [1.5, 2.0, 0.3, -math.inf]}
    assert b"2.0" in data and b"-Infinity" in data
    assert error(rest_json.encode_regress_results, regression_pb2.RegressionResult()).code == Code.INVALID_ARGUMENT


# ---- properties ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5)
    | st.builds(lambda s: {"b64": s}, st.sampled_from(["aGk=", "aGk", "!!", ""])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "x", "b64"]), children,
                                                                        max_size=3),
    max_leaves=12,
)
regular_lists = st.integers(min_value=1, max_value=3).flatmap(
    lambda n: st.lists(st.lists(st.one_of(st.integers(-300, 300), st.floats(-1e6, 1e6), st.booleans()),
                                min_size=n, max_size=n), min_size=1, max_size=3))
ALL_DTYPES = [T.DT_FLOAT, T.DT_DOUBLE, T.DT_INT8, T.DT_INT16, T.DT_INT32, T.DT_UINT8, T.DT_UINT16, T.DT_INT64,
              T.DT_UINT32, T.DT_UINT64, T.DT_BOOL, T.DT_STRING, T.DT_HALF, T.DT_COMPLEX64]
input_maps = st.one_of(
    st.sampled_from(ALL_DTYPES).map(lambda d: infos(x=d)),
    st.tuples(st.sampled_from(ALL_DTYPES), st.sampled_from(ALL_DTYPES)).map(lambda ds: infos(a=ds[0], b=ds[1])),
)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, key=st.sampled_from(["instances", "inputs", None]), input_infos=input_maps)
def test_decode_predict_never_raises_other_errors(value, key, input_infos):
    doc = value if key is None else {key: value}
    try:
        arrays, row_format = rest_json.decode_predict(doc, input_infos)
    except ServingError:
        return
    assert set(arrays) == set(input_infos) and row_format == (key == "instances")
    for alias, arr in arrays.items():
        assert isinstance(arr, np.ndarray)
        assert input_infos[alias].dtype not in (T.DT_HALF, T.DT_COMPLEX64)  # UNIMPLEMENTED, even when empty
        rest_json.encode_predict_response({alias: arr}, False)


def test_unsupported_dtype_with_an_empty_list_is_unimplemented():
    for dtype in (T.DT_COMPLEX64, T.DT_HALF):
        with pytest.raises(ServingError) as e:
            rest_json.decode_predict({"inputs": []}, infos(x=dtype))
        assert e.value.code == Code.UNIMPLEMENTED


@settings(max_examples=200, derandomize=True, deadline=None)
@given(value=regular_lists, dtype=st.sampled_from(ALL_DTYPES[:11]))
def test_fast_path_agrees_with_walk(value, dtype):
    fast = rest_json._fast_array(value, dtype, False)
    try:
        walked = rest_json._walk(value, dtype)
    except ServingError:
        assert fast is None
        return
    if fast is not None:
        assert fast.dtype == walked.dtype and fast.shape == walked.shape
        np.testing.assert_array_equal(fast, walked)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(body=st.binary(max_size=40) | json_values.map(lambda v: json.dumps({"inputs": v}).encode()))
def test_parse_json_only_raises_serving_errors(body):
    try:
        doc = rest_json.parse_json(body)
    except ServingError as err:
        assert err.code == Code.INVALID_ARGUMENT
        return
    try:
        rest_json.decode_predict(doc, F)
    except ServingError:
        pass
