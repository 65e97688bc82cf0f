"""Version policy: pure functions, no I/O, no clock.

Two decisions, as in TF Serving:

* ``aspired_versions``: from the versions present (and settled) on disk and a model's
  ``model_version_policy`` to the set of versions that should be loaded (the "aspired"
  set). Default: the latest one.
* ``next_action``: TF Serving's *AvailabilityPreservingPolicy*. From the current state of
  every version of one model to the single next action: unload an un-aspired version, or
  load the highest-numbered new aspired version. New versions load beside old ones; an
  un-aspired version is unloaded only once an aspired one is AVAILABLE, or when it is not
  the last AVAILABLE version, so a model that was serving keeps serving while a new version
  loads (or fails to). When no version is aspired at all, every version is unloaded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence


class State(enum.IntEnum):
    """``ModelVersionStatus.State`` numbers of TF Serving's GetModelStatus."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class Latest:
    num_versions: int = 1


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Specific:
    versions: frozenset[int]


VersionPolicy = Latest | All | Specific


def aspired_versions(on_disk: Iterable[int], policy: VersionPolicy) -> set[int]:
    """The versions that should be loaded, given the (settled) versions on disk."""
    present = sorted(set(on_disk))
    if isinstance(policy, All):
        return set(present)
    if isinstance(policy, Specific):
        return set(present) & set(policy.versions)
    n = max(policy.num_versions, 1)  # TF Serving: num_versions 0 means 1
    return set(present[-n:])


@dataclass(frozen=True)
class VersionView:
    """What the policy needs to know about one version of one model."""

    version: int
    state: State
    aspired: bool


class ActionKind(enum.Enum):
    LOAD = "load"
    UNLOAD = "unload"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    version: int


def next_action(versions: Sequence[VersionView]) -> Optional[Action]:
    """AvailabilityPreservingPolicy: the next load/unload for one model, or None.

    Versions in START are candidates for loading only while aspired; versions in END
    (unloaded or failed) never are: the manager resets a failed version to START only
    after it has left the aspired set and come back.
    """
    unloadable = sorted(v.version for v in versions if not v.aspired and v.state == State.AVAILABLE)
    if unloadable:
        has_aspired = any(v.aspired for v in versions)
        aspired_serving = any(v.aspired and v.state == State.AVAILABLE for v in versions)
        # With nothing aspired at all (model removed, directory emptied) everything goes;
        # otherwise keep the highest un-aspired version until an aspired one is available.
        if not has_aspired or aspired_serving or len(unloadable) > 1:
            return Action(ActionKind.UNLOAD, unloadable[0])
    loadable = [v.version for v in versions if v.aspired and v.state == State.START]
    if loadable:
        return Action(ActionKind.LOAD, max(loadable))
    return None
