"""500 malformed REST bodies and paths: each gets a 4xx JSON error quickly, and the server
keeps serving. Seeded, bounded in count and time, 127.0.0.1 only."""

from __future__ import annotations

import http.client
import json
import random
import urllib.parse

import pytest

CASES = 500
PER_REQUEST_TIMEOUT_S = 10
VALID = {"instances": [1.0, 2.0]}


def _bodies(rng: random.Random):
    """Malformed or ill-typed predict bodies, a mix of every kind."""
    good = json.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]], "signature_name": "serving_default"})
    kinds = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),             # random bytes
        lambda: good[:rng.randint(1, len(good) - 1)].encode(),                            # truncated JSON
        lambda: json.dumps(rng.choice([None, 1, "s", [], [1], True, 1.5])).encode(),      # not an object
        # ([[]] is not here: a [1, 0] tensor is a valid input to hp, whose graph answers [[]].)
        lambda: json.dumps({"instances": rng.choice([None, 1, "s", {}, [], [None], [{"b64": 1}],
                                                     [[1, [2]]], [{"x": [1, "a"]}], [True]])}).encode(),
        lambda: json.dumps({"inputs": rng.choice([None, "s", {"x": None}, {"y": [1.0]}, [[1.0], 2.0],
                                                  {"x": {"b64": "%%%"}}, [{"a": 1}]])}).encode(),
        lambda: json.dumps({"instances": [1.0], "inputs": [1.0]}).encode(),
        lambda: json.dumps({"signature_name": rng.choice([1, None, [], "nope", ""]), "instances": [1.0]}).encode()
        if rng.random() < 0.8 else b'{"signature_name": "nope"}',
        lambda: ("[" * rng.randint(100, 3000) + "]" * rng.randint(0, 10)).encode(),     # deep nesting
        lambda: ('{"instances": ' + "[" * 2000 + "NaN" + "]" * 2000 + "}").encode(),    # deep + NaN fallback
        lambda: b'{"instances": [1e999999, -1e999999]}' if rng.random() < 0.5 else b'{"instances": [NaN, Inf]}',
        lambda: '{"instances": ["\udcff"]}'.encode("utf-8", "surrogatepass"),          # invalid UTF-8
        lambda: b"\xef\xbb\xbf" + json.dumps({"instances": "x" * rng.randint(0, 5000)}).encode(),
    ]
    return rng.choice(kinds)()


def _paths(rng: random.Random) -> tuple[str, str]:
    segments = ["models", "hp", "versions", "labels", "1", "abc", "-1", "99999999999999999999999", "..", "%2F",
                "%00", ":predict", ":classify", ":regress", ":PREDICT", "metadata", "", "%zz", "\u00e9"]
    path = "/v1/" + "/".join(rng.choice(segments) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.5:
        path += rng.choice([":predict", ":classify", ":regress", ":bogus", "/metadata"])
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    return method, urllib.parse.quote(path, safe="/:%")  # http.client sends ASCII only


@pytest.fixture
def server(repo, server_factory):
    repo.put("hp", 1, "hp1")
    repo.put("multi", 1, "multi")
    config = repo.root / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "hp" base_path: "{repo.path('hp')}" model_platform: "tensorflow" }}
      config {{ name: "multi" base_path: "{repo.path('multi')}" model_platform: "tensorflow" }}
    }}""")
    return server_factory(f"--model_config_file={config}", rest=True)


def test_fuzz_bodies_and_paths_get_4xx_json_and_server_keeps_serving(server):
    rng = random.Random(20261125)
    # "Quickly": a reply that takes longer than the socket timeout fails the test with a timeout.
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=PER_REQUEST_TIMEOUT_S)
    statuses: dict[int, int] = {}
    try:
        for i in range(CASES):
            if i % 2 == 0:
                method, path = "POST", rng.choice(["/v1/models/hp:predict", "/v1/models/multi:predict",
                                                   "/v1/models/hp:classify", "/v1/models/hp:regress"])
                body = _bodies(rng)
            else:
                method, path = _paths(rng)
                body = _bodies(rng) if method in ("POST", "PUT", "PATCH") else None
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert 400 <= resp.status < 500, (i, method, path, body[:200] if body else None, resp.status, data)
            payload = json.loads(data)
            assert set(payload) == {"error"} and isinstance(payload["error"], str) and payload["error"], payload
            assert "Traceback" not in payload["error"]
    finally:
        conn.close()
    # Still serving, and still the same process.
    assert server.alive()
    assert server.rest_json("POST", "/v1/models/hp:predict", VALID) == (200, {"predictions": [1.5, 2.0]})
    # Shapes are the graph's to judge, as in TF Serving: one row of no values is an answer.
    assert server.rest_json("POST", "/v1/models/hp:predict", {"instances": [[]]}) == (200, {"predictions": [[]]})
    assert statuses.get(400, 0) > CASES // 2, statuses
