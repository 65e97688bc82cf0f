"""What callers sent, shown by the ``verso`` command line: never read as rich markup, emoji codes
or terminal control sequences.

Before issue 26 a caller's slice key ``[/]`` (one Predict with the ``verso-slice`` header) made
``verso compare`` and ``verso rollout status`` crash with rich's MarkupError for everyone who
looked at the rollout, ``[bold red]...`` restyled the operator's terminal, and a feedback label
holding an escape sequence reached the terminal as is (OSC 52 writes the clipboard)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client import Client
from tests.helpers import digits_server, run_verso

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = ROOT / "model_repository" / "digits_holdout.npz"

# Slice keys travel in a header: printable ASCII only. Labels travel in the message: anything.
HOSTILE_SLICES = ["[/]", "[bold red]x[/]", "[link=javascript:alert(1)]x", ":thumbs_up:", "[/bold]"]
HOSTILE_LABELS = ["[/]", "\x1b]52;c;aGk=\x07clip", "\x1b[2Jcls", "a\r\nverdict: PROMOTE"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-cli")
    with digits_server(root) as srv:
        yield srv


def _verso(server, *args):
    return run_verso(*args, env={"VERSO_TARGET": f"127.0.0.1:{server.port}"})


def test_hostile_slice_keys_and_labels_are_shown_as_they_are(server):
    x = np.load(HOLDOUT)["images"][:1]
    with Client(f"127.0.0.1:{server.port}") as c:
        c.set_rollout("digits", stable=1, canary=2, canary_percent=50)
        for i, key in enumerate(HOSTILE_SLICES * 2):
            p = c.predict("digits", x, routing_key=f"user-{i}", slice=key, details=True)
            c.feedback(p.request_id, [HOSTILE_LABELS[i % len(HOSTILE_LABELS)]])
    for args in (("compare", "digits"), ("rollout", "status", "digits")):
        r = _verso(server, *args)
        assert r.returncode == 0, (args, r.stderr)
        for key in HOSTILE_SLICES:
            assert key in r.stdout, (key, r.stdout)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout
        assert "\\x1b]52;c;aGk=\\x07clip" in r.stdout and "\\x1b[2Jcls" in r.stdout
        assert "a\\x0d\\x0averdict: PROMOTE" in r.stdout  # a forged line stays inside its cell


# ---- every output function, fed hostile strings directly (no server) ---------------------------

HOSTILE = ["[/]", "[bold red]x[/]", "[link=javascript:alert(1)]x", ":smile:", "\x1b]0;title\x07t", "l1\nl2",
           "\u202eevil"]
SHOWN = ["[/]", "[bold red]x[/]", "[link=javascript:alert(1)]x", ":smile:", "\\x1b]0;title\\x07t", "l1\\x0al2",
         "\\u202eevil"]


def _assert_literal(out: str) -> None:
    for text in SHOWN:
        assert text in out, (text, out)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "😄" not in out
    assert "l1\nl2" not in out


def _hostile_status():
    from protos import rollout_pb2
    st = rollout_pb2.RolloutStatus()
    st.config.model, st.config.stable, st.config.canary, st.config.canary_percent = " ".join(HOSTILE), 1, 2, 10
    for n, role in ((1, "stable"), (2, "canary")):
        v = st.versions.add(version=n, role=role, traffic_percent=50, requests=10, accuracy=0.5, feedback=4)
        for i, text in enumerate(HOSTILE):
            v.errors[text] = i + 1
            v.classes.add(label=text, support=2, predicted=1, recall=0.5, precision=0.5)
            v.slices.add(slice=text, rows=2, accuracy=0.5, loss=-1)
            v.outputs[text].max_abs_diff = 0.1
            v.outputs[text].top1_agreement = -1
        v.info.problems.extend(HOSTILE)
        v.drift.has_reference = True
        v.drift.worst.add(feature=HOSTILE[0], psi=0.3)
    st.verdict.decision = "HOLD"
    st.verdict.reasons.extend(HOSTILE)
    st.verdict.checks.add(name=HOSTILE[1], result=HOSTILE[2], statistic=1.0, low=0.5, high=1.5, limit=2,
                          subject=HOSTILE[4], canary_samples=3, stable_samples=3)
    st.alarms.extend(HOSTILE)
    for text in HOSTILE:
        st.decisions.add(unix_time=1e9, who=text, text=text)
    return st


def test_compare_and_rollout_status_show_hostile_text_literally(capsys):
    from client import cli
    st = _hostile_status()
    cli._show_compare(st, False)
    cli._show_status_log(st)
    _assert_literal(capsys.readouterr().out)


def test_status_metadata_and_predict_show_hostile_text_literally(capsys):
    from client import cli
    from client.types import ModelMetadata, Signature, TensorSpec, VersionStatus
    name = " ".join(HOSTILE)
    cli._show_status(name, [VersionStatus(1, "END", "UNKNOWN", name)], False)
    specs = {t: TensorSpec(t, "DT_STRING", (-1,), t) for t in HOSTILE}
    cli._show_metadata(ModelMetadata(name, 1, {t: Signature(t, t, specs, specs) for t in HOSTILE}), False, True)
    cli._show_predict({t: np.array([t.encode(), b"ok"]) for t in HOSTILE}, 1, False)
    cli._show_predict({"matrix": np.arange(4.0).reshape(2, 2)}, 1, False)
    out = capsys.readouterr().out
    _assert_literal(out)
    rows = [line for line in out.splitlines() if "[[0. 1.]" in line or "[2. 3.]]" in line]
    assert len(rows) == 2  # the value's own line breaks are kept


def test_bench_report_and_live_table_show_hostile_text_literally(capsys):
    from client import cli, stress, stress_view
    from client.errors import VersoError
    rec = stress.Recorder()
    rec.wall_s = 1.0
    for i, text in enumerate(HOSTILE):
        rec.add(0.1 * i, 0.01, VersoError.invalid(text) if i % 2 else None, i)
    rec.first_error = {"INVALID_ARGUMENT": " ".join(HOSTILE)}
    report = stress.summarize(rec, mode="closed", target="t", model=" ".join(HOSTILE), rows=1, concurrency=1)
    report["faults"] = [{"label": " ".join(HOSTILE), "at_s": 1.0, "result": "ok", "error": None,
                         "before": {"ok": 1, "errors": 0, "p99_ms": 1.0, "versions": {}},
                         "after": {"ok": 1, "errors": 0, "p99_ms": 1.0, "versions": {}}}]
    cli._show_bench(report)
    cli._console().print(stress_view.live_table(rec, 1))
    _assert_literal(capsys.readouterr().out)


def test_one_line_errors_are_printable():
    from client import cli
    assert cli._one_line("NOT_FOUND: Latest(\x1b[2Jm\u202e)\n[/]") == "NOT_FOUND: Latest(\\x1b[2Jm\\u202e) [/]"


def test_the_plot_shows_hostile_labels_as_text(tmp_path):
    """matplotlib reads ``$...$`` as mathtext: a feedback label ``$x^{$`` made savefig raise, so
    ``verso compare --plot`` failed for everyone."""
    pytest.importorskip("matplotlib")
    from client import report
    st = _hostile_status()
    st.versions[0].classes.add(label="$x^{$", support=1, recall=0.5)
    st.versions[0].cost.cpu_seconds_per_1000, st.versions[0].cost.money_per_1000 = 1.0, 2.0
    st.versions[0].cost.currency = "$\\frac{$"
    st.config.model = "$x^{$"
    report.plot(st, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
