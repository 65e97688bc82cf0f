"""client.report: the dashboard page written with its data embedded, and the matplotlib figure,
on constructed RolloutStatus messages (full evidence, and none at all)."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser

import pytest

from client import report
from protos import rollout_pb2


def _full_status() -> rollout_pb2.RolloutStatus:
    st = rollout_pb2.RolloutStatus()
    st.config.model = "digits"
    st.config.stable = 2
    st.config.canary = 3
    st.config.canary_percent = 50
    st.config.gates.max_p99_ratio = 2
    st.verdict.decision = "ROLLBACK"
    st.verdict.final = True
    st.verdict.reasons.append("accuracy FAIL: </script><!-- a reason that looks like markup")
    check = st.verdict.checks.add(name="accuracy", result="FAIL", statistic=0.87, low=0.84, high=0.89, limit=0.01,
                                  canary_samples=700, stable_samples=710)
    check.subject = ""
    st.decisions.add(unix_time=1.7e9, text="ROLLBACK: canary v3 50 % -> 0 %", who="automatic")
    st.alarms.append("v1 is old")
    for version, role, accuracy, p99, cpu in ((2, "stable", 0.98, 4.0, 0.5), (3, "canary", 0.1, 9.0, 0.4),
                                              (1, "not in rollout", -1, -1, -1)):
        v = st.versions.add(version=version, role=role, traffic_percent=50 if role != "not in rollout" else 0,
                            requests=800 if accuracy >= 0 else 0, error_rate=0, p50_ms=p99 / 5 if p99 > 0 else -1,
                            p99_ms=p99, accuracy=accuracy, age_seconds=100, feedback=800 if accuracy >= 0 else 0)
        if p99 > 0:
            # one far outlier at p100: the log axis keeps the rest readable
            v.latency_deciles_ms.extend([0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0, 250.0])
            for i in range(10):
                v.accuracy_history.add(seconds_ago=10 - i, accuracy=accuracy if i != 4 else -1, rows=80,
                                       loss=0.1 if role == "stable" else (-1 if i == 2 else 20.0))
            for k in range(10):
                recall = accuracy if k else (-1 if role == "stable" else 1.0)
                v.classes.add(label=str(k), support=80, predicted=80, recall=recall, precision=0.9)
            v.slices.add(slice="mobile", rows=300, accuracy=accuracy, loss=0.2)
            v.loss.rows, v.loss.log_loss, v.loss.brier, v.loss.mse, v.loss.mae = 800, 0.1, 0.05, -1, -1
            v.cost.predictions, v.cost.cpu_seconds, v.cost.cpu_seconds_per_1000 = 800, cpu * 0.8, cpu
            v.cost.shadow_cpu_seconds_per_1000 = -1 if role == "stable" else 0.3
            v.cost.money_per_1000, v.cost.currency = 0.002, "EUR"
            v.drift.has_reference, v.drift.drifting = True, role == "canary"
            v.drift.worst.add(feature="images[13]", psi=0.4, ks_statistic=0.3, ks_pvalue=0.001)
    return st


def _empty_status() -> rollout_pb2.RolloutStatus:
    st = rollout_pb2.RolloutStatus()
    st.config.model = "empty"
    st.config.stable = 1
    st.versions.add(version=1, role="stable", p50_ms=-1, p99_ms=-1, accuracy=-1, age_seconds=-1)
    return st


class _Page(HTMLParser):
    """Scripts' text, and every src/href attribute."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append(value)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _parse(path) -> _Page:
    parser = _Page()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    parser.close()
    return parser


def _embedded(parser: _Page) -> dict:
    prefix = "window.VERSO_DATA = "
    found = [s for s in parser.scripts if s.startswith(prefix)]
    assert len(found) == 1, parser.scripts
    return json.loads(found[0][len(prefix):].rstrip().rstrip(";"))


def test_page_is_self_contained():
    html = report.page()
    assert report.MAIN_SCRIPT in html and "VERSO_DATA" in html
    parser = _Page()
    parser.feed(html)
    assert parser.links and all(not link.startswith(("http:", "https:", "//")) for link in parser.links), parser.links
    assert "<script src" not in html and "@import" not in html


@pytest.mark.parametrize("status", [_full_status(), _empty_status()], ids=["full", "empty"])
def test_write_html_embeds_the_document(tmp_path, status):
    doc = report.status_document(status, models=[{"name": status.config.model, "versions": []}])
    assert doc["rollouts"][0]["config"]["stable"] == str(status.config.stable)  # int64 as proto3 JSON has them
    path = tmp_path / "report.html"
    report.write_html(doc, str(path))
    parser = _parse(path)
    assert _embedded(parser) == doc
    assert len(parser.scripts) == 2  # the data, then the page's own script: no "</script>" in the data broke out
    assert all(not link.startswith(("http:", "https:", "//")) for link in parser.links), parser.links
    text = path.read_text(encoding="utf-8")
    assert text.index("window.VERSO_DATA") < text.index(report.MAIN_SCRIPT)


def test_write_html_of_an_empty_document(tmp_path):
    path = tmp_path / "empty.html"
    report.write_html({"unix_time": 0, "models": [], "rollouts": []}, str(path))
    assert _embedded(_parse(path)) == {"unix_time": 0, "models": [], "rollouts": []}


def test_embed_needs_the_main_script():
    with pytest.raises(ValueError):
        report.embed({}, "<html><body></body></html>")


@pytest.mark.parametrize("status", [_full_status(), _empty_status(), rollout_pb2.RolloutStatus()],
                         ids=["full", "empty", "nothing"])
def test_plot_writes_a_png(tmp_path, status):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    path = tmp_path / "rollout.png"
    report.plot(status, str(path))
    assert path.exists() and path.stat().st_size > 0
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_plot_without_matplotlib_raises_import_error(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError):
        report.plot(_full_status(), str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
