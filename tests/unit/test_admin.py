"""The admin rule for control-plane calls (server/dataplane/admin.py): bearer tokens compared
in constant time, loopback and mutual-TLS callers without a token file, one-line refusals."""

from __future__ import annotations

import pytest

from protos.errors import Code, ServingError
from server.dataplane.admin import bearer_token, check, is_local


@pytest.mark.parametrize("address, local", [
    ("ipv4:127.0.0.1:50000", True), ("ipv4:127.8.9.10:1", True), ("ipv6:[::1]:50000", True),
    ("ipv6:[::ffff:127.0.0.1]:7", True), ("unix:/tmp/verso.sock", True), ("unix:", True),
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("ipv4:10.1.2.3:50000", False), ("ipv6:[2001:db8::1]:5", False), ("192.168.0.7", False),
    ("", False), ("localhost", False), ("ipv4:not-an-ip:1", False),
    # gRPC reports an IPv6 peer as a URI with its brackets percent-encoded (issue 27): the
    # caller on ::1 was refused PERMISSION_DENIED about half the time from `localhost`.
    ("ipv6:%5B::1%5D:1234", True), ("ipv6:%5b::1%5d:1234", True), ("ipv6:%5B::ffff:127.0.0.1%5D:7", True),
    ("ipv6:%5B0:0:0:0:0:0:0:1%5D:9", True), ("ipv6:%5B::1%25lo%5D:9", True), ("ipv6:::1", True),
    ("ipv6:%5B2001:db8::1%5D:1234", False), ("ipv6:%5B::ffff:10.0.0.1%5D:7", False),
    ("ipv6:%5B::2%5D:1", False), ("ipv6:%5B%5D:1", False), ("ipv6:%5B::1", False), ("ipv6:", False),
    ("ipv4:127.0.0.1:1", True), ("ipv4:127.0.0.1", True), ("ipv4:%31%32%37.0.0.1:1", True),
    ("unix-abstract:verso", True), ("ipv4:0.0.0.0:1", False), ("::", False),
])
def test_is_local(address, local):
    assert is_local(address) is local


def test_is_local_reads_the_peers_grpc_really_reports():
    """The forms above are what grpcio's ``context.peer()`` says for a caller on each loopback
    address (read from a real server, so a change of spelling in gRPC fails here)."""
    import socket
    from concurrent import futures

    import grpc

    peers = []

    def handler(request, context):
        peers.append(context.peer())
        return request

    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(handler)})])
    port = server.add_insecure_port("[::]:0")  # dual stack: one port for both families
    server.start()
    try:
        targets = [f"127.0.0.1:{port}"]
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
            targets.append(f"[::1]:{port}")
        except OSError:
            pass  # no IPv6 loopback on this host: the IPv4 form only
        for target in targets:
            with grpc.insecure_channel(target) as ch:
                assert ch.unary_unary("/t.T/Echo")(b"x", timeout=10) == b"x"
    finally:
        server.stop(None)
    assert len(peers) == len(targets)
    assert all(is_local(p) for p in peers), peers


@pytest.mark.parametrize("value, token", [
    ("Bearer abc", "abc"), ("bearer abc ", "abc"), ("BEARER  x y", "x y"), ("Basic abc", None), ("", None),
    (None, None), ("Bearer", None),
])
def test_bearer_token(value, token):
    assert bearer_token(value) == token


def test_with_a_token_file_only_the_token_counts():
    check("SetRollout", expected_token="s3cret", token="s3cret", local=False, verified_client=False)
    for token in (None, "", "s3cre", "s3cret2", "S3CRET"):
        with pytest.raises(ServingError) as e:
            check("SetRollout", expected_token="s3cret", token=token, local=True, verified_client=True)
        assert e.value.code == Code.UNAUTHENTICATED and e.value.http_status == 401
        assert e.value.message == ("SetRollout needs the server's admin token: send 'authorization: Bearer <token>' "
                                   "with the token of its --admin_token_file")


def test_without_a_token_file_this_machine_and_mtls_clients_only():
    check("Feedback", expected_token=None, token=None, local=True, verified_client=False)
    check("Feedback", expected_token=None, token=None, local=False, verified_client=True)
    with pytest.raises(ServingError) as e:
        check("Feedback", expected_token=None, token="anything", local=False, verified_client=False)
    assert e.value.code == Code.PERMISSION_DENIED and e.value.http_status == 403
    assert "start it with --admin_token_file=FILE and send 'authorization: Bearer <token>'" in e.value.message


# ---- REST control calls from a browser (check_browser) ----------------------------------------------

from server.dataplane.admin import check_browser, normalize_origin  # noqa: E402


def _browser(**kw):
    args = dict(content_type="application/json", origin=None, host="127.0.0.1:8501", scheme="http",
                own_hosts={"10.0.0.5", "verso.internal"}, allowed_origins={"https://console.example"})
    args.update(kw)
    check_browser("SetRollout", **args)


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "127.0.0.1", "localhost:8501", "LOCALHOST", "[::1]:8501",
                                  "127.5.5.5:1", "10.0.0.5:8501", "verso.internal:8501", "Verso.Internal"])
def test_this_servers_names_pass(host):
    _browser(host=host)


@pytest.mark.parametrize("host", [None, "", "evil.example", "evil.example:8501", "localhost.evil.example",
                                  "127.0.0.1.nip.io", "10.0.0.6:8501", "user@127.0.0.1", "127.0.0.1:port",
                                  "127.0.0.1/x", "[::1"])
def test_a_foreign_host_is_refused(host):
    with pytest.raises(ServingError) as e:
        _browser(host=host)
    assert e.value.code == Code.PERMISSION_DENIED and e.value.http_status == 403
    assert e.value.message.startswith("SetRollout refused: Host ")


@pytest.mark.parametrize("origin, ok", [
    (None, True), ("http://127.0.0.1:8501", True), ("HTTP://127.0.0.1:8501/", True),
    ("https://console.example", True), ("https://console.example:443", True),
    ("http://127.0.0.1:8502", False), ("https://127.0.0.1:8501", False), ("http://localhost:8501", False),
    ("null", False), ("", False), ("http://console.example", False), ("file://", False),
])
def test_the_origin_must_be_the_servers_own_or_allowed(origin, ok):
    if ok:
        _browser(origin=origin)
        return
    with pytest.raises(ServingError) as e:
        _browser(origin=origin)
    assert e.value.http_status == 403 and "another origin" in e.value.message


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data", "application/jsonx", "text/json"])
def test_a_body_not_declared_json_is_415(content_type):
    with pytest.raises(ServingError) as e:
        _browser(content_type=content_type)
    assert e.value.http_status == 415 and e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message.startswith("SetRollout needs 'Content-Type: application/json'")


def test_caller_text_in_refusals_is_escaped_and_bounded():
    with pytest.raises(ServingError) as e:
        _browser(host="evil\n\x1b[31m" + "x" * 5000)
    assert "\n" not in e.value.message and "\x1b" not in e.value.message and len(e.value.message) < 400


def test_normalize_origin():
    assert normalize_origin("HTTPS://Console.Example:443/") == "https://console.example"
    assert normalize_origin("http://[::1]:8501") == "http://[::1]:8501"
    for bad in ("null", "console.example", "ftp://x", "http://x/path", "http://", "http://u@x"):
        with pytest.raises(ValueError):
            normalize_origin(bad)


def test_the_origin_and_host_flags_are_checked():
    from server.settings import SettingsError, parse_flags
    s = parse_flags(["--rest_api_cors_allowed_origins=https://A.example, http://b.example:8080",
                     "--rest_api_allowed_hosts=Verso.Internal,[fd00::1]"])
    assert s.rest_api_cors_allowed_origins == ("https://a.example", "http://b.example:8080")
    assert s.rest_api_allowed_hosts == ("verso.internal", "fd00::1")
    for bad in ("--rest_api_cors_allowed_origins=*", "--rest_api_cors_allowed_origins=a.example",
                "--rest_api_allowed_hosts=verso.internal:8501"):
        with pytest.raises(SettingsError):
            parse_flags([bad])
