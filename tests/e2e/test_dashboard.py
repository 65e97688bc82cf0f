"""The dashboard in a real browser: ``GET /dashboard`` on a server running the rollout demo
(digits stable v2, a broken canary v3 at 50 %) shows the rollout, its calls grow as traffic
flows, and its verdict turns to ROLLBACK; the same page written by ``client.report.write_html``
opens from a file with nothing fetched. No console errors and no page errors throughout.

Needs Chromium at /usr/bin/chromium and the ``playwright`` package: skipped without them,
failed without them when VERSO_REQUIRE_TOOLS is set (CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import script
from tests.e2e.test_rollout_demo import demo_server
from tests.server_proc import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


def _require_tools():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(CHROMIUM)
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package")
    if missing:
        why = f"the dashboard test needs {' and '.join(missing)}"
        if os.environ.get("VERSO_REQUIRE_TOOLS"):
            pytest.fail(why + " (VERSO_REQUIRE_TOOLS is set)")
        pytest.skip(why)


def _save_broken_digits(dest: Path) -> None:
    spec = importlib.util.spec_from_file_location("broken_digits", ROOT / "model_repository" / "broken_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.save_broken_digits(str(dest))


def _verso(args: list[str], env: dict, cwd: Path, timeout: float = 60) -> str:
    r = subprocess.run([script("verso"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def _calls(page, testid: str) -> int:
    text = page.get_by_test_id(testid).text_content(timeout=WAIT_MS).strip()
    return int(text) if text.isdigit() else -1


def test_dashboard_live_and_offline(tmp_path):
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    from client.report import write_html

    srv, work, repo = demo_server(tmp_path)
    _save_broken_digits(repo / "digits" / "3")  # appears after the start: loaded under the "all" policy
    errors: list[str] = []
    try:
        def v3_available() -> bool:
            status, doc = srv.rest_json("GET", "/v1/models/digits")
            return status == 200 and any(v.get("version") == "3" and v.get("state") == "AVAILABLE"
                                         for v in doc.get("model_version_status", []))

        wait_until(v3_available, timeout=60, interval=0.2, what="digits v3 AVAILABLE")
        env = dict(os.environ, VERSO_TARGET=f"127.0.0.1:{srv.port}", COLUMNS="200")
        _verso(["rollout", "set", "digits", "--stable", "2", "--canary", "3", "--percent", "50", "--auto",
                "--interval", "1", "--min-samples", "30", "--max-p99-ratio", "2",
                "--max-error-rate-increase", "0.02"], env, work)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.set_default_timeout(WAIT_MS)
                page = context.new_page()
                page.on("console", lambda m: errors.append(f"live console: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"live page error: {e}"))
                page.goto(f"http://127.0.0.1:{srv.rest_port}/dashboard")

                # the live page: the rollout card, the models table, the canary's calls
                expect(page.get_by_test_id("rollout-digits")).to_be_visible()
                expect(page.get_by_test_id("conn")).to_have_text("live")
                expect(page.get_by_test_id("model-digits-3")).to_have_text("v3")
                calls = page.get_by_test_id("calls-digits-3")
                expect(calls).to_have_text("0")  # set, no traffic yet
                before = _calls(page, "calls-digits-3")
                assert page.get_by_test_id("verdict-digits").text_content() in ("HOLD", "–"), \
                    page.get_by_test_id("verdict-digits").text_content()
                # what happens next: the next analysis and its step, the failures of the threshold
                expect(page.get_by_test_id("next-digits")).to_contain_text("next analysis at ")
                expect(page.get_by_test_id("next-digits")).to_contain_text("if the analysis passes")
                expect(page.get_by_test_id("failed-digits")).to_contain_text("failed analyses: 0 of 3")
                expect(page.get_by_test_id("earlier-digits")).to_be_hidden()  # no earlier rollout

                # traffic with feedback: the canary's calls grow on the page, then it rolls back
                _verso(["bench", "digits", "--dataset", "model_repository/digits_holdout.npz", "--feedback",
                        "--duration", "5", "--concurrency", "4", "--no-progress"], env, work, timeout=90)
                page.wait_for_function(
                    "n => { const e = document.querySelector('[data-testid=\"calls-digits-3\"]');"
                    " return e && /^\\d+$/.test(e.textContent.trim()) && Number(e.textContent) > n; }",
                    arg=before, timeout=WAIT_MS)
                assert _calls(page, "calls-digits-3") > before
                expect(page.get_by_test_id("verdict-digits")).to_have_text("ROLLBACK")
                expect(page.get_by_test_id("final-digits")).to_be_visible()
                expect(page.get_by_test_id("accuracy-digits-3")).to_contain_text("%")
                expect(page.locator('[data-testid="chart-accuracy-digits"] polyline')).to_have_count(2)
                expect(page.locator('[data-testid="chart-latency-digits"] polyline')).to_have_count(2)
                expect(page.get_by_test_id("decisions-digits")).to_contain_text("ROLLBACK: canary v3 50 % -> 0 %")
                # the final verdict keeps its checks table, says where its checks come from and what is next
                expect(page.locator('[data-testid="checks-digits"] td.res-FAIL').first).to_be_visible()
                expect(page.get_by_test_id("checks-note-digits")).to_contain_text("the final ROLLBACK's checks")
                expect(page.get_by_test_id("next-digits")).to_contain_text("nothing moves: the final ROLLBACK stands")
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.exists() and shot.stat().st_size > 0
                page.close()  # no more polling

                # the same page as a report: the document embedded, opened from a file, nothing fetched
                with urllib.request.urlopen(f"http://127.0.0.1:{srv.rest_port}/dashboard/data.json", timeout=30) as r:
                    doc = json.load(r)
                canary = next(v for v in doc["rollouts"][0]["versions"] if v["version"] == "3")
                report = tmp_path / "report.html"
                write_html(doc, str(report))

                offline = browser.new_context(viewport={"width": 1400, "height": 1000})
                offline.set_default_timeout(WAIT_MS)
                fetched: list[str] = []

                def refuse(route):
                    fetched.append(route.request.url)
                    route.abort()

                offline.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                              else refuse(route))
                requests: list[str] = []
                page = offline.new_page()
                page.on("request", lambda req: requests.append(req.url))
                page.on("console", lambda m: errors.append(f"report console: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"report page error: {e}"))
                page.goto(report.as_uri())
                expect(page.get_by_test_id("rollout-digits")).to_be_visible()
                expect(page.get_by_test_id("mode")).to_have_text("report")
                expect(page.get_by_test_id("verdict-digits")).to_have_text("ROLLBACK")
                expect(page.get_by_test_id("calls-digits-3")).to_have_text(str(canary["requests"]))
                expect(page.locator('[data-testid="chart-latency-digits"] polyline')).to_have_count(2)
                expect(page.locator('[data-testid="checks-digits"] td.res-FAIL').first).to_be_visible()
                expect(page.get_by_test_id("chart-latency-digits")).to_contain_text("p99.9")
                page.wait_for_timeout(1500)  # a live page would have polled by now
                assert fetched == [], fetched
                assert all(u.startswith(("file:", "data:")) for u in requests), requests
                page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            finally:
                browser.close()
    finally:
        srv.stop()
    assert errors == [], errors
