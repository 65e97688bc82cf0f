"""``--ssl_config_file``: TF Serving's SSLConfig for gRPC, and the same certificates for REST.

The file is TF Serving's text proto ``SSLConfig`` (tensorflow_serving/config/ssl_config.proto,
not in the tensorflow-serving-api wheel, so declared in a private pool: protos/private_protos.py)::

    server_key: "-----BEGIN PRIVATE KEY-----\\n..."   # PEM text, not a path
    server_cert: "-----BEGIN CERTIFICATE-----\\n..."
    custom_ca: "-----BEGIN CERTIFICATE-----\\n..."     # verifies client certificates
    client_verify: true                                 # mutual TLS: no valid client cert, no call

As TF Serving: the CA is used only when ``client_verify`` is on (then a client must present a
certificate signed by it); without ``client_verify`` clients are not asked for certificates.
An unparsable file stops the start as every TF Serving config file does
(``Invalid protobuf file``, with protobuf's error lines; server/textproto.py). Verso differs
in checking the contents at start-up: TF Serving fails later on a bad key; Verso refuses to
start with one line naming the problem. The REST port (a Verso extension: TF Serving's REST
API has no TLS) serves HTTPS with the same key, certificate and client verification.

Everything here runs once, at start-up, on the main thread.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from protos.private_protos import SSLConfig
from server.textproto import parse_text_proto


class TlsConfigError(ValueError):
    """The SSL config cannot be used; ``str()`` is the one line for the operator."""


@dataclass(frozen=True)
class TlsConfig:
    server_key: str
    server_cert: str
    custom_ca: str
    client_verify: bool

    def grpc_credentials(self):
        import grpc

        return grpc.ssl_server_credentials(
            [(self.server_key.encode(), self.server_cert.encode())],
            root_certificates=self.custom_ca.encode() if self.client_verify else None,
            require_client_auth=self.client_verify)

    def ssl_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for the REST server with the same certificates; raises
        ``TlsConfigError`` (without the file's name) when they cannot be used."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The standard library loads a key pair from files only: a private temporary file,
        # removed as soon as it is read.
        with tempfile.TemporaryDirectory(prefix="verso-tls-") as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, text in ((cert, self.server_cert), (key, self.server_key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
                    fh.write(text)
            try:
                ctx.load_cert_chain(cert, key)
            except ssl.SSLError as e:
                if e.reason == "KEY_VALUES_MISMATCH":
                    raise TlsConfigError("server_key does not match server_cert") from None
                raise TlsConfigError(f"server_key and server_cert are not a PEM key and certificate ({e})") from None
        if self.client_verify:
            try:
                ctx.load_verify_locations(cadata=self.custom_ca)
            except (ssl.SSLError, ValueError) as e:
                raise TlsConfigError(f"custom_ca is not a PEM certificate ({e})") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def parse_ssl_config(text: str, path: str) -> TlsConfig:
    """Parse and check an SSLConfig text. A text that does not parse raises
    ``server.textproto.TextProtoError`` (TF Serving's ``Invalid protobuf file: '<path>'``);
    unusable settings raise ``TlsConfigError`` with one line."""
    msg = parse_text_proto(text, SSLConfig(), path)
    if not msg.server_key or not msg.server_cert:
        raise TlsConfigError(f"Invalid SSLConfig in {path}: server_key and server_cert (PEM text) are required")
    if msg.client_verify and not msg.custom_ca:
        raise TlsConfigError(f"Invalid SSLConfig in {path}: client_verify needs custom_ca, the PEM certificate "
                             f"of the authority that signs client certificates")
    config = TlsConfig(msg.server_key, msg.server_cert, msg.custom_ca, msg.client_verify)
    try:
        config.ssl_context()  # the key matches the certificate, the CA parses
    except TlsConfigError as e:
        raise TlsConfigError(f"Invalid SSLConfig in {path}: {e}") from None
    return config


def read_ssl_config(path: str) -> TlsConfig:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise TlsConfigError(f"Cannot read --ssl_config_file {path}: {e.strerror}") from None
    return parse_ssl_config(text, path)
