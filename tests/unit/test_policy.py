"""The version policy is pure: states in, one action out."""

from server.lifecycle.policy import (Action, ActionKind, All, Latest, Specific, State, VersionView,
                                aspired_versions, next_action)

A, S, L, U, E = State.AVAILABLE, State.START, State.LOADING, State.UNLOADING, State.END


def v(version, state, aspired=True):
    return VersionView(version, state, aspired)


def test_aspired_latest_all_specific():
    assert aspired_versions([1, 3, 2], Latest(1)) == {3}
    assert aspired_versions([1, 3, 2], Latest(2)) == {2, 3}
    assert aspired_versions([1, 3, 2], Latest(0)) == {3}  # TF Serving: 0 means 1
    assert aspired_versions([1, 3, 2], Latest(9)) == {1, 2, 3}
    assert aspired_versions([], Latest(1)) == set()
    assert aspired_versions([1, 3, 2], All()) == {1, 2, 3}
    assert aspired_versions([1, 3, 2], Specific(frozenset({2, 7}))) == {2}


def test_loads_new_aspired_version_beside_the_old_one():
    assert next_action([v(1, A, aspired=False), v(2, S)]) == Action(ActionKind.LOAD, 2)


def test_keeps_the_last_available_version_until_an_aspired_one_is_ready():
    assert next_action([v(1, A, aspired=False), v(2, L)]) is None
    # ... and also when the new one failed: the old one keeps serving.
    assert next_action([v(1, A, aspired=False), v(2, E)]) is None


def test_unloads_old_version_once_new_one_is_available():
    assert next_action([v(1, A, aspired=False), v(2, A)]) == Action(ActionKind.UNLOAD, 1)


def test_with_several_unaspired_available_unloads_lowest_keeps_one():
    assert next_action([v(1, A, False), v(2, A, False), v(3, L)]) == Action(ActionKind.UNLOAD, 1)
    assert next_action([v(2, A, False), v(3, L)]) is None


def test_unloads_before_loading_and_loads_highest_first():
    assert next_action([v(1, A, False), v(2, A), v(3, S)]) == Action(ActionKind.UNLOAD, 1)
    assert next_action([v(2, S), v(4, S), v(3, S)]) == Action(ActionKind.LOAD, 4)


def test_nothing_aspired_unloads_everything():
    assert next_action([v(1, A, False), v(2, A, False)]) == Action(ActionKind.UNLOAD, 1)
    assert next_action([v(1, E, False), v(2, A, False)]) == Action(ActionKind.UNLOAD, 2)


def test_nothing_to_do():
    assert next_action([]) is None
    assert next_action([v(1, A), v(2, A)]) is None
    assert next_action([v(1, E, False), v(2, U, False), v(3, A)]) is None
    assert next_action([v(1, S, aspired=False)]) is None  # not aspired, never loaded: no load
