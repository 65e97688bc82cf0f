"""Request builders and status helpers for the integration and end-to-end tests (official TF
Serving protos), and the ``verso`` command line run in process."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_management_pb2, predict_pb2

from server.lifecycle.policy import State


def predict_request(model: str, inputs: dict, version=None, signature: str = "", output_filter=()):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if signature:
        req.model_spec.signature_name = signature
    for alias, value in inputs.items():
        if hasattr(value, "SerializeToString"):  # already a TensorProto
            req.inputs[alias].CopyFrom(value)
        else:
            # The official way users build tensors: tf.make_tensor_proto (the oracle, not our codec).
            req.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    req.output_filter.extend(output_filter)
    return req


def status_request(model: str, version=None):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    return req


def metadata_request(model: str, version=None, fields=("signature_def",)):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    req.metadata_field.extend(fields)
    return req


def states(server, model: str) -> dict[int, State]:
    """{version: state} from GetModelStatus; {} when the model has no versions yet."""
    try:
        resp = server.model_stub.GetModelStatus(status_request(model), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return {}
        raise
    return {s.version: State(s.state) for s in resp.model_version_status}


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    try:
        call(*args, timeout=30, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError("expected the call to fail")


def y_of(response) -> np.ndarray:
    return tf.make_ndarray(response.outputs["y"])


_LINE = re.compile(r'^([^\s{]+)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(server, path="/monitoring/prometheus/metrics") -> tuple[dict, dict]:
    """({(name, frozenset(labels)): value}, {name: type}) from the Prometheus text."""
    status, headers, data = server.http("GET", path)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    samples, types = {}, {}
    for line in data.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


# ---- model configs and the half-plus models (version management tests) ----

X = np.array([2.0], np.float32)
FAST = ["--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.3", "--max_num_load_retries=0"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_block(name, path, extra=""):
    return f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }}\n'


def config_text(*blocks) -> str:
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def reload_request(text: str) -> model_management_pb2.ReloadConfigRequest:
    req = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, req.config)
    return req


def hp_answer(srv, model="hp", version=None, label=None):
    req = predict_request(model, {"x": X}, version=version)
    if label is not None:
        req.model_spec.version_label = label
    resp = srv.predict_stub.Predict(req, timeout=30)
    return resp.model_spec.version.value, float(y_of(resp)[0])


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def run_verso(*args: str, env: Optional[dict[str, str]] = None) -> CommandResult:
    """The ``verso`` client command line run in this process (``client.cli.verso_main``), its
    stdout and stderr captured, with ``COLUMNS=200`` and ``env`` set for the call (no
    ``VERSO_TARGET`` unless given). TensorFlow is already imported here (above), so the
    command's protos-only stand-in for it (client._light) stays out of this process."""
    from client.cli import verso_main
    changes = {"COLUMNS": "200", "VERSO_TARGET": None, **(env or {})}
    saved = {k: os.environ.get(k) for k in changes}
    out, err = io.StringIO(), io.StringIO()
    try:
        for k, v in changes.items():
            _set_env(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = verso_main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code
    finally:
        for k, v in saved.items():
            _set_env(k, v)
    return CommandResult(code, out.getvalue(), err.getvalue())


def _set_env(key: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def table_rows(text: str) -> list[list[str]]:
    """A rich table's body rows as cell lists (box-drawing characters dropped)."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in text.splitlines() if line.startswith("│")]


def first_table(text: str) -> dict[str, dict[str, str]]:
    """The first rich table of ``text``, by its headers: {first cell: {header: cell}} (the
    columns a command shows depend on the terminal's width, so tests find them by name)."""
    lines = text.splitlines()
    end = next(i for i, ln in enumerate(lines) if ln.startswith("└"))
    head = next(ln for ln in lines[:end] if ln.startswith("┃"))
    headers = [c.strip() for c in head.strip("┃").split("┃")]
    return {cells[0]: dict(zip(headers, cells)) for cells in table_rows("\n".join(lines[:end]))}


DIGITS = Path(REPO_ROOT) / "model_repository" / "digits"


@contextlib.contextmanager
def digits_server(root: Path, *flags: str):
    """An in-process server (``tests.server_proc.InProcessServer``) of copies of the demo digits
    v1 and v2 under ``root``, both served, with ``flags``; stopped on exit."""
    from tests.server_proc import InProcessServer

    for v in (1, 2):
        shutil.copytree(DIGITS / str(v), root / "digits" / str(v))
    config = root / "models.config"
    config.write_text(config_text(model_block("digits", root / "digits", "model_version_policy { all {} }")))
    srv = InProcessServer([f"--model_config_file={config}", *flags])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
