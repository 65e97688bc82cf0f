"""Flags and config files: TF Serving's forms, defaults and error messages."""

import pytest

from server.lifecycle.policy import All, Latest, Specific
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
    s = parse_flags(["--bogus=1", "stray", "--grpc_max_threads=8", "--rest_api_num_threads=4",
                     "--platform_config_file=/x", "--rest_api_port=8501"])
    assert s.unknown == ("--bogus=1", "stray")
    assert s.unimplemented == ("grpc_max_threads", "rest_api_num_threads")


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


# ---- --platform_config_file -----------------------------------------------------------------

PLATFORM_CONFIG = """
platform_configs {
  key: "tensorflow"
  value {
    source_adapter_config {
      [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
        legacy_config {
          session_target: "local"
          session_config {
            intra_op_parallelism_threads: 2
            inter_op_parallelism_threads: 3
            gpu_options { allow_growth: true }
          }
          batching_parameters {
            max_batch_size { value: 32 }
            batch_timeout_micros { value: 100 }
            allowed_batch_sizes: 8
            allowed_batch_sizes: 32
            pad_variable_length_inputs: true
          }
          saved_model_tags: "serve"
          saved_model_tags: "gpu"
          enable_model_warmup: true
          model_warmup_options {
            num_request_iterations { value: 3 }
            num_model_warmup_threads { value: 2 }
          }
          num_tflite_pools: 2
        }
      }
    }
  }
}
"""


def _platform(tmp_path, text, *flags):
    from server.settings import platform_config
    p = tmp_path / "platform.config"
    p.write_text(text)
    settings = parse_flags([f"--platform_config_file={p}", "--model_base_path=/models/m", *flags])
    platform = platform_config(settings, resolve_models(settings))
    return settings.replace(**platform.flag_values), platform


def test_platform_config_replaces_the_tensorflow_flags(tmp_path):
    from server.batching.params import BatchingOptions
    from server.settings import batching_options
    settings, platform = _platform(tmp_path, PLATFORM_CONFIG, "--saved_model_tags=other",
                                   "--enable_model_warmup=false", "--tensorflow_intra_op_parallelism=7",
                                   "--batching_latency_objective_ms=20")
    assert settings.saved_model_tag_list == ["serve", "gpu"]
    assert settings.enable_model_warmup is True and settings.num_request_iterations_for_warmup == 3
    assert (settings.tensorflow_intra_op_parallelism, settings.tensorflow_inter_op_parallelism) == (2, 3)
    assert (settings.num_tflite_pools, settings.num_tflite_interpreters_per_pool) == (2, 1)
    # Batching as if --enable_batching with a file holding these parameters (unset: TF Serving's
    # defaults, thread pool "batch_threads"); Verso's latency objective still applies.
    assert settings.enable_batching is True
    assert batching_options(settings, platform) == BatchingOptions(
        max_batch_size=32, batch_timeout_micros=100, allowed_batch_sizes=(8, 32), pad_variable_length_inputs=True,
        thread_pool_name="batch_threads", latency_objective_ms=20.0)
    assert platform.ignored == ("session_target", "model_warmup_options.num_model_warmup_threads")
    # Its session_config is every SavedModel session's, whole (GPU options included).
    from tensorflow.core.protobuf import config_pb2

    from server.settings import session_options
    config = config_pb2.ConfigProto.FromString(session_options(settings, platform).config)
    assert config.gpu_options.ListFields() and config.intra_op_parallelism_threads == 2
    assert platform.replaced_flags == ("tensorflow_intra_op_parallelism", "saved_model_tags", "enable_model_warmup")


def test_platform_config_without_batching_turns_the_flags_off(tmp_path):
    from server.settings import batching_options
    text = """
        platform_configs { key: "tensorflow" value { source_adapter_config {
          [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] { legacy_config { } }
        } } }
        platform_configs { key: "x" value { } }
    """
    settings, platform = _platform(tmp_path, text, "--enable_batching", f"--batching_parameters_file={tmp_path}/b")
    # An empty SessionBundleConfig: no batching, tag "serve", warmup off (a proto3 bool), 1 iteration.
    assert batching_options(settings, platform) is None and settings.enable_batching is False
    assert settings.saved_model_tag_list == ["serve"] and settings.enable_model_warmup is False
    assert settings.num_request_iterations_for_warmup == 0  # the app's "once"
    assert platform.ignored == ("platform_configs['x']",)
    assert platform.replaced_flags == ("enable_batching", "batching_parameters_file")


@pytest.mark.parametrize("text, message", [
    ('platform_configs { key: "onnx" value { } }',
     "INVALID_ARGUMENT: Model default requests unsupported platform tensorflow"),
    ('platform_configs { key: "tensorflow" value { source_adapter_config { type_url: "x/y.Z" } } }',
     "the tensorflow platform's source_adapter_config must hold a "
     "tensorflow.serving.SavedModelBundleSourceAdapterConfig, not x/y.Z"),
    ('platform_configs { key: "tensorflow" value { source_adapter_config { '
     '[type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] { legacy_config { '
     'session_config { inter_op_parallelism_threads: -1 } } } } } }',
     "session_config.inter_op_parallelism_threads must be >= 0"),
])
def test_unusable_platform_configs_stop_the_start(tmp_path, text, message):
    with pytest.raises(SettingsError) as e:
        _platform(tmp_path, text)
    assert message in str(e.value)


def test_platform_config_that_does_not_parse(tmp_path):
    # The Any names a type the pool does not hold: C++'s parser says so at the token after "] "
    # (ConsumeAnyTypeUrlOrFullTypeName, then the type lookup), the "{" in column 96.
    text = 'platform_configs { key: "tensorflow" value { source_adapter_config { [type.googleapis.com/x.Y] { } } } }'
    with pytest.raises(SettingsError) as e:
        _platform(tmp_path, text)
    assert str(e.value) == f"INVALID_ARGUMENT: Invalid protobuf file: '{tmp_path}/platform.config'"
    assert e.value.log_lines == (
        'Error parsing text-format tensorflow.serving.PlatformConfigMap: 1:96: Could not find type '
        '"type.googleapis.com/x.Y" stored in google.protobuf.Any.',)


def test_no_platform_config_leaves_the_flags_alone():
    from server.settings import batching_options, platform_config
    settings = parse_flags(["--model_base_path=/m", "--enable_batching"])
    assert platform_config(settings, resolve_models(settings)) is None
    assert batching_options(settings, None).thread_pool_name == "model_server_batch_threads"


# ---- the SavedModel sessions' configuration ----------------------------------------------------------


def test_session_options_from_the_flags_as_tf_serving_combines_them(tmp_path):
    from tensorflow.core.protobuf import config_pb2

    from server.settings import session_options
    cfg = tmp_path / "session.config"
    cfg.write_text("intra_op_parallelism_threads: 7\nuse_per_session_threads: true\n"
                   "gpu_options { allow_growth: true }\n")
    o = session_options(parse_flags([f"--tensorflow_session_config_file={cfg}", "--tensorflow_session_parallelism=3"]))
    assert (o.intra_op_threads, o.inter_op_threads, o.gpu_memory_fraction) == (3, 3, 0.0)
    c = config_pb2.ConfigProto.FromString(o.config)
    assert c.intra_op_parallelism_threads == 7 and c.use_per_session_threads and c.gpu_options.allow_growth
    # The intra/inter flags win over --tensorflow_session_parallelism, as in TF Serving.
    o = session_options(parse_flags(["--tensorflow_intra_op_parallelism=2", "--tensorflow_session_parallelism=3",
                                     "--per_process_gpu_memory_fraction=0.5"]))
    assert (o.intra_op_threads, o.inter_op_threads, o.gpu_memory_fraction, o.config) == (2, 0, 0.5, b"")


@pytest.mark.parametrize("argv, text", [
    (["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
      "--tensorflow_session_parallelism=1"],
     "Either configure server_options.tensorflow_session_parallelism or (server_options."
     "tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) separately. "
     "You cannot configure all."),
    (["--per_process_gpu_memory_fraction=1.5"], "--per_process_gpu_memory_fraction"),
])
def test_session_flags_that_cannot_work_stop_the_start(argv, text):
    with pytest.raises(SettingsError) as e:
        parse_flags(argv)
    assert text in str(e.value)


def test_a_session_config_file_that_does_not_parse_is_tf_servings_error(tmp_path):
    from server.settings import session_options
    cfg = tmp_path / "session.config"
    cfg.write_text("intra_op_parallelism_threads: many\n")
    with pytest.raises(SettingsError) as e:
        session_options(parse_flags([f"--tensorflow_session_config_file={cfg}"]))
    assert str(e.value) == f"INVALID_ARGUMENT: Invalid protobuf file: '{cfg}'"
    assert list(e.value.log_lines) == ["Error parsing text-format tensorflow.ConfigProto: 1:31: "
                                 "Expected integer, got: many"]


def test_settings_are_frozen_and_changed_by_copy():
    import dataclasses
    s = parse_flags(["--port=9000"])
    with pytest.raises(TypeError):
        s.values["port"] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.values = {}
    t = s.replace(rest_api_port=8501)
    assert (s.rest_api_port, t.rest_api_port, t.port, t.explicit) == (0, 8501, 9000, {"port"})
    with pytest.raises(KeyError):
        s.replace(not_a_flag=1)


def test_startup_keeps_the_config_text_it_parsed(tmp_path):
    """One read of each polled config file at start-up: the text parsed is the text the polls
    compare with (server_config's file_texts)."""
    from server.settings import server_config
    models = tmp_path / "models.config"
    models.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path}/m" '
                      'model_platform: "tensorflow" } }')
    rollouts = tmp_path / "rollout.config"
    rollouts.write_text("")
    config = server_config(parse_flags([f"--model_config_file={models}", f"--rollout_config_file={rollouts}"]))
    assert dict(config.file_texts) == {str(models): models.read_text(), str(rollouts): ""}
    assert [m.name for m in config.models] == ["m"]


def test_verso_serves_default_state_file_is_one_per_served_configuration(tmp_path, monkeypatch):
    """Issue 27: one state file shared by every `verso serve` on the machine let a half_plus_two
    server take up another server's digits rollout. The default is now keyed by what is served."""
    import os

    from server.settings import default_state_file, verso_serve_defaults
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.config", tmp_path / "b.config"
    a.write_text(""), b.write_text("")
    os.symlink(a, tmp_path / "link.config")

    def state(*argv):
        served, _ = verso_serve_defaults(parse_flags(list(argv)), None)
        return served.rollout_state_file

    first = state(f"--model_config_file={a}")
    assert os.path.dirname(first) == str(tmp_path / "state" / "verso")
    assert os.path.basename(first).startswith("rollouts-") and first.endswith(".sqlite")
    assert first == default_state_file(parse_flags([f"--model_config_file={a}"]))
    # The same file however it is named: relative, through a symbolic link.
    assert state("--model_config_file=a.config") == first == state("--model_config_file=link.config")
    assert state(f"--model_config_file={b}") != first
    # Without a config file: the model name and base path.
    base = state("--model_name=m", f"--model_base_path={tmp_path}/m")
    assert base not in (first, state("--model_name=n", f"--model_base_path={tmp_path}/m"),
                        state("--model_name=m", f"--model_base_path={tmp_path}/other"))
    assert base == state("--model_name=m", "--model_base_path=m")
    # An explicit file (or the explicit empty value: in memory) is the operator's.
    assert state(f"--model_config_file={a}", "--rollout_state_file=/x/s.sqlite") == "/x/s.sqlite"
    assert state(f"--model_config_file={a}", "--rollout_state_file=") == ""
