"""Reports of a rollout: the dashboard page as one offline HTML file, and a matplotlib figure.

``write_html(doc, path)`` writes the server's dashboard page (``protos/static/dashboard.html``,
the page ``GET /dashboard`` serves) with a data document embedded as ``window.VERSO_DATA``: the
page then renders that document and fetches nothing, so the file opens anywhere without a
server. The document has the shape of ``GET /dashboard/data.json``::

    {"unix_time": float, "models": [...], "rollouts": [RolloutStatus as proto3 JSON, ...]}

``status_document(status)`` makes one from a ``RolloutStatus``.

``plot(status, path)`` draws a ``RolloutStatus`` with matplotlib (needs ``pip install
'verso[plot]'``; an ``ImportError`` is raised when it is missing): the latency distributions up
to p99.9 (p99 and the gate marked), accuracy and loss over time on one time axis (the span
every version covers shaded), recall per class, and cost per 1000 predictions.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Optional

from client.terminal import printable

MAIN_SCRIPT = '<script id="verso-main">'
DEFAULT_P99_RATIO = 1.2  # Gates.max_p99_ratio when 0
DEFAULT_P99_INCREASE_MS = 5.0  # Gates.max_p99_increase_ms when 0 (negative: none)

_ROLE_COLORS = {"stable": "#2f6fd6", "canary": "#e07b18"}
_OTHER_COLORS = ["#8a94a3", "#7b4bb7", "#2a9d8f", "#b5476b"]


def page() -> str:
    """The dashboard page as the server serves it."""
    return (resources.files("protos") / "static" / "dashboard.html").read_text(encoding="utf-8")


def embed(doc: dict, html: Optional[str] = None) -> str:
    """The page with ``doc`` embedded as ``window.VERSO_DATA`` before its main script."""
    html = page() if html is None else html
    at = html.find(MAIN_SCRIPT)
    if at < 0:
        raise ValueError(f"the dashboard page has no {MAIN_SCRIPT!r} to embed the data before")
    # JSON inside <script>: no "<" may start "</script>" or "<!--", so every "<" (only ever inside
    # strings) is written as its \u escape, which JavaScript reads back as "<".
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    data = data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"{html[:at]}<script>window.VERSO_DATA = {data};</script>\n{html[at:]}"


def write_html(doc: dict, path: str) -> None:
    """Write the dashboard page with ``doc`` (a ``/dashboard/data.json`` document) embedded."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(embed(doc))


def status_document(status, models: Optional[list] = None) -> dict:
    """A data document holding one ``RolloutStatus`` (and ``models``, the models table, if given)."""
    from google.protobuf import json_format

    rollout = json_format.MessageToDict(status, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return {"unix_time": time.time(), "models": list(models or []), "rollouts": [rollout]}


# ---- the matplotlib figure ----

def _known(x) -> Optional[float]:
    """x as a float, or None when it is -1 (unknown), negative or not finite."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x >= 0 else None


def _name(v) -> str:
    return f"v{v.version} {v.role}".strip()


def _colors(versions) -> dict:
    colors, others = {}, iter(_OTHER_COLORS * 4)
    for v in versions:
        colors[v.version] = _ROLE_COLORS.get(v.role) or next(others, "#8a94a3")
    return colors


def _no_data(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center", color="#8a94a3",
            fontsize=12, style="italic")
    # labels hidden rather than ticks removed: an axis sharing x with this one keeps its ticks
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)


def _nines(q: float) -> float:
    """A quantile (0..1) on the "nines" axis of a latency distribution: 1 / (1 - q), log
    scaled, so that p90, p99 and p99.9 are evenly spaced and the tail is drawn, not squeezed."""
    return 1.0 / (1.0 - q)


def latency_points(v) -> list[tuple[float, float]]:
    """(quantile 0..1, latency ms) of a version: its quantiles up to p99.9 when the status has
    them, else its deciles (p0 .. p90; p100 has no place on a nines axis)."""
    levels, values = list(v.latency_quantile_levels), list(v.latency_quantiles_ms)
    if not (levels and len(levels) == len(values)):
        deciles = list(v.latency_deciles_ms)
        steps = max(len(deciles) - 1, 1)
        levels, values = [100.0 * q / steps for q in range(len(deciles))], deciles
    return [(lv / 100.0, ms) for lv, ms in zip(levels, values) if lv < 100 and _known(ms) and ms > 0]


def _latency(ax, status, colors) -> None:
    title = "latency distribution up to p99.9 (successful calls in the window)"
    versions = [v for v in status.versions if latency_points(v)]
    if not versions:
        _no_data(ax, title)
        return
    ys = []
    for v in versions:
        pts = latency_points(v)
        ys += [p[1] for p in pts]
        ax.plot([_nines(q) for q, _ in pts], [ms for _, ms in pts], marker=".", color=colors[v.version],
                label=_name(v))
        p99 = _known(v.p99_ms)
        if p99 and p99 > 0:
            ys.append(p99)
            ax.plot([_nines(0.99)], [p99], marker="D", color=colors[v.version], linestyle="none",
                    label=f"v{v.version} p99 {p99:.3g} ms")
    ax.axvline(_nines(0.99), color="#5f6b7a", linestyle=":", linewidth=1)
    stable = next((v for v in status.versions if v.role == "stable"), None)
    if stable is not None and _known(stable.p99_ms):
        ratio = status.config.gates.max_p99_ratio or DEFAULT_P99_RATIO
        allowance = status.config.gates.max_p99_increase_ms or DEFAULT_P99_INCREASE_MS
        # The latency check passes within the ratio OR the absolute allowance: the gate is the larger.
        gate = max(stable.p99_ms * ratio, stable.p99_ms + allowance if allowance > 0 else 0.0)
        if gate > 0:
            ys.append(gate)
            what = f"x {ratio:g}" + (f" or + {allowance:g} ms" if allowance > 0 else "")
            ax.axhline(gate, color="#c62828", linestyle="--", linewidth=1.2, label=f"gate: stable p99 {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [(0.0, "p0"), (0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")]
    ax.set_xticks([_nines(q) for q, _ in ticks], [t for _, t in ticks])
    ax.minorticks_off()
    ax.set_xlim(0.9, _nines(0.999) * 1.3)
    from matplotlib.ticker import ScalarFormatter
    ax.yaxis.set_major_formatter(ScalarFormatter())  # 2, 5, 10 ms, not powers of ten
    lo, hi = min(ys), max(ys)
    ax.set_ylim(lo / 1.3, hi * 1.3)  # on a log axis one far outlier still leaves the rest readable
    ax.set_xlabel("percentile (the tail spread out: p90, p99, p99.9 evenly spaced)")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def _history(acc_ax, loss_ax, status, colors) -> None:
    """Accuracy (top) and mean loss (bottom) of each slice of the feedback window, x shared; the
    number over each accuracy point is the slice's feedback rows. -1 (unknown) points are left out."""
    title = "accuracy over time (feedback window)"
    acc_versions = [v for v in status.versions if any(_known(p.accuracy) is not None for p in v.accuracy_history)]
    loss_versions = [v for v in status.versions if any(_known(p.loss) is not None for p in v.accuracy_history)]
    if not acc_versions:
        _no_data(acc_ax, title)
    spans = {}
    for v in acc_versions:
        color = colors[v.version]
        acc = [(-p.seconds_ago, p.accuracy * 100, p.rows) for p in v.accuracy_history if _known(p.accuracy) is not None]
        spans[v.version] = (min(a[0] for a in acc), max(a[0] for a in acc))
        label = f"{_name(v)} (window: the last {-spans[v.version][0]:.0f} s)"
        acc_ax.plot([a[0] for a in acc], [a[1] for a in acc], marker="o", color=color, label=label)
        for x, y, rows in acc:
            acc_ax.annotate(f"{rows}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7,
                            color=color)
    if len(spans) >= 2:
        # The same minutes for every version: shaded where all the windows overlap, so that
        # accuracies are compared over one span, not one version's recent past against another's.
        start, end = max(s[0] for s in spans.values()), min(s[1] for s in spans.values())
        if start < end:
            acc_ax.axvspan(start, end, color="#8a94a3", alpha=0.12, label="span of every version")
        else:
            acc_ax.text(0.01, 0.02, "the versions' feedback windows do not overlap in time", fontsize=8,
                        transform=acc_ax.transAxes, color="#c62828")
    if acc_versions:
        acc_ax.set_title(title + " (numbers: rows per slice)")
        acc_ax.set_ylabel("accuracy, %")
        low = min(p.accuracy * 100 for v in acc_versions for p in v.accuracy_history if _known(p.accuracy) is not None)
        acc_ax.set_ylim(max(0.0, math.floor(low / 10) * 10 - 5), 108)
        acc_ax.grid(True, alpha=0.3)
        acc_ax.legend(fontsize=8, loc="best")
        acc_ax.tick_params(labelbottom=False)
    if not loss_versions:
        _no_data(loss_ax, "")
        loss_ax.set_ylabel("mean loss")
        return
    for v in loss_versions:
        loss = [(-p.seconds_ago, p.loss) for p in v.accuracy_history if _known(p.loss) is not None]
        loss_ax.plot([p[0] for p in loss], [p[1] for p in loss], marker="x", linestyle="--", color=colors[v.version],
                     label=_name(v))
    loss_ax.set_ylabel("mean loss")
    loss_ax.set_xlabel("seconds before now")
    loss_ax.grid(True, alpha=0.3)
    if not acc_versions:
        loss_ax.legend(fontsize=8, loc="best")


def _recall(ax, status, colors) -> None:
    title = "recall per class (feedback)"
    versions = [v for v in status.versions if v.role in ("stable", "canary") and v.classes] \
        or [v for v in status.versions if v.classes]
    labels = sorted({c.label for v in versions for c in v.classes}, key=lambda s: (len(s), s))
    if not labels:
        _no_data(ax, title)
        return
    width = 0.8 / len(versions)
    for i, v in enumerate(versions):
        recall = {c.label: c.recall for c in v.classes}
        xs = [j + (i - (len(versions) - 1) / 2) * width for j in range(len(labels))]
        heights = [(_known(recall.get(label, -1)) or 0) * 100 for label in labels]
        ax.bar(xs, heights, width=width, color=colors[v.version], label=_name(v))
        for x, label in zip(xs, labels):  # a bar too low to see: say what it is
            r = _known(recall.get(label, -1))
            if r is None or r < 0.01:
                ax.text(x, 1, "–" if r is None else "0", ha="center", va="bottom",
                        fontsize=11 if r is None else 8, color="#5f6b7a" if r is None else colors[v.version])
    ax.set_xticks(range(len(labels)))
    # Class labels come from callers' feedback: shown as written, never read as mathtext ("$x^{$"
    # made savefig raise and `verso compare --plot` fail).
    ax.set_xticklabels([printable(label) for label in labels], rotation=45 if len(labels) > 12 else 0,
                       parse_math=False)
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("recall, %")
    ax.set_xlabel("class")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=len(versions))


def _cost(ax, status, colors) -> None:
    title = "cost per 1000 predictions"
    versions = [v for v in status.versions if v.HasField("cost") and _known(v.cost.cpu_seconds_per_1000) is not None]
    if not versions:
        _no_data(ax, title)
        return
    shadow = any(_known(v.cost.shadow_cpu_seconds_per_1000) is not None for v in versions)
    width = 0.38 if shadow else 0.6
    top = 0.0
    for i, v in enumerate(versions):
        cpu = v.cost.cpu_seconds_per_1000
        x = i - width / 2 if shadow else i
        ax.bar([x], [cpu], width=width, color=colors[v.version])
        top = max(top, cpu)
        note = f"{cpu:.3g} s"
        money = _known(v.cost.money_per_1000)
        if money is not None:
            note += f"\n{money:.3g} {printable(v.cost.currency or 'USD')}"
        train = _known(v.cost.training_money_per_1000)
        if train is not None:  # verso_model.json's training cost over the predictions served
            note += f"\n+ training {train:.3g} {printable(v.cost.training.currency or v.cost.currency or 'USD')}"
        ax.annotate(note, (x, cpu), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
                    parse_math=False)  # the currency is a caller's text
        s = _known(v.cost.shadow_cpu_seconds_per_1000)
        if shadow and s is not None:
            ax.bar([i + width / 2], [s], width=width, color=colors[v.version], alpha=0.45, hatch="//")
            ax.annotate(f"shadow\n{s:.3g} s", (i + width / 2, s), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
            top = max(top, s)
    ax.set_xticks(range(len(versions)))
    ax.set_xticklabels([_name(v) for v in versions])
    ax.set_ylim(0, top * 1.3 if top > 0 else 1)
    ax.set_ylabel("CPU seconds per 1000 predictions")
    ax.set_title(title + (" (hatched: as shadow)" if shadow else ""))
    ax.grid(True, axis="y", alpha=0.3)


def headline(status) -> str:
    """The verdict and the versions in one line ("PROMOTED (stable v2, was v1)" after a promotion)."""
    v, cfg = status.verdict, status.config
    if v.promoted_version and not cfg.canary:
        return f"PROMOTED (stable v{cfg.stable}" + (f", was v{v.promoted_from})" if v.promoted_from else ")")
    verdict = (v.decision or "no verdict") + (" (final)" if v.final else "")
    roles = f"stable v{cfg.stable}" + (f", canary v{cfg.canary}" if cfg.canary else "")
    failed = (f"; failed analyses {v.failed_analyses} of {v.failure_threshold}"
              if cfg.canary and v.failure_threshold and v.failed_analyses else "")
    return f"{verdict} ({roles}{failed})"


def plot(status, path: str) -> None:
    """Draw ``status`` (a ``RolloutStatus``) to ``path`` (PNG, SVG or PDF by its suffix): latency
    distributions to p99.9 with p99 and the p99 gate, accuracy and loss over time, recall per
    class, cost.
    Raises ImportError when matplotlib is not installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 10), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no global state, no GUI backend
    grid = fig.add_gridspec(2, 2)
    lat, rec, cost = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    history = grid[0, 1].subgridspec(2, 1, height_ratios=[3, 2])
    acc = fig.add_subplot(history[0])
    loss = fig.add_subplot(history[1], sharex=acc)
    colors = _colors(status.versions)
    _latency(lat, status, colors)
    _history(acc, loss, status, colors)
    _recall(rec, status, colors)
    _cost(cost, status, colors)
    fig.suptitle(printable(f"{status.config.model or 'rollout'}: {headline(status)}"), fontsize=14,
                 fontweight="bold", parse_math=False)
    fig.savefig(path)
