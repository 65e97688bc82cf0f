"""The client's one exception type: a gRPC status code and TF Serving's message."""

from __future__ import annotations

from typing import Optional

import grpc

from protos.errors import HTTP_STATUS, Code

_BY_NUMBER = {sc.value[0]: sc for sc in grpc.StatusCode}
# Several codes share an HTTP status; the reverse map takes the most general one.
_FROM_HTTP = {status: _BY_NUMBER[int(code)] for code, status in reversed(list(HTTP_STATUS.items()))}
_FROM_HTTP.update({500: grpc.StatusCode.INTERNAL, 400: grpc.StatusCode.INVALID_ARGUMENT, 409: grpc.StatusCode.ABORTED})


class VersoError(Exception):
    """A call failed: ``code`` (a ``grpc.StatusCode``) and ``message`` (the server's text).

    Raised for every failure of a client call, whichever the transport: gRPC errors keep
    their code and details; REST errors map the HTTP status back to the gRPC code TF Serving
    derived it from (``http_status`` keeps the original); inputs the client cannot encode
    are INVALID_ARGUMENT before anything is sent.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, http_status: Optional[int] = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status

    @classmethod
    def from_number(cls, number: int, message: str) -> "VersoError":
        return cls(_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message)

    @classmethod
    def from_http(cls, status: int, message: str) -> "VersoError":
        return cls(_FROM_HTTP.get(status, grpc.StatusCode.UNKNOWN), message, http_status=status)

    @classmethod
    def invalid(cls, message: str) -> "VersoError":
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_serving_error(e) -> VersoError:
    """A ``protos.errors.ServingError`` raised by a shared codec, as the client's error."""
    return VersoError.from_number(int(Code(e.code)), e.message)
