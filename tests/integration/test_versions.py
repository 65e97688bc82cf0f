"""Version lifecycle against the real server: new versions, corrupt versions, half-written
versions, missing base paths, and no failed request while versions change under load."""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import numpy as np

from server.lifecycle.policy import State
from tests.helpers import predict_request, rpc_error, states, status_request, y_of
from tests.server_proc import wait_until

X = np.array([2.0], np.float32)
FAST = ["--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.5", "--max_num_load_retries=0"]


def serve_hp(repo, server_factory, *extra):
    return server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp", *FAST, *extra)


def answer(server, version=None) -> float:
    resp = server.predict_stub.Predict(predict_request("hp", {"x": X}, version=version), timeout=30)
    return float(y_of(resp)[0]), resp.model_spec.version.value


def test_new_version_is_served_and_old_one_ends(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory)
    assert answer(srv) == (2.0, 1)  # 0.5*2 + 1
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="v2 AVAILABLE, v1 END")
    assert answer(srv) == (3.0, 2)
    e = rpc_error(srv.predict_stub.Predict, predict_request("hp", {"x": X}, version=1))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(hp, 1)")
    # A normal unload is END with an OK status.
    v1 = srv.model_stub.GetModelStatus(status_request("hp", version=1), timeout=10).model_version_status[0]
    assert v1.status.error_code == 0 and v1.status.error_message == ""


def test_corrupt_version_never_replaces_a_good_one(repo, server_factory, built_models):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory)
    repo.put("hp", 2, "corrupt")
    wait_until(lambda: states(srv, "hp").get(2) == State.END, what="v2 END")
    v2 = srv.model_stub.GetModelStatus(status_request("hp", version=2), timeout=10).model_version_status[0]
    assert v2.status.error_code != 0 and v2.status.error_message
    assert states(srv, "hp") == {2: State.END, 1: State.AVAILABLE}
    assert answer(srv) == (2.0, 1)  # v1 still serves "latest"
    # A failed version is not retried while it stays; when its directory leaves and comes back
    # whole, it is loaded afresh.
    repo.remove("hp", 2)
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="v2 reloaded")
    assert answer(srv) == (3.0, 2)


def test_half_written_version_is_not_loaded_early(repo, server_factory, built_models):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory, "--version_settle_seconds=2")
    # Copy version 2 the slow way, file by file, with pauses shorter than the settle interval.
    # saved_model.pb comes last, so loading any earlier would fail and leave END behind.
    src = built_models["hp2"]
    files = sorted((os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs),
                   key=lambda p: p == "saved_model.pb")
    dest = os.path.join(repo.path("hp"), "2")
    os.makedirs(dest)
    seen_states = []
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        with open(os.path.join(src, rel), "rb") as fin, open(os.path.join(dest, rel), "wb") as fout:
            data = fin.read()
            half = len(data) // 2
            fout.write(data[:half])
            fout.flush()
            for _ in range(3):  # the file keeps growing for a while
                time.sleep(0.4)
                seen_states.append(states(srv, "hp").get(2))
            fout.write(data[half:])
    assert seen_states and all(s is None for s in seen_states), seen_states
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, timeout=30,
               what="v2 AVAILABLE after it settled")
    assert answer(srv) == (3.0, 2)


def test_missing_base_path_only_affects_its_model(repo, server_factory, tmp_path):
    repo.put("hp", 1, "hp1")
    missing = tmp_path / "not_yet"
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "hp" base_path: "{repo.path('hp')}" model_platform: "tensorflow" }}
  config {{ name: "later" base_path: "{missing}" model_platform: "tensorflow" }}
}}""")
    srv = server_factory(f"--model_config_file={config}", *FAST)
    assert answer(srv) == (2.0, 1)
    e = rpc_error(srv.predict_stub.Predict, predict_request("later", {"x": X}))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(later)")
    assert f"Base path {missing} of model later does not exist" in srv.output()
    # When the directory shows up, the model starts serving without a restart.
    shutil.copytree(repo.path("hp"), missing)
    wait_until(lambda: states(srv, "later") == {1: State.AVAILABLE}, what="later AVAILABLE")
    resp = srv.predict_stub.Predict(predict_request("later", {"x": X}), timeout=30)
    assert resp.model_spec.version.value == 1


def test_no_failed_request_while_two_versions_arrive(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory)
    stop = threading.Event()
    results: list[list] = [[] for _ in range(8)]
    failures: list[str] = []

    def client(i: int):
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        req = predict_request("hp", {"x": X})
        while not stop.is_set():
            try:
                resp = stub.Predict(req, timeout=30)
                version = resp.model_spec.version.value
                value = float(y_of(resp)[0])
                if value != 0.5 * 2 + version:  # the answer must come from the version it names
                    failures.append(f"v{version} answered {value}")
                results[i].append(version)
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")
        channel.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(len(r) >= 5 for r in results), what="clients running")
        repo.put("hp", 2, "hp2")
        wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="v2 took over")
        repo.put("hp", 3, "hp3")
        wait_until(lambda: states(srv, "hp") == {3: State.AVAILABLE, 2: State.END, 1: State.END},
                   what="v3 took over")
        counts = [len(r) for r in results]
        wait_until(lambda: all(len(r) >= c + 5 for r, c in zip(results, counts)), what="requests after v3")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    total = sum(len(r) for r in results)
    seen = {v for r in results for v in r}
    assert seen == {1, 2, 3}, seen
    assert all(r[-1] == 3 for r in results)
    print(f"{total} requests from 8 clients across versions 1 -> 2 -> 3, 0 failed")


def test_watchdog_picks_up_a_version_long_before_the_next_poll(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = server_factory(f"--model_base_path={repo.path('hp')}", "--model_name=hp",
                         "--file_system_poll_wait_seconds=600", "--version_settle_seconds=0.3")
    start = time.monotonic()
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, timeout=60,
               what="v2 via watchdog")
    assert time.monotonic() - start < 60  # the poll alone would take 600 s
    assert answer(srv) == (3.0, 2)


def test_polling_alone_picks_up_versions(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory, "--enable_file_system_watch=false")
    repo.put("hp", 2, "hp2")
    wait_until(lambda: states(srv, "hp") == {2: State.AVAILABLE, 1: State.END}, what="v2 via polling")
    assert answer(srv) == (3.0, 2)


def test_wrong_saved_model_tags_fail_the_load_with_tfs_error(repo, server_factory):
    repo.put("hp", 1, "hp1")
    srv = serve_hp(repo, server_factory, "--saved_model_tags=serve,gpu", "--tensorflow_intra_op_parallelism=1",
                   "--tensorflow_inter_op_parallelism=1")
    (status,) = srv.model_stub.GetModelStatus(status_request("hp"), timeout=10).model_version_status
    assert status.state == State.END
    assert status.status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "Could not find meta graph def matching supplied tags: { gpu serve }" in status.status.error_message
    e = rpc_error(srv.predict_stub.Predict, predict_request("hp", {"x": X}))
    assert e.code() == grpc.StatusCode.NOT_FOUND
