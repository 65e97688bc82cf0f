"""The monitoring files in deploy/: the Prometheus alert rules pass ``promtool check rules`` and
fire in ``promtool test rules`` on series made for them; the Grafana dashboard's expressions are
valid PromQL; and every metric name either file uses is one Verso exports (EXPORTED here; the
integration test tests/integration/test_monitoring_names.py checks the same names against a
live scrape).

promtool comes from Debian's ``prometheus`` package. Without it these tests skip, unless
VERSO_REQUIRE_TOOLS is set (CI sets it), where they fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "verso-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "verso-rollouts.json"

# The names Verso exports, as its Prometheus text's ``# TYPE`` lines give them (counters end in
# _total; a histogram's samples add _bucket, _sum and _count), with their type.
EXPORTED = {
    "verso_request_count_total": "counter",
    "verso_request_latency_seconds": "histogram",
    "verso_model_version_state": "gauge",
    "verso_model_version_age_seconds": "gauge",
    **{f"verso_rollout_{n}": "gauge" for n in (
        "traffic_percent", "window_requests", "error_rate", "latency_p50_seconds", "latency_p99_seconds",
        "top1_agreement", "max_abs_diff", "accuracy", "stale", "shadow_dropped", "available", "verdict",
        "alarms", "log_loss", "brier", "mse", "mae", "class_recall", "cpu_seconds_per_1000_predictions",
        "money_per_1000_predictions")},
    "verso_version_cpu_seconds_total": "counter",
    "verso_version_predictions_total": "counter",
    "verso_version_resident_memory_bytes": "gauge",
    "verso_version_drifting": "gauge",
    "verso_version_drift_psi": "gauge",
    ":tensorflow:serving:request_count": "counter",  # TF Serving's own name: no _total
    "verso_rollouts_available": "gauge",
    "verso_rollout_state_unsaved": "gauge",
    "verso_rollout_state_write_failures_total": "counter",
    "verso_prediction_log_failing": "gauge",
    "verso_prediction_log_waiting": "gauge",
    "verso_prediction_log_dropped_total": "counter",
}

ALERTS = {"VersoVersionStale", "VersoVersionDrifting", "VersoRollback", "VersoErrorSpike", "VersoRolloutAlarm",
          "VersoRolloutVersionUnavailable", "VersoRolloutSafety"}

# ---- PromQL names -----------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions or
    aggregations (followed by ``(``), keywords, label names (in ``{}`` matchers and grouping
    clauses), durations (in ``[]``), numbers or Grafana ``$variables``."""
    e = _STRING.sub('""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)          # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)        # ranges and subqueries' durations
    e = _GROUPING.sub(" ", e)                  # by (...), on (...), group_left (...)
    e = re.sub(r"\$\{?\w+\}?", " ", e)         # Grafana variables
    names = set()
    for m in _IDENT.finditer(e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exported_name(name: str, types: dict[str, str]) -> str | None:
    """The exported family a sample name belongs to (``x_bucket`` -> the histogram ``x``), or
    None when ``types`` (name -> Prometheus type) has none."""
    if name in types:
        return name
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if base != name and types.get(base) in ("histogram", "summary"):
        return base
    return None


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside it
    return out


def dashboard_exprs(d: dict) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its query variables'
    queries (``label_values(metric, label)``: the metric selector)."""
    exprs = [t["expr"] for p in dashboard_panels(d) for t in p.get("targets", []) if "expr" in t]
    for var in d["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q, re.S)
        exprs.append(m.group(1) if m else re.sub(r"^\s*(query_result|metrics)\((.*)\)\s*$", r"\2", q))
    return exprs


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def used_names() -> set[str]:
    return {n for e in dashboard_exprs(dashboard()) + rule_exprs() for n in metric_names(e)}


# ---- promtool ---------------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("VERSO_REQUIRE_TOOLS"):
            pytest.fail("promtool is not installed (Debian: apt-get install prometheus) and VERSO_REQUIRE_TOOLS is set")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_rules():
    r = run(promtool(), "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 7 rules found" in r.stdout


def test_the_rules_are_the_documented_alerts():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r.get("for"), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert "$labels" in r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


# Series that make VersoRollback, VersoVersionDrifting and VersoErrorSpike fire, and others that
# must not: a HOLD verdict, a version that is not drifting, a version with 2 % errors, one with
# 50 % errors at too low a rate, and refused calls with no version.
RULE_TESTS = """\
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'verso_rollout_verdict{{model_name="digits", decision="ROLLBACK"}}'
        values: '0 0 1x20'
      - series: 'verso_rollout_verdict{{model_name="half", decision="HOLD"}}'
        values: '1x22'
      - series: 'verso_version_drifting{{model_name="digits", version="2"}}'
        values: '0 1x30'
      - series: 'verso_version_drifting{{model_name="digits", version="1"}}'
        values: '0x30'
      # digits v2: 60 calls/min, 6 of them failing (10 %)
      - series: 'verso_request_count_total{{model_name="digits", version="2", api="Predict", entrypoint="GRPC", status="OK"}}'
        values: '0+54x30'
      - series: 'verso_request_count_total{{model_name="digits", version="2", api="Predict", entrypoint="GRPC", status="INTERNAL"}}'
        values: '0+6x30'
      # digits v1: 100 calls/min, 2 failing (2 %: under the threshold)
      - series: 'verso_request_count_total{{model_name="digits", version="1", api="Predict", entrypoint="GRPC", status="OK"}}'
        values: '0+98x30'
      - series: 'verso_request_count_total{{model_name="digits", version="1", api="Predict", entrypoint="REST", status="INTERNAL"}}'
        values: '0+2x30'
      # half v1: 50 % failing but 2 calls/min (0.033/s: under the minimum rate)
      - series: 'verso_request_count_total{{model_name="half", version="1", api="Predict", entrypoint="GRPC", status="OK"}}'
        values: '0+1x30'
      - series: 'verso_request_count_total{{model_name="half", version="1", api="Predict", entrypoint="GRPC", status="INTERNAL"}}'
        values: '0+1x30'
      # calls refused before a version was chosen: the caller's mistake, not a version's
      - series: 'verso_request_count_total{{model_name="half", version="", api="Predict", entrypoint="GRPC", status="NOT_FOUND"}}'
        values: '0+100x30'
      # replica a: a ROLLBACK not written from minute 5; replica b: healthy, no answer dropped
      - series: 'verso_rollout_state_unsaved{{instance="a"}}'
        values: '0x4 1x20'
      - series: 'verso_rollouts_available{{instance="b"}}'
        values: '1x30'
      - series: 'verso_prediction_log_dropped_total{{instance="b", reason="queue full"}}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 1m
        alertname: VersoRollback
        exp_alerts: []
      - eval_time: 5m
        alertname: VersoRollback
        exp_alerts:
          - exp_labels: {{severity: critical, model_name: digits, decision: ROLLBACK}}
            exp_annotations:
              summary: "Rollout of digits: verdict ROLLBACK"
              description: >-
                The rollout of model digits has judged its canary worse than the stable version
                (verdict ROLLBACK) for 1 minute. Look at the rollout's checks (`verso rollout status digits`
                or GET /v1/rollouts/digits) and send the canary's traffic back to stable if auto mode has not.
      - eval_time: 10m
        alertname: VersoVersionDrifting
        exp_alerts: []
      - eval_time: 20m
        alertname: VersoVersionDrifting
        exp_alerts:
          - exp_labels: {{severity: warning, model_name: digits, version: "2"}}
            exp_annotations:
              summary: "digits version 2: inputs drifting"
              description: >-
                The live inputs of model digits version 2 no longer look like the version's reference
                sample (assets.extra/reference.npz) for 15 minutes: the worst feature's PSI is in
                verso_version_drift_psi. Its accuracy may be falling; check the feedback and consider
                retraining.
      - eval_time: 3m
        alertname: VersoErrorSpike
        exp_alerts: []
      - eval_time: 15m
        alertname: VersoErrorSpike
        exp_alerts:
          - exp_labels: {{severity: critical, model_name: digits, version: "2"}}
            exp_annotations:
              summary: "digits version 2: 10% of calls failing"
              description: >-
                10% of the calls answered by version 2 of model digits failed over the last 5 minutes
                (more than 5 %, at 0.1 calls/s or more), for 5 minutes. verso_request_count_total's
                status label says which errors.
      - eval_time: 15m
        alertname: VersoRolloutAlarm
        exp_alerts: []
      - eval_time: 5m
        alertname: VersoRolloutSafety
        exp_alerts: []
      - eval_time: 7m
        alertname: VersoRolloutSafety
        exp_alerts:
          - exp_labels: {{severity: critical, instance: a}}
            exp_annotations:
              summary: "Verso a: the rollout state file cannot be used or written"
              description: >-
                Rollouts on a fail closed for 1 minute: changes are refused, a ROLLBACK holds in
                memory only (a restart would lose it), or answers get no request id. Check the disk
                that holds --rollout_state_file (full, read-only) and the rollout status alarms; the
                server log says which.
"""


def test_promtool_unit_tests_fire_the_alerts(tmp_path):
    tool = promtool()
    tests = tmp_path / "verso-alerts.test.yaml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    r = run(tool, "test", "rules", str(tests))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_parses_every_dashboard_expression(tmp_path):
    """The dashboard's PromQL, with its Grafana variables filled in, as recording rules: promtool
    parses each one."""
    tool = promtool()
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$model": ".+"}
    rules = []
    for i, expr in enumerate(dashboard_exprs(dashboard())):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"verso:dashboard_expr_{i}", "expr": expr})
    path = tmp_path / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run(tool, "check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the dashboard ------------------------------------------------------------------------------------

def test_the_dashboard_is_grafana_json_with_targets_everywhere():
    d = dashboard()
    assert d["uid"] == "verso-rollouts" and 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    assert model["query"]["query"] == model["definition"] == "label_values(verso_rollout_traffic_percent, model_name)"
    ids = [p["id"] for p in dashboard_panels(d)]
    assert len(ids) == len(set(ids))
    for p in dashboard_panels(d):
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat", "table", "bargauge"), p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert 'model_name=~"$model"' in t["expr"], (p["title"], t["expr"])


def test_the_dashboard_covers_what_it_should():
    names = {n for e in dashboard_exprs(dashboard()) for n in metric_names(e)}
    assert names >= {
        "verso_rollout_traffic_percent", "verso_rollout_verdict", "verso_request_count_total",
        "verso_rollout_latency_p50_seconds", "verso_rollout_latency_p99_seconds",
        "verso_request_latency_seconds_bucket",
        "verso_rollout_accuracy", "verso_rollout_log_loss", "verso_rollout_brier", "verso_rollout_mse",
        "verso_rollout_class_recall", "verso_rollout_cpu_seconds_per_1000_predictions",
        "verso_rollout_money_per_1000_predictions", "verso_version_resident_memory_bytes",
        "verso_model_version_age_seconds", "verso_version_drifting", "verso_version_drift_psi", "verso_rollout_alarms"}


def test_every_name_used_is_one_verso_exports():
    unknown = {n for n in used_names() if exported_name(n, EXPORTED) is None}
    assert not unknown, f"names Verso does not export: {sorted(unknown)}"


def test_metric_names_finds_names_and_only_names():
    expr = ('histogram_quantile(0.99, sum by (model_name, le) (rate(verso_request_latency_seconds_bucket'
            '{model_name=~"$model", version!="by"}[$__rate_interval]))) / on (model_name) group_left (x) '
            'max without (role) (verso_rollout_stale offset 5m) > 30 * 24 * 3600 and bool up '
            'or sum(rate(:tensorflow:serving:request_count[5m:1m])) by (status) + vector(1)')
    assert metric_names(expr) == {"verso_request_latency_seconds_bucket", "verso_rollout_stale", "up",
                                  ":tensorflow:serving:request_count"}
    assert exported_name("verso_request_latency_seconds_bucket", EXPORTED) == "verso_request_latency_seconds"
    assert exported_name(":tensorflow:serving:request_count", EXPORTED) == ":tensorflow:serving:request_count"
    assert exported_name("verso_request_count", EXPORTED) is None  # a counter is exported with _total
    assert exported_name("verso_rollout_alarms_count", EXPORTED) is None  # not a histogram


def test_the_readme_documents_the_files():
    text = (ROOT / "deploy" / "README.md").read_text()
    assert "## Monitoring" in text
    for needle in ("grafana/verso-rollouts.json", "prometheus/verso-alerts.yaml", "rule_files", "promtool"):
        assert needle in text, needle
