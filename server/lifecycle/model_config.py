"""The model config (TF Serving's ModelServerConfig): validation and the applied state.

``validate_model_config`` and ``validate_labels`` are pure and raise ``ServingError`` with
TF Serving's codes and messages. ``ServedModels`` owns the applied config on the event loop:
it tells the source which models to watch, keeps the version-label table, and applies a new
config (start-up, ``HandleReloadConfigRequest``, or the polled config file) as TF Serving's
``ServerCore::ReloadConfig`` does: validate, update labels, add/remove/change models, then
wait for the newly added ones. Reloads are serialised.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from tensorflow_serving.config import model_server_config_pb2

from protos.errors import Code, ServingError, invalid_argument
from server.lifecycle.config_file import read_text
from server.lifecycle.policy import All, Latest, Specific, State, VersionPolicy
from server.lifecycle.source import ServableConfig
from server.textproto import parse_text_proto

log = logging.getLogger("verso.config")

TENSORFLOW_PLATFORM, KERAS_PLATFORM, ONNX_PLATFORM = "tensorflow", "keras", "onnx"
# TF Serving's field chooses the loader (server/servables/loader.py): SavedModel, Keras 3, ONNX.
PLATFORMS = (TENSORFLOW_PLATFORM, KERAS_PLATFORM, ONNX_PLATFORM)


@dataclass(frozen=True)
class ModelEntry:
    """One model of a validated model config."""

    name: str
    base_path: str
    platform: str
    policy: VersionPolicy
    labels: Mapping[str, int] = field(default_factory=dict)


def _is_relative(path: str) -> bool:
    return "://" not in path and not os.path.isabs(path)


def _policy(config: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    p = config.model_version_policy
    which = p.WhichOneof("policy_choice")
    if which == "all":
        return All()
    if which == "specific":
        return Specific(frozenset(p.specific.versions))
    if which == "latest":
        return Latest(p.latest.num_versions or 1)
    return Latest(1)


def _platform(config: model_server_config_pb2.ModelConfig) -> str:
    if config.model_type:  # deprecated enum; TENSORFLOW = 1
        if config.model_platform:
            raise invalid_argument("Illegal setting both ModelServerConfig::model_type (deprecated) "
                                   "and ModelServerConfig::model_platform.")
        if config.model_type != 1:
            raise invalid_argument(f"ModelServerConfig::model_type choice {config.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not config.model_platform:
        raise invalid_argument("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                               f"ModelServerConfig::model_platform, model name is {config.name}")
    return config.model_platform


def validate_model_config(config: model_server_config_pb2.ModelServerConfig,
                          root_dir: Optional[str] = None) -> list[ModelEntry]:
    """TF Serving's checks of a ModelServerConfig, returning the models it describes.

    With ``root_dir`` (TF Serving's ``model_config_list_root_dir``) relative base paths are
    joined to it; without, every base path must be absolute.
    """
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise invalid_argument("custom_model_config is not supported; use model_config_list")
    if which is None:
        return []
    names: set[str] = set()
    for c in config.model_config_list.config:
        if c.name in names:
            raise invalid_argument(f"Illegal to list model {c.name} multiple times in config list")
        names.add(c.name)
    entries = []
    for c in config.model_config_list.config:
        base = c.base_path
        if root_dir is not None:
            if _is_relative(root_dir):
                raise invalid_argument(f"Expected non-empty absolute path or URI; got "
                                       f"model_config_list_root_dir={root_dir}")
            if _is_relative(base):
                base = os.path.join(root_dir, base)
        elif _is_relative(base):
            raise invalid_argument(f"Expected model {c.name} to have an absolute path or URI; "
                                   f"got base_path()={c.base_path}")
        platform = _platform(c)
        if platform not in PLATFORMS:
            raise invalid_argument(f"Model {c.name} requested unsupported platform {platform}")
        if "://" in base:
            raise invalid_argument(f"Model {c.name}: base_path {base} is a URI; Verso reads local directories only")
        entries.append(ModelEntry(c.name, os.path.normpath(base), platform, _policy(c),
                                  MappingProxyType(dict(c.version_labels))))
    return entries


def read_model_config_text(path: str) -> str:
    """The model config file's text; NOT_FOUND (``Cannot read model config file ...``) when
    it cannot be read."""
    try:
        return read_text(path)
    except OSError as e:
        raise ServingError(Code.NOT_FOUND, f"Cannot read model config file '{path}': {e.strerror}") from None


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    return parse_model_config(read_model_config_text(path), path)


def parse_model_config(text: str, path: str) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig text; raises ``server.textproto.TextProtoError`` (INVALID_ARGUMENT,
    TF Serving's ``Invalid protobuf file: '<path>'`` with protobuf's C++ error lines)."""
    return parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), path)


Labels = Mapping[str, Mapping[str, int]]


def validate_labels(entries: list[ModelEntry], available: Callable[[str], set[int]], current: Labels,
                    allow_unavailable: bool) -> Labels:
    """TF Serving's label rules; returns the new label table.

    Every label must point at an AVAILABLE version, except, with
    ``--allow_version_labels_for_unavailable_models``, a label that is new or unchanged
    (moving an existing label to an unavailable version is still refused).
    """
    table: dict[str, Mapping[str, int]] = {}
    for e in entries:
        if not e.labels:
            continue
        ready = available(e.name)
        old = current.get(e.name, {})
        for label, version in e.labels.items():
            is_change = label in old and old[label] != version
            if (not allow_unavailable or is_change) and version not in ready:
                raise ServingError(Code.FAILED_PRECONDITION,
                                   f"Request to assign label to version {version} of model {e.name}, "
                                   "which is not currently available for inference")
        table[e.name] = MappingProxyType(dict(e.labels))
    return MappingProxyType(table)


class ServedModels:
    """The applied model config. Owned by the event loop; ``apply`` calls are serialised.

    ``source`` is the FileSystemSource, ``manager`` the Manager; ``labels`` is read by request
    handlers to resolve ``version_label``.
    """

    def __init__(self, source, manager, *, allow_unavailable_labels: bool = False):
        self._source = source
        self._manager = manager
        self._allow_unavailable = allow_unavailable_labels
        self._lock = asyncio.Lock()
        self.entries: list[ModelEntry] = []
        self.labels: Labels = MappingProxyType({})

    def _available(self, name: str) -> set[int]:
        model = self._manager.snapshot.get(name)
        return set(model.versions) if model else set()

    async def apply(self, entries: list[ModelEntry], *, initial: bool = False) -> None:
        """Make ``entries`` the served config, as TF Serving's ReloadConfig.

        Reload: labels are validated against what is AVAILABLE *before* anything changes
        (FAILED_PRECONDITION leaves the old config serving); removed models are un-aspired
        (they drain and unload in the background); policy changes apply at once; then the
        call waits for the newly added models only (not for other models' loads or retries)
        and raises UNKNOWN if any did not become available. Start-up (``initial``): Verso validates labels *after* the first loads,
        since before them no version can be available (TF Serving's #1230).
        """
        async with self._lock:
            if not initial:
                self.labels = validate_labels(entries, self._available, self.labels, self._allow_unavailable)
            old_names = {e.name for e in self.entries}
            added = [e.name for e in entries if e.name not in old_names]
            removed = self._source.set_models([ServableConfig(e.name, e.base_path, e.policy) for e in entries])
            self.entries = list(entries)
            for name in removed:
                log.info("Model %s left the config: its versions drain and unload", name)
            await self._source.poll()
            if initial:
                # The port opens once every version has been tried: a model whose load fails
                # and waits to retry does not keep the others unreachable (TF Serving keeps its
                # port closed through all retries, then exits).
                await self._manager.run_until_attempted()
                try:
                    self.labels = validate_labels(entries, self._available, self.labels, self._allow_unavailable)
                except ServingError:
                    # A labelled version may still load on a retry: wait for it, as TF Serving.
                    await self._manager.run_until_idle()
                    self.labels = validate_labels(entries, self._available, self.labels, self._allow_unavailable)
            else:
                await self._manager.wait_for_loads(added)
            problems = self.unavailable(added)
            if problems and not initial:
                raise ServingError(Code.UNKNOWN, f"{len(problems)} model(s) did not become available: "
                                   + "{" + "".join(f"{{{p}}}, " for p in problems.values()) + "}")

    def unavailable(self, names: list[str]) -> dict[str, str]:
        """For each of ``names`` with no AVAILABLE version: why, in TF Serving's words where it has them."""
        out = {}
        by_name = {e.name: e for e in self.entries}
        for name in names:
            if self._available(name):
                continue
            statuses = self._manager.status(name)
            failed = [s for s in statuses if s.state == State.END and s.error is not None]
            retrying = [s for s in statuses if s.state == State.LOADING and s.retry_error is not None]
            if failed:
                s = failed[0]
                out[name] = f"name: {name} version: {s.version} due to error: {s.error}"
            elif retrying:
                s = retrying[0]
                out[name] = f"name: {name} version: {s.version} due to error: {s.retry_error} (load retries continue)"
            elif not os.path.isdir(by_name[name].base_path):
                out[name] = f"name: {name} due to error: base path {by_name[name].base_path} does not exist"
            else:
                out[name] = f"name: {name} due to error: no version found under base path {by_name[name].base_path}"
        return out
