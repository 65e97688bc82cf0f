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
    """The version for a request at position ``at``: the canary for positions below its share,
    else stable. Fail closed: when the chosen side is not available the other side of the
    rollout answers; None only when neither is (never another version of the model)."""
    wanted, other = (canary, stable) if canary and at * 100.0 < canary_percent else (stable, canary)
    if wanted in available:
        return wanted
    if other and other in available:
        return other
    return None
