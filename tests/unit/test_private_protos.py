"""The config messages Verso declares itself (protos/private_protos.py) are TF Serving's, field
by field, and a batching file using every BatchingParameters field is read as TF Serving reads it."""

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from protos import private_protos
from server.batching.params import BatchingOptions, read_batching_parameters
from server.textproto import TextProtoError

_FD = descriptor_pb2.FieldDescriptorProto
OPT, REP = "LABEL_OPTIONAL", "LABEL_REPEATED"
MSG, STR, BOOL, I32, I64, U64 = "TYPE_MESSAGE", "TYPE_STRING", "TYPE_BOOL", "TYPE_INT32", "TYPE_INT64", "TYPE_UINT64"
INT64_VALUE, INT32_VALUE = ".google.protobuf.Int64Value", ".google.protobuf.Int32Value"

# The upstream definitions: {message: {field: (number, type, label, type name)}}, all proto3,
# package tensorflow.serving, as in github.com/tensorflow/serving:
# - tensorflow_serving/servables/tensorflow/session_bundle_config.proto at commit
#   9b6874d0952b0991c00af686a15b5f29dcb761f3 (ModelWarmupOptions, SessionBundleConfig,
#   BatchingParameters; the newest of the stored versions read: it has
#   in_graph_batching_parameters and mixed_precision, which older ones lack)
# - tensorflow_serving/servables/tensorflow/saved_model_bundle_source_adapter.proto at commit
#   46915c6de3f993d4385aaa1dd2cefcce9fbc658a
# - tensorflow_serving/config/monitoring_config.proto at commit
#   021efbd3281aa815cab0b35eab6d6d25249c12d4
# - tensorflow_serving/config/ssl_config.proto at commit 4bc435b55ae46a03192ba0191e3bd76d5cf5e17c
#   (the same fields as at b5d90c7537762dd379536b106d879c22db1a1688, which lacks go_package)
UPSTREAM = {
    "BatchingParameters": {
        "max_batch_size": (1, MSG, OPT, INT64_VALUE),
        "batch_timeout_micros": (2, MSG, OPT, INT64_VALUE),
        "max_enqueued_batches": (3, MSG, OPT, INT64_VALUE),
        "num_batch_threads": (4, MSG, OPT, INT64_VALUE),
        "thread_pool_name": (5, MSG, OPT, ".google.protobuf.StringValue"),
        "enable_large_batch_splitting": (8, MSG, OPT, ".google.protobuf.BoolValue"),
        "max_execution_batch_size": (9, MSG, OPT, INT64_VALUE),
        "allowed_batch_sizes": (6, I64, REP, ""),
        "pad_variable_length_inputs": (7, BOOL, OPT, ""),
    },
    "ModelWarmupOptions": {
        "num_request_iterations": (1, MSG, OPT, INT32_VALUE),
        "num_model_warmup_threads": (2, MSG, OPT, INT32_VALUE),
        "model_name": (3, STR, OPT, ""),
        "model_version": (4, I64, OPT, ""),
        "enable_all_batch_sizes_warmup": (5, BOOL, OPT, ""),
    },
    "SessionBundleConfig": {
        "session_target": (1, STR, OPT, ""),
        "session_config": (2, MSG, OPT, ".tensorflow.ConfigProto"),
        "batching_parameters": (3, MSG, OPT, ".tensorflow.serving.BatchingParameters"),
        "in_graph_batching_parameters": (7, MSG, OPT, ".tensorflow.BatchingOptions"),
        "session_run_load_threadpool_index": (4, MSG, OPT, INT32_VALUE),
        "experimental_transient_ram_bytes_during_load": (5, U64, OPT, ""),
        "saved_model_tags": (6, STR, REP, ""),
        "experimental_fixed_input_tensors": (778, MSG, REP, ".tensorflow.NamedTensorProto"),
        "enable_model_warmup": (779, BOOL, OPT, ""),
        "model_warmup_options": (780, MSG, OPT, ".tensorflow.serving.ModelWarmupOptions"),
        "enable_session_metadata": (781, BOOL, OPT, ""),
        "remove_unused_fields_from_bundle_metagraph": (782, BOOL, OPT, ""),
        "prefer_tflite_model": (783, BOOL, OPT, ""),
        "resource_estimation_uses_validation_result": (784, BOOL, OPT, ""),
        "num_tflite_interpreters": (785, I32, OPT, ""),  # [deprecated = true]
        "num_tflite_interpreters_per_pool": (786, I32, OPT, ""),
        "num_tflite_pools": (787, I32, OPT, ""),
        "wrap_session_with_no_threading_params": (788, BOOL, OPT, ""),
        "enable_per_model_batching_params": (789, BOOL, OPT, ""),
        "enable_saved_model_config": (790, BOOL, OPT, ""),
        "mixed_precision": (791, STR, OPT, ""),
    },
    "SavedModelBundleSourceAdapterConfig": {
        "legacy_config": (1000, MSG, OPT, ".tensorflow.serving.SessionBundleConfig"),
    },
    "PrometheusConfig": {
        "enable": (1, BOOL, OPT, ""),
        "path": (2, STR, OPT, ""),
    },
    "MonitoringConfig": {
        "prometheus_config": (1, MSG, OPT, ".tensorflow.serving.PrometheusConfig"),
    },
    "SSLConfig": {
        "server_key": (1, STR, OPT, ""),
        "server_cert": (2, STR, OPT, ""),
        "custom_ca": (3, STR, OPT, ""),
        "client_verify": (4, BOOL, OPT, ""),
    },
}
DEPRECATED = {("SessionBundleConfig", "num_tflite_interpreters")}


# Every message Verso declares: BatchingParameters twice, in its own file for
# --batching_parameters_file and in session_bundle_config.proto with the messages
# --platform_config_file needs (that pool imports TensorFlow's protos, so it is built in the test).
DECLARED = [
    ("BatchingParameters", lambda: private_protos.BatchingParameters.DESCRIPTOR),
    ("PrometheusConfig", lambda: private_protos.PrometheusConfig.DESCRIPTOR),
    ("MonitoringConfig", lambda: private_protos.MonitoringConfig.DESCRIPTOR),
    ("SSLConfig", lambda: private_protos.SSLConfig.DESCRIPTOR),
] + [(f"platform pool {name}", lambda name=name: private_protos.platform_config_pool().FindMessageTypeByName(
    f"tensorflow.serving.{name}"))
     for name in ("BatchingParameters", "ModelWarmupOptions", "SessionBundleConfig",
                  "SavedModelBundleSourceAdapterConfig")]


@pytest.mark.parametrize("find", [find for _, find in DECLARED], ids=[label for label, _ in DECLARED])
def test_declared_messages_are_tf_servings_field_by_field(find):
    descriptor = find()
    assert descriptor.full_name == f"tensorflow.serving.{descriptor.name}"
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    declared = {f.name: (f.number, _FD.Type.Name(f.type), _FD.Label.Name(f.label), f.type_name) for f in proto.field}
    expected = UPSTREAM[descriptor.name]
    assert sorted(set(expected) - set(declared)) == [], "missing"
    assert sorted(set(declared) - set(expected)) == [], "not upstream"
    for name, row in expected.items():
        assert declared[name] == row, name
    assert {f.name for f in proto.field if f.options.deprecated} == {
        field for message, field in DEPRECATED if message == descriptor.name}
    file = descriptor_pb2.FileDescriptorProto()
    descriptor.file.CopyToProto(file)
    assert (file.syntax, file.package) == ("proto3", "tensorflow.serving")
    assert descriptor.file.pool is not descriptor_pool.Default()  # a real copy registered later cannot clash


def test_every_declared_message_is_checked():
    assert {find().name for _, find in DECLARED} == set(UPSTREAM)


EVERY_FIELD = """
max_batch_size { value: 64 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 7 }
num_batch_threads { value: 3 }
thread_pool_name { value: "pool" }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 16 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
allowed_batch_sizes: 16
pad_variable_length_inputs: true
"""


def test_a_batching_file_with_every_field_is_read(tmp_path):
    from server.textproto import parse_text_proto
    message = parse_text_proto(EVERY_FIELD, private_protos.BatchingParameters(), "<text>")
    assert {f.name for f, _ in message.ListFields()} == set(UPSTREAM["BatchingParameters"])  # really every field
    path = tmp_path / "batching.config"
    path.write_text(EVERY_FIELD)
    assert read_batching_parameters(str(path)) == BatchingOptions(
        max_batch_size=64, batch_timeout_micros=1000, max_enqueued_batches=7, num_batch_threads=3,
        thread_pool_name="pool", allowed_batch_sizes=(4, 8, 16), pad_variable_length_inputs=True,
        enable_large_batch_splitting=True, max_execution_batch_size=16)
    path.write_text(EVERY_FIELD.replace("pad_variable_length_inputs: true", "pad_variable_length_inputs: false"))
    assert read_batching_parameters(str(path)).pad_variable_length_inputs is False


def test_pad_variable_length_inputs_is_a_plain_bool(tmp_path):
    # Upstream field 7 is `bool`, not google.protobuf.BoolValue: TF Serving refuses the wrapper
    # form, at the "{" where C++'s parser wants the ":" of a scalar field.
    path = tmp_path / "batching.config"
    path.write_text("pad_variable_length_inputs { value: true }\n")
    with pytest.raises(TextProtoError) as e:
        read_batching_parameters(str(path))
    assert e.value.errors == ('Error parsing text-format tensorflow.serving.BatchingParameters: 1:28: '
                              'Expected ":", found "{".',)
