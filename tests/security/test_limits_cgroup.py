"""The memory-limited run (issue 26): a child server in a cgroup v1 memory group of 1.5 GiB,
with no limit flag (its limits derived from the group's), survives the 35-byte Predict that
asks for 512 MiB (RESOURCE_EXHAUSTED) and a 1.9 MB gzip bomb that inflates to 1.9 GiB (413),
and still answers. Before: the first was OOM-killed, the second inflated by aiohttp.

Needs root and a writable cgroup v1 memory controller (/sys/fs/cgroup/memory); skipped without
them, failed when VERSO_REQUIRE_TOOLS is set (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import time
import zlib

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from tests.helpers import predict_request, y_of

MEMORY_ROOT = "/sys/fs/cgroup/memory"
LIMIT = 1536 * 2**20


def _unavailable(why: str) -> None:
    if os.environ.get("VERSO_REQUIRE_TOOLS"):
        pytest.fail(f"{why} (VERSO_REQUIRE_TOOLS is set)")
    pytest.skip(why)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@contextlib.contextmanager
def memory_group(limit: int):
    """A cgroup v1 memory group of this test's own with ``limit`` bytes (no swap beyond it);
    removed on exit, its processes moved back to the root group first."""
    if not os.path.isfile(os.path.join(MEMORY_ROOT, "cgroup.procs")):
        _unavailable(f"no cgroup v1 memory controller at {MEMORY_ROOT}")
    path = os.path.join(MEMORY_ROOT, f"verso-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.mkdir(path)
    except OSError as e:
        _unavailable(f"cannot make a memory cgroup ({e})")
    try:
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        with contextlib.suppress(OSError):  # only with swap accounting
            with open(os.path.join(path, "memory.memsw.limit_in_bytes"), "w") as f:
                f.write(str(limit))
        yield path
    finally:
        for _ in range(50):
            pids = _read(os.path.join(path, "cgroup.procs")).split()
            for pid in pids:
                with contextlib.suppress(OSError):
                    with open(os.path.join(MEMORY_ROOT, "cgroup.procs"), "w") as f:
                        f.write(pid)
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.1)


def gzip_bomb(size: int) -> bytes:
    """A valid gzip member of ``size`` zero bytes (a multiple of 1 MiB) in ~1/1000 of that:
    one compressed MiB, cut at a full flush so that its blocks stand alone, repeated."""
    mib = b"\0" * 2**20
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty final block
    n = size // len(mib)
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(mib, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + block * n + end
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def test_gzip_bomb_helper_makes_what_it_says():
    bomb = gzip_bomb(8 * 2**20)
    assert len(bomb) < 16_000
    assert zlib.decompress(bomb, 16 + zlib.MAX_WBITS) == b"\0" * (8 * 2**20)


def test_a_server_in_a_memory_limited_group_survives_the_35_byte_request_and_the_gzip_bomb(
        tmp_path, built_models, server_factory):
    import shutil
    shutil.copytree(built_models["ids"], tmp_path / "ids" / "1")
    shutil.copytree(built_models["hp1"], tmp_path / "hp" / "1")
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "ids" base_path: "{tmp_path / "ids"}" model_platform: "tensorflow" }}'
        f' config {{ name: "hp" base_path: "{tmp_path / "hp"}" model_platform: "tensorflow" }} }}\n')
    bomb = gzip_bomb(1900 * 2**20)
    assert len(bomb) < 2_000_000
    with memory_group(LIMIT) as group:
        # The shell moves itself into the group, then becomes the server: every byte it ever
        # allocates is counted there.
        enter = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"', sys.executable, "-m", "server"]
        srv = server_factory(f"--model_config_file={tmp_path / 'models.config'}", entry=enter, rest=True)
        assert f"cgroup memory limit: {LIMIT} bytes" in srv.output()

        req = predict_pb2.PredictRequest()
        req.model_spec.name = "ids"
        req.model_spec.signature_name = "id_float"
        req.inputs["x"].dtype = types_pb2.DT_FLOAT
        req.inputs["x"].tensor_shape.dim.add(size=134217728)
        assert req.ByteSize() <= 35
        with pytest.raises(grpc.RpcError) as e:
            srv.predict_stub.Predict(req, timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(--max_request_elements)" in e.value.details()

        status, _, answer = srv.http("POST", "/v1/models/ids:predict", bomb, timeout=60,
                                     headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert status == 413
        assert "(--rest_api_max_body_bytes)" in json.loads(answer)["error"]

        assert srv.alive()
        np.testing.assert_allclose(y_of(srv.predict_stub.Predict(predict_request("hp", {"x": [4.0]}), timeout=30)),
                                   [3.0])
        assert srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [4.0]}) == (200, {"predictions": [3.0]})
        # Never near the limit, never OOM-killed.
        assert int(_read(os.path.join(group, "memory.max_usage_in_bytes"))) < LIMIT * 0.9
        oom = dict(line.split() for line in _read(os.path.join(group, "memory.oom_control")).splitlines())
        assert oom.get("oom_kill", "0") == "0" and oom["under_oom"] == "0"
        srv.stop()
