"""Whose fault a failed call is: the version's (the server's) or the caller's. Pure.

A rollout judges a version by the failures it causes, never by the ones a caller asks for: a
caller who keys invalid requests onto the canary must not move its error rate, or a remote
caller with no credentials could force a ROLLBACK of a good canary (or, keying them onto
stable, hide a bad one). ``fault`` is the one rule; the rollout manager applies it to every
observed call, and only ``SERVER`` failures are judged (``CALLER`` ones are counted apart and
shown).

Where the error arose decides first. The serving core passes ``REQUEST`` for an error raised
while reading and checking the request, before the version runs: nothing of the version but
its signature was used, and a request that does not fit the signature is INVALID_ARGUMENT
anyway, so every such failure is the caller's (a request over a size limit, RESOURCE_EXHAUSTED,
included), with one exception: ``REFUSED``, a request the canary refused before running that
its stable version accepts (the core checks it against stable's signature), is the canary's: it
breaks clients that work today (a changed signature), and no caller can forge it, since it is a
request the version in service takes. ``MODEL`` is an error raised while the version ran: then the code decides (INTERNAL,
UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED ... are the server's; INVALID_ARGUMENT from
the graph, e.g. a shape only the model could check, the caller's). A ``ServingError`` raised
with ``caller=True`` or ``caller=False`` says outright whose it is (``CALLER`` / ``SERVER``),
wherever it arose: e.g. a limit on a request's outputs, checked after the model ran, is the
caller's; the server's own queue or memory budget full, the server's.
"""

from __future__ import annotations

from typing import Optional

SERVER, CALLER = "server", "caller"
REQUEST, MODEL = "request", "model"   # where an error arose (origins besides SERVER and CALLER)
REFUSED = "refused"   # refused before running by the canary, accepted by its stable version

# The request was wrong, whatever the version: what it named, what it sent, who sent it, or the
# caller gave up on it (CANCELLED).
CALLER_CODES = frozenset({"CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
                          "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNIMPLEMENTED", "UNAUTHENTICATED"})


def fault(code: str, origin: Optional[str] = None) -> Optional[str]:
    """``SERVER`` or ``CALLER`` for a failed call's gRPC code name, None for "OK".

    ``origin`` ``CALLER`` or ``SERVER`` (the error said whose it is) decides outright,
    ``REFUSED`` is the server's (the canary's) and ``REQUEST`` (raised before the version ran)
    the caller's. Otherwise (``MODEL``, or not
    known) a code of ``CALLER_CODES`` is the caller's, and every other code, an unknown name
    included, the server's (INTERNAL, UNKNOWN, UNAVAILABLE, DATA_LOSS, ABORTED,
    RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED): fail closed, a failure of the version that nobody
    explained counts against it."""
    if code == "OK":
        return None
    if origin in (SERVER, CALLER):
        return origin
    if origin == REFUSED:
        return SERVER
    if origin == REQUEST or code in CALLER_CODES:
        return CALLER
    return SERVER


def origin_of(error, phase: str) -> str:
    """The origin of ``error`` (a ``ServingError``) raised in ``phase`` (``REQUEST`` or
    ``MODEL``): its own ``caller`` flag when it has one, else the phase."""
    caller = getattr(error, "caller", None)
    if caller is None:
        return phase
    return CALLER if caller else SERVER
