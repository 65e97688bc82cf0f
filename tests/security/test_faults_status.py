"""One version that fails to load never breaks what reads the server's state: the dashboard's
data document, RolloutStatus and GetModelStatus all answer, and the failure is shown as text.

Before issue 26, a rollout whose canary failed to load made ``/dashboard/data.json`` a 500
(``KeyError: 'info'``: a version with no load facts has no ``info`` message, and the version's
error was an exception object the JSON encoder refused)."""

from __future__ import annotations

import shutil

import pytest
from tensorflow_serving.apis import get_model_status_pb2

from client import Client
from tests import models
from tests.server_proc import InProcessServer, wait_until


@pytest.fixture(scope="module")
def server(built_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("failed-canary")
    shutil.copytree(built_models["hp1"], root / "m" / "1")
    models.corrupt_copy(built_models["hp2"], str(root / "m" / "2"))
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{root}/m" model_platform: "tensorflow" '
        f'model_version_policy {{ all {{}} }} }} }}\n')
    rollouts = root / "rollouts.config"
    rollouts.write_text('models { model: "m" stable: 1 canary: 2 canary_percent: 50 }\n')
    srv = InProcessServer([f"--model_config_file={root}/models.config", f"--rollout_config_file={rollouts}",
                           "--max_num_load_retries=0"], rest=True)
    srv.start()
    yield srv
    srv.stop()


def _failed(srv) -> bool:
    status, doc = srv.rest_json("GET", "/v1/models/m")
    return status == 200 and any(v["version"] == "2" and v["state"] == "END" and v["status"]["error_code"] != "OK"
                                 for v in doc["model_version_status"])


def test_a_failed_canary_never_breaks_the_dashboard_or_status(server):
    wait_until(lambda: _failed(server), timeout=30, what="v2 failed to load")
    status, doc = server.rest_json("GET", "/dashboard/data.json")
    assert status == 200, doc
    (model,) = [m for m in doc["models"] if m["name"] == "m"]
    by_version = {v["version"]: v for v in model["versions"]}
    assert by_version[1]["state"] == "AVAILABLE" and by_version[1]["error"] == ""
    failed = by_version[2]
    assert failed["state"] == "END" and isinstance(failed["error"], str) and failed["error"]
    # Every version has the same keys, whether it loaded or not (the page reads them all).
    assert set(failed) == set(by_version[1])
    assert failed["info"]["age_source"] == "" and failed["info"]["problems"] == []
    (rollout,) = doc["rollouts"]
    assert {v["version"] for v in rollout["versions"]} >= {"1", "2"}

    with Client(f"127.0.0.1:{server.port}") as c:
        st = c.rollout("m")
        canary = next(v for v in st.versions if v.version == 2)
        assert canary.role == "canary" and not canary.available
        assert any("v2" in a or "2" in a for a in st.alarms), st.alarms
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "m"
    answer = server.model_stub.GetModelStatus(req, timeout=10)
    states = {s.version: (s.state, s.status.error_code) for s in answer.model_version_status}
    assert states[1] == (get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)
    assert states[2][0] == get_model_status_pb2.ModelVersionStatus.END and states[2][1] != 0
    # The page itself is served, and Predict still answers from the stable version.
    assert server.http("GET", "/dashboard")[0] == 200


def test_the_dashboard_page_shows_the_failed_version(server):
    """The page itself, in headless Chromium: the failed canary is a row with its error, the
    rollout card shows its alarm, and the page has no script error."""
    from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _require_tools
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    wait_until(lambda: _failed(server), timeout=30, what="v2 failed to load")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.rest_port}/dashboard")
            expect(page.get_by_test_id("conn")).to_have_text("live")
            expect(page.get_by_test_id("state-m-2")).to_have_text("END")
            expect(page.get_by_test_id("state-m-1")).to_have_text("AVAILABLE")
            expect(page.locator("tr", has=page.get_by_test_id("model-m-2"))).to_contain_text("DecodeError")
            expect(page.get_by_test_id("alarms-m")).to_contain_text("v2")
        finally:
            browser.close()
    assert errors == [], errors
