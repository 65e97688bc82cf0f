"""TF Serving's command line and config files -> ``Settings``.

The only module that reads flags (and, later, the environment). Accepts every flag of
``tensorflow_model_server`` in both ``--flag=value`` and ``--flag value`` forms, so existing
command lines work unchanged. Flags Verso does not implement yet are accepted and named in
one warning line; unknown flags are reported as TF Serving does (``unknown argument``) and
start-up continues. A malformed value or a bad config file raises ``SettingsError`` whose
text is the one line the CLI prints before exiting (for a file that does not parse, after
protobuf's error lines: server/textproto.py).

Nothing here imports TensorFlow's runtime, so flag errors are reported in milliseconds; the
one exception is ``--platform_config_file``, whose messages refer to TensorFlow's ConfigProto.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from tensorflow_serving.config import model_server_config_pb2

from server.lifecycle import model_config
from server.lifecycle.config_file import read_text
from protos.errors import ServingError
from server.lifecycle.model_config import TENSORFLOW_PLATFORM, ModelEntry
from server.textproto import TextProtoError, parse_text_proto


class SettingsError(Exception):
    """A start-up problem; ``str()`` is one line for the operator. ``log_lines`` come before
    it on stderr: protobuf's ``Error parsing text-format ...`` lines of an unparsable config
    file, whose ``str()`` is then TF Serving's ``INVALID_ARGUMENT: Invalid protobuf file: '<path>'``."""

    def __init__(self, message: str, log_lines: tuple[str, ...] = ()):
        super().__init__(message)
        self.log_lines = tuple(log_lines)


def _settings_error(e: ServingError) -> SettingsError:
    """The start-up error for a ServingError: its status line (and, for a file that does not
    parse, protobuf's error lines)."""
    if isinstance(e, TextProtoError):
        return SettingsError(e.status, e.errors)
    return SettingsError(str(e))


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _parse_int(text: str) -> int:
    v = int(text.strip(), 10)
    if not -(2**63) <= v < 2**63:
        raise ValueError("out of the int64 range")
    return v


def _parse_size(text: str) -> int:
    """A non-negative integer (a size or count limit; 0: derived from the server's memory)."""
    v = _parse_int(text)
    if v < 0:
        raise ValueError("must be >= 0")
    return v


def _parse_seconds(text: str) -> float:
    """A non-negative number of seconds (0: no timeout)."""
    v = _parse_float(text)
    if not v >= 0:
        raise ValueError("must be >= 0")
    return v


def _parse_float(text: str) -> float:
    return float(text.strip())


def _parse_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower().strip("[]") for n in text.split(",") if n.strip())
    for n in names:
        if not n or any(c in n for c in "/@ \t") or n.count(":") == 1:
            raise ValueError(f"{n!r} is not a host name or address (no port)")
    return names


def _parse_origins(text: str) -> tuple[str, ...]:
    from server.dataplane.admin import normalize_origin
    out = []
    for item in (o.strip() for o in text.split(",")):
        if not item:
            continue
        if item == "*":
            raise ValueError("'*' is not allowed here: list the origins (--rest_api_enable_cors_support is "
                             "TF Serving's any-origin CORS)")
        try:
            out.append(normalize_origin(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an origin (scheme://host[:port])") from None
    return tuple(out)


@dataclass(frozen=True)
class Flag:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    implemented: bool = True


def _flags() -> dict[str, Flag]:
    b, i, f, s = _parse_bool, _parse_int, _parse_float, str
    table = [
        Flag("port", i, 8500, "Port to listen on for gRPC API"),
        Flag("bind_address", s, "0.0.0.0", "Verso: address the gRPC server binds (TF Serving: always 0.0.0.0)"),
        Flag("grpc_socket_path", s, "", "Also serve gRPC on this UNIX domain socket (removed on exit)"),
        Flag("rest_api_port", i, 0, "Port for the HTTP/REST API (0 = off; `verso serve` defaults to 8501)"),
        Flag("rest_api_num_threads", i, 0, "Threads for HTTP/REST (Verso serves REST on its event loop)",
             implemented=False),
        Flag("rest_api_timeout_in_ms", i, 30000, "REST request timeout (0 = none) -> 504"),
        Flag("rest_api_enable_cors_support", b, False,
             "CORS headers for any origin on REST inference, status and metadata responses (never control routes)"),
        Flag("rest_api_cors_allowed_origins", _parse_origins, (),
             "Verso: comma-separated origins (scheme://host[:port]) a browser page may call every REST route from, "
             "control routes included (with the admin rule), and read Verso-Request-Id"),
        Flag("rest_api_allowed_hosts", _parse_names, (),
             "Verso: comma-separated Host names REST control calls may use besides localhost, loopback addresses, "
             "the address they came in on and this machine's host name (e.g. a load balancer's name)"),
        Flag("enable_batching", b, False, "Enable batching"),
        Flag("enable_per_model_batching_parameters", b, False, "Per-model batching params", implemented=False),
        Flag("allow_version_labels_for_unavailable_models", b, False,
             "Allow labels for versions that are not yet available"),
        Flag("batching_parameters_file", s, "", "BatchingParameters text proto"),
        Flag("batching_latency_objective_ms", f, 0.0,
             "Verso: adaptive batch size for this latency objective (0 = off; needs --enable_batching)"),
        Flag("model_config_file", s, "", "ModelServerConfig text proto (overrides --model_name/--model_base_path)"),
        Flag("model_config_file_poll_wait_seconds", i, 0, "Re-read the config file every N s"),
        Flag("model_name", s, "default", "Name of the model (ignored with --model_config_file)"),
        Flag("model_base_path", s, "", "Path above the version directories (ignored with --model_config_file)"),
        Flag("num_load_threads", i, 0, "Threads for loading versions"),
        Flag("num_unload_threads", i, 0, "Threads for unloading versions"),
        Flag("max_num_load_retries", i, 5, "Retries of a failed load"),
        Flag("load_retry_interval_micros", i, 60_000_000, "Wait between load retries (microseconds)"),
        Flag("file_system_poll_wait_seconds", i, 1,
             "Poll the file system for new versions every N s (0 = once at start, <0 = never again)"),
        Flag("enable_file_system_watch", b, True,
             "Verso: watch base paths with watchdog for fast pickup (polling always runs too)"),
        Flag("shutdown_grace_seconds", f, 10.0,
             "Verso: on SIGTERM/SIGINT, how long in-flight requests may take to finish"),
        Flag("version_settle_seconds", f, 1.0,
             "Verso: a new version directory must stay unchanged this long before it is loaded"),
        Flag("flush_filesystem_caches", b, True, "Flush file-system caches after loads", implemented=False),
        Flag("tensorflow_session_parallelism", i, 0,
             "Intra- and inter-op threads of every SavedModel session, unless the two flags below are set"),
        Flag("tensorflow_intra_op_parallelism", i, 0, "TF intra-op threads (0 = auto)"),
        Flag("tensorflow_inter_op_parallelism", i, 0, "TF inter-op threads (0 = auto)"),
        Flag("tensorflow_session_config_file", s, "",
             "tensorflow.ConfigProto text proto for every SavedModel session (thread and GPU flags override it)"),
        Flag("ssl_config_file", s, "", "SSLConfig text proto: TLS for gRPC (and REST)"),
        Flag("platform_config_file", s, "",
             "PlatformConfigMap text proto: the \"tensorflow\" SessionBundleConfig replaces the batching, "
             "tags, warmup, parallelism and TFLite flags"),
        Flag("per_process_gpu_memory_fraction", f, 0.0,
             "Fraction of each GPU's memory TensorFlow may take (0 = TensorFlow's choice)"),
        Flag("saved_model_tags", s, "serve", "Comma-separated tags of the MetaGraphDef to load"),
        Flag("grpc_channel_arguments", s, "",
             "k=v,k=v arguments for the gRPC server (e.g. grpc.max_receive_message_length=1048576)"),
        Flag("grpc_max_threads", i, 0, "gRPC threads", implemented=False),
        Flag("enable_model_warmup", b, True, "Replay assets.extra warmup requests"),
        Flag("num_request_iterations_for_warmup", i, 0, "Warmup iterations"),
        Flag("version", b, False, "Print the version and exit"),
        Flag("monitoring_config_file", s, "", "MonitoringConfig text proto (Prometheus on the REST port)"),
        Flag("max_tensor_bytes", i, 512 * 2**20,
             "Verso: refuse (RESOURCE_EXHAUSTED) a request input that would decode to more bytes, before allocating"),
        # Bounded work per request (server/dataplane/limits.py: derived_defaults says how 0 is derived).
        Flag("max_request_elements", _parse_size, 0,
             "Verso: refuse (RESOURCE_EXHAUSTED) a request whose inputs as filled, or outputs, hold more elements "
             "(0 = the server's memory / 64; memory = the cgroup limit, else physical memory)"),
        Flag("max_inflight_bytes", _parse_size, 0,
             "Verso: bytes all calls in flight may hold together (inputs as filled, bodies, outputs, answers); "
             "a call beyond it gets RESOURCE_EXHAUSTED (0 = the server's memory / 4)"),
        Flag("rest_api_max_body_bytes", _parse_size, 0,
             "Verso: largest REST request body after decompression (gzip/deflate); larger: 413 "
             "(0 = the server's memory / 16, at most 256 MiB)"),
        Flag("rest_api_header_timeout_seconds", _parse_seconds, 30.0,
             "Verso: close a REST connection that sends no complete request head for this long (slow or idle "
             "clients; 0 = never)"),
        Flag("rest_api_body_timeout_seconds", _parse_seconds, 60.0,
             "Verso: answer 408 and close a REST connection whose request body takes longer to arrive (0 = never)"),
        Flag("grpc_max_concurrent_rpcs", _parse_size, 4096,
             "Verso: gRPC calls handled at once; more get RESOURCE_EXHAUSTED, counted in "
             "verso_requests_rejected_total (0 = no limit)"),
        Flag("num_workers", i, 1,
             "Verso: server processes sharing the gRPC and REST ports (SO_REUSEPORT), supervised by this one"),
        Flag("rollout_config_file", s, "",
             "Verso: RolloutConfig text proto (canary split, shadow, staleness, verdict rules; protos/rollout.proto)"),
        Flag("admin_token_file", s, "",
             "Verso: file holding the bearer token that SetRollout, Feedback, ReloadConfig, the profiler (and their "
             "REST routes) must carry; empty: such calls only from this machine or mutual-TLS clients. `verso "
             "serve` default: $XDG_STATE_HOME/verso/admin.token, made with a random token (0600) when missing"),
        Flag("rollout_state_file", s, "",
             "Verso: SQLite file holding rollout state across restarts (roles, shares, final rollbacks, the "
             "decision log); empty: in memory. `verso serve` default: $XDG_STATE_HOME/verso/rollouts-KEY.sqlite, one per "
             "served configuration (KEY: a hash of the model config file's path, else the base path)"),
        Flag("rollout_config_file_poll_wait_seconds", i, 2,
             "Verso: re-read --rollout_config_file every N s and apply it when it changed (0 = never)"),
        Flag("remove_unused_fields_from_bundle_metagraph", b, True,
             "Keep only a SavedModel's SignatureDefs after it loads, not its whole MetaGraphDef"),
        Flag("prefer_tflite_model", b, False, "Serve a version's model.tflite (tf.lite.Interpreter) when it has one"),
        Flag("num_tflite_pools", i, 1, "TFLite interpreter pools per version"),
        Flag("num_tflite_interpreters_per_pool", i, 1, "TFLite interpreters per pool"),
        Flag("enable_signature_method_name_check", b, False, "", implemented=False),
        Flag("xla_cpu_compilation_enabled", b, False, "", implemented=False),
        Flag("xla_gpu_compilation_enabled", b, False, "", implemented=False),
        Flag("enable_profiler", b, False,
             "tensorflow.ProfilerService on the gRPC port, behind the admin rule (Verso: off by default; TF "
             "Serving: on)"),
        Flag("profiler_log_dir", s, "",
             "Verso: the one directory profiles are written under (outside every model base path); empty: "
             "`verso serve` $XDG_STATE_HOME/verso/profiles, else a new private temporary directory"),
        Flag("thread_pool_factory_config_file", s, "", "", implemented=False),
        Flag("mixed_precision", s, "", "", implemented=False),
        Flag("skip_initialize_tpu", b, False, "", implemented=False),
        Flag("use_alts_credentials", b, False, "", implemented=False),
        Flag("enable_grpc_healthcheck_service", b, True,
             "grpc.health.v1.Health service (Verso: on by default, for Kubernetes gRPC probes)"),
        Flag("enable_serialization_as_tensor_content", b, False,
             "Predict outputs in tensor_content instead of typed fields"),
    ]
    return {fl.name: fl for fl in table}


FLAGS = _flags()


@dataclass(frozen=True)
class Settings:
    """The flags, frozen: every flag of ``FLAGS`` by name (``settings.port``), each value of the
    type its ``Flag.parse`` gives. A changed copy comes from ``replace`` (the platform config
    file and ``verso serve``'s defaults are applied that way, once, in ``server_config``)."""

    values: Mapping[str, Any]
    explicit: frozenset[str]            # flags given on the command line
    unknown: tuple[str, ...]            # arguments reported as unknown
    unimplemented: tuple[str, ...]      # accepted flags Verso ignores for now

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **values: Any) -> "Settings":
        """A copy with these flag values (names of ``FLAGS`` only)."""
        unknown = set(values) - set(FLAGS)
        if unknown:
            raise KeyError(f"not flags: {sorted(unknown)}")
        return Settings(MappingProxyType({**self.values, **values}), self.explicit, self.unknown,
                        self.unimplemented)

    @property
    def saved_model_tag_list(self) -> list[str]:
        return [t.strip() for t in self.values["saved_model_tags"].split(",") if t.strip()]


def usage() -> str:
    lines = ["usage: tensorflow_model_server [--flag=value ...]", "Flags:"]
    for fl in FLAGS.values():
        note = "" if fl.implemented else "  (accepted, not implemented yet)"
        lines.append(f"  --{fl.name}={fl.default!r}  {fl.help}{note}")
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> Settings:
    """Parse TF Serving flags. Raises ``SettingsError`` on a malformed value."""
    values = {name: fl.default for name, fl in FLAGS.items()}
    explicit: set[str] = set()
    unknown: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            unknown.append(arg)
            continue
        name, eq, raw = arg.lstrip("-").partition("=")
        fl = FLAGS.get(name)
        if fl is None:
            unknown.append(arg)
            continue
        if not eq:
            if fl.parse is _parse_bool:
                raw = "true"
            elif i < len(argv):
                raw = argv[i]
                i += 1
            else:
                raise SettingsError(f"Flag --{name} needs a value")
        try:
            values[name] = fl.parse(raw)
        except ValueError as e:
            raise SettingsError(f"Invalid value for flag --{name}: {raw!r} ({e})") from None
        explicit.add(name)
    unimplemented = tuple(sorted(n for n in explicit if not FLAGS[n].implemented))
    settings = Settings(MappingProxyType(values), frozenset(explicit), tuple(unknown), unimplemented)
    _check_values(settings)
    return settings


_NON_NEGATIVE = ("max_num_load_retries", "load_retry_interval_micros", "num_request_iterations_for_warmup",
                 "shutdown_grace_seconds", "batching_latency_objective_ms", "version_settle_seconds",
                 "rest_api_timeout_in_ms", "max_tensor_bytes", "num_workers")


def _check_values(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise SettingsError(f"Invalid value for flag --port: {s.port} (expected 0..65535)")
    if s.port == 0 and not s.grpc_socket_path:
        raise SettingsError("server_options.grpc_port is not set.")  # TF Serving's text
    if s.num_tflite_pools < 1 or s.num_tflite_interpreters_per_pool < 1:
        raise SettingsError("--num_tflite_pools and --num_tflite_interpreters_per_pool must be >= 1")
    for name in _NON_NEGATIVE:
        if s.values[name] < 0:
            raise SettingsError(f"Invalid value for flag --{name}: must be >= 0")
    if s.num_load_threads < 0 or s.num_unload_threads < 0:
        raise SettingsError("--num_load_threads and --num_unload_threads must be >= 0")
    if s.batching_parameters_file and not s.enable_batching and not s.platform_config_file:
        # TF Serving checks this only without a platform config file, which replaces both flags.
        raise SettingsError("--batching_parameters_file requires --enable_batching")
    if s.tensorflow_intra_op_parallelism < 0 or s.tensorflow_inter_op_parallelism < 0 \
            or s.tensorflow_session_parallelism < 0:
        raise SettingsError("TensorFlow parallelism flags must be >= 0")
    if s.tensorflow_intra_op_parallelism > 0 and s.tensorflow_inter_op_parallelism > 0 \
            and s.tensorflow_session_parallelism > 0:
        raise SettingsError(  # TF Serving's text (model_servers/server.cc)
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all.")
    if not 0 <= s.per_process_gpu_memory_fraction <= 1:
        raise SettingsError("Invalid value for flag --per_process_gpu_memory_fraction: expected 0..1")
    if not 0 <= s.rest_api_port <= 65535:
        raise SettingsError(f"Invalid value for flag --rest_api_port: {s.rest_api_port} (expected 0..65535)")
    if not s.saved_model_tag_list:
        raise SettingsError("Invalid value for flag --saved_model_tags: no tag given")


# ---- model config ---------------------------------------------------------------------------


def read_model_config_file(path: str, texts: Optional[dict[str, str]] = None
                           ) -> model_server_config_pb2.ModelServerConfig:
    """The model config file, read once (its text kept in ``texts`` for the polls) and parsed."""
    try:
        text = model_config.read_model_config_text(path)
        if texts is not None:
            texts[path] = text
        return model_config.parse_model_config(text, path)
    except ServingError as e:
        raise _settings_error(e) from None


def validate_model_config(config, root_dir: Optional[str] = None) -> list[ModelEntry]:
    try:
        return model_config.validate_model_config(config, root_dir)
    except ServingError as e:
        raise SettingsError(str(e)) from None


def batching_options(settings: Settings, platform: Optional[PlatformConfig] = None):
    """The batching options, or None when batching is off: with a platform config (see
    ``platform_config``), its ``batching_parameters``; else --enable_batching with
    --batching_parameters_file or TF Serving's defaults."""
    from server.batching.params import BatchingOptions, options_from_message, read_batching_parameters, validate
    objective = settings.batching_latency_objective_ms or None
    try:
        if platform is not None:
            if platform.batching is None:
                return None
            return options_from_message(platform.batching, latency_objective_ms=objective)
        if not settings.enable_batching:
            return None
        if settings.batching_parameters_file:
            return read_batching_parameters(settings.batching_parameters_file, latency_objective_ms=objective)
        return validate(BatchingOptions(latency_objective_ms=objective))
    except ServingError as e:
        raise _settings_error(e) from None


# ---- platform config ------------------------------------------------------------------------

# SessionBundleConfig fields Verso applies, and the flag each one replaces. TF Serving builds
# the SessionBundleConfig from these flags only without --platform_config_file; with one, the
# file's is used and the flags are ignored (tensorflow_serving/model_servers/server.cc).
_APPLIED_FIELDS = {
    "batching_parameters": "enable_batching",
    "saved_model_tags": "saved_model_tags",
    "enable_model_warmup": "enable_model_warmup",
    "model_warmup_options.num_request_iterations": "num_request_iterations_for_warmup",
    "session_config.intra_op_parallelism_threads": "tensorflow_intra_op_parallelism",
    "session_config.inter_op_parallelism_threads": "tensorflow_inter_op_parallelism",
    "prefer_tflite_model": "prefer_tflite_model",
    "num_tflite_pools": "num_tflite_pools",
    "num_tflite_interpreters_per_pool": "num_tflite_interpreters_per_pool",
}
_REPLACED_FLAGS = ("enable_batching", "batching_parameters_file", "enable_per_model_batching_parameters",
                   "per_process_gpu_memory_fraction", "tensorflow_session_parallelism",
                   "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
                   "tensorflow_session_config_file", "saved_model_tags", "enable_model_warmup",
                   "num_request_iterations_for_warmup", "remove_unused_fields_from_bundle_metagraph",
                   "prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool", "mixed_precision")


@dataclass(frozen=True)
class PlatformConfig:
    """What ``--platform_config_file`` says for the ``tensorflow`` platform.

    ``batching``: its ``BatchingParameters`` message, None when batching is off; ``ignored``:
    the fields it sets that Verso does not apply (``session_target``,
    ``model_warmup_options.num_model_warmup_threads``, other platforms' entries ...);
    ``replaced_flags``: flags given on the command line that the file replaces;
    ``flag_values``: the values it gives those flags (``Settings.replace``)."""

    batching: Any
    ignored: tuple[str, ...]
    replaced_flags: tuple[str, ...]
    session_config: bytes = b""  # its serialized tensorflow.ConfigProto, applied whole
    flag_values: Mapping[str, Any] = field(default_factory=dict)


def _set_fields(message, prefix: str = "") -> list[str]:
    return [prefix + field.name for field, _ in message.ListFields()]


def platform_config(settings: Settings, models: list[ModelEntry]) -> Optional[PlatformConfig]:
    """Read ``--platform_config_file`` (None without it); its ``flag_values`` replace the flags.

    The file is TF Serving's ``PlatformConfigMap``; the ``tensorflow`` entry's
    ``source_adapter_config`` is a ``google.protobuf.Any`` holding a
    ``SavedModelBundleSourceAdapterConfig`` whose ``legacy_config`` (a ``SessionBundleConfig``)
    gives batching, SavedModel tags (none: ``serve``), warmup (on only when set, since the field
    is a proto3 bool), warmup iterations, TF intra/inter-op threads and the TFLite settings, in
    place of their flags. Without a ``tensorflow`` entry, a ``tensorflow`` model is refused as
    TF Serving refuses it. Raises ``SettingsError``; reading it imports TensorFlow's protos."""
    path = settings.platform_config_file
    if not path:
        return None
    from tensorflow_serving.config import platform_config_pb2

    from protos.private_protos import SOURCE_ADAPTER_TYPE, platform_config_pool, source_adapter_config_class
    text = _read_config_text(path, "platform_config_file")
    try:
        config_map = parse_text_proto(text, platform_config_pb2.PlatformConfigMap(), path,
                                      descriptor_pool=platform_config_pool())
    except TextProtoError as e:
        raise _settings_error(e) from None
    ignored = [f"platform_configs[{name!r}]" for name in sorted(config_map.platform_configs)
               if name != TENSORFLOW_PLATFORM]
    adapter = source_adapter_config_class()()
    if TENSORFLOW_PLATFORM in config_map.platform_configs:
        packed = config_map.platform_configs[TENSORFLOW_PLATFORM].source_adapter_config
        if not packed.Unpack(adapter):
            raise SettingsError(f"--platform_config_file {path}: the {TENSORFLOW_PLATFORM} platform's "
                                f"source_adapter_config must hold a {SOURCE_ADAPTER_TYPE}, not "
                                f"{packed.type_url or 'nothing'}")
    else:
        # ServerCore::CreateStoragePathRoutes' check; the empty SessionBundleConfig below
        # leaves the other platforms (Verso's keras and onnx) with batching and warmup off.
        for m in models:
            if m.platform == TENSORFLOW_PLATFORM:
                raise SettingsError(f"INVALID_ARGUMENT: Model {m.name} requests unsupported platform "
                                    f"{TENSORFLOW_PLATFORM}")
    c = adapter.legacy_config
    threads = {}
    for name in ("intra_op_parallelism_threads", "inter_op_parallelism_threads"):
        threads[name] = getattr(c.session_config, name)
        if threads[name] < 0:
            raise SettingsError(f"--platform_config_file {path}: session_config.{name} must be >= 0")
    v: dict[str, Any] = {}
    v["enable_batching"] = c.HasField("batching_parameters")
    v["saved_model_tags"] = ",".join(c.saved_model_tags) or "serve"
    v["enable_model_warmup"] = c.enable_model_warmup
    iterations = c.model_warmup_options.num_request_iterations
    v["num_request_iterations_for_warmup"] = max(iterations.value, 0) \
        if c.model_warmup_options.HasField("num_request_iterations") else 0  # 0: once, TF Serving's default
    v["tensorflow_intra_op_parallelism"] = threads["intra_op_parallelism_threads"]
    v["tensorflow_inter_op_parallelism"] = threads["inter_op_parallelism_threads"]
    v["prefer_tflite_model"] = c.prefer_tflite_model
    v["num_tflite_pools"] = max(c.num_tflite_pools, 1)  # TF Serving: max(1, n)
    v["num_tflite_interpreters_per_pool"] = max(c.num_tflite_interpreters_per_pool, 1)
    for name in _set_fields(c) + _set_fields(c.session_config, "session_config.") \
            + _set_fields(c.model_warmup_options, "model_warmup_options."):
        if name not in _APPLIED_FIELDS and name not in ("session_config", "model_warmup_options") \
                and not name.startswith("session_config."):
            ignored.append(name)
    return PlatformConfig(batching=c.batching_parameters if c.HasField("batching_parameters") else None,
                          ignored=tuple(ignored),
                          replaced_flags=tuple(f for f in _REPLACED_FLAGS if f in settings.explicit),
                          session_config=c.session_config.SerializeToString(),
                          flag_values=MappingProxyType(v))


@dataclass(frozen=True)
class SessionOptions:
    """How every SavedModel's TensorFlow session is configured (TF Serving's
    ``SessionBundleConfig.session_config``): ``config``, a serialized ``tensorflow.ConfigProto``
    (from ``--tensorflow_session_config_file`` or the platform config file; empty: defaults),
    then the thread counts and GPU memory fraction of the flags where they are non-zero."""

    config: bytes = b""
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    gpu_memory_fraction: float = 0.0


def session_options(settings: Settings, platform: Optional[PlatformConfig] = None) -> SessionOptions:
    """The sessions' configuration. With a platform config file, its ``session_config`` as it
    is (it replaces the flags, as in TF Serving). Otherwise ``--tensorflow_session_config_file``
    (parsed now: a bad file stops the start with protobuf's error; reading it imports
    TensorFlow's protos), then ``--tensorflow_intra_op_parallelism`` /
    ``--tensorflow_inter_op_parallelism`` when either is set, else
    ``--tensorflow_session_parallelism`` for both, and ``--per_process_gpu_memory_fraction``."""
    if platform is not None:
        return SessionOptions(config=platform.session_config)
    config = b""
    path = settings.tensorflow_session_config_file
    if path:
        from tensorflow.core.protobuf import config_pb2
        text = _read_config_text(path, "tensorflow_session_config_file")
        try:
            config = parse_text_proto(text, config_pb2.ConfigProto(), path).SerializeToString()
        except TextProtoError as e:
            raise _settings_error(e) from None
    intra, inter = settings.tensorflow_intra_op_parallelism, settings.tensorflow_inter_op_parallelism
    if not intra and not inter:
        intra = inter = settings.tensorflow_session_parallelism
    return SessionOptions(config, intra, inter, settings.per_process_gpu_memory_fraction)


def _read_config_text(path: str, flag: str) -> str:
    try:
        return read_text(path)
    except OSError as e:
        raise SettingsError(f"Cannot read --{flag} {path}: {e.strerror}") from None


def prometheus_path(settings: Settings) -> Optional[str]:
    """The Prometheus path when --monitoring_config_file enables it, else None.

    As TF Serving: the default path is /monitoring/prometheus/metrics; metrics are served
    only on the REST port (``verso serve`` turns them on by default with that path).
    """
    if not settings.monitoring_config_file:
        return None
    from protos.private_protos import MonitoringConfig
    text = _read_config_text(settings.monitoring_config_file, "monitoring_config_file")
    try:
        config = parse_text_proto(text, MonitoringConfig(), settings.monitoring_config_file)
    except TextProtoError as e:
        raise _settings_error(e) from None
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or "/monitoring/prometheus/metrics"
    if not path.startswith("/"):
        raise SettingsError(f"Invalid MonitoringConfig in {settings.monitoring_config_file}: prometheus path "
                            f"must start with '/': {path}")
    return path


def bundled_repository() -> Path:
    """The bundled ``model_repository/``, found at run time next to the ``server`` package
    (a source checkout / editable install); ``VERSO_MODEL_REPOSITORY`` overrides it."""
    env = os.environ.get("VERSO_MODEL_REPOSITORY")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent / "model_repository").resolve()


def resolve_models(settings: Settings, *, bundled_config: Optional[str] = None,
                   texts: Optional[dict[str, str]] = None) -> list[ModelEntry]:
    """The models to serve: from --model_config_file, --model_base_path, or (``verso serve``
    with neither) the bundled repository's config with base paths relative to its directory.
    The config file's text goes into ``texts`` (path -> text)."""
    if settings.model_config_file and settings.model_config_file != bundled_config:
        return validate_model_config(read_model_config_file(settings.model_config_file, texts))
    if settings.model_base_path:
        config = model_server_config_pb2.ModelServerConfig()
        c = config.model_config_list.config.add()
        c.name = settings.model_name
        c.base_path = settings.model_base_path
        c.model_platform = TENSORFLOW_PLATFORM
        return validate_model_config(config)
    if bundled_config is not None:
        return validate_model_config(read_model_config_file(bundled_config, texts),
                                     root_dir=os.path.dirname(os.path.abspath(bundled_config)))
    raise SettingsError("Both server_options.model_base_path and server_options.model_config_file are empty!")


def rollout_configs(settings: Settings, texts: Optional[dict[str, str]] = None) -> dict:
    """``--rollout_config_file`` read and checked at start-up (model -> ModelRollout; its text
    goes into ``texts``); a file that cannot be read or is invalid stops the start with one line."""
    path = settings.rollout_config_file
    if not path:
        return {}
    from server.rollout.config import parse_rollout_config
    text = _read_config_text(path, "rollout_config_file")
    if texts is not None:
        texts[path] = text
    try:
        return parse_rollout_config(text, path)
    except TextProtoError as e:
        raise _settings_error(e) from None
    except ServingError as e:
        raise SettingsError(e.message) from None


def tls_config(settings: Settings):
    """``--ssl_config_file`` read and checked at start-up (a ``server.tls.TlsConfig``), or None."""
    if not settings.ssl_config_file:
        return None
    from server.tls import TlsConfigError, read_ssl_config
    try:
        return read_ssl_config(settings.ssl_config_file)
    except TlsConfigError as e:
        raise SettingsError(str(e)) from None
    except TextProtoError as e:
        raise _settings_error(e) from None


def grpc_channel_arguments(settings: Settings) -> list[tuple[str, object]]:
    """``--grpc_channel_arguments`` as gRPC server options, as TF Serving reads them: a
    comma-separated ``key=value`` list; integer values become ints, others stay strings. They
    override Verso's own (e.g. the INT32_MAX message-size limits)."""
    out: list[tuple[str, object]] = []
    for item in (p.strip() for p in settings.grpc_channel_arguments.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"Invalid --grpc_channel_arguments entry {item!r}: expected key=value")
        value = value.strip()
        try:
            out.append((key.strip(), int(value)))
        except ValueError:
            out.append((key.strip(), value))
    return out


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server is built from, checked: the flags (``settings``; with a platform
    config file already applied onto them) and what the config files say. Made once by
    ``server_config`` and passed down; nothing reads flags elsewhere."""

    settings: Settings
    models: tuple[ModelEntry, ...]
    batching: Any = None                   # server.batching.params.BatchingOptions, or None: off
    prometheus_path: Optional[str] = None  # where Prometheus text is served on the REST port
    rollouts: Mapping[str, Any] = field(default_factory=dict)  # model -> verso.rollout.ModelRollout
    tls: Any = None                        # server.tls.TlsConfig, or None: plain text
    session: SessionOptions = SessionOptions()
    config_root: Optional[str] = None      # where relative base paths resolve (bundled repository)
    platform: Optional[PlatformConfig] = None
    # The config files' texts as start-up read them (path -> text), for the polls to compare with.
    file_texts: Mapping[str, str] = field(default_factory=dict)
    admin_token: Optional[str] = field(default=None, repr=False)  # --admin_token_file's token


def server_config(settings: Settings, *, bundled_default: bool = False) -> ServerConfig:
    """From parsed flags to the checked configuration: the model config (the bundled
    repository's with ``bundled_default`` and no model flags), the platform config applied
    onto the flags, batching, rollouts, TLS, the sessions, the gRPC arguments and Prometheus.
    Raises ``SettingsError`` (one line for the operator)."""
    bundled: Optional[str] = None
    if bundled_default and not settings.model_config_file and not settings.model_base_path:
        bundled = str(bundled_repository() / "models.config")
        settings = settings.replace(model_config_file=bundled)
    texts: dict[str, str] = {}  # what the config polls compare with: the very text parsed here
    models = resolve_models(settings, bundled_config=bundled, texts=texts)
    platform = platform_config(settings, models)
    if platform is not None:
        settings = settings.replace(**platform.flag_values)
    batching = batching_options(settings, platform)
    rollouts = rollout_configs(settings, texts)
    tls = tls_config(settings)
    session = session_options(settings, platform)
    grpc_channel_arguments(settings)  # checked now: a bad entry is a start-up error
    metrics_path = prometheus_path(settings)
    if bundled_default:
        settings, metrics_path = verso_serve_defaults(settings, metrics_path)
    check_rollout_state_file(settings)
    return ServerConfig(settings, tuple(models), batching, metrics_path, rollouts, tls, session,
                        os.path.dirname(bundled) if bundled else None, platform, texts, admin_token(settings))


def check_rollout_state_file(settings: Settings) -> None:
    """A ``--rollout_state_file`` that cannot be used (read-only, unreadable, corrupt) does not
    stop the start: the server runs without rollout changes and says so (``server.app``), so
    that models keep serving. Only an empty path component is refused here."""
    path = settings.rollout_state_file
    if path and (path.endswith(os.sep) or os.path.isdir(path)):
        raise SettingsError(f"--rollout_state_file {path} is a directory, not a file")


def admin_token(settings: Settings) -> Optional[str]:
    """``--admin_token_file``'s token (its text, surrounding whitespace dropped), or None without
    the flag. `verso serve`'s default file is made first when missing (``default_admin_token``).
    An unreadable or empty file stops the start with one line."""
    path = settings.admin_token_file
    if not path:
        return None
    if "admin_token_file" not in settings.explicit and path == default_admin_token_file():
        return default_admin_token(path)
    token = _read_config_text(path, "admin_token_file").strip()
    if not token:
        raise SettingsError(f"--admin_token_file {path} is empty")
    return token


VERSO_REST_PORT = 8501


def default_state_file(settings: Optional[Settings] = None) -> str:
    """`verso serve`'s rollout state file, one per served configuration, so that two servers
    on one machine never take up each other's rollouts (issue 27):
    ``$XDG_STATE_HOME/verso/rollouts-KEY.sqlite`` (``~/.local/state`` without it, per the XDG
    base directory rules). KEY is the first 12 hex digits of the SHA-256 of what is served: the
    model config file's absolute real path (the bundled repository's included), else
    ``--model_name`` and ``--model_base_path``'s absolute real path. The same configuration
    restarted (or moved between worker processes) keeps its file; a copy of a repository served
    from elsewhere gets its own. Without settings (nothing served yet): ``rollouts.sqlite``."""
    from protos.local_paths import state_dir
    if settings is None:
        return os.path.join(state_dir(), "rollouts.sqlite")
    return os.path.join(state_dir(), f"rollouts-{served_configuration_key(settings)}.sqlite")


def served_configuration_key(settings: Settings) -> str:
    """What keys ``default_state_file``: a short hash of the served configuration's identity."""
    import hashlib
    if settings.model_config_file:
        what = "config:" + os.path.realpath(settings.model_config_file)
    else:
        what = f"model:{settings.model_name}:{os.path.realpath(settings.model_base_path)}"
    return hashlib.sha256(what.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def default_admin_token_file() -> str:
    """`verso serve`'s admin token file: ``$XDG_STATE_HOME/verso/admin.token``, where the
    ``verso`` command line looks for it (protos/local_paths.py)."""
    from protos.local_paths import admin_token_file
    return admin_token_file()


def default_admin_token(path: str) -> str:
    """The token of `verso serve`'s default file ``path``, made first when missing: 32 random
    bytes (URL-safe base64) in a file only this user may read (0600; its directory 0700),
    written whole before it appears (a temporary file linked into place, so that workers
    starting together all read the one that won). A file others may read, a link or anything
    but a regular file of this user stops the start with one line (a token others can read
    protects nothing)."""
    import secrets
    import stat
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.lexists(path):
            tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(secrets.token_urlsafe(32) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:  # another process made it first: use that one
                    pass
            finally:
                os.unlink(tmp)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise SettingsError(f"The admin token file {path} must be a regular file of this user that only "
                                    f"it may read (chmod 600 {path}), or pass --admin_token_file")
            token = f.read().strip()
    except OSError as e:
        raise SettingsError(f"Cannot make the admin token file {path}: {e.strerror or e}; pass "
                            f"--admin_token_file") from None
    if not token:
        raise SettingsError(f"The admin token file {path} is empty; remove it to get a new token")
    return token


def default_profiler_log_dir() -> str:
    """`verso serve`'s profile directory: ``$XDG_STATE_HOME/verso/profiles``."""
    from protos.local_paths import state_dir
    return os.path.join(state_dir(), "profiles")


DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def verso_serve_defaults(settings: Settings, metrics_path: Optional[str]) -> tuple[Settings, Optional[str]]:
    """`verso serve`: REST on TF Serving's conventional port 8501, Prometheus on its default
    path, rollout state in ``default_state_file()``, the admin token in
    ``default_admin_token_file()`` and profiles under ``default_profiler_log_dir()`` unless the
    flags say otherwise
    (`tensorflow_model_server` keeps TF Serving's defaults: REST and Prometheus off; rollout
    state in memory). Returns the settings and the metrics path to serve."""
    if "rest_api_port" not in settings.explicit:
        settings = settings.replace(rest_api_port=VERSO_REST_PORT)
    if "rollout_state_file" not in settings.explicit:
        settings = settings.replace(rollout_state_file=default_state_file(settings))
    if "admin_token_file" not in settings.explicit:  # an explicit empty value keeps the loopback rule alone
        settings = settings.replace(admin_token_file=default_admin_token_file())
    if "profiler_log_dir" not in settings.explicit:
        settings = settings.replace(profiler_log_dir=default_profiler_log_dir())
    if "monitoring_config_file" not in settings.explicit:
        return settings, DEFAULT_METRICS_PATH
    return settings, metrics_path

