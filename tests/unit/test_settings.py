"""Flags and config files: TF Serving's forms, defaults and error messages."""

import pytest

from server.core.policy import All, Latest, Specific
from server.settings import SettingsError, parse_flags, read_model_config_file, resolve_models


def test_defaults_are_tf_servings():
    s = parse_flags([])
    assert s.port == 8500
    assert s.model_name == "default"
    assert s.file_system_poll_wait_seconds == 1
    assert s.max_num_load_retries == 5 and s.load_retry_interval_micros == 60_000_000
    assert s.saved_model_tag_list == ["serve"]
    assert s.enable_serialization_as_tensor_content is False


def test_both_flag_forms_and_bare_booleans():
    s = parse_flags(["--port=9000", "--model_name", "m", "--enable_serialization_as_tensor_content",
                     "--saved_model_tags=serve,gpu", "--file_system_poll_wait_seconds", "-1"])
    assert (s.port, s.model_name, s.enable_serialization_as_tensor_content) == (9000, "m", True)
    assert s.saved_model_tag_list == ["serve", "gpu"]
    assert s.file_system_poll_wait_seconds == -1
    assert parse_flags(["--enable_serialization_as_tensor_content=false"]).enable_serialization_as_tensor_content is False


def test_unknown_and_unimplemented_flags_are_reported_not_fatal():
    s = parse_flags(["--bogus=1", "stray", "--platform_config_file=/x", "--rest_api_num_threads=4",
                     "--rest_api_port=8501"])
    assert s.unknown == ["--bogus=1", "stray"]
    assert s.unimplemented == ["platform_config_file", "rest_api_num_threads"]


@pytest.mark.parametrize("argv, text", [
    (["--port=abc"], "Invalid value for flag --port: 'abc'"),
    (["--port=70000"], "Invalid value for flag --port: 70000"),
    (["--enable_serialization_as_tensor_content=maybe"], "--enable_serialization_as_tensor_content"),
    (["--model_name"], "Flag --model_name needs a value"),
    (["--max_num_load_retries=-1"], "--max_num_load_retries"),
    (["--saved_model_tags=,"], "--saved_model_tags"),
    (["--rest_api_port=70000"], "Invalid value for flag --rest_api_port: 70000"),
    (["--rest_api_timeout_in_ms=-5"], "--rest_api_timeout_in_ms"),
])
def test_malformed_values(argv, text):
    with pytest.raises(SettingsError) as e:
        parse_flags(argv)
    assert text in str(e.value)
    assert "\n" not in str(e.value)


def _config(tmp_path, body):
    p = tmp_path / "models.config"
    p.write_text(body)
    return p


def test_config_file_models_and_policies(tmp_path):
    p = _config(tmp_path, """
model_config_list {
  config { name: "a" base_path: "/m/a" model_platform: "tensorflow" }
  config { name: "b" base_path: "/m/b/" model_platform: "tensorflow" model_version_policy { all {} } }
  config { name: "c" base_path: "/m/c" model_platform: "tensorflow"
           model_version_policy { specific { versions: 3 versions: 5 } } }
  config { name: "d" base_path: "/m/d" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } } version_labels { key: "stable" value: 3 } }
}""")
    models = resolve_models(parse_flags([f"--model_config_file={p}"]))
    assert [(m.name, m.base_path, m.policy) for m in models] == [
        ("a", "/m/a", Latest(1)), ("b", "/m/b", All()), ("c", "/m/c", Specific(frozenset({3, 5}))),
        ("d", "/m/d", Latest(2))]
    assert models[3].labels == {"stable": 3}


@pytest.mark.parametrize("body, text", [
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" }'
     ' config { name: "a" base_path: "/y" model_platform: "tensorflow" } }',
     "INVALID_ARGUMENT: Illegal to list model a multiple times in config list"),
    ('model_config_list { config { name: "a" base_path: "rel/a" model_platform: "tensorflow" } }',
     "INVALID_ARGUMENT: Expected model a to have an absolute path or URI; got base_path()=rel/a"),
    ('model_config_list { config { name: "a" base_path: "/x" } }',
     "INVALID_ARGUMENT: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
     "ModelServerConfig::model_platform, model name is a"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }',
     "Model a requested unsupported platform pytorch"),
    ('model_config_list { config { name: "a" base_path: "gs://bucket/a" model_platform: "tensorflow" } }',
     "Verso reads local directories only"),
    ('custom_model_config { }', "custom_model_config is not supported"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" ', "Invalid protobuf file"),
])
def test_config_errors(tmp_path, body, text):
    p = _config(tmp_path, body)
    with pytest.raises(SettingsError) as e:
        resolve_models(parse_flags([f"--model_config_file={p}"]))
    assert text in str(e.value)


def test_batching_flags(tmp_path):
    from server.settings import batching_options
    assert batching_options(parse_flags([])) is None
    o = batching_options(parse_flags(["--enable_batching", "--batching_latency_objective_ms=20"]))
    assert o.max_batch_size == 1000 and o.latency_objective_ms == 20.0
    p = tmp_path / "batching.config"
    p.write_text("max_batch_size { value: 16 } allowed_batch_sizes: 4 allowed_batch_sizes: 8")
    with pytest.raises(SettingsError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        batching_options(parse_flags(["--enable_batching", f"--batching_parameters_file={p}"]))
    with pytest.raises(SettingsError, match="requires --enable_batching"):
        parse_flags([f"--batching_parameters_file={p}"])


def test_missing_config_file_and_no_model():
    with pytest.raises(SettingsError, match="Cannot read model config file"):
        read_model_config_file("/nonexistent/models.config")
    with pytest.raises(SettingsError) as e:
        resolve_models(parse_flags([]))
    assert str(e.value) == "Both server_options.model_base_path and server_options.model_config_file are empty!"


def test_single_model_flags_and_bundled_root(tmp_path):
    models = resolve_models(parse_flags(["--model_base_path=/srv/m", "--model_name=m"]))
    assert [(m.name, m.base_path, m.policy) for m in models] == [("m", "/srv/m", Latest(1))]
    with pytest.raises(SettingsError, match="absolute path"):
        resolve_models(parse_flags(["--model_base_path=rel"]))
    # The bundled repository: relative base paths resolve against the config file's directory.
    p = _config(tmp_path, 'model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" } }')
    (m,) = resolve_models(parse_flags([]), bundled_config=str(p))
    assert m.base_path == str(tmp_path / "a")
    # Explicit model flags win over the bundled default.
    (m,) = resolve_models(parse_flags(["--model_base_path=/srv/x"]), bundled_config=str(p))
    assert m.base_path == "/srv/x"


def test_grpc_channel_arguments_parse_as_tf_serving():
    from server.settings import SettingsError, grpc_channel_arguments, parse_flags

    s = parse_flags(["--grpc_channel_arguments=grpc.max_receive_message_length=2000, grpc.x=abc,"])
    assert grpc_channel_arguments(s) == [("grpc.max_receive_message_length", 2000), ("grpc.x", "abc")]
    assert grpc_channel_arguments(parse_flags([])) == []
    with pytest.raises(SettingsError, match="expected key=value"):
        grpc_channel_arguments(parse_flags(["--grpc_channel_arguments=grpc.a"]))
