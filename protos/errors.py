"""One error type for the whole server, mapped to both gRPC codes and HTTP statuses.

Code numbers are TensorFlow's ``tensorflow.error.Code`` values, which are also the
gRPC status code numbers, so a ``ServingError`` crosses every transport unchanged.
Messages are TF Serving's wire text wherever TF Serving has one.
"""

from __future__ import annotations

import enum
from typing import Optional


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's REST mapping (http_rest_api_handler / ToHTTPStatusCode).
HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request or operation failed with a status code and TF Serving's message.

    Raised anywhere in the core; transport adapters turn it into a gRPC status
    (``code`` is the gRPC code number) or an HTTP status (``http_status``).

    ``caller``: whose fault it is, for a rollout's verdict (server/rollout/faults.py): True when
    the request caused it (e.g. RESOURCE_EXHAUSTED for a request over a limit), False when the
    server failed (e.g. its own queue or budget full); None (default): decided by the code and
    where it was raised. Never sent to the client.
    """

    def __init__(self, code: Code, message: str, *, caller: Optional[bool] = None):
        super().__init__(message)
        self.code = Code(code)
        self.message = message
        self.caller = caller

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __str__(self) -> str:  # "INVALID_ARGUMENT: text", as absl::Status prints
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)
