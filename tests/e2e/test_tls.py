"""``--ssl_config_file``: TLS and mutual TLS on gRPC (official stubs over a secure channel) and
HTTPS on REST with the same certificates, made at test time. A client without a valid
certificate is refused under client_verify and the server keeps serving; a bad SSL config
stops the start with one line."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from client import Client, RestClient, VersoError
from tests.certs import Authority, other_key_pem
from tests.e2e.conftest import script
from tests.helpers import predict_request, y_of
from tests.server_proc import free_port


def _quoted_lines(pem: str) -> str:
    # TF Serving's text format: adjacent strings concatenate, so a PEM can keep its lines.
    return "\n  ".join(f'"{line}\\n"' for line in pem.strip().splitlines()) or '""'


def ssl_config_text(key: str, cert: str, ca: str = "", client_verify: bool = False) -> str:
    text = f"server_key: {_quoted_lines(key)}\nserver_cert: {_quoted_lines(cert)}\n"
    if ca:
        text += f"custom_ca: {_quoted_lines(ca)}\n"
    return text + f"client_verify: {'true' if client_verify else 'false'}\n"


@pytest.fixture(scope="module")
def pki():
    ca = Authority()
    return {"ca": ca, "server": ca.issue("verso server", server=True), "client": ca.issue("a client", server=False),
            # Signed by another authority: well-formed, but not trusted by the server.
            "rogue": Authority("Rogue CA").issue("a rogue client", server=False)}


def _start(repo, server_factory, tmp_path, text: str):
    repo.put("hp", 1, "hp1")
    path = tmp_path / "ssl.config"
    path.write_text(text)
    return server_factory("--model_name=hp", f"--model_base_path={repo.path('hp')}", f"--ssl_config_file={path}",
                          rest=True)


def _channel(srv, pki, client=None):
    creds = grpc.ssl_channel_credentials(pki["ca"].cert.encode(),
                                         client.key.encode() if client else None,
                                         client.cert.encode() if client else None)
    return grpc.secure_channel(f"127.0.0.1:{srv.port}", creds)


def _predict(channel, x=2.0):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return float(y_of(stub.Predict(predict_request("hp", {"x": np.array([x], np.float32)}), timeout=10))[0])


def _https(srv, pki, client=None, path="/v1/models/hp:predict", body=None):
    ctx = ssl.create_default_context(cadata=pki["ca"].cert)
    if client is not None:
        ctx.load_cert_chain(*_files(client))
    conn = http.client.HTTPSConnection("127.0.0.1", srv.rest_port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body or {"instances": [2.0]}))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


_FILES = {}


def _files(pem) -> tuple[str, str]:
    """(cert path, key path) of a Pem, written once per test session."""
    import tempfile
    if pem not in _FILES:
        d = tempfile.mkdtemp(prefix="verso-certs-")
        with open(f"{d}/cert.pem", "w") as c, open(f"{d}/key.pem", "w") as k:
            c.write(pem.cert)
            k.write(pem.key)
        _FILES[pem] = (f"{d}/cert.pem", f"{d}/key.pem")
    return _FILES[pem]


def test_tls_serves_grpc_and_https_and_refuses_plain_text(repo, server_factory, tmp_path, pki):
    srv = _start(repo, server_factory, tmp_path, ssl_config_text(pki["server"].key, pki["server"].cert))
    with _channel(srv, pki) as ch:
        assert _predict(ch) == 2.0  # 0.5 * 2 + 1
    assert _https(srv, pki) == (200, {"predictions": [2.0]})
    # Plain text is not spoken on either port.
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            _predict(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("POST", "/v1/models/hp:predict", body=json.dumps({"instances": [2.0]}))
        conn.getresponse().read()
    conn.close()
    # A client that does not trust the server's authority refuses it.
    other = Authority("Some other CA")
    with grpc.secure_channel(f"127.0.0.1:{srv.port}", grpc.ssl_channel_credentials(other.cert.encode())) as ch:
        with pytest.raises(grpc.RpcError) as e:
            _predict(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with _channel(srv, pki) as ch:
        assert _predict(ch, 4.0) == 3.0
    assert srv.proc.poll() is None


def test_mutual_tls_refuses_clients_without_a_valid_certificate(repo, server_factory, tmp_path, pki):
    srv = _start(repo, server_factory, tmp_path, ssl_config_text(pki["server"].key, pki["server"].cert,
                                                                 pki["ca"].cert, client_verify=True))
    with _channel(srv, pki, pki["client"]) as ch:
        assert _predict(ch) == 2.0
    assert _https(srv, pki, pki["client"]) == (200, {"predictions": [2.0]})
    for client in (None, pki["rogue"]):
        with _channel(srv, pki, client) as ch:
            with pytest.raises(grpc.RpcError) as e:
                _predict(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, client
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(srv, pki, client)
    # The refused handshakes left the server serving.
    with _channel(srv, pki, pki["client"]) as ch:
        assert _predict(ch, 6.0) == 4.0
    assert _https(srv, pki, pki["client"], body={"instances": [6.0]}) == (200, {"predictions": [4.0]})

    # Verso's own clients and command line speak TLS too.
    cert, key = _files(pki["client"])
    creds = grpc.ssl_channel_credentials(pki["ca"].cert.encode(), pki["client"].key.encode(),
                                         pki["client"].cert.encode())
    with Client(f"127.0.0.1:{srv.port}", credentials=creds) as c:
        assert c.predict("hp", [2.0]).tolist() == [2.0]
        # The decision log names a mutual-TLS caller by its certificate's subject.
        who = c.set_rollout("hp", stable=1).decisions[-1].who
        assert who.startswith("gRPC ipv4:127.0.0.1:") and who.endswith("(CN=a client)"), who
    with Client(f"127.0.0.1:{srv.port}", max_attempts=1) as c:  # plain text against TLS
        with pytest.raises(VersoError) as e:
            c.predict("hp", [2.0])
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    ctx = ssl.create_default_context(cadata=pki["ca"].cert)
    ctx.load_cert_chain(cert, key)
    with RestClient(f"https://127.0.0.1:{srv.rest_port}", verify=ctx) as c:
        assert c.predict("hp", [2.0]).tolist() == [2.0]
        assert c.set_rollout("hp", stable=1).decisions[-1].who == "REST 127.0.0.1 (commonName=a client)"
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(pki["ca"].cert)
    tls = ["--tls-ca", str(ca_file), "--tls-cert", cert, "--tls-key", key, "--json"]
    for where in (["--target", f"127.0.0.1:{srv.port}"], ["--rest", f"https://127.0.0.1:{srv.rest_port}"]):
        r = subprocess.run([script("verso"), "predict", "hp", "[2.0]", *where, *tls], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["outputs"] == {"y": [2.0]}
    r = subprocess.run([script("verso"), "predict", "hp", "2.0", "--target", f"127.0.0.1:{srv.port}",
                        "--tls-ca", str(ca_file), "--tls-cert", cert], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (1, "verso: error: --tls-cert and --tls-key go together")


@pytest.mark.parametrize("make, message", [
    # Unparsable: protobuf's line on stderr, TF Serving's status on stdout (checked below).
    (lambda p: "server_key: 'x' server_cert: ",
     "Error parsing text-format tensorflow.serving.SSLConfig: 1:30: Expected string, got: "),
    (lambda p: ssl_config_text(p["server"].key, "", ""),
     "Invalid SSLConfig in {path}: server_key and server_cert (PEM text) are required"),
    (lambda p: ssl_config_text(p["server"].key, p["server"].cert, "", client_verify=True),
     "Invalid SSLConfig in {path}: client_verify needs custom_ca"),
    (lambda p: ssl_config_text(other_key_pem(), p["server"].cert),
     "Invalid SSLConfig in {path}: server_key does not match server_cert"),
    (lambda p: ssl_config_text("not a key", p["server"].cert),
     "Invalid SSLConfig in {path}: server_key and server_cert are not a PEM key and certificate"),
    (lambda p: ssl_config_text(p["server"].key, p["server"].cert, "not a CA", client_verify=True),
     "Invalid SSLConfig in {path}: custom_ca is not a PEM certificate"),
    (None, "Cannot read --ssl_config_file {path}: No such file or directory"),
], ids=["syntax", "no-cert", "verify-without-ca", "key-mismatch", "bad-key", "bad-ca", "missing-file"])
def test_a_bad_ssl_config_stops_the_start_with_one_line(tmp_path, pki, make, message):
    path = tmp_path / "ssl.config"
    if make is not None:
        path.write_text(make(pki))
    r = subprocess.run([sys.executable, "-m", "server", "--model_base_path=/nonexistent", f"--port={free_port()}",
                        f"--ssl_config_file={path}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 255, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    if message.startswith("Error parsing text-format"):
        assert r.stderr.splitlines()[-1] == message  # C++'s "got: " ends with the empty token
        assert r.stdout.strip() == f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
    else:
        assert last.startswith("Failed to start server. Error: " + message.format(path=path)), last
    assert "Traceback" not in r.stderr
