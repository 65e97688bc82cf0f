"""Attacks on the work one request makes the server do (issue 26, "bounded work per request"),
against the real server in process: the 35-byte Predict that asks for 512 MiB, the in-flight
budget, outputs past the element limit, the event loop kept free while large bodies and answers
are decoded and encoded, a gzip bomb and bad encodings over REST, slowloris connections, and a
gRPC burst past the concurrency limit (RESOURCE_EXHAUSTED and counted, never CANCELLED).

The memory-limited run (a child server in a cgroup) is tests/security/test_limits_cgroup.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from protos import tensor_codec
from tests.helpers import predict_request, scrape, y_of
from tests.server_proc import InProcessServer, wait_until

RE = grpc.StatusCode.RESOURCE_EXHAUSTED
MAX_ELEMENTS = 4_000_000
BUDGET = 400_000_000
MAX_BODY = 60_000_000
MAX_RPCS = 300


@pytest.fixture(scope="module")
def srv(tmp_path_factory, built_models):
    root = tmp_path_factory.mktemp("limits")
    for model, key in (("hp", "hp1"), ("ids", "ids"), ("ex", "examples")):
        shutil.copytree(built_models[key], root / model / "1")
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
        for m in ("hp", "ids", "ex")) + "}\n")
    server = InProcessServer([f"--model_config_file={config}", f"--max_request_elements={MAX_ELEMENTS}",
                              f"--max_inflight_bytes={BUDGET}", f"--rest_api_max_body_bytes={MAX_BODY}",
                              "--rest_api_header_timeout_seconds=1", "--rest_api_body_timeout_seconds=1",
                              f"--grpc_max_concurrent_rpcs={MAX_RPCS}",
                              "--monitoring_config_file=" + str(_monitoring(root))], rest=True).start()
    yield server
    server.stop()


def _monitoring(root):
    path = root / "monitoring.config"
    path.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    return path


def _filled(dims, dtype=types_pb2.DT_FLOAT, model="ids", signature="id_float") -> predict_pb2.PredictRequest:
    """A Predict naming a shape and sending no value: TF Serving fills it in."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    t = req.inputs["x"]
    t.dtype = dtype
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    return req


@pytest.fixture(scope="module")
def stub(srv):
    """A PredictionService stub that takes large answers."""
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}",
                               options=[("grpc.max_receive_message_length", 2**31 - 1)]) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _rejected(srv, transport: str, reason: str) -> float:
    samples, _ = scrape(srv)
    return samples.get(("verso_requests_rejected_total", frozenset({("reason", reason), ("transport", transport)})),
                       0.0)


def _budget_idle(srv) -> None:
    """Every call gave its bytes back (answers, errors and cancellations alike)."""
    wait_until(lambda: srv.app.limits.budget.used == 0, timeout=10, what="the in-flight budget to be idle")


# ---- the 35-byte request, the element limit and the in-flight budget --------------------------------

def test_a_35_byte_request_for_512_mib_is_refused_before_anything_is_allocated(srv, stub):
    req = _filled([134217728])
    assert req.ByteSize() < 64
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == RE
    assert e.value.details() == (f"Request inputs need 134217728 elements (input x: 134217728), more than the "
                                 f"limit of {MAX_ELEMENTS} (--max_request_elements)")
    # The same over REST: the JSON's decoded elements are counted too.
    body = b'{"signature_name": "id_float", "instances": [' + b"0," * MAX_ELEMENTS + b"0]}"
    status, body = srv.rest_json("POST", "/v1/models/ids:predict", body)
    assert status == 429 and "(--max_request_elements)" in body["error"]
    # --max_tensor_bytes still applies first, with its message.
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_filled([2**30]), timeout=30)
    assert e.value.code() == RE and e.value.details().endswith("(--max_tensor_bytes)")
    assert _rejected(srv, "gRPC", "elements") >= 1 and _rejected(srv, "REST", "elements") >= 1
    _budget_idle(srv)
    np.testing.assert_allclose(y_of(stub.Predict(predict_request("hp", {"x": [2.0]}), timeout=30)), [2.0])


def test_a_request_past_what_is_left_of_the_in_flight_budget_waits_for_nobody(srv, stub):
    budget = srv.app.limits.budget
    req = _filled([3_000_000])  # 12 MB as filled, 24 MB more for its answer: fits an idle budget
    assert len(y_of(stub.Predict(req, timeout=30))) == 3_000_000
    _budget_idle(srv)
    # Other calls in flight hold most of the budget: the same request no longer fits.
    budget.take(BUDGET - 10_000_000, "calls in flight")
    try:
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(req, timeout=30)
        assert e.value.code() == RE
        assert e.value.details() == (f"The request needs 12000000 bytes and {BUDGET - 10_000_000} of the server's "
                                     f"in-flight memory budget of {BUDGET} bytes are in use (--max_inflight_bytes); "
                                     f"retry later")
        status, body = srv.rest_json("POST", "/v1/models/ids:predict",
                                     {"signature_name": "id_float", "instances": [1.5] * 1_000_000})
        assert status == 429 and "(--max_inflight_bytes)" in body["error"]
    finally:
        budget.give(BUDGET - 10_000_000)
    _budget_idle(srv)  # the refused calls gave back what they had taken
    assert _rejected(srv, "gRPC", "memory") >= 1 and _rejected(srv, "REST", "memory") >= 1
    assert len(y_of(stub.Predict(req, timeout=30))) == 3_000_000


def test_outputs_past_the_element_limit_are_refused_before_they_are_encoded(srv, stub):
    # echo_bytes answers two outputs per input element: the inputs pass, the answer does not.
    n = MAX_ELEMENTS // 2 + 1
    req = _filled([n], types_pb2.DT_STRING, model="ex", signature="echo_bytes")
    req.inputs["data"].CopyFrom(req.inputs.pop("x"))
    req.inputs["data"].string_val.append(b"a")
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=60)
    assert e.value.code() == RE
    assert e.value.details() == (f"The response would hold {2 * n} elements, more than the limit of {MAX_ELEMENTS} "
                                 f"(--max_request_elements)")
    _budget_idle(srv)


def test_calls_that_end_early_give_their_bytes_back(srv, stub):
    """An error, a cancelled call, a call past its deadline: the budget is idle after."""
    bad = _filled([1000])
    bad.inputs["x"].tensor_content = b"\0" * 7  # does not match the shape
    with pytest.raises(grpc.RpcError):
        stub.Predict(bad, timeout=30)
    # A slow model (the request executor busy for a second): one call cancelled by its caller,
    # one past its deadline, both while their work waits or runs.
    pool = srv.app._pools["predict"]
    busy = [pool.submit(time.sleep, 1.0) for _ in range(pool._max_workers)]
    future = stub.Predict.future(_filled([3_000_000]), timeout=30)
    time.sleep(0.1)
    future.cancel()
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_filled([3_000_000]), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for f in busy:
        f.result()
    _budget_idle(srv)


# ---- the event loop stays free ------------------------------------------------------------------------

def _loop_work(srv, during) -> tuple[float, float]:
    """(CPU seconds the server's event-loop thread spent, the longest it went without running a
    20 ms timer) while ``during()`` ran, both measured from inside the loop. The CPU time is the
    work done on the loop; the lag also counts waiting for the GIL, which a long C call in any
    thread holds (orjson's parse of a large body: not work that can be split)."""
    stop = threading.Event()

    async def monitor():
        cpu0 = time.thread_time()
        worst, last = 0.0, time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            worst, last = max(worst, now - last - 0.02), now
        return time.thread_time() - cpu0, worst

    work = asyncio.run_coroutine_threadsafe(monitor(), srv._loop)
    try:
        during()
    finally:
        stop.set()
    return work.result(30)


def test_large_decodes_and_encodes_run_off_the_event_loop(srv, stub):
    # REST: JSON rows of named inputs, decoded row by row. Measured against the same call with
    # the REST API's executor taken away, which runs everything on the loop (as decoding did).
    rows = [{"x": [0.5, 1.5, 2.5]}] * 400_000
    body = json.dumps({"signature_name": "id_float", "instances": rows}).encode()

    def rest_call():
        status, _, answer = srv.http("POST", "/v1/models/ids:predict", body)
        assert status == 200, answer[:200]

    rest_cpu, rest_lag = _loop_work(srv, rest_call)
    api = next(iter(srv.app._rest.app.router.routes())).handler.__self__
    executor, api.executor = api.executor, None
    try:
        on_loop_cpu, on_loop_lag = _loop_work(srv, rest_call)
    finally:
        api.executor = executor
    # gRPC: 3M int64 filled from one value, answered as varints (the slow encoding).
    req = _filled([3_000_000], types_pb2.DT_INT64, signature="id_int64")
    req.inputs["x"].int64_val.append(2**62)
    t0 = time.perf_counter()
    tensor_codec.from_ndarray(np.full(3_000_000, 2**62, np.int64)).SerializeToString()
    encode_s = time.perf_counter() - t0

    grpc_cpu, grpc_lag = _loop_work(srv, lambda: stub.Predict(req, timeout=60))
    print(f"event loop: REST {rest_cpu:.3f} s CPU, {rest_lag:.3f} s longest stall (all on the loop: "
          f"{on_loop_cpu:.3f} s CPU, {on_loop_lag:.3f} s stall); gRPC {grpc_cpu:.3f} s CPU, {grpc_lag:.3f} s longest "
          f"stall (encode alone {encode_s:.3f} s)")
    # On the loop, its CPU time would include the whole decode/encode; off it, a small part.
    assert rest_cpu < on_loop_cpu / 4, (rest_cpu, on_loop_cpu)
    assert grpc_cpu < encode_s / 4, (grpc_cpu, encode_s)


# ---- REST bodies: gzip bomb, bad encodings, slowloris ----------------------------------------------------

def _gzip_zeros(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * 2**20
    return b"".join([c.compress(chunk) for _ in range(n // len(chunk))] + [c.flush()])


def test_a_gzip_bomb_is_refused_at_the_limit_without_being_inflated(srv):
    bomb = _gzip_zeros(200 * 2**20)  # 200 MiB of zeros in ~200 KB
    assert len(bomb) < 1_000_000
    status, headers, answer = srv.http("POST", "/v1/models/ids:predict", bomb,
                                       headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 413
    assert json.loads(answer) == {"error": f"The request body is larger than {MAX_BODY} bytes "
                                           f"(--rest_api_max_body_bytes)"}
    assert _rejected(srv, "REST", "body_size") >= 1
    # A plain body over the limit is refused from its Content-Length, before it is read.
    status, _, answer = srv.http("POST", "/v1/models/ids:predict", b" " * (MAX_BODY + 1))
    assert status == 413 and "--rest_api_max_body_bytes" in json.loads(answer)["error"]
    _budget_idle(srv)


@pytest.mark.parametrize("encoding, pack", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),                                                      # zlib-wrapped (RFC 9110)
    ("deflate", lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(wbits=-15))),  # raw deflate
    ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),                # two gzip members
])
def test_compressed_bodies_within_the_limit_are_served(srv, encoding, pack):
    body = json.dumps({"instances": [1.0, 2.0, 3.0]}).encode()
    status, _, answer = srv.http("POST", "/v1/models/hp:predict", pack(body), headers={"Content-Encoding": encoding})
    assert status == 200, answer
    assert json.loads(answer) == {"predictions": [1.5, 2.0, 2.5]}


@pytest.mark.parametrize("encoding, body", [
    ("gzip", b'{"instances": [1.0]}'),                   # says gzip, is not
    ("gzip", gzip.compress(b'{"instances": [1.0]}')[:-12]),  # truncated
    ("deflate", b"\x78\x9c not deflate"),
    ("br", b'{"instances": [1.0]}'),                     # an encoding Verso does not inflate
])
def test_a_body_that_is_not_what_its_encoding_says_is_400(srv, encoding, body):
    status, _, answer = srv.http("POST", "/v1/models/hp:predict", body, headers={"Content-Encoding": encoding})
    assert status == 400, answer
    assert set(json.loads(answer)) == {"error"}


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Trickle a byte every 0.2 s until the server closes the connection: (closed in time, what
    the server sent)."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
            if not data:
                return True, got
            got += data
        except socket.timeout:
            pass
        except ConnectionError:
            return True, got
        if trickle:
            try:
                sock.send(trickle[i % len(trickle):i % len(trickle) + 1])
            except (BrokenPipeError, ConnectionError):
                return True, got
            i += 1
    return False, got


def test_slowloris_connections_are_closed(srv):
    # Headers trickled: closed once the header timeout (1 s) passes, whatever keeps arriving.
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        s.sendall(b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\n")
        closed, _ = _closed_within(s, 6, trickle=b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n")
        assert closed
    # Body trickled: 408 with the JSON error once the body timeout (1 s) passes, then closed.
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        s.sendall(b"POST /v1/models/hp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        closed, got = _closed_within(s, 8, trickle=b" ")
        assert closed
        assert got.startswith(b"HTTP/1.1 408 ")
        assert b"--rest_api_body_timeout_seconds" in got
    # An idle keep-alive connection is closed too; a normal call on a fresh one still works.
    with socket.create_connection(("127.0.0.1", srv.rest_port)) as s:
        closed, _ = _closed_within(s, 6)
        assert closed
    assert _rejected(srv, "REST", "body_timeout") >= 1
    assert srv.rest_json("POST", "/v1/models/hp:predict", {"instances": [2.0]}) == (200, {"predictions": [2.0]})


# ---- gRPC overload --------------------------------------------------------------------------------------

def test_a_grpc_burst_past_the_limit_is_resource_exhausted_and_counted_never_cancelled(srv):
    """1 500 concurrent Predicts while the model is slow (the request executor is busy for
    1.5 s): gRPC core's pending-call queue cancelled ~5 % of such a burst silently before."""
    pool = srv.app._pools["predict"]
    busy = [pool.submit(time.sleep, 1.5) for _ in range(pool._max_workers)]
    before = _rejected(srv, "gRPC", "concurrency")
    request = predict_request("hp", {"x": [2.0]})

    async def burst(n: int):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            async def one():
                try:
                    await stub.Predict(request, timeout=30)
                    return "OK", ""
                except grpc.aio.AioRpcError as e:
                    return e.code().name, e.details()
            return await asyncio.gather(*[one() for _ in range(n)])

    results = asyncio.run(burst(1500))
    for f in busy:
        f.result()
    codes = [c for c, _ in results]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, {c: codes.count(c) for c in set(codes)}
    refused = codes.count("RESOURCE_EXHAUSTED")
    assert refused > 0 and codes.count("OK") >= MAX_RPCS
    assert {d for c, d in results if c == "RESOURCE_EXHAUSTED"} == {
        d for c, d in results if c == "RESOURCE_EXHAUSTED" and d.startswith("Too many concurrent requests: ")
        and d.endswith(f"the limit is {MAX_RPCS} (--grpc_max_concurrent_rpcs); retry later")}
    assert _rejected(srv, "gRPC", "concurrency") - before == refused
    assert "gRPC call refused (concurrency" in srv.output()
