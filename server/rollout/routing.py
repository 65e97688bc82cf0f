"""Which version answers a request that names none: pure functions.

A request carrying a routing key always lands on the same side of the split (the key's hash
gives its position in [0, 1)), so one user sees one version while the weights stay put; a
request without a key takes a uniform random position.

The hash is keyed with the rollout's secret salt (BLAKE2b in keyed mode, a MAC): without the
salt nobody can compute which side a key lands on, so a caller cannot pick keys that all go to
the canary (to fail it with bad requests, or to flood stable and hide a bad canary). The
rollout manager draws one salt per rollout of a canary and keeps it in the state store, so
restarts and worker processes route a key alike.
"""

from __future__ import annotations

import hashlib
import os
from typing import AbstractSet, Callable, Optional

_SCALE = float(2**64)
SALT_BYTES = 32  # BLAKE2b takes keys of up to 64 bytes


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def position(key: Optional[str], rand: Callable[[], float], salt: bytes = b"") -> float:
    """A request's position in [0, 1): the key's stable hash keyed with ``salt`` (empty: the
    unkeyed hash), or ``rand()`` without a key."""
    if not key:
        return rand()
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(stable: int, canary: int, canary_percent: float, at: float,
           available: AbstractSet[int]) -> Optional[int]:
    """The version for a request at position ``at``: the canary for positions below its share,
    else stable. Fail closed: when the chosen side is not available the other side of the
    rollout answers; None only when neither is (never another version of the model)."""
    wanted, other = (canary, stable) if canary and at * 100.0 < canary_percent else (stable, canary)
    if wanted in available:
        return wanted
    if other and other in available:
        return other
    return None
