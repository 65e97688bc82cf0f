"""How ``verso bench`` shows a run: the live per-second table, the summary, the plot.

Pure functions of the report dict (``client.stress.summarize``) and of the ``Recorder``
while it fills; rich for the terminal, matplotlib (the ``plot`` extra) for ``--plot``.
"""

from __future__ import annotations

from typing import Optional

from client.stress import Recorder, Second, percentile_ms


def _f(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _versions(counts: dict) -> str:
    return " ".join(f"v{k}:{n}" for k, n in sorted(counts.items())) or "-"


def live_table(rec: Recorder, last: int, rows: int = 12):
    """The last ``rows`` seconds of a run in progress (by scheduled second)."""
    from rich.table import Table

    t = Table(title="verso bench (live)", expand=False)
    for name in ("s", "sent/s", "ok", "errors", "p50 ms", "p99 ms", "versions"):
        t.add_column(name, justify="right" if name != "versions" else "left")
    for s in range(max(0, last - rows + 1), last + 1):
        sec = rec.seconds.get(s, Second())
        t.add_row(str(s), str(sec.sent), str(sec.ok), str(sec.errors), _f(percentile_ms(sec.latency, 50)),
                  _f(percentile_ms(sec.latency, 99)), _versions(dict(sec.versions)))
    return t


def summary_lines(report: dict) -> list[tuple[str, str]]:
    lat = report["latency_ms"]
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "0"
    rows = [("requests", str(report["requests"])), ("ok", str(report["ok"])), ("errors", errors)]
    if report.get("dropped_by_tool"):
        rows.append(("dropped by the tool", str(report["dropped_by_tool"])))
    rows += [("seconds", f"{report['duration_s']:.2f}"), ("req/s", f"{report['requests_per_s']:.1f}"),
             ("rows/s", f"{report['rows_per_s']:.1f}")]
    for q in ("p50", "p90", "p99", "max"):
        rows.append((f"{q} ms", _f(lat["all"][q])))
    if report["failed"]:
        rows.append(("p99 ms, ok only", _f(lat["ok"]["p99"])))
        rows.append(("p99 ms, errors only", _f(lat["errors"]["p99"])))
    rows.append(("versions", _versions(report["versions"])))
    if report["mode"] != "closed":
        rows.append(("tool lag p99 ms", _f(report["tool"]["lag_p99_ms"])))
    rows += feedback_lines(report)
    return rows


def feedback_lines(report: dict) -> list[tuple[str, str]]:
    """``--feedback``: the feedback calls' outcomes, apart from the Predict calls above (their
    time is not in the latency, a refusal is not a Predict error)."""
    fb = report.get("feedback")
    if not fb:
        return []
    refused = ", ".join(f"{k} {n}" for k, n in fb["refused"].items()) or "0"
    rows = [("feedback sent", str(fb["sent"])), ("feedback accepted", str(fb["accepted"])),
            ("feedback refused", refused)]
    if fb.get("no_request_id"):
        rows.append(("answers without a request id", str(fb["no_request_id"])))
    return rows


def headline(report: dict) -> str:
    mode = report["mode"]
    if mode == "closed":
        how = f"{report['concurrency']} in flight"
    elif mode == "rate":
        how = f"open loop at {report['rate']:g} req/s"
    elif mode == "stages":
        how = "open loop, stages " + ",".join(f"{s['duration_s']:g}s:{s['rate']:g}" for s in report["stages"])
    else:
        how = f"limit search, SLO p99 <= {report['slo_p99_ms']:g} ms"
    return (f"bench {report['model']} at {report['target']}: {how}, "
            f"{report['rows_per_request']} rows per request")


def fault_lines(report: dict) -> list[str]:
    out = []
    for f in report.get("faults", []):
        b, a = f["before"], f["after"]
        result = f["result"] if f["error"] is None else f"FAILED: {f['error']}"
        out.append(f"fault {f['label']} at {f['at_s']:g}s: {result}; 5 s before: {b['ok']} ok, {b['errors']} errors, "
                   f"p99 {_f(b['p99_ms'])} ms; 5 s after: {a['ok']} ok, {a['errors']} errors, "
                   f"p99 {_f(a['p99_ms'])} ms, versions {_versions(a['versions'])}")
    return out


def limit_lines(report: dict) -> list[str]:
    lim = report["limit"]
    out = [f"{'rate':>9} {'p99 ms':>9} {'errors':>8} {'answered/s':>10}  meets SLO"]
    for p in lim["probes"]:
        out.append(f"{p['rate']:9.1f} {_f(p['p99_ms']):>9} {p['error_rate'] * 100:7.2f}% {p['achieved']:10.1f}  "
                   f"{'yes' if p['ok'] else 'no'}")
    if lim["knee"] is None:
        out.append(f"knee: below {lim['first_bad']:g} req/s (the first probe missed the SLO)")
    elif lim["first_bad"] is None:
        out.append(f"knee: at least {lim['knee']:.1f} req/s (no probe up to --max-rate missed the SLO)")
    else:
        out.append(f"knee: {lim['knee']:.1f} req/s (SLO met), {lim['first_bad']:.1f} req/s missed it "
                   f"(stopped by {lim['stopped_by']})")
    return out


def plot(report: dict, path: str) -> None:
    """Latency percentiles and throughput per second with faults marked; for a limit search,
    p99 and answered rate against the offered rate with the SLO and the knee."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install 'verso[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    if report["mode"] == "find-limit":
        fig, ax = plt.subplots(figsize=(8, 4.5))
        probes = sorted(report["limit"]["probes"], key=lambda p: p["rate"])
        rates = [p["rate"] for p in probes]
        ax.plot(rates, [p["p99_ms"] if p["p99_ms"] is not None else float("nan") for p in probes], "o-",
                label="p99 (ms)")
        ax.axhline(report["slo_p99_ms"], color="red", linestyle="--", label="SLO p99")
        if report["limit"]["knee"]:
            ax.axvline(report["limit"]["knee"], color="green", linestyle=":", label="knee")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten
            axis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax2 = ax.twinx()
        ax2.plot(rates, [p["achieved"] for p in probes], "s--", color="gray", label="answered/s")
        ax2.set_ylabel("answered req/s")
        ax.legend(loc="upper left")
        ax.set_title(f"{report['model']}: latency against offered rate")
    else:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        s = report["series"]
        t = [x["t"] for x in s]
        ax.plot(t, [x["p50_ms"] if x["p50_ms"] is not None else float("nan") for x in s], label="p50")
        ax.plot(t, [x["p99_ms"] if x["p99_ms"] is not None else float("nan") for x in s], label="p99")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylabel("latency (ms)")
        ax2.plot(t, [x["ok"] for x in s], label="ok/s")
        ax2.plot(t, [x["errors"] for x in s], label="errors/s", color="red")
        for v in sorted({k for x in s for k in x["versions"]}):  # a swap or a rollout shows here
            ax2.plot(t, [x["versions"].get(v, 0) for x in s], linestyle="--", label=f"answered by v{v}")
        ax2.set_ylabel("calls per second")
        ax2.set_xlabel("seconds (by scheduled send time)")
        for f in report.get("faults", []):
            for a in (ax, ax2):
                a.axvline(f["at_s"], color="black", linestyle=":")
            ax.annotate(f["label"], (f["at_s"], 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=8)
        ax.legend(loc="upper left")
        ax2.legend(loc="upper left")
        ax.set_title(f"{report['model']}: {headline(report).split(': ', 1)[1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
