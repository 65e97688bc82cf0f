"""verso bench's stress parts without a server: the open-loop schedule and its clock, the limit
search on a simulated server, thresholds, the report's per-version counts, fault parsing, and
the command line refusing nonsense before it starts anything."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys

import grpc
import pytest

from client import VersoError, stress
from client import faults as fl
from client.cli import main as verso
from tests.server_proc import free_port


# ---- the schedule -------------------------------------------------------------------------------

def test_a_constant_rate_sends_on_its_grid():
    times = list(stress.Schedule.constant(10, 2.0).send_times())
    assert len(times) == 20
    assert times == pytest.approx([i / 10 for i in range(20)])


def test_stages_ramp_linearly_and_hold():
    # 0 -> 100/s over 2 s (100 calls), hold 100/s for 1 s (100), 100 -> 0 over 1 s (50).
    sched = stress.Schedule(stress.parse_stages("2s:100,1s:100,1s:0"))
    times = list(sched.send_times())
    assert sched.duration == 4.0 and sched.expected() == 250
    assert len(times) == 250
    assert times == sorted(times) and times[0] == 0.0 and times[-1] < 4.0
    # In a ramp from 0 the k-th call is due when 25 t^2 = k: t = sqrt(k / 25).
    assert times[25] == pytest.approx(1.0) and times[99] == pytest.approx(math.sqrt(99 / 25))
    # The hold: one call every 10 ms from t = 2.
    assert times[100:200] == pytest.approx([2 + i / 100 for i in range(100)])
    # The ramp down: the rate falls, so the gaps grow.
    gaps = [b - a for a, b in zip(times[200:], times[201:])]
    assert gaps == sorted(gaps)
    assert sched.rate_at(1.0) == pytest.approx(50) and sched.rate_at(3.5) == pytest.approx(50)
    half = sched.scaled(0.5)
    assert half.expected() == 125 and half.duration == 4.0 and half.rate_at(2.5) == pytest.approx(50)
    assert list(half.send_times())[50:100] == pytest.approx([2 + i / 50 for i in range(50)])


class FakeTime:
    """A clock that moves only when the open loop sleeps (after letting due calls run), or
    when a call says it stalled."""

    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        await asyncio.sleep(0)  # the calls sent so far run at the current time
        self.now += d


def _stalling_send(ft: FakeTime, stall_at: int):
    calls = [0]

    async def send():
        calls[0] += 1
        if calls[0] == stall_at:
            ft.now += 0.5  # this call held everything up for half a second
        return 1
    return send


def test_open_loop_latency_counts_from_the_scheduled_time():
    # 10/s for 2 s; the 5th call (due at 0.4 s) stalls the client for 0.5 s. The five calls due
    # meanwhile are sent late, and their wait counts: 0.5 (the stalled one), then 0.5, 0.4, 0.3,
    # 0.2, 0.1, 0.0 for the calls due at 0.5 .. 1.0 -- 2.0 s in all over 20 calls.
    ft = FakeTime()
    rec = asyncio.run(stress.open_loop(_stalling_send(ft, 5), stress.Schedule.constant(10, 2.0),
                                       clock=ft.clock, sleep=ft.sleep))
    assert rec.count == 20 and rec.ok.get_total_count() == 20
    assert rec.all.get_max_value() / 1e6 == pytest.approx(0.5, rel=1e-3)
    assert rec.all.get_mean_value() / 1e6 == pytest.approx(2.0 / 20, rel=1e-2)
    assert rec.lag.get_max_value() / 1e6 == pytest.approx(0.5, rel=1e-3)  # the tool says it was late
    # A closed loop with the same stall hides it: one slow call, the rest sent when it was free.
    ft2 = FakeTime()
    closed = asyncio.run(stress.closed_loop(_stalling_send(ft2, 5), concurrency=1, requests=20, clock=ft2.clock))
    assert closed.all.get_mean_value() / 1e6 == pytest.approx(0.5 / 20, rel=1e-2)


def test_open_loop_drops_past_its_in_flight_bound_and_counts_it():
    async def run():
        gate = asyncio.Event()

        async def send():
            await gate.wait()
            return 7

        ft = FakeTime()

        async def sleep(d):
            await ft.sleep(d)
            if ft.now >= 0.85:  # the last sleep, before the call due at 0.9
                gate.set()
        return await stress.open_loop(send, stress.Schedule.constant(10, 1.0), clock=ft.clock, sleep=sleep,
                                      max_in_flight=4)
    rec = asyncio.run(run())
    assert rec.dropped == 6 and rec.count == 4 and rec.max_in_flight == 4
    assert rec.error_rate() == pytest.approx(0.6)


def test_a_closed_loop_stops_at_the_duration_on_its_clock():
    now = [0.0]

    async def send():
        now[0] += 0.25  # every call takes a quarter second of the fake clock
        await asyncio.sleep(0)
        return 1

    rec = asyncio.run(stress.closed_loop(send, concurrency=1, duration=2.0, clock=lambda: now[0]))
    assert rec.count == 8 and rec.wall_s == 2.0
    with pytest.raises(stress.StressInputError):
        asyncio.run(stress.closed_loop(send, concurrency=0, requests=1))


def test_errors_are_kept_apart_and_counted_by_code():
    async def run():
        n = [0]

        async def send():
            n[0] += 1
            if n[0] % 4 == 0:
                raise VersoError(grpc.StatusCode.UNAVAILABLE, "busy")
            return 2
        return await stress.closed_loop(send, concurrency=3, requests=40)
    rec = asyncio.run(run())
    r = stress.summarize(rec, mode="closed", target="t", model="m", rows=2, concurrency=3)
    assert (r["requests"], r["ok"], r["failed"], r["errors"]) == (40, 30, 10, {"UNAVAILABLE": 10})
    assert r["error_examples"] == {"UNAVAILABLE": "busy"} and r["error_rate"] == 0.25
    assert r["latency_ms"]["all"]["count"] == 40 and r["latency_ms"]["ok"]["count"] == 30
    assert r["latency_ms"]["errors"]["count"] == 10
    assert r["versions"] == {"2": 30} and r["rows_per_s"] == pytest.approx(2 * r["ok_per_s"])


def test_the_report_counts_each_answering_version_overall_and_per_second():
    rec = stress.Recorder()
    for i in range(30):  # v1 answers the first second, both the second, v2 the third
        t = i / 10
        version = 1 if t < 1 else (2 if t >= 2 else 1 + i % 2)
        rec.add(t, 0.01, None, version)
    rec.add(2.5, 0.2, VersoError(grpc.StatusCode.NOT_FOUND, "gone"), None)
    rec.wall_s = 3.0
    r = stress.summarize(rec, mode="rate", target="t", model="m", rows=1, rate=10)
    assert r["versions"] == {"1": 15, "2": 15}
    assert [s["versions"] for s in r["series"]] == [{"1": 10}, {"1": 5, "2": 5}, {"2": 10}]
    assert [s["errors"] for s in r["series"]] == [0, 0, 1]
    assert r["latency_ms"]["all"]["max"] == pytest.approx(200, rel=1e-3)  # the error's latency counts in "all"
    assert r["latency_ms"]["ok"]["max"] == pytest.approx(10, rel=1e-3)
    window = rec.window(2, 3)
    assert (window["ok"], window["errors"], window["versions"]) == (10, 1, {"2": 10})
    # Several client processes add up to one report.
    again = stress.Recorder.from_dict(json.loads(json.dumps(rec.to_dict())))
    again.merge(rec)
    assert again.versions == {"1": 30, "2": 30} and again.count == 62 and again.seconds[2].errors == 2


# ---- the limit search ---------------------------------------------------------------------------

def _mm1(capacity: float):
    """An M/M/1 server: p99 of the time in system is ln(100) / (mu - lambda); overloaded
    beyond ``capacity``."""
    async def probe(rate):
        p99 = math.log(100) / (capacity - rate) if rate < capacity else 60.0
        return stress.Probe(rate, p99, 0.0, min(rate, capacity))
    return probe


@pytest.mark.parametrize("capacity", [730.0, 150.0, 5200.0])
def test_the_limit_search_finds_a_simulated_knee_within_ten_percent(capacity):
    slo = 0.05
    knee = capacity - math.log(100) / slo  # the highest rate whose p99 meets 50 ms
    limit = asyncio.run(stress.find_limit(_mm1(capacity), slo_p99_s=slo, max_error_rate=0.001, start_rate=10,
                                          budget_s=1e9))
    assert limit.stopped_by == "precision"
    assert limit.knee <= knee < limit.first_bad
    assert abs(limit.knee - knee) / knee < 0.10
    assert all(p.ok == (p.rate <= knee) for p in limit.probes)


def test_the_limit_search_counts_errors_and_keeps_to_its_budget():
    async def errors_past_300(rate):
        return stress.Probe(rate, 0.001, 0.0 if rate <= 300 else 0.02, rate)
    limit = asyncio.run(stress.find_limit(errors_past_300, slo_p99_s=0.05, max_error_rate=0.001, start_rate=10,
                                          budget_s=1e9))
    assert 300 * 0.95 <= limit.knee <= 300 < limit.first_bad
    now = [0.0]

    async def slow_probe(rate):
        now[0] += 3.0
        return await _mm1(730.0)(rate)
    limit = asyncio.run(stress.find_limit(slow_probe, slo_p99_s=0.05, max_error_rate=0.001, start_rate=10,
                                          budget_s=20, probe_s=3, clock=lambda: now[0]))
    assert limit.stopped_by == "budget" and len(limit.probes) == 6 and now[0] <= 20
    limit = asyncio.run(stress.find_limit(_mm1(5.0), slo_p99_s=0.05, max_error_rate=0.001, start_rate=10))
    assert limit.knee is None and limit.stopped_by == "first_probe" and limit.first_bad == 10


# ---- thresholds ---------------------------------------------------------------------------------

def test_thresholds_parse_with_units_and_judge_a_report():
    t = [stress.parse_threshold(x) for x in ("p99<50ms", "p50 <= 0.2s", "max<900us", "errors<0.1%",
                                             "errors<=0", "rps>100")]
    assert [(x.metric, x.op, x.value) for x in t] == [
        ("p99", "<", 50.0), ("p50", "<=", 200.0), ("max", "<", 0.9), ("errors", "<", 0.001), ("errors", "<=", 0.0),
        ("rps", ">", 100.0)]
    report = {"latency_ms": {"all": {"p99": 60.0, "p50": 20.0, "max": 0.5}}, "error_rate": 0.0, "ok_per_s": 150.0}
    assert [r["passed"] for r in stress.check_thresholds(t, report)] == [False, True, True, True, True, True]
    assert stress.check_thresholds(t[:1], report)[0]["actual"] == 60.0
    none = {"latency_ms": {"all": {"p99": None}}, "error_rate": 1.0, "ok_per_s": 0.0}
    assert stress.check_thresholds(t[:1], none)[0]["passed"] is False  # no answers: not passed


@pytest.mark.parametrize("text", ["p99<<5ms", "latency<5ms", "p99<5%", "errors<5ms", "rps>5ms", "p99", "", "p99<x"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(stress.StressInputError):
        stress.parse_threshold(text)


# ---- faults -------------------------------------------------------------------------------------

def test_faults_parse_and_bad_ones_are_refused():
    assert fl.parse_fault("20s:swap:/m/new/2") == fl.Fault(20.0, "swap", "/m/new/2")
    assert fl.parse_fault("1m:remove:3") == fl.Fault(60.0, "remove", "3")
    assert fl.parse_fault("500ms:kill-worker") == fl.Fault(0.5, "kill-worker")
    assert fl.parse_fault("0s:reload:/c/models.config") == fl.Fault(0.0, "reload", "/c/models.config")
    assert fl.parse_fault("0ms:remove:2") == fl.Fault(0.0, "remove", "2")
    for bad in ("20s:explode", "20s", "x:swap:/a", "20s:remove:latest", "20s:kill-worker:3", "20s:swap",
                "-3s:remove:1"):
        with pytest.raises(stress.StressInputError):
            fl.parse_fault(bad)


def test_faults_only_on_servers_the_tool_controls(tmp_path, childless_pid):
    assert fl.is_loopback("127.0.0.1:8500") and fl.is_loopback("localhost:8500") and fl.is_loopback("[::1]:9")
    assert fl.is_loopback("http://127.0.0.1:8501") and fl.is_loopback("unix:/tmp/s")
    assert not fl.is_loopback("10.1.2.3:8500") and not fl.is_loopback("http://192.0.2.7:8501")
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    version = tmp_path / "new"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"")
    local = fl.Controls("127.0.0.1:1", str(base))
    fl.check([fl.Fault(1, "swap", str(version)), fl.Fault(2, "remove", "1")], local)
    with pytest.raises(stress.StressInputError, match="not on this machine"):
        fl.check([fl.Fault(1, "remove", "1")], fl.Controls("10.1.2.3:8500", str(base)))
    with pytest.raises(stress.StressInputError, match="--model-base-path"):
        fl.check([fl.Fault(1, "remove", "1")], fl.Controls("127.0.0.1:1"))
    with pytest.raises(stress.StressInputError, match="not a SavedModel"):
        fl.check([fl.Fault(1, "swap", str(tmp_path))], local)
    with pytest.raises(stress.StressInputError, match="--server-pid"):
        fl.check([fl.Fault(1, "kill-worker")], local)
    with pytest.raises(stress.StressInputError, match="no worker processes"):
        fl.check([fl.Fault(1, "kill-worker")], fl.Controls("127.0.0.1:1", server_pid=childless_pid))
    # swap and remove act as an operator's atomic moves
    assert fl.swap(str(base), str(version)) == f"version 2 added from {version}"
    assert (base / "2" / "saved_model.pb").exists()
    assert fl.remove(str(base), "1") == "version 1 removed" and sorted(os.listdir(base)) == ["2"]


@pytest.fixture
def childless_pid():
    """A live process on this machine without children (not a --num_workers server)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield p.pid
    p.kill()
    p.wait()


# ---- the command line refuses nonsense before starting anything --------------------------------

@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate '0' must be a positive number of requests per second"),
    (["--rate", "fast"], "--rate 'fast': expected requests per second, e.g. 200"),
    (["--stages", "30s"], "stage '30s': expected DURATION:RATE, e.g. 30s:100"),
    (["--stages", "30s:0,10s:0"], "--stages: every stage has rate 0, nothing would be sent"),
    (["--stages", "soon:100"],
     "stage 'soon:100': the duration 'soon' is not a positive number with a unit (us, ms, s, m, h)"),
    (["--rate", "10", "--stages", "1s:5"], "choose one of --rate, --stages and --find-limit, not rate and stages"),
    (["--rate", "10", "-c", "4"], "--concurrency is for the closed loop; an open loop sends on its schedule"),
    (["--find-limit"], "--find-limit needs --slo-p99, e.g. --slo-p99 50ms"),
    (["--rate", "10", "-d", "5s", "--fault", "2s:explode"], "fault '2s:explode': unknown kind 'explode' "
                                                            "(one of swap, remove, kill-worker, reload)"),
    (["--rate", "10", "-d", "5s", "--fault", "9s:remove:1", "--model-base-path", "/tmp"],
     "fault remove:1 at 9s comes after the run's end (5s)"),
    (["--rate", "10", "-d", "5s", "--fault", "1s:kill-worker"],
     "fault kill-worker: needs --server-pid (a server started with --num_workers)"),
    (["-n", "10", "--fault", "1s:kill-worker"], "faults need a run of known length: --duration, --rate or --stages"),
    (["--rate", "10", "--threshold", "p99<<1"], "threshold 'p99<<1': expected METRIC<VALUE, e.g. 'p99<50ms' or "
                                                "'errors<0.1%'"),
    (["-c", "0"], "--concurrency 0: must be a positive whole number"),
    (["-n", "5", "-d", "3s"], "give --requests or --duration, not both"),
    (["--processes", "2"], "--processes spreads an open loop (--rate or --stages)"),
])
def test_bench_refuses_nonsense_in_one_line_with_exit_2(capsys, args, message):
    port = free_port()  # nothing listens: a call made would fail with UNAVAILABLE, not this
    assert verso(["bench", "m", "--target", f"127.0.0.1:{port}", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"verso: error: {message}\n"


def test_a_fault_on_a_server_elsewhere_is_refused(capsys, tmp_path):
    assert verso(["bench", "m", "--target", "192.0.2.7:8500", "--rate", "5", "-d", "3s",
                  "--fault", "1s:remove:1", "--model-base-path", str(tmp_path)]) == 2
    assert "is not on this machine's loopback" in capsys.readouterr().err


def test_a_scenario_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rate": 10, "duration": "5s", "fualts": []}))
    assert verso(["bench", "m", "--scenario", str(bad)]) == 2
    assert "unknown key 'fualts'" in capsys.readouterr().err
    later = tmp_path / "late.json"
    later.write_text(json.dumps({"rate": 10, "duration": "5s", "faults": ["6s:kill-worker"]}))
    assert verso(["bench", "m", "--scenario", str(later)]) == 2
    assert "fault kill-worker at 6s comes after the run's end (5s)" in capsys.readouterr().err


def test_a_reload_fault_with_a_config_that_does_not_parse_is_refused(capsys, tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: }")
    assert verso(["bench", "m", "--target", f"127.0.0.1:{free_port()}", "--rate", "5", "-d", "3s",
                  "--fault", f"1s:reload:{config}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"verso: error: fault reload:{config}: not a text-format ModelServerConfig: ")
