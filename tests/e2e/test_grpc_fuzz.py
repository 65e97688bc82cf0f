"""Hostile Predict requests over gRPC: random dtypes, shapes (negative, huge, overflowing),
payloads that do not match them, giant strings, odd model names, and random bytes. Each gets a
status code quickly, memory stays bounded, and the server keeps serving. Seeded, bounded in
count and time, 127.0.0.1 only."""

from __future__ import annotations

import random
import time

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from tests.helpers import predict_request

CASES = 300
RANDOM_BYTES = 50
PER_CALL_TIMEOUT_S = 10
# Codes a bad request may get; INTERNAL only for bytes that do not parse (TF Serving's answer).
EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED}
SIGNATURES = ["id_float", "id_double", "id_int32", "id_string", "id_int64", "id_bool", "id_half", "id_uint8", "",
              "nope"]
DIMS = [0, 1, 2, 3, 7, -1, -5, 10**6, 10**9, 2**40, 2**62, 2**63 - 1]


def _request(rng: random.Random) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = rng.choice(["ids", "ids", "ids", "..", "a/b", "../ids", "", "ids/1"])
    req.model_spec.signature_name = rng.choice(SIGNATURES)
    t = req.inputs[rng.choice(["x", "x", "x", "y"])]
    t.dtype = rng.choice([0, 1, 2, 3, 4, 7, 8, 9, 10, 14, 17, 19, 23, 99])
    for _ in range(rng.randint(0, 4)):
        t.tensor_shape.dim.add(size=rng.choice(DIMS))
    if rng.random() < 0.1:
        t.tensor_shape.unknown_rank = True
    kind = rng.random()
    if kind < 0.35:
        t.tensor_content = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 3, 4, 8, 12, 40])))
    elif kind < 0.55:
        t.float_val.extend(rng.random() for _ in range(rng.randint(0, 5)))
    elif kind < 0.65:
        t.string_val.extend(b"x" * rng.choice([0, 1, 10, 2_000_000]) for _ in range(rng.randint(0, 3)))
    elif kind < 0.8:
        t.int_val.extend(rng.randint(-2**31, 2**31 - 1) for _ in range(rng.randint(0, 5)))
    elif kind < 0.9:
        t.half_val.extend(rng.randint(0, 2**16 - 1) for _ in range(3))
    return req


def _peak_rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) // 1024


def test_hostile_predict_requests_get_codes_and_leave_the_server_serving(repo, server_factory, built_models):
    repo.put("ids", 1, "ids")
    srv = server_factory("--model_name=ids", f"--model_base_path={repo.path('ids')}")
    stub = srv.predict_stub
    raw = srv.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    rng = random.Random(20261126)
    seen = {}
    slowest = 0.0
    for i in range(CASES + RANDOM_BYTES):
        t0 = time.monotonic()
        try:
            if i < CASES:
                stub.Predict(_request(rng), timeout=PER_CALL_TIMEOUT_S)
            else:
                raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), timeout=PER_CALL_TIMEOUT_S)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
            allowed = EXPECTED | ({grpc.StatusCode.INTERNAL} if i >= CASES else set())
            assert code in allowed, (i, code, e.details())
        seen[code] = seen.get(code, 0) + 1
        slowest = max(slowest, time.monotonic() - t0)
    assert srv.proc.poll() is None, srv.output()
    good = stub.Predict(predict_request("ids", {"x": np.array([1.5], np.float32)}, signature="id_float"), timeout=10)
    assert list(good.outputs["y"].float_val) == [1.5]
    assert seen.get(grpc.StatusCode.RESOURCE_EXHAUSTED, 0) > 0  # the huge shapes reached the limit
    assert _peak_rss_mb(srv.proc.pid) < 2048, "a hostile request made the server allocate too much"
    print(f"\n{CASES + RANDOM_BYTES} hostile calls: {sorted((c.name, n) for c, n in seen.items())}, "
          f"slowest {slowest:.2f} s, peak RSS {_peak_rss_mb(srv.proc.pid)} MiB")
