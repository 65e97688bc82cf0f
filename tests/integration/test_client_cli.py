"""``verso predict|status|metadata|reload|bench``, the client's command line run in this
process (``client.cli.verso_main``, its stdout and stderr captured) against the real server
in process serving the bundled model repository: outputs, one-line errors, exit codes. The
command line as its own process (a terminal's progress bar, no TensorFlow runtime) is in
tests/e2e/test_client_cli.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_verso as verso
from tests.helpers import table_rows as _rows
from tests.server_proc import free_port


def at(srv):
    return ["--target", f"127.0.0.1:{srv.port}"]


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def one_line_error(result, code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# ---- predict -----------------------------------------------------------------------------------

def test_predict_a_literal_prints_a_table(bundled):
    out = ok(verso("predict", "half_plus_two", "[1, 2, 5]", *at(bundled)))
    assert out.splitlines()[0].strip() == "version 2"
    assert _rows(out) == [["y", "float32", "(3,)", "[2.5 3.  4.5]"]]


def test_predict_json_output_with_version_and_rest(bundled):
    out = json.loads(ok(verso("predict", "half_plus_two", "x=[1.0, 2.0]", "--version", "1", "--json", *at(bundled))))
    assert out == {"model_version": 1, "outputs": {"y": [1.5, 2.0]}}
    rest = json.loads(ok(verso("predict", "half_plus_two", "[1.0, 2.0]", "--version", "1", "--json",
                               "--rest", f"http://127.0.0.1:{bundled.rest_port}")))
    assert rest == {"model_version": 1, "outputs": {"y": [1.5, 2.0]}}


def test_predict_inputs_from_npy_and_a_rest_body_json(bundled, tmp_path):
    images = np.zeros((2, 64), np.float32)
    np.save(tmp_path / "images.npy", images)
    out = json.loads(ok(verso("predict", "digits", f"images=@{tmp_path}/images.npy", "--output", "classes",
                              "--json", *at(bundled))))
    assert list(out["outputs"]) == ["classes"] and len(out["outputs"]["classes"]) == 2
    (tmp_path / "body.json").write_text(json.dumps({"instances": [1.0, 3.0]}))
    out = json.loads(ok(verso("predict", "half_plus_two", f"@{tmp_path}/body.json", "--json", *at(bundled))))
    assert out["outputs"]["y"] == [2.5, 3.5]


# ---- status / metadata ---------------------------------------------------------------------------

def test_status_table_and_json(bundled):
    out = ok(verso("status", "digits", *at(bundled)))
    assert out.splitlines()[0].strip() == "model digits"
    assert _rows(out) == [["2", "AVAILABLE", "OK"], ["1", "AVAILABLE", "OK"]]
    doc = json.loads(ok(verso("status", "digits", "--version", "1", "--json", *at(bundled))))
    assert doc == {"model": "digits", "versions": [
        {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]}


def test_metadata_tables_show_signatures_with_dtypes_and_shapes(bundled):
    out = ok(verso("metadata", "digits", *at(bundled)))
    assert "model digits version 2" in out
    assert "signature classify (tensorflow/serving/classify)" in out
    assert "signature serving_default (tensorflow/serving/predict)" in out
    assert "__saved_model_init_op" not in out
    rows = _rows(out)
    assert ["input", "images", "float", "(-1, 64)", "serving_default_images:0"] in rows
    assert ["output", "scores", "float", "(-1, 10)", "StatefulPartitionedCall_1:1"] in rows
    assert ["input", "inputs", "string", "(-1)", "classify_inputs:0"] in rows
    doc = json.loads(ok(verso("metadata", "half_plus_two", "--version", "1", "--json",
                              "--rest", f"127.0.0.1:{bundled.rest_port}")))
    assert doc == {"model": "half_plus_two", "version": 1, "signatures": {"serving_default": {
        "method": "tensorflow/serving/predict",
        "inputs": {"x": {"dtype": "float", "shape": [-1], "name": "serving_default_x:0"}},
        "outputs": {"y": {"dtype": "float", "shape": [-1], "name": "StatefulPartitionedCall:0"}}}}}


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (["predict", "nope", "[1.0]"], "verso: error: NOT_FOUND: Servable not found for request: Latest(nope)"),
    (["status", "half_plus_two", "--version", "9"],
     "verso: error: NOT_FOUND: Could not find version 9 of model half_plus_two"),
    (["predict", "half_plus_two", "[1.0"], "verso: error: cannot read '[1.0': not a JSON or Python literal"),
    (["predict", "half_plus_two"], "verso: error: predict needs at least one INPUT"),
    (["predict", "half_plus_two", "@/no/such.npy"],
     "verso: error: cannot read /no/such.npy: No such file or directory"),
    (["predict", "half_plus_two", "[1.0]", "--signature", "nope"],
     'verso: error: FAILED_PRECONDITION: Serving signature key "nope" not found.'),
    (["reload", "/no/such.config"],
     "verso: error: INVALID_ARGUMENT: cannot read /no/such.config: No such file or directory"),
])
def test_errors_are_one_line_and_exit_1(bundled, args, line):
    assert one_line_error(verso(*args, *at(bundled))) == line


def test_an_op_error_with_several_lines_is_printed_on_one(bundled):
    line = one_line_error(verso("bench", "digits", "--signature", "classify", "-n", "3", "--no-progress",
                                *at(bundled)))
    assert line.startswith("verso: error: every call failed: INVALID_ARGUMENT: Could not parse example input")


def test_usage_errors_exit_2_and_no_server_is_unavailable():
    r = verso("status")
    assert r.returncode == 2 and "usage:" in r.stderr and "Traceback" not in r.stderr
    line = one_line_error(verso("status", "m", "--target", f"127.0.0.1:{free_port()}"))
    assert line.startswith("verso: error: UNAVAILABLE: ")


# ---- reload --------------------------------------------------------------------------------------

def test_reload_sends_a_config_file(server_factory, repo, tmp_path):
    repo.put("a", 1, "hp1")
    repo.put("b", 1, "hp3")
    srv = server_factory("--model_name=a", f"--model_base_path={repo.path('a')}")
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "b" base_path: "{repo.path("b")}" '
                      'model_platform: "tensorflow" } }\n')
    assert ok(verso("reload", str(config), *at(srv))) == "reloaded: 1 model(s): b\n"
    assert _rows(ok(verso("status", "b", *at(srv)))) == [["1", "AVAILABLE", "OK"]]
    assert _rows(ok(verso("status", "a", *at(srv)))) == [["1", "END", "OK"]]  # unloaded, as TF Serving says


# ---- bench ---------------------------------------------------------------------------------------

def test_bench_a_fixed_count_as_json(bundled):
    doc = json.loads(ok(verso("bench", "half_plus_two", "-n", "60", "-c", "4", "--rows", "3", "--json", *at(bundled))))
    assert (doc["requests"], doc["ok"], doc["errors"], doc["concurrency"]) == (60, 60, {}, 4)
    assert doc["rows_per_request"] == 3 and doc["rows_per_s"] == pytest.approx(3 * doc["ok_per_s"])
    assert doc["mode"] == "closed" and doc["versions"] == {"2": 60}  # half_plus_two's latest answered
    lat = doc["latency_ms"]["all"]
    assert lat["count"] == 60 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_bench_over_rest_with_given_inputs(bundled):
    images = json.dumps([[0.0] * 64] * 5)
    r = verso("bench", "digits", f"images={images}", "-n", "20", "-c", "2",
              "--rest", f"http://127.0.0.1:{bundled.rest_port}")
    assert r.returncode == 0, r.stderr
    rows = dict(_rows(r.stdout))
    assert (rows["requests"], rows["ok"], rows["errors"]) == ("20", "20", "0")
    assert "5 rows per request" in r.stdout
    assert float(rows["rows/s"]) == pytest.approx(5 * float(rows["req/s"]), rel=0.01)


def test_bench_for_a_duration_stops_by_itself(bundled):
    doc = json.loads(ok(verso("bench", "digits", "-d", "1.5", "-c", "4", "--rows", "8", "--json", "--no-progress",
                              *at(bundled))))
    assert doc["ok"] > 0 and doc["errors"] == {} and 1.5 <= doc["duration_s"] < 5
    assert doc["rows_per_request"] == 8


def test_bench_table(bundled):
    out = ok(verso("bench", "half_plus_two", "-n", "20", "-c", "2", "--no-progress", *at(bundled)))
    assert out.splitlines()[0].startswith(f"bench half_plus_two at 127.0.0.1:{bundled.port}: 2 in flight")
    rows = dict(_rows(out))
    assert rows["requests"] == "20" and rows["ok"] == "20" and rows["errors"] == "0"
    assert float(rows["p50 ms"]) > 0


# ---- bench's open loop, stages and a reload fault (the faults of files and processes: e2e) ---------

def test_bench_stages_ramp_the_rate_and_a_reload_fault_lands_during_the_load(server_factory, repo, tmp_path):
    repo.put("a", 1, "hp1")
    repo.put("b", 1, "hp3")
    srv = server_factory("--model_name=a", f"--model_base_path={repo.path('a')}")
    config = tmp_path / "models.config"  # a keeps serving; b arrives
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{m}" base_path: "{repo.path(m)}" model_platform: "tensorflow" }}' for m in "ab") + " }\n")
    out = tmp_path / "run.json"
    r = verso("bench", "a", *at(srv), "--stages", "1s:40,1s:40,1s:0", "--fault", f"1s:reload:{config}",
              "--threshold", "errors<0.1%", "--threshold", "p99<1ms", "--json", str(out), "--no-progress")
    doc = json.loads(out.read_text())
    # 0 -> 40/s over a second (20 calls), 40/s for a second (40), 40 -> 0 (20).
    assert doc["mode"] == "stages" and doc["requests"] == 80 and doc["offered"] == 80
    assert [s["sent"] for s in doc["series"]] == [20, 40, 20]
    assert doc["errors"] == {} and doc["versions"] == {"1": 80}
    reload = doc["faults"][0]
    assert reload["error"] is None and reload["result"] == f"config {config} applied"
    assert _rows(ok(verso("status", "b", *at(srv)))) == [["1", "AVAILABLE", "OK"]]
    # p99 < 1 ms does not hold over loopback gRPC: the run fails with exit 1 and says which.
    assert r.returncode == 1
    assert r.stderr.startswith("verso: error: thresholds failed: p99<1ms (actual ")
    assert "threshold errors<0.1%: ok (actual 0)" in r.stdout and "threshold p99<1ms: FAILED" in r.stdout


def test_bench_an_open_loop_over_two_client_processes(bundled, tmp_path):
    out = tmp_path / "run.json"
    r = verso("bench", "half_plus_two", *at(bundled), "--rate", "40", "-d", "2s", "--processes", "2",
              "--json", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    # Each process sent half the rate from the same start; their histograms and counts merged.
    assert (doc["processes"], doc["requests"], doc["ok"], doc["versions"]) == (2, 80, 80, {"2": 80})
    assert [s["sent"] for s in doc["series"]] == [40, 40]
    assert doc["latency_ms"]["all"]["count"] == 80 and doc["tool"]["max_in_flight"] >= 2


def test_bench_a_fault_that_cannot_be_done_is_reported_and_the_load_goes_on(server_factory, repo, tmp_path):
    repo.put("a", 1, "hp1")
    srv = server_factory("--model_name=a", f"--model_base_path={repo.path('a')}")
    out = tmp_path / "run.json"
    r = verso("bench", "a", *at(srv), "--rate", "20", "-d", "2s", "--fault", "1s:remove:7",
              "--model-base-path", repo.path("a"), "--json", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    fault = doc["faults"][0]
    assert fault["result"] is None and fault["error"] == f"FileNotFoundError: no version 7 in {repo.path('a')}"
    assert (doc["requests"], doc["ok"]) == (40, 40)
    assert "fault remove:7 at 1s: FAILED: FileNotFoundError: no version 7" in r.stdout
