"""Hostile-input fuzz run: N hypothesis cases of each kind against one real Verso server.

Kinds (strategies and checks from tests/fuzz.py, the ones tests/e2e/test_hypothesis_fuzz.py runs at a
smaller count): ``grpc`` structured PredictRequests, ``raw`` mutated or random bytes as the Predict payload,
``rest`` REST calls with hostile paths and JSON bodies. The server holds ``ids`` (an identity signature
per dtype) and ``hp`` (half_plus), on 127.0.0.1, with a 64 MiB per-input decode limit.

Unlike the test, a case whose answer is not allowed is counted and reported (the first few distinct
ones, unminimised) and the run goes on; a server that dies is counted as a failure of the case in
flight and restarted (fresh ports), so one crash does not hide the rest. Bounded: N cases of each
kind, each call at most 10 s.

Prints per kind: cases, counts per status code, disallowed count (must be 0), slowest call, p50/p99
call latency; then the server's peak RSS (VmHWM) at start, at the end and the highest over the run
(read after every case), server deaths, whether it is alive and still answering, and the total
wall time. Exit status 1 when anything was disallowed or the server died or was harmed.

Usage: python benchmarks/fuzz_bench.py [--cases 10000] [--kinds grpc,raw,rest]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from tests import fuzz, models  # noqa: E402
from tests.server_proc import ServerProcess  # noqa: E402

MAX_REPORTED = 5


class Server:
    """The server under test and the clients on it; ``restart()`` replaces a dead one (new ports)."""

    def __init__(self, flags: list[str]):
        self.flags = flags
        self.deaths: list[str] = []
        self.max_peak_mib = 0
        self._start()

    def _start(self) -> None:
        self.srv = ServerProcess(self.flags, rest=True)
        self.srv.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.srv.port}", options=fuzz.CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.raw = self.channel.unary_unary(fuzz.PREDICT_METHOD)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.srv.rest_port, timeout=fuzz.CALL_TIMEOUT_S)

    def alive(self) -> bool:
        return self.srv.proc.poll() is None

    def peak(self) -> int:
        """The server's peak RSS (MiB), also kept as the highest over every server of the run."""
        mib = fuzz.peak_rss_mib(self.srv.proc.pid)
        self.max_peak_mib = max(self.max_peak_mib, mib)
        return mib

    def output(self) -> str:
        try:
            return self.srv.output()
        except OSError as e:
            return f"(no server log: {e})"

    def restart(self, after: str) -> None:
        self.deaths.append(f"exit {self.srv.proc.returncode} after {after}")
        self.stop()
        self._start()

    def stop(self) -> None:
        self.conn.close()
        self.channel.close()
        self.srv.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.srv.log.name)


def _key(message: str) -> str:
    """Failures with the same code and message text (numbers aside) count as one distinct failure."""
    head = message.split(" for ", 1)[0]
    return re.sub(r"\d+", "N", head)[:200]


def run_kind(kind: str, cases: int, box: Server) -> tuple[fuzz.Tally, dict]:
    """Run ``cases`` hypothesis cases of one kind after its known hostile examples (tests/fuzz.py);
    (tally, {distinct failure: [count, first message]}).
    A server that dies is counted as a failure of the case that was in flight, and restarted."""
    tally = fuzz.Tally()
    failures: dict[str, list] = {}
    strategy, examples, check = {
        "grpc": (fuzz.predict_requests(), fuzz.GRPC_EXAMPLES, lambda req: fuzz.check_grpc(box.stub, req, tally)),
        "raw": (fuzz.raw_predict_bytes(), fuzz.RAW_EXAMPLES, lambda data: fuzz.check_raw(box.raw, data, tally)),
        "rest": (fuzz.rest_requests(), fuzz.REST_EXAMPLES, lambda call: fuzz.check_rest(box.conn, *call, tally=tally)),
    }[kind]

    # Same settings as the test but for the count; no shrinking: a failure is recorded, not raised.
    @settings(max_examples=cases, deadline=None, derandomize=True, database=None, print_blob=False,
              phases=[p for p in settings.default.phases if p.name in ("explicit", "generate")],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    @fuzz.with_examples("case", examples)
    def one(case):
        try:
            check(case)
            error = None
        except AssertionError as e:
            error = str(e)
        if error is not None and box.alive():
            time.sleep(0.2)  # a dying server fails the call first, then exits
        if box.alive():
            if error is not None:
                failures.setdefault(_key(error), [0, error])[0] += 1
            box.peak()  # read after every case: a server that dies later takes its peak with it
        else:
            what = fuzz._short(case, 600)
            entry = failures.setdefault("server died", [0, f"the server died (exit {box.srv.proc.returncode}) "
                                                           f"after {what}"])
            entry[0] += 1
            box.restart(what)

    one()
    return tally, failures


def still_answers(box: Server) -> bool:
    """A valid gRPC and REST Predict still get the right answers."""
    try:
        req = predict_pb2.PredictRequest()
        req.model_spec.name, req.model_spec.signature_name = fuzz.IDS, "id_float"
        x = req.inputs["x"]
        x.dtype = 1
        x.tensor_shape.dim.add(size=2)
        x.float_val.extend([1.5, -2.0])
        resp = box.stub.Predict(req, timeout=10)
        rest = box.srv.rest_json("POST", f"/v1/models/{fuzz.HP}:predict", {"instances": [1.0, 2.0]})
        return list(resp.outputs["y"].float_val) == [1.5, -2.0] and rest == (200, {"predictions": [1.5, 2.0]})
    except Exception as e:  # any failure here is the answer
        print(f"  valid request failed: {type(e).__name__}: {e}")
        return False


def _code_name(code) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="hypothesis cases of each kind")
    ap.add_argument("--kinds", default="grpc,raw,rest")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="verso-fuzz-")
    models.save_identities(os.path.join(tmp, fuzz.IDS, "1"))
    models.save_half_plus(os.path.join(tmp, fuzz.HP, "1"), 1.0)
    flags, config = fuzz.server_args(tmp)
    with open(os.path.join(tmp, "models.config"), "w") as f:
        f.write(config)
    box = Server(flags)
    bad = 0
    try:
        assert still_answers(box), box.output()[-3000:]
        rss_start = box.peak()
        print(f"server pid {box.srv.proc.pid}, peak RSS at start {rss_start} MiB; {args.cases} cases per kind")
        for kind in kinds:
            t0 = time.monotonic()
            tally, failures = run_kind(kind, args.cases, box)
            disallowed = sum(n for n, _ in failures.values())
            bad += disallowed
            codes = ", ".join(f"{_code_name(c)} {n}" for c, n in
                              sorted(tally.codes.items(), key=lambda kv: -kv[1]))
            print(f"\n{kind}: {len(tally.latencies)} cases in {time.monotonic() - t0:.1f} s; {codes}")
            print(f"  disallowed {disallowed}; latency p50 {tally.percentile(50) * 1e3:.2f} ms, "
                  f"p99 {tally.percentile(99) * 1e3:.2f} ms; slowest {tally.slowest[0] * 1e3:.0f} ms: "
                  f"{tally.slowest[1][:160]}")
            for n, message in sorted(failures.values(), key=lambda v: -v[0])[:MAX_REPORTED]:
                print(f"  DISALLOWED x{n}: {message[:1500]}")
        answers = box.alive() and still_answers(box)
        rss_end = box.peak() if box.alive() else -1
        print(f"\npeak RSS at start {rss_start} MiB, at the end {rss_end} MiB (pid {box.srv.proc.pid}), highest "
              f"over the run {box.max_peak_mib} MiB; server deaths "
              f"{len(box.deaths)}; alive and answering at the end {answers}; disallowed {bad}; "
              f"total wall time {time.monotonic() - t_start:.0f} s")
        return 0 if bad == 0 and answers and not box.deaths else 1
    finally:
        box.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
