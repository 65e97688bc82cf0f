"""A control plane no web page can reach (issue 26, "What to build" 3). The server trusts this
machine without --admin_token_file (``tensorflow_model_server``'s default), so the browser on
this machine is the attacker's way in:

- CSRF: a page of another origin POSTs ``/v1/rollouts/MODEL`` as ``text/plain`` (no preflight):
  refused (415 / 403), the rollout unchanged. Before: the page set the canary to 100 %.
- CORS: with --rest_api_enable_cors_support a page read ``Verso-Request-Id`` from its Predict
  and sent feedback for it: the id is no longer exposed and control routes get no CORS, so the
  feedback never lands. An origin the operator lists (--rest_api_cors_allowed_origins) still
  can, which shows the page really reaches the server.
- DNS rebinding: a request with ``Host: evil.example`` is refused on control routes, whatever it
  carries; Predict stays as TF Serving has it.

Both browser cases run in one headless Chromium (Debian's, via Playwright; tests/e2e/test_dashboard.py).
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import threading

import pytest

from client import Client
from tests.server_proc import InProcessServer, free_port

ATTACK_PAGE = b"<!doctype html><title>a page on the web</title><p>nothing to see"

# What a hostile page does with the server at `server` (run in the page, its result returned).
ATTACK = """async (server) => {
  const out = {};
  // CSRF: a cross-origin "simple" request, as a <form> would send it: no preflight.
  const steer = JSON.stringify({stable: "1", canary: "2", canary_percent: 100});
  try {
    await fetch(server + "/v1/rollouts/hp", {method: "POST", mode: "no-cors",
                                             headers: {"Content-Type": "text/plain"}, body: steer});
    out.csrf = "sent";
  } catch (e) { out.csrf = "error " + e; }
  // A preflighted JSON SetRollout.
  try {
    const s = await fetch(server + "/v1/rollouts/hp", {method: "POST", headers: {"Content-Type": "application/json"},
                                                       body: steer});
    out.set_json = s.status;
  } catch (e) { out.set_json = "blocked"; }
  // The request id of an answer, then false feedback for it.
  const p = await fetch(server + "/v1/models/hp:predict", {method: "POST", body: JSON.stringify({instances: [1.0]})});
  out.predict = p.status;
  out.request_id = p.headers.get("Verso-Request-Id");
  const body = JSON.stringify({request_id: out.request_id || "unknown", targets: [100.0]});
  try {
    const f = await fetch(server + "/v1/feedback", {method: "POST", headers: {"Content-Type": "application/json"}, body});
    out.feedback = f.status;
  } catch (e) { out.feedback = "blocked"; }
  try {
    await fetch(server + "/v1/feedback", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body});
  } catch (e) {}
  return out;
}"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(ATTACK_PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture
def attacker():
    """A web page of another origin: http://127.0.0.1:<another port>/."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def servers(repo):
    """Start in-process servers of hp v1 (stable) and v2 (canary at 10 %), REST and CORS on, no
    admin token (this machine is trusted)."""
    repo.put("hp", 1, "hp1")
    repo.put("hp", 2, "hp2")
    started = []

    def start(*flags: str) -> InProcessServer:
        srv = InProcessServer([f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                               "--rollout_config_file=/dev/null", "--rest_api_enable_cors_support", *flags],
                              rest=True)
        started.append(srv)
        srv.start()
        with Client(f"127.0.0.1:{srv.port}") as c:  # this machine: trusted without a token
            c.set_rollout("hp", stable=1, canary=2, canary_percent=10)
        return srv

    yield start
    for srv in started:
        srv.stop()


def _rollout(srv) -> tuple[float, int]:
    """(canary percent, feedback rows over all versions: labelled ones and numeric targets)."""
    with Client(f"127.0.0.1:{srv.port}") as c:
        st = c.rollout("hp")
    return st.config.canary_percent, sum(v.feedback + v.loss.rows for v in st.versions)


def test_a_page_of_another_origin_can_neither_steer_a_rollout_nor_send_feedback(servers, attacker):
    from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _require_tools
    _require_tools()
    from playwright.sync_api import sync_playwright

    victim = servers()
    trusting = servers(f"--rest_api_cors_allowed_origins={attacker}")  # the control: an origin the operator listed
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(attacker + "/")
            out = page.evaluate(ATTACK, f"http://127.0.0.1:{victim.rest_port}")
            listed = page.evaluate(ATTACK, f"http://127.0.0.1:{trusting.rest_port}")
        finally:
            browser.close()
    # The page reached the server (Predict is TF Serving's, CORS on) but changed nothing.
    assert out["csrf"] == "sent" and out["predict"] == 200, out
    assert out["request_id"] is None, out  # not exposed to another origin
    assert out["feedback"] == "blocked" and out["set_json"] == "blocked", out  # no CORS on control routes
    assert _rollout(victim) == (10.0, 0)
    # The same page from an origin the operator listed reads the id and may call control routes
    # (this machine is trusted without a token); its text/plain POST is still refused.
    assert listed["request_id"] and listed["feedback"] == 200 and listed["set_json"] == 200, listed
    assert _rollout(trusting) == (100.0, 1)


def _post(srv, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


STEER = json.dumps({"stable": "1", "canary": "2", "canary_percent": 100}).encode()


def test_dns_rebinding_a_foreign_host_is_refused_on_control_routes(servers):
    srv = servers()
    post = functools.partial(_post, srv)
    for host in ("evil.example", f"evil.example:{srv.rest_port}", "", "127.0.0.1.evil.example"):
        status, doc = post("/v1/rollouts/hp", STEER, {"Host": host, "Content-Type": "application/json"})
        assert status == 403 and doc["error"].startswith("SetRollout refused: Host"), (host, doc)
    status, doc = post("/v1/feedback", b'{"request_id": "x", "targets": [1]}',
                       {"Host": "evil.example", "Content-Type": "application/json",
                        "Origin": "http://evil.example"})
    assert status == 403 and doc["error"].startswith("Feedback refused: Host 'evil.example'")
    # Predict stays as TF Serving has it, whatever the Host.
    status, doc = post("/v1/models/hp:predict", b'{"instances": [1.0]}', {"Host": "evil.example"})
    assert status == 200 and len(doc["predictions"]) == 1
    assert _rollout(srv) == (10.0, 0)
    # This server's own names work: loopback ones, and the Origin of a page it served.
    for host in (f"localhost:{srv.rest_port}", f"127.0.0.1:{srv.rest_port}", "localhost"):
        status, doc = post("/v1/rollouts/hp", b'{"stable": "1", "canary": "2", "canary_percent": 20}',
                           {"Host": host, "Content-Type": "application/json", "Origin": f"http://{host}"})
        assert status == 200 and doc["config"]["canary_percent"] == 20, (host, doc)


def test_control_calls_need_a_json_body_and_this_servers_origin(servers):
    srv = servers()
    post = functools.partial(_post, srv)
    host = f"127.0.0.1:{srv.rest_port}"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Host": host} if content_type is None else {"Host": host, "Content-Type": content_type}
        status, doc = post("/v1/rollouts/hp", STEER, headers)
        assert status == 415 and doc["error"].startswith("SetRollout needs 'Content-Type: application/json'"), doc
        status, doc = post("/v1/feedback", b'{"request_id": "x", "targets": [1]}', headers)
        assert status == 415 and doc["error"].startswith("Feedback needs 'Content-Type: application/json'"), doc
    for origin in ("http://127.0.0.1:1", "https://" + host, "null", "http://evil.example"):
        status, doc = post("/v1/rollouts/hp", STEER, {"Host": host, "Content-Type": "application/json",
                                                      "Origin": origin})
        assert status == 403 and doc["error"].startswith("SetRollout refused: a request from the web page"), doc
    assert _rollout(srv) == (10.0, 0)
    status, doc = post("/v1/rollouts/hp", b'{"stable": "1", "canary": "2", "canary_percent": 30}',
                       {"Host": host, "Content-Type": "application/json; charset=utf-8", "Origin": f"http://{host}"})
    assert status == 200 and doc["config"]["canary_percent"] == 30


def test_cors_shares_no_control_route_and_no_request_id_unless_listed(servers):
    srv = servers("--rest_api_cors_allowed_origins=https://console.example")

    def call(method: str, path: str, origin: str, **headers):
        conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=30)
        try:
            body = b'{"instances": [1.0]}' if method == "POST" else None
            conn.request(method, path, body=body, headers={"Origin": origin, **headers})
            r = conn.getresponse()
            r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    # Any origin: TF Serving's CORS on inference, the version readable, the request id not.
    status, h = call("POST", "/v1/models/hp:predict", "https://any.example")
    assert status == 200 and h["access-control-allow-origin"] == "*" and "verso-request-id" in h
    assert h["access-control-expose-headers"] == "Verso-Model-Version"
    assert "Authorization" not in h["access-control-allow-headers"]
    for method, path in (("OPTIONS", "/v1/rollouts/hp"), ("OPTIONS", "/v1/feedback")):
        status, h = call(method, path, "https://any.example", **{"Access-Control-Request-Method": "POST"})
        assert status == 403 and "access-control-allow-origin" not in h, (path, h)
    status, h = call("GET", "/v1/rollouts/hp", "https://any.example")
    assert status == 200 and "access-control-allow-origin" not in h
    # The listed origin: every route, the request id and Authorization, echoed (never "*").
    status, h = call("POST", "/v1/models/hp:predict", "https://console.example")
    assert h["access-control-allow-origin"] == "https://console.example" and h["vary"] == "Origin"
    assert "Verso-Request-Id" in h["access-control-expose-headers"]
    status, h = call("OPTIONS", "/v1/rollouts/hp", "https://console.example")
    assert status == 200 and h["access-control-allow-origin"] == "https://console.example"
    assert "Authorization" in h["access-control-allow-headers"]
