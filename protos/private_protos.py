"""TF Serving config messages that the tensorflow-serving-api wheel does not ship.

Declared here field by field as in TF Serving's .proto files (names, numbers, types, labels,
wrapper types; tests/unit/test_private_protos.py holds the upstream table and the commits it
was read from), so text and wire formats are TF Serving's. Each file lives in a descriptor
pool of its own, never the default pool: a real copy registered later (by TensorFlow or a
user's import) cannot clash with it.

- ``BatchingParameters`` (``--batching_parameters_file``), ``MonitoringConfig`` and
  ``SSLConfig`` depend on nothing TensorFlow: reading them costs milliseconds.
- ``SessionBundleConfig`` (with ``BatchingParameters`` and ``ModelWarmupOptions``, as upstream
  in session_bundle_config.proto) and ``SavedModelBundleSourceAdapterConfig``
  (``--platform_config_file``) refer to TensorFlow's ``ConfigProto``, ``BatchingOptions`` and
  ``NamedTensorProto``, so ``platform_config_pool()`` imports TensorFlow's generated protos
  (seconds); it is called only when a platform config file is given.
"""

from __future__ import annotations

import functools
from typing import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _FD.TYPE_STRING, "bytes": _FD.TYPE_BYTES, "bool": _FD.TYPE_BOOL,
            "int32": _FD.TYPE_INT32, "int64": _FD.TYPE_INT64, "uint64": _FD.TYPE_UINT64,
            "double": _FD.TYPE_DOUBLE}

# Field tables: (name, number, type[, "repeated"][, "deprecated"]). ``type`` is a scalar name
# from _SCALARS or a message's full name with a leading dot.
BATCHING_PARAMETERS = [
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    ("allowed_batch_sizes", 6, "int64", "repeated"),
    ("pad_variable_length_inputs", 7, "bool"),
]
MODEL_WARMUP_OPTIONS = [
    ("num_request_iterations", 1, ".google.protobuf.Int32Value"),
    ("num_model_warmup_threads", 2, ".google.protobuf.Int32Value"),
    ("model_name", 3, "string"),
    ("model_version", 4, "int64"),
    ("enable_all_batch_sizes_warmup", 5, "bool"),
]
SESSION_BUNDLE_CONFIG = [
    ("session_target", 1, "string"),
    ("session_config", 2, ".tensorflow.ConfigProto"),
    ("batching_parameters", 3, ".tensorflow.serving.BatchingParameters"),
    ("in_graph_batching_parameters", 7, ".tensorflow.BatchingOptions"),
    ("session_run_load_threadpool_index", 4, ".google.protobuf.Int32Value"),
    ("experimental_transient_ram_bytes_during_load", 5, "uint64"),
    ("saved_model_tags", 6, "string", "repeated"),
    ("experimental_fixed_input_tensors", 778, ".tensorflow.NamedTensorProto", "repeated"),
    ("enable_model_warmup", 779, "bool"),
    ("model_warmup_options", 780, ".tensorflow.serving.ModelWarmupOptions"),
    ("enable_session_metadata", 781, "bool"),
    ("remove_unused_fields_from_bundle_metagraph", 782, "bool"),
    ("prefer_tflite_model", 783, "bool"),
    ("resource_estimation_uses_validation_result", 784, "bool"),
    ("num_tflite_interpreters", 785, "int32", "deprecated"),
    ("num_tflite_interpreters_per_pool", 786, "int32"),
    ("num_tflite_pools", 787, "int32"),
    ("wrap_session_with_no_threading_params", 788, "bool"),
    ("enable_per_model_batching_params", 789, "bool"),
    ("enable_saved_model_config", 790, "bool"),
    ("mixed_precision", 791, "string"),
]

SESSION_BUNDLE_CONFIG_FILE = "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
SOURCE_ADAPTER_FILE = "tensorflow_serving/servables/tensorflow/saved_model_bundle_source_adapter.proto"
SOURCE_ADAPTER_TYPE = "tensorflow.serving.SavedModelBundleSourceAdapterConfig"


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, file, added: set[str]) -> None:
    """Add ``file`` (a FileDescriptor) to ``pool`` after the files it imports."""
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_with_dependencies(pool, dependency, added)
    pool.AddSerializedFile(file.serialized_pb)
    added.add(file.name)


def add_fields(message: descriptor_pb2.DescriptorProto, fields: list[tuple], package: str) -> None:
    """Add a field table to ``message`` (declared in ``package``). Each entry is
    ``(name, number, type, *flags)``: ``type`` is a scalar name from ``_SCALARS``, a message's
    full name with a leading dot, or ``"enum"`` / ``"map"`` followed by the enum's (the map
    value message's) full name; flags are ``"repeated"`` and ``"deprecated"``. A ``map<string,
    V>`` becomes a nested ``XxxEntry`` message, as protoc writes it."""
    for field, number, kind, *flags in fields:
        type_name = flags.pop(0) if kind in ("enum", "map") else None
        unknown = set(flags) - {"repeated", "deprecated"}
        if unknown:
            raise ValueError(f"{message.name}.{field}: unknown flags {sorted(unknown)}")
        label = _FD.LABEL_REPEATED if "repeated" in flags else _FD.LABEL_OPTIONAL
        if kind == "map":
            entry = message.nested_type.add(name="".join(p.title() for p in field.split("_")) + "Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=_FD.LABEL_OPTIONAL, type=_FD.TYPE_STRING)
            entry.field.add(name="value", number=2, label=_FD.LABEL_OPTIONAL, type=_FD.TYPE_MESSAGE,
                            type_name=type_name)
            fd = message.field.add(name=field, number=number, label=_FD.LABEL_REPEATED, type=_FD.TYPE_MESSAGE,
                                   type_name=f".{package}.{message.name}.{entry.name}")
        elif kind == "enum":
            fd = message.field.add(name=field, number=number, label=label, type=_FD.TYPE_ENUM, type_name=type_name)
        elif kind.startswith("."):
            fd = message.field.add(name=field, number=number, label=label, type=_FD.TYPE_MESSAGE, type_name=kind)
        else:
            fd = message.field.add(name=field, number=number, label=label, type=_SCALARS[kind])
        if "deprecated" in flags:
            fd.options.deprecated = True


def declare_message(file_name: str, package: str, messages: dict[str, list[tuple]],
                    dependencies: Iterable = ()) -> dict[str, type]:
    """Declare the proto3 file ``file_name`` holding ``messages`` ({name: field table, see
    above}) in a new descriptor pool and return the message classes by name.

    ``dependencies`` are the files it imports: generated ``_pb2`` modules or FileDescriptors of
    files declared earlier (``Class.DESCRIPTOR.file``); they and their own imports are copied
    into the new pool first. Field types name messages of this file or of those files."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    files = [getattr(d, "DESCRIPTOR", d) for d in dependencies]
    for file in files:
        _add_with_dependencies(pool, file, added)
    f = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3",
                                           dependency=[file.name for file in files])
    for name, fields in messages.items():
        add_fields(f.message_type.add(name=name), fields, package)
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in messages}


# tensorflow_serving/servables/tensorflow/session_bundle_config.proto declares
# BatchingParameters next to SessionBundleConfig, whose ConfigProto field needs TensorFlow.
# --batching_parameters_file needs only this message: the same fields, in a file of its own.
BatchingParameters = declare_message(
    "verso/batching_parameters.proto", "tensorflow.serving", {"BatchingParameters": BATCHING_PARAMETERS},
    dependencies=(wrappers_pb2,))["BatchingParameters"]

_monitoring = declare_message("tensorflow_serving/config/monitoring_config.proto", "tensorflow.serving", {
    "PrometheusConfig": [("enable", 1, "bool"), ("path", 2, "string")],
    "MonitoringConfig": [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig")],
})
PrometheusConfig, MonitoringConfig = _monitoring["PrometheusConfig"], _monitoring["MonitoringConfig"]

SSLConfig = declare_message("tensorflow_serving/config/ssl_config.proto", "tensorflow.serving", {
    "SSLConfig": [("server_key", 1, "string"), ("server_cert", 2, "string"), ("custom_ca", 3, "string"),
                  ("client_verify", 4, "bool")],
})["SSLConfig"]


@functools.cache
def platform_config_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding session_bundle_config.proto and saved_model_bundle_source_adapter.proto
    (with TensorFlow's config.proto and named_tensor.proto): what a PlatformConfigMap's
    ``google.protobuf.Any`` values name. Imports TensorFlow's generated protos on first call."""
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2

    session = declare_message(SESSION_BUNDLE_CONFIG_FILE, "tensorflow.serving", {
        "ModelWarmupOptions": MODEL_WARMUP_OPTIONS,
        "SessionBundleConfig": SESSION_BUNDLE_CONFIG,
        "BatchingParameters": BATCHING_PARAMETERS,
    }, dependencies=(wrappers_pb2, config_pb2, named_tensor_pb2))
    adapter = declare_message(SOURCE_ADAPTER_FILE, "tensorflow.serving", {
        "SavedModelBundleSourceAdapterConfig": [
            ("legacy_config", 1000, ".tensorflow.serving.SessionBundleConfig"),
        ],
    }, dependencies=(session["SessionBundleConfig"].DESCRIPTOR.file,))
    return adapter["SavedModelBundleSourceAdapterConfig"].DESCRIPTOR.file.pool


def source_adapter_config_class() -> type:
    """``tensorflow.serving.SavedModelBundleSourceAdapterConfig`` from ``platform_config_pool()``."""
    return message_factory.GetMessageClass(platform_config_pool().FindMessageTypeByName(SOURCE_ADAPTER_TYPE))
