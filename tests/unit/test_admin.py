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
])
def test_is_local(address, local):
    assert is_local(address) is local


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
