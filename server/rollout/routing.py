"""Which version answers a request that names none: pure functions.

A request carrying a routing key always lands on the same side of the split (the key's hash
gives its position in [0, 1)), so one user sees one version while the weights stay put; a
request without a key takes a uniform random position.
"""

from __future__ import annotations

import hashlib
from typing import AbstractSet, Callable, Optional

_SCALE = float(2**64)


def position(key: Optional[str], rand: Callable[[], float]) -> float:
    """A request's position in [0, 1): the key's stable hash, or ``rand()`` without a key."""
    if not key:
        return rand()
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(stable: int, canary: int, canary_percent: float, at: float,
           available: AbstractSet[int]) -> Optional[int]:
    """The version for a request at position ``at``: the canary for positions below its share
    (when it is available), else stable; None when the chosen side is not available (the
    request then resolves as it would without a rollout)."""
    if canary and canary in available and at * 100.0 < canary_percent:
        return canary
    return stable if stable in available else None
