"""server/dataplane/limits.py: the memory the server may use (cgroup v1/v2, physical), the
defaults derived from it, claims on the in-flight budget, rate-limited rejection lines; and the
REST body inflater (server/transports/rest.py)."""

from __future__ import annotations

import gzip
import logging
import zlib

import numpy as np
import pytest

from protos.errors import Code, ServingError
from server.dataplane.limits import (STRING_OVERHEAD, LimitExceeded, Rejections, RequestLimits, array_bytes,
                                     cgroup_memory_limit, derived_defaults, memory_limit)
from server.transports.rest import _Inflater


def _tree(tmp_path, proc: str, files: dict[str, str]):
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "proc"), str(tmp_path / "cg")


def test_cgroup_v1_limit_is_the_smallest_along_the_path(tmp_path):
    proc, root = _tree(tmp_path, "4:memory:/a/b\n3:cpu:/x\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",   # the root: no limit
        "memory/a/memory.limit_in_bytes": "2147483648\n",
        "memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert cgroup_memory_limit(proc, root) == 2 * 2**30


def test_cgroup_v2_limit_and_max(tmp_path):
    proc, root = _tree(tmp_path, "0::/pod/c\n", {"pod/memory.max": "max\n", "pod/c/memory.max": "1610612736\n"})
    assert cgroup_memory_limit(proc, root) == 1536 * 2**20
    (tmp_path / "n").mkdir()
    proc, root = _tree(tmp_path / "n", "0::/pod\n", {"pod/memory.max": "max\n"})
    assert cgroup_memory_limit(proc, root) is None


def test_no_cgroup_means_physical_memory(tmp_path):
    assert cgroup_memory_limit(str(tmp_path / "absent"), str(tmp_path)) is None
    memory, source = memory_limit()
    assert memory > 0 and source in ("cgroup memory limit", "physical memory")


def test_defaults_are_fractions_of_the_memory():
    d = derived_defaults(2 * 2**30)
    assert (d.max_inflight_bytes, d.max_request_elements, d.rest_max_body_bytes) == (2**29, 2**25, 2**27)
    # One 35-byte request for 134217728 floats is far past the element limit of a 2 GiB server.
    assert 134217728 > d.max_request_elements
    assert derived_defaults(2**40).rest_max_body_bytes == 256 * 2**20
    limits = RequestLimits.from_flags(0, 1000, d)
    assert (limits.max_elements, limits.budget.capacity) == (2**25, 1000)


def test_claims_take_and_always_give_back():
    limits = RequestLimits(max_elements=100, max_inflight_bytes=1000)
    with limits.claim() as a:
        a.input("x", 50, 400)
        with pytest.raises(LimitExceeded) as e:
            a.input("y", 51, 4)
        assert e.value.code == Code.RESOURCE_EXHAUSTED and e.value.reason == "elements"
        assert e.value.message == ("Request inputs need 101 elements (input y: 51), more than the limit of 100 "
                                   "(--max_request_elements)")
        b = limits.claim()
        with pytest.raises(LimitExceeded) as e:
            b.take(700, "The request")
        assert e.value.reason == "memory" and e.value.http_status == 429
        assert "400 of the server's in-flight memory budget of 1000 bytes are in use" in e.value.message
        b.release()
        with pytest.raises(LimitExceeded) as e:
            a.outputs([np.zeros(101, np.float32)])
        assert e.value.message.startswith("The response would hold 101 elements")
        a.outputs([np.zeros(10, np.float32), np.array([b"abc"], dtype=object)])
        assert limits.budget.used == 400 + 2 * (40 + 41 + 3)
    assert limits.budget.used == 0
    a.release()  # twice: nothing more given back
    assert limits.budget.used == 0
    with pytest.raises(LimitExceeded) as e:
        limits.claim().take(1001, "The request")
    assert "more than the server's in-flight memory budget of 1000 bytes" in e.value.message


def test_413_and_408_keep_their_codes():
    err = LimitExceeded(Code.RESOURCE_EXHAUSTED, "big", "body_size", http=413)
    assert isinstance(err, ServingError) and err.http_status == 413 and err.code == Code.RESOURCE_EXHAUSTED


def test_rejections_are_counted_each_and_logged_once_per_interval(caplog):
    counted = []

    class Metrics:
        def rejected(self, transport, reason):
            counted.append((transport, reason))

    now = [0.0]
    note = Rejections(Metrics(), every_s=10, clock=lambda: now[0])
    err = LimitExceeded(Code.RESOURCE_EXHAUSTED, "Too many", "concurrency")
    with caplog.at_level(logging.WARNING, "verso.limits"):
        for _ in range(5):
            note("gRPC", err)
        now[0] = 11
        note("gRPC", err)
    assert counted == [("gRPC", "concurrency")] * 6
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["gRPC call refused (concurrency, 1 since the last such line): Too many",
                     "gRPC call refused (concurrency, 5 since the last such line): Too many"]


def _inflate(encoding: str, data: bytes, chunk: int = 7, allowed: int = 1 << 30) -> bytes:
    inflater = _Inflater(encoding)
    out = b"".join(b"".join(inflater.feed(data[i:i + chunk], allowed)) for i in range(0, len(data), chunk))
    inflater.finish()
    return out


def test_inflater_streams_gzip_and_both_deflates():
    text = b"hello " * 1000
    assert _inflate("gzip", gzip.compress(text)) == text
    assert _inflate("gzip", gzip.compress(text[:5]) + gzip.compress(text[5:])) == text
    assert _inflate("deflate", zlib.compress(text)) == text
    raw = zlib.compressobj(wbits=-15)
    assert _inflate("deflate", raw.compress(text) + raw.flush()) == text


def test_inflater_never_inflates_more_than_allowed_per_step():
    bomb = gzip.compress(b"\0" * 10_000_000)
    inflater = _Inflater("gzip")
    steps = [len(part) for part in inflater.feed(bomb, 1000)]
    assert steps and max(steps) <= 1000


@pytest.mark.parametrize("encoding, data", [("gzip", b"not gzip"), ("gzip", gzip.compress(b"abc")[:-3]),
                                            ("deflate", zlib.compress(b"abc") + b"tail"), ("gzip", b"")])
def test_inflater_refuses_what_is_not_its_encoding(encoding, data):
    with pytest.raises(ServingError) as e:
        _inflate(encoding, data)
    assert e.value.code == Code.INVALID_ARGUMENT


def test_many_empty_gzip_members_are_still_bounded_by_what_was_sent():
    """Empty members inflate to nothing: the raw body is bounded too (413 in read_body); the
    inflater itself accepts them (gzip(1) does)."""
    assert _inflate("gzip", gzip.compress(b"") * 1000 + gzip.compress(b"x")) == b"x"


def test_array_bytes_of_a_string_array_past_32_dimensions():
    # A JSON body can nest 33 lists: numpy's flat iterator refused such an array (a 500 found by
    # tests/e2e/test_hypothesis_fuzz.py); check_inputs answers INVALID_ARGUMENT after the claim.
    arr = np.empty((1,) * 33, dtype=object)
    arr[(0,) * 33] = "abc"
    assert array_bytes(arr) == STRING_OVERHEAD + 3
