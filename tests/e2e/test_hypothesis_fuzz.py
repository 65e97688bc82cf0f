"""Property-based hostile input (hypothesis, strategies in tests/fuzz.py) against one real server with the
``ids`` identity model and ``hp`` half_plus, over gRPC (structured requests and mutated raw bytes) and REST.

Every input gets TF Serving's code for it (see tests/fuzz.py), and after each test the server is the same
process, still answers a valid request correctly, and its peak RSS stayed under 2 GiB (the per-input decode
limit is 64 MiB here). Each test first sends the inputs that once broke Verso (``fuzz.*_EXAMPLES``), then
``VERSO_FUZZ_CASES`` drawn cases (default 300; the 10 000-case run is benchmarks/fuzz_bench.py). A server
that a test kills is named in that test's failure and restarted for the next test. Deterministic
(derandomized, no example database), bounded (10 s per call), 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests import fuzz
from tests.helpers import predict_request
from tests.server_proc import ServerProcess

CASES = int(os.environ.get("VERSO_FUZZ_CASES", "300"))
# Hypothesis starts with small draws: below this many cases, not every layer is reached for sure.
COVERAGE_CASES = 300
PEAK_RSS_LIMIT_MIB = 2048
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])


class FuzzServer:
    """The module's server; ``ensure()`` starts it, or a fresh one when a test killed it, so each test
    reports its own findings rather than the previous test's crash."""

    def __init__(self, args: list[str]):
        self.args = args
        self.srv: ServerProcess | None = None
        self.channel: grpc.Channel | None = None

    def ensure(self) -> ServerProcess:
        if self.srv is None or self.srv.proc.poll() is not None:
            self.stop()
            self.srv = ServerProcess(self.args, rest=True)
            self.srv.start()
            # Every code the test sees is the server's: the client's size limits are lifted.
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.srv.port}", options=fuzz.CHANNEL_OPTIONS)
            self.srv.fuzz_channel = self.channel
        return self.srv

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.srv is not None:
            self.srv.stop()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, built_models):
    root = tmp_path_factory.mktemp("fuzz-models")
    shutil.copytree(built_models["ids"], root / fuzz.IDS / "1")
    shutil.copytree(built_models["hp1"], root / fuzz.HP / "1")
    args, config = fuzz.server_args(str(root))
    (root / "models.config").write_text(config)
    holder = FuzzServer(args)
    yield holder
    holder.stop()


@pytest.fixture
def server(fuzz_server) -> ServerProcess:
    # Function-scoped is fine: hypothesis runs inside the test, not over it.
    return fuzz_server.ensure()


def checked(srv: ServerProcess, check, *args, **kwargs):
    """``check(*args, **kwargs)``, naming a server death as the failure of the input that caused it;
    inputs after a death fail at once."""
    assert srv.proc.poll() is None, f"the server died earlier (exit {srv.proc.returncode}): see that failure"
    try:
        return check(*args, **kwargs)
    except AssertionError as e:
        try:
            rc = srv.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            raise e from None
        raise AssertionError(f"the server died (exit {rc}) on this input; the call got: {e}") from None


def assert_unharmed(srv: ServerProcess) -> None:
    """Same process, still answering correctly over both APIs, memory bounded."""
    assert srv.proc.poll() is None, srv.output()[-5000:]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.fuzz_channel)
    good = stub.Predict(predict_request(fuzz.IDS, {"x": np.array([1.5, -2.0], np.float32)}, signature="id_float"),
                        timeout=10)
    assert list(good.outputs["y"].float_val) == [1.5, -2.0]
    assert srv.rest_json("POST", f"/v1/models/{fuzz.HP}:predict", {"instances": [1.0, 2.0]}) == \
        (200, {"predictions": [1.5, 2.0]})
    peak = fuzz.peak_rss_mib(srv.proc.pid)
    assert peak < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak} MiB: a hostile request made the server allocate too much"


def test_hypothesis_predict_requests(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.fuzz_channel)
    tally = fuzz.Tally()

    @FUZZ
    @given(req=fuzz.predict_requests())
    @fuzz.with_examples("req", fuzz.GRPC_EXAMPLES)
    def run(req):
        checked(server, fuzz.check_grpc, stub, req, tally)

    run()
    assert_unharmed(server)
    if CASES >= COVERAGE_CASES:  # the draws reach every layer: answers, refusals, unknown models, the size limit
        assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"} <= {c.name for c in tally.codes}, \
            tally.codes


def test_hypothesis_raw_predict_bytes(server):
    call = server.fuzz_channel.unary_unary(fuzz.PREDICT_METHOD)
    tally = fuzz.Tally()

    @FUZZ
    @given(data=fuzz.raw_predict_bytes())
    @fuzz.with_examples("data", fuzz.RAW_EXAMPLES)
    def run(data):
        checked(server, fuzz.check_raw, call, data, tally)

    run()
    assert_unharmed(server)
    if CASES >= COVERAGE_CASES:
        assert {"OK", "INTERNAL", "INVALID_ARGUMENT"} <= {c.name for c in tally.codes}, tally.codes


def test_hypothesis_rest_requests(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=fuzz.CALL_TIMEOUT_S)
    tally = fuzz.Tally()

    @FUZZ
    @given(call=fuzz.rest_requests())
    @fuzz.with_examples("call", fuzz.REST_EXAMPLES)
    def run(call):
        checked(server, fuzz.check_rest, conn, *call, tally=tally)

    try:
        run()
    finally:
        conn.close()
    assert_unharmed(server)
    if CASES >= COVERAGE_CASES:
        assert {200, 400, 404} <= set(tally.codes), json.dumps(tally.codes)
