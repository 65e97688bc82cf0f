"""Config files that do not parse fail as TF Serving's do: protobuf's C++ lines
``Error parsing text-format <type>: <line>:<col>: <reason>`` and the status
``INVALID_ARGUMENT: Invalid protobuf file: '<path>'`` (server/textproto.py).

Where C++ points, and why (protobuf src/google/protobuf/text_format.cc and io/tokenizer.cc):
``ReportError(message)`` uses the tokenizer's *current* token, 0-based line and column, printed
+1. Columns count bytes, and a tab moves to the next multiple of 8 (``Tokenizer::NextChar``).
An unknown field is reported after ``ConsumeIdentifierBeforeWhitespace`` and
``TryConsumeWhitespace`` have consumed its name, so at the token *after* the name (a logged
C++ error shows it: ``caffe.SolverParameter: 1:5: ... has no field named "name".`` for a file
starting ``name:``, github.com/jolibrain/deepdetect/issues/88); Python's parser names the
field's own position. A bad enum name is reported after ``ConsumeIdentifier``, so at the next
token too. A value of the wrong kind (``Expected integer, got: ...``) is reported at the value,
not consumed. At the end of input the END token sits after the last byte.
"""

import asyncio
import logging

import pytest
from tensorflow_serving.config import model_server_config_pb2

from server.lifecycle.model_config import parse_model_config
from server.settings import (
    SettingsError,
    batching_options,
    parse_flags,
    platform_config,
    prometheus_path,
    read_model_config_file,
    rollout_configs,
    tls_config,
)
from server.textproto import TextProtoError, parse_text_proto

MSC = "Error parsing text-format tensorflow.serving.ModelServerConfig: "


def _errors(text: str) -> tuple[str, ...]:
    with pytest.raises(TextProtoError) as e:
        parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), "/models.config")
    assert e.value.message == "Invalid protobuf file: '/models.config'"
    return e.value.errors


@pytest.mark.parametrize("text, expected", [
    # TF Serving's own test file (bad_model_config.txt): C++ points at "formatted", the token after
    # the unknown name, column 12 (Python would say 1:1).
    ("improperly formatted file",
     '1:12: Message type "tensorflow.serving.ModelServerConfig" has no field named "improperly".'),
    # Unknown field on line 3: the ":" after "nam" (0-based column 7).
    ('model_config_list {\n  config {\n    nam: "a"\n  }\n}\n',
     '3:8: Message type "tensorflow.serving.ModelConfig" has no field named "nam".'),
    # Missing closing brace: ConsumeMessage asks ConsumeField for another field and finds the END
    # token, after the last newline (line 5, column 1), whose text is empty.
    ('model_config_list {\n  config {\n    name: "a"\n  }\n', "5:1: Expected identifier, got: "),
    # Bad enum value: reported once FOO is consumed, at the "}" on line 4.
    ("model_config_list {\n  config {\n    model_type: FOO\n  }\n}",
     '4:3: Unknown enumeration value of "FOO" for field "model_type".'),
    # A string where an int64 is expected: reported at the string, column 49.
    ('model_config_list {\n  config {\n    model_version_policy { specific { versions: "x" } }\n  }\n}',
     '3:49: Expected integer, got: "x"'),
    # Tabs: two tabs put "nam" at column 16 and its ":" at 19 (0-based).
    ('model_config_list {\n\tconfig {\n\t\tnam: "a"\n\t}\n}\n',
     '3:20: Message type "tensorflow.serving.ModelConfig" has no field named "nam".'),
    # Bytes: "é" is two bytes, so the ":" after "nam" is at byte 43 (character 42).
    ('model_config_list { config { name: "é" nam: "a" } }',
     '1:44: Message type "tensorflow.serving.ModelConfig" has no field named "nam".'),
    # A missing ":" before a scalar value.
    ('model_config_list { config { name "a" } }', '1:35: Expected ":", found ""a"".'),
    # A singular field twice (C++'s parser forbids overwrites): at the ":" of the second one.
    ('model_config_list { config { name: "a" name: "b" } }',
     '1:44: Non-repeated field "name" is specified multiple times.'),
    # Two members of the config oneof.
    ("model_config_list { } custom_model_config { }",
     '1:43: Field "custom_model_config" is specified along with field "model_config_list", another member '
     'of oneof "config".'),
    # Beyond the int64 range: reported at the number.
    ("model_config_list { config { model_version_policy { specific { versions: 99999999999999999999 } } } }",
     "1:74: Integer out of range (99999999999999999999)"),
])
def test_cpp_positions_and_reasons(text, expected):
    assert _errors(text) == (MSC + expected,)


def test_tokenizer_errors_come_first_and_parsing_goes_on():
    # An unterminated string: the tokenizer logs its error at the end of input and returns the
    # string; the parser then needs another field there. C++ logs both lines.
    assert _errors('model_config_list { config { name: "a } }') == (
        MSC + "1:42: Unexpected end of string.", MSC + "1:42: Expected identifier, got: ")


def test_python_position_when_cpp_would_accept():
    # C++'s text parser takes any bytes in a string; Python refuses invalid UTF-8 for a string
    # field. The port finds nothing, so Python's own position and reason are given in C++'s form.
    assert _errors('model_config_list { config { name: "\\xff" } }') == (
        MSC + "1:43: Couldn't parse string: 'utf-8' codec can't decode byte 0xff in position 0: "
              "invalid start byte",)


def test_str_is_the_status_and_the_lines_for_log_lines():
    with pytest.raises(TextProtoError) as e:
        parse_model_config("improperly formatted file", "/m.config")
    assert str(e.value) == ("INVALID_ARGUMENT: Invalid protobuf file: '/m.config'; " + MSC +
                            '1:12: Message type "tensorflow.serving.ModelServerConfig" has no field named '
                            '"improperly".')
    assert e.value.status == "INVALID_ARGUMENT: Invalid protobuf file: '/m.config'"


# ---- each config file kind, through the functions the CLI calls -------------------------------

def _bad_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _startup_error(call) -> SettingsError:
    with pytest.raises(SettingsError) as e:
        call()
    return e.value


def test_model_config_file(tmp_path):
    path = _bad_file(tmp_path, "models.config", "improperly formatted file")
    e = _startup_error(lambda: read_model_config_file(path))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    assert e.log_lines == (MSC + '1:12: Message type "tensorflow.serving.ModelServerConfig" has no field named '
                                 '"improperly".',)


def test_batching_parameters_file(tmp_path):
    path = _bad_file(tmp_path, "batching.config", "max_batch_size { value: 8 }\nnum_batch_threads: 4\n")
    settings = parse_flags(["--enable_batching", f"--batching_parameters_file={path}"])
    e = _startup_error(lambda: batching_options(settings))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    # A wrapper field needs a message: "{" or "<" where the 4 is.
    assert e.log_lines == ('Error parsing text-format tensorflow.serving.BatchingParameters: 2:20: '
                           'Expected "{", found "4".',)


def test_monitoring_config_file(tmp_path):
    path = _bad_file(tmp_path, "monitoring.config", "prometheus_config { enable: yes }")
    e = _startup_error(lambda: prometheus_path(parse_flags([f"--monitoring_config_file={path}"])))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    # The identifier is consumed before its value is judged: at the "}".
    assert e.log_lines == ('Error parsing text-format tensorflow.serving.MonitoringConfig: 1:33: '
                           'Invalid value for boolean field "enable". Value: "yes".',)


def test_ssl_config_file(tmp_path):
    path = _bad_file(tmp_path, "ssl.config", "server_key: 'x' server_cert: ")
    e = _startup_error(lambda: tls_config(parse_flags([f"--ssl_config_file={path}"])))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    assert e.log_lines == ("Error parsing text-format tensorflow.serving.SSLConfig: 1:30: Expected string, got: ",)


def test_platform_config_file(tmp_path):
    path = _bad_file(tmp_path, "platform.config", 'platform_configs { key: "tensorflow" value { x: 1 } }')
    settings = parse_flags([f"--platform_config_file={path}", "--model_base_path=/m"])
    e = _startup_error(lambda: platform_config(settings, []))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    assert e.log_lines == ('Error parsing text-format tensorflow.serving.PlatformConfigMap: 1:47: '
                           'Message type "tensorflow.serving.PlatformConfig" has no field named "x".',)


def test_rollout_config_file(tmp_path):
    # Verso's own message, reported the same way (its full name from rollout_pb2).
    path = _bad_file(tmp_path, "rollout.config", "models { nonsense: 1 }")
    e = _startup_error(lambda: rollout_configs(parse_flags([f"--rollout_config_file={path}"])))
    assert str(e) == f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    assert e.log_lines == ('Error parsing text-format verso.rollout.RolloutConfig: 1:18: '
                           'Message type "verso.rollout.ModelRollout" has no field named "nonsense".',)


def test_a_polled_file_that_stops_parsing_is_logged_with_the_same_text(tmp_path, caplog):
    """The config-file watch stepped by hand: the start-up text is not applied again, a text
    that does not parse is logged (protobuf's line) and not retried, a good one is applied."""
    from server.lifecycle.config_file import ConfigFileWatch
    path = tmp_path / "models.config"
    good = 'model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }'
    path.write_text(good)
    applied = []

    async def apply(text):
        applied.append(parse_model_config(text, str(path)))

    async def body():
        watch = ConfigFileWatch(str(path), apply, "model config file")
        await watch.prime()
        assert await watch.check() is False  # unchanged
        path.write_text("improperly formatted file")
        assert await watch.check() is False and await watch.check() is False  # refused once, not retried
        path.write_text(good.replace('"a"', '"b"'))
        assert await watch.check() is True
        path.unlink()
        assert await watch.check() is False  # unreadable: logged, nothing changes

    with caplog.at_level(logging.ERROR):
        asyncio.run(body())
    assert [c.model_config_list.config[0].name for c in applied] == ["b"]
    assert [r.getMessage() for r in caplog.records if "was not applied" in r.getMessage()] == [
        f"Model config file {path} was not applied: INVALID_ARGUMENT: Invalid protobuf file: '{path}'; " + MSC +
        '1:12: Message type "tensorflow.serving.ModelServerConfig" has no field named "improperly".']
    assert any(r.getMessage().startswith(f"Cannot read model config file {path}") for r in caplog.records)
