"""The checked-in modules of Verso's extension protos are what ``protos/generate.py`` makes."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from protos import rollout_pb2, rollout_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def _descriptor_of(path: Path) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto a generated *_pb2.py embeds, read without importing it (the
    default descriptor pool already holds the checked-in one)."""
    text = path.read_text()
    start = text.index("AddSerializedFile(") + len("AddSerializedFile(")
    end = text.index("')\n", start) + 1
    data = ast.literal_eval(text[start:end])  # a bytes literal written by protoc
    return descriptor_pb2.FileDescriptorProto.FromString(data)


def test_regeneration_changes_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("rollout_pb2.py", "rollout_pb2_grpc.py", "rollout_pb2.pyi"):
        fresh, checked_in = tmp_path / "protos" / name, ROOT / "protos" / name
        assert fresh.exists()
        if name == "rollout_pb2.py":
            # The schema itself, whatever protoc version stamped the header.
            assert _descriptor_of(fresh) == _descriptor_of(checked_in), "run python protos/generate.py"
        else:
            fresh_lines = [ln for ln in fresh.read_text().splitlines() if "GENERATED_VERSION" not in ln]
            checked_lines = [ln for ln in checked_in.read_text().splitlines() if "GENERATED_VERSION" not in ln]
            assert fresh_lines == checked_lines, f"{name} is stale: run python protos/generate.py"


def test_generated_modules_load_the_service():
    service = rollout_pb2.DESCRIPTOR.services_by_name["RolloutService"]
    assert [m.name for m in service.methods] == ["GetRollout", "SetRollout", "Feedback"]
    assert hasattr(rollout_pb2_grpc, "RolloutServiceStub")
    assert importlib.util.find_spec("protos.rollout_pb2").origin.endswith("protos/rollout_pb2.py")
