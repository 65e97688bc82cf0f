"""``verso bench``'s stress modes: open-loop rates, stages, the limit search, thresholds.

The pieces are pure or clock-driven so that tests can step them:

* ``Schedule``: when each call of an open-loop run is due (a constant rate, or k6-style stages
  that ramp the rate linearly from one target to the next). Send times are offsets from the
  run's start, computed from the schedule alone: a slow server never delays the next send
  (no coordinated omission).
* ``Recorder``: what a run measured. Latency of every call, successful or not, from its
  **scheduled** send time (open loop: queueing in the server, or in the tool, shows as
  latency), in HDR histograms (``hdrhistogram``, microseconds, 3 significant digits); errors by
  status code; which version answered (the response's ``model_spec.version``); per-second
  series; how late the tool itself sent (its lag, reported so that a saturated client is seen).
* ``open_loop`` / ``closed_loop``: the two ways of sending; ``find_limit``: the highest rate
  whose p99 and error rate meet an SLO, by doubling then bisection over short open-loop probes.
* ``Threshold``: k6-style pass/fail conditions on the summary (``p99<50ms``, ``errors<0.1%``).

Everything here runs on one asyncio loop; ``clock`` and ``sleep`` are injectable.
"""

from __future__ import annotations

import asyncio
import collections
import math
import operator
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, Optional, Union

from hdrh.histogram import HdrHistogram

from client.errors import VersoError

# Latency histograms: 1 us .. 1 hour, 3 significant digits (HdrHistogram's usual precision).
_HIST_MAX_US = 3_600_000_000
MAX_IN_FLIGHT = 10_000  # open loop: calls past this many outstanding are dropped by the tool, and counted


class StressInputError(ValueError):
    """A rate, stage, fault, threshold or scenario that makes no sense (exit 2, nothing started)."""


# ---- parsing --------------------------------------------------------------------------------------

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str = "duration", default_unit: str = "s", zero: bool = False) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1.5"`` (``default_unit``) -> seconds: > 0, or >= 0
    with ``zero`` (a time from the start of a run)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s|m|h)?\s*", text or "")
    if not m:
        raise StressInputError(f"{what} {text!r}: expected a number with a unit (us, ms, s, m, h), e.g. 30s")
    value = float(m.group(1)) * _UNITS_S[m.group(2) or default_unit]
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise StressInputError(f"{what} {text!r} must be {'zero or more' if zero else 'positive'}")
    return value


def parse_rate(text: str, what: str = "rate") -> float:
    try:
        rate = float(text)
    except (TypeError, ValueError):
        raise StressInputError(f"{what} {text!r}: expected requests per second, e.g. 200") from None
    if not math.isfinite(rate) or rate <= 0:
        raise StressInputError(f"{what} {text!r} must be a positive number of requests per second")
    return rate


@dataclass(frozen=True)
class Stage:
    duration: float  # seconds
    rate: float      # the rate reached at the stage's end (requests per second, >= 0)


def parse_stages(text: str) -> list[Stage]:
    """``"30s:100,30s:500,10s:0"``: each stage ramps the rate linearly to its target over its
    duration (k6's ramping-arrival-rate); the first ramps from 0, a stage with the same
    target as the one before holds the rate."""
    stages = []
    for part in (text or "").split(","):
        dur, sep, rate = part.strip().partition(":")
        if not sep:
            raise StressInputError(f"stage {part.strip()!r}: expected DURATION:RATE, e.g. 30s:100")
        try:
            r = float(rate)
        except ValueError:
            raise StressInputError(f"stage {part.strip()!r}: the rate {rate!r} is not a number") from None
        if not math.isfinite(r) or r < 0:
            raise StressInputError(f"stage {part.strip()!r}: the rate must be >= 0 requests per second")
        try:
            length = parse_duration(dur)
        except StressInputError:
            raise StressInputError(f"stage {part.strip()!r}: the duration {dur.strip()!r} is not a positive number "
                                   f"with a unit (us, ms, s, m, h)") from None
        stages.append(Stage(length, r))
    if not any(s.rate > 0 for s in stages):
        raise StressInputError("--stages: every stage has rate 0, nothing would be sent")
    return stages


# ---- the open-loop schedule -----------------------------------------------------------------------

class Schedule:
    """Piecewise-linear rate over time: ``(t0, t1, r0, r1)`` segments. Call ``i`` (from 0) is
    due when the expected count ``N(t) = integral of rate`` reaches ``i``."""

    def __init__(self, stages: list[Stage], start_rate: float = 0.0):
        self.segments: list[tuple[float, float, float, float]] = []
        t, r = 0.0, start_rate
        for s in stages:
            self.segments.append((t, t + s.duration, r, s.rate))
            t, r = t + s.duration, s.rate
        self.duration = t

    @classmethod
    def constant(cls, rate: float, duration: float) -> "Schedule":
        return cls([Stage(duration, rate)], start_rate=rate)

    def scaled(self, factor: float) -> "Schedule":
        """The same shape at ``factor`` times the rate (one of several sending processes)."""
        return Schedule([Stage(t1 - t0, r1 * factor) for t0, t1, _, r1 in self.segments],
                        start_rate=self.segments[0][2] * factor if self.segments else 0.0)

    def rate_at(self, t: float) -> float:
        for t0, t1, r0, r1 in self.segments:
            if t0 <= t < t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0)
        return 0.0

    def expected(self) -> float:
        """The number of calls the schedule sends."""
        return sum((r0 + r1) / 2 * (t1 - t0) for t0, t1, r0, r1 in self.segments)

    def send_times(self) -> Iterator[float]:
        i = 0  # the next call's index: it is due when N(t) == i
        done = 0.0  # N at the current segment's start
        for t0, t1, r0, r1 in self.segments:
            d = t1 - t0
            a = (r1 - r0) / (2 * d)  # N(t0 + x) - done = r0 x + a x^2
            count = (r0 + r1) / 2 * d
            while i < done + count - 1e-9:
                k = i - done
                if abs(a) < 1e-12:
                    x = k / r0
                else:  # the root of a x^2 + r0 x - k = 0 in [0, d]
                    disc = max(r0 * r0 + 4 * a * k, 0.0)
                    x = (2 * k) / (r0 + math.sqrt(disc)) if r0 + math.sqrt(disc) > 0 else 0.0
                if x >= d:
                    break
                yield t0 + x
                i += 1
            done += count


# ---- what a run measured --------------------------------------------------------------------------

def _hist() -> HdrHistogram:
    return HdrHistogram(1, _HIST_MAX_US, 3)


def _record(h: HdrHistogram, seconds: float) -> None:
    h.record_value(min(max(int(seconds * 1e6), 1), _HIST_MAX_US))


def percentile_ms(h: HdrHistogram, q: float) -> Optional[float]:
    return h.get_value_at_percentile(q) / 1e3 if h.get_total_count() else None


@dataclass
class Second:
    """One second of a run, by the calls *scheduled* in it."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    latency: HdrHistogram = field(default_factory=_hist)
    versions: collections.Counter = field(default_factory=collections.Counter)


class Recorder:
    """Every call's outcome (``add``), kept as histograms and counters; mergeable (``merge``)
    so that several client processes add up to one report."""

    def __init__(self):
        self.ok = _hist()
        self.failed = _hist()
        self.all = _hist()
        self.lag = _hist()  # how late the tool sent, behind the schedule
        self.errors: collections.Counter = collections.Counter()
        self.first_error: dict[str, str] = {}
        self.versions: collections.Counter = collections.Counter()
        self.seconds: dict[int, Second] = {}
        self.dropped = 0  # open loop: not sent because MAX_IN_FLIGHT calls were outstanding
        self.max_in_flight = 0
        self.wall_s = 0.0
        # Calls made after an answer (feedback, ``Answered.after``): counted apart, never in the
        # Predict latency or errors above.
        self.feedback_sent = 0
        self.feedback_accepted = 0
        self.feedback_refused: collections.Counter = collections.Counter()
        self.feedback_first_error: dict[str, str] = {}

    def add(self, scheduled: float, latency: float, error: Optional[VersoError], version: Optional[int],
            lag: float = 0.0) -> None:
        """One finished call: ``scheduled`` its offset from the run's start (seconds), ``latency``
        from its scheduled send time, ``error`` None when it succeeded."""
        sec = self.seconds.get(int(scheduled))
        if sec is None:
            sec = self.seconds[int(scheduled)] = Second()
        sec.sent += 1
        _record(self.all, latency)
        _record(sec.latency, latency)
        _record(self.lag, lag)
        if error is None:
            _record(self.ok, latency)
            sec.ok += 1
            key = "unknown" if version is None else str(version)
            self.versions[key] += 1
            sec.versions[key] += 1
        else:
            _record(self.failed, latency)
            sec.errors += 1
            name = error.code.name
            self.errors[name] += 1
            self.first_error.setdefault(name, error.message)

    def add_feedback(self, error: Optional[VersoError]) -> None:
        """One follow-up call (feedback) after an answer: accepted, or refused with ``error``."""
        self.feedback_sent += 1
        if error is None:
            self.feedback_accepted += 1
        else:
            self.feedback_refused[error.code.name] += 1
            self.feedback_first_error.setdefault(error.code.name, error.message)

    def merge(self, other: "Recorder") -> None:
        for mine, theirs in ((self.ok, other.ok), (self.failed, other.failed), (self.all, other.all),
                             (self.lag, other.lag)):
            mine.add(theirs)
        self.errors.update(other.errors)
        for k, v in other.first_error.items():
            self.first_error.setdefault(k, v)
        self.versions.update(other.versions)
        for s, sec in other.seconds.items():
            mine = self.seconds.setdefault(s, Second())
            mine.sent += sec.sent
            mine.ok += sec.ok
            mine.errors += sec.errors
            mine.latency.add(sec.latency)
            mine.versions.update(sec.versions)
        self.dropped += other.dropped
        self.max_in_flight += other.max_in_flight
        self.wall_s = max(self.wall_s, other.wall_s)
        self.feedback_sent += other.feedback_sent
        self.feedback_accepted += other.feedback_accepted
        self.feedback_refused.update(other.feedback_refused)
        for k, v in other.feedback_first_error.items():
            self.feedback_first_error.setdefault(k, v)

    def to_dict(self) -> dict:
        """Everything, picklable and JSON-able (histograms HdrHistogram-encoded), for ``from_dict``."""
        return {"hists": {k: getattr(self, k).encode().decode() for k in ("ok", "failed", "all", "lag")},
                "errors": dict(self.errors), "first_error": self.first_error, "versions": dict(self.versions),
                "seconds": {s: {"sent": x.sent, "ok": x.ok, "errors": x.errors, "latency": x.latency.encode().decode(),
                                "versions": dict(x.versions)} for s, x in self.seconds.items()},
                "dropped": self.dropped, "max_in_flight": self.max_in_flight, "wall_s": self.wall_s,
                "feedback": {"sent": self.feedback_sent, "accepted": self.feedback_accepted,
                             "refused": dict(self.feedback_refused), "first_error": self.feedback_first_error}}

    @classmethod
    def from_dict(cls, d: dict) -> "Recorder":
        rec = cls()
        for k, text in d["hists"].items():
            getattr(rec, k).decode_and_add(text.encode())
        rec.errors.update(d["errors"])
        rec.first_error.update(d["first_error"])
        rec.versions.update(d["versions"])
        for s, x in d["seconds"].items():
            sec = rec.seconds[int(s)] = Second(x["sent"], x["ok"], x["errors"])
            sec.latency.decode_and_add(x["latency"].encode())
            sec.versions.update(x["versions"])
        rec.dropped, rec.max_in_flight, rec.wall_s = d["dropped"], d["max_in_flight"], d["wall_s"]
        fb = d.get("feedback", {})
        rec.feedback_sent, rec.feedback_accepted = fb.get("sent", 0), fb.get("accepted", 0)
        rec.feedback_refused.update(fb.get("refused", {}))
        rec.feedback_first_error.update(fb.get("first_error", {}))
        return rec

    def feedback_summary(self) -> dict:
        """The follow-up calls' outcomes: sent, accepted, refused by status code (and the first
        refusal's message of each code)."""
        return {"sent": self.feedback_sent, "accepted": self.feedback_accepted,
                "refused": dict(sorted(self.feedback_refused.items())),
                "refused_examples": dict(sorted(self.feedback_first_error.items()))}

    @property
    def count(self) -> int:
        return self.all.get_total_count()

    def error_rate(self) -> float:
        n = self.count + self.dropped
        return (self.failed.get_total_count() + self.dropped) / n if n else 0.0

    def window(self, start: float, stop: float) -> dict:
        """Calls scheduled in [start, stop) (whole seconds): ok, errors, p50/p99 of all."""
        h, ok, errors, versions = _hist(), 0, 0, collections.Counter()
        for s in range(max(int(math.floor(start)), 0), int(math.ceil(stop))):
            sec = self.seconds.get(s)
            if sec is not None:
                h.add(sec.latency)
                ok += sec.ok
                errors += sec.errors
                versions.update(sec.versions)
        return {"from_s": start, "to_s": stop, "ok": ok, "errors": errors, "p50_ms": percentile_ms(h, 50),
                "p99_ms": percentile_ms(h, 99), "versions": dict(sorted(versions.items()))}


_QUANTILES = (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))


def latency_summary(h: HdrHistogram) -> dict:
    if not h.get_total_count():
        return {"count": 0, **{k: None for k in ("p50", "p90", "p99", "p999", "mean", "min", "max")}}
    return {"count": h.get_total_count(), **{k: percentile_ms(h, q) for k, q in _QUANTILES},
            "mean": h.get_mean_value() / 1e3, "min": h.get_min_value() / 1e3,
            "max": h.get_max_value() / 1e3}


def series(rec: Recorder) -> list[dict]:
    """Per second of the run: calls scheduled, ok, errors, p50/p99 (ms), versions answering."""
    out = []
    for s in range(0, (max(rec.seconds) + 1) if rec.seconds else 0):
        sec = rec.seconds.get(s, Second())
        out.append({"t": s, "sent": sec.sent, "ok": sec.ok, "errors": sec.errors,
                    "p50_ms": percentile_ms(sec.latency, 50), "p99_ms": percentile_ms(sec.latency, 99),
                    "versions": dict(sorted(sec.versions.items()))})
    return out


# ---- sending --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answered:
    """What a ``Send`` returns when a call follows the answer (``verso bench --feedback``): the
    answering version, and ``after``, made once the Predict is recorded. Its time is not the
    Predict's latency and its failure is not the Predict's error: its outcome is counted apart
    (``Recorder.add_feedback``)."""

    version: Optional[int]
    after: Callable[[], Awaitable[object]]


# One call; returns the answering version (or an ``Answered``); raises VersoError.
Send = Callable[[], Awaitable[Union[Optional[int], Answered]]]


async def _one(send: Send, rec: Recorder, scheduled: float, start: float, clock) -> None:
    sent_at = clock()
    after = None
    try:
        version = await send()
        if isinstance(version, Answered):
            version, after = version.version, version.after
        error = None
    except VersoError as e:
        version, error = None, e
    rec.add(scheduled, clock() - (start + scheduled), error, version, lag=max(sent_at - (start + scheduled), 0.0))
    if after is not None:
        try:
            await after()
        except VersoError as e:
            rec.add_feedback(e)
        else:
            rec.add_feedback(None)


async def open_loop(send: Send, schedule: Schedule, *, clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], Awaitable] = asyncio.sleep, max_in_flight: int = MAX_IN_FLIGHT,
                    start: Optional[float] = None,
                    on_second: Optional[Callable[[int, Recorder], None]] = None) -> Recorder:
    """Send on ``schedule`` whatever the answers do; wait for the last answer. A call due while
    ``max_in_flight`` are outstanding is not sent and counts as dropped (an error of the run).
    ``start``: when (on ``clock``) the schedule's time 0 is, by default now (several processes
    share one start). ``on_second(s, rec)`` is called when second ``s`` of the schedule has been
    sent (live view)."""
    rec = Recorder()
    start = clock() if start is None else start
    pending: set[asyncio.Task] = set()
    last_second = -1
    for offset in schedule.send_times():
        delay = start + offset - clock()
        if delay > 0:
            await sleep(delay)
        if on_second is not None and int(offset) > last_second:
            if last_second >= 0:
                on_second(last_second, rec)
            last_second = int(offset)
        if len(pending) >= max_in_flight:
            rec.dropped += 1
            continue
        task = asyncio.ensure_future(_one(send, rec, offset, start, clock))
        pending.add(task)
        task.add_done_callback(pending.discard)
        rec.max_in_flight = max(rec.max_in_flight, len(pending))
    if pending:
        await asyncio.gather(*pending)
    rec.wall_s = clock() - start
    if on_second is not None and last_second >= 0:
        on_second(last_second, rec)
    return rec


async def closed_loop(send: Send, *, concurrency: int, requests: Optional[int] = None,
                      duration: Optional[float] = None, clock: Callable[[], float] = time.perf_counter,
                      on_done: Optional[Callable[[], None]] = None) -> Recorder:
    """``concurrency`` calls in flight until ``requests`` are done or ``duration`` has passed.
    Latency counts from each call's own send (a closed loop has no schedule)."""
    if concurrency < 1:
        raise StressInputError("concurrency must be at least 1")
    budget = requests if requests is not None else 10_000_000
    end = clock() + duration if duration is not None else float("inf")
    rec = Recorder()
    start = clock()
    issued = 0

    async def worker():
        nonlocal issued
        while issued < budget and clock() < end:
            issued += 1
            await _one(send, rec, clock() - start, start, clock)
            if on_done is not None:
                on_done()

    rec.max_in_flight = min(concurrency, budget)
    await asyncio.gather(*(worker() for _ in range(min(concurrency, budget))))
    rec.wall_s = clock() - start
    return rec


# ---- the limit search -----------------------------------------------------------------------------

@dataclass
class Probe:
    rate: float
    p99_s: Optional[float]
    error_rate: float
    achieved: float  # answered calls per second
    ok: bool = False


@dataclass
class Limit:
    knee: Optional[float]           # the highest rate that met the SLO (None: not even the first)
    first_bad: Optional[float]      # the lowest rate that did not (None: none failed within max_rate)
    probes: list[Probe]
    stopped_by: str                 # "precision", "max_rate", "budget", "first_probe"


async def find_limit(probe: Callable[[float], Awaitable[Probe]], *, slo_p99_s: float, max_error_rate: float,
                     start_rate: float = 10.0, max_rate: float = 100_000.0, precision: float = 0.05,
                     budget_s: float = 60.0, probe_s: float = 3.0,
                     clock: Callable[[], float] = time.monotonic) -> Limit:
    """The highest rate whose probe meets the SLO: p99 <= ``slo_p99_s`` and error rate <=
    ``max_error_rate``. Doubles from ``start_rate`` until a probe fails (or ``max_rate``), then
    bisects between the last good and the first bad rate until they are within ``precision``
    of each other. Stops early, with what it knows, when the next probe (``probe_s``) would
    pass ``budget_s``."""
    began = clock()
    probes: list[Probe] = []

    def good(p: Probe) -> bool:
        return p.p99_s is not None and p.p99_s <= slo_p99_s and p.error_rate <= max_error_rate

    async def run(rate: float) -> Optional[bool]:
        if probes and clock() - began + probe_s > budget_s:
            return None
        p = await probe(rate)
        p.ok = good(p)
        probes.append(p)
        return p.ok

    lo, hi = None, None
    rate = start_rate
    while True:
        ok = await run(rate)
        if ok is None:
            return Limit(lo, hi, probes, "budget")
        if not ok:
            hi = rate
            break
        lo = rate
        if rate >= max_rate:
            return Limit(lo, None, probes, "max_rate")
        rate = min(rate * 2, max_rate)
    if lo is None:
        return Limit(None, hi, probes, "first_probe")
    while hi / lo > 1 + precision:
        mid = math.sqrt(lo * hi) if hi / lo > 2 else (lo + hi) / 2
        ok = await run(mid)
        if ok is None:
            return Limit(lo, hi, probes, "budget")
        if ok:
            lo = mid
        else:
            hi = mid
    return Limit(lo, hi, probes, "precision")


# ---- thresholds -----------------------------------------------------------------------------------

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_LATENCY = ("p50", "p90", "p99", "p999", "mean", "max")


@dataclass(frozen=True)
class Threshold:
    """``METRIC OP VALUE``: latency percentiles of all calls (``p50 p90 p99 p999 mean max``, in
    us/ms/s, ms when bare), ``errors`` (a fraction, or a percentage with ``%``), ``rps``
    (answered calls per second)."""

    text: str
    metric: str
    op: str
    value: float  # milliseconds for latencies, a fraction for errors, per second for rps

    def actual(self, report: dict) -> Optional[float]:
        if self.metric in _LATENCY:
            return report["latency_ms"]["all"][self.metric]
        if self.metric == "errors":
            return report["error_rate"]
        return report["ok_per_s"]

    def check(self, report: dict) -> tuple[bool, Optional[float]]:
        value = self.actual(report)
        return (value is not None and _OPS[self.op](value, self.value)), value


def parse_threshold(text: str) -> Threshold:
    m = re.fullmatch(r"\s*([a-z0-9]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s|%)?\s*",
                     text or "")
    if not m:
        raise StressInputError(f"threshold {text!r}: expected METRIC<VALUE, e.g. 'p99<50ms' or 'errors<0.1%'")
    metric, op, number, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4)
    if metric in _LATENCY:
        if unit == "%":
            raise StressInputError(f"threshold {text!r}: a latency takes us, ms or s, not %")
        value = number * {"us": 1e-3, "ms": 1.0, "s": 1e3, None: 1.0}[unit]
    elif metric == "errors":
        if unit not in ("%", None):
            raise StressInputError(f"threshold {text!r}: errors are a fraction or a percentage")
        value = number / 100 if unit == "%" else number
    elif metric == "rps":
        if unit is not None:
            raise StressInputError(f"threshold {text!r}: rps takes a plain number")
        value = number
    else:
        raise StressInputError(f"threshold {text!r}: unknown metric {metric!r} "
                               f"(one of {', '.join(_LATENCY)}, errors, rps)")
    return Threshold(text.strip(), metric, op, value)


def check_thresholds(thresholds: list[Threshold], report: dict) -> list[dict]:
    out = []
    for t in thresholds:
        passed, value = t.check(report)
        out.append({"threshold": t.text, "passed": passed, "actual": value})
    return out


# ---- the report -----------------------------------------------------------------------------------

def summarize(rec: Recorder, *, mode: str, target: str, model: str, rows: int, **extra) -> dict:
    """The run's report (JSON-ready). Latency percentiles are over **all** calls (``all``), and
    apart for successes (``ok``) and failures (``errors``); open-loop latencies count from
    the scheduled send time."""
    wall = max(rec.wall_s, 1e-9)
    ok = rec.ok.get_total_count()
    failed = rec.failed.get_total_count()
    report = {
        "mode": mode, "target": target, "model": model, "rows_per_request": rows,
        "requests": rec.count, "ok": ok, "errors": dict(sorted(rec.errors.items())),
        "error_examples": dict(sorted(rec.first_error.items())), "dropped_by_tool": rec.dropped,
        "error_rate": rec.error_rate(), "duration_s": rec.wall_s, "requests_per_s": rec.count / wall,
        "ok_per_s": ok / wall, "rows_per_s": ok * rows / wall,
        "latency_ms": {"all": latency_summary(rec.all), "ok": latency_summary(rec.ok),
                       "errors": latency_summary(rec.failed)},
        "failed": failed,
        "versions": dict(sorted(rec.versions.items())),
        "tool": {"lag_p99_ms": percentile_ms(rec.lag, 99),
                 "lag_max_ms": rec.lag.get_max_value() / 1e3 if rec.count else None,
                 "max_in_flight": rec.max_in_flight},
        "series": series(rec),
    }
    if rec.feedback_sent:
        report["feedback"] = rec.feedback_summary()
    report.update(extra)
    return report
