"""The manager stepped by hand with a fake loader: availability preserved, drain before unload,
failures to END, retries, fresh attempts after a version leaves and returns."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from protos.errors import Code, ServingError
from server.lifecycle.manager import Manager
from server.lifecycle.policy import State


class FakeServable:
    def __init__(self, version):
        self.version = version
        self.unloaded = False

    def unload(self):
        self.unloaded = True


class FakeLoader:
    """Loads succeed unless the version is in ``fail`` (a count of failures to give)."""

    def __init__(self):
        self.fail: dict[int, int] = {}
        self.calls: list[int] = []

    def __call__(self, name, version, path):
        self.calls.append(version)
        if self.fail.get(version, 0) > 0:
            self.fail[version] -= 1
            raise ServingError(Code.DATA_LOSS, f"corrupt {path}")
        return FakeServable(version)


def run(coro_fn):
    async def main():
        with ThreadPoolExecutor(1) as load, ThreadPoolExecutor(1) as unload:
            await coro_fn(load, unload)
    asyncio.run(main())


def states(m, name="m"):
    return {s.version: s.state for s in m.status(name)}


def test_new_version_loads_beside_old_then_old_unloads():
    loader = FakeLoader()

    unloaded = []

    async def body(load, unload):
        m = Manager(loader, load_executor=load, unload_executor=unload,
                    on_unloaded=lambda name, version: unloaded.append((name, version)))
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        assert states(m) == {1: State.AVAILABLE}
        with m.lease("m") as old:
            assert old.version == 1
        m.set_aspired_versions("m", {2: "/m/2"})
        started = m.tick()
        assert [(n, a.kind.value, a.version) for n, a in started] == [("m", "load", 2)]
        assert states(m) == {2: State.LOADING, 1: State.AVAILABLE}
        with m.lease("m") as h:
            assert h.version == 1  # still serving while 2 loads
        await m.run_until_idle()
        assert states(m) == {2: State.AVAILABLE, 1: State.END}
        assert old.servable is None and unloaded == [("m", 1)]  # the unload hook ran once, naming it
        with m.lease("m") as h:
            assert h.version == 2

    run(body)


def test_a_lease_is_released_once_whatever_happens():
    loader = FakeLoader()

    async def body(load, unload):
        m = Manager(loader, load_executor=load, unload_executor=unload)
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        with pytest.raises(KeyError):
            with m.lease("m") as h:
                assert h.leases == 1
                raise KeyError("a failing request")
        assert h.leases == 0
        lease = m.lease("m")
        lease.release()
        lease.release()  # a second release does nothing
        with lease:
            pass
        assert h.leases == 0

    run(body)


def test_unload_waits_for_in_flight_leases():
    loader = FakeLoader()

    async def body(load, unload):
        m = Manager(loader, load_executor=load, unload_executor=unload)
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        held = m.lease("m", 1)
        servable = held.handle.servable
        m.set_aspired_versions("m", {2: "/m/2"})
        idle = asyncio.ensure_future(m.run_until_idle())
        for _ in range(50):  # let loads/ticks progress; the unload must stay blocked on the lease
            await asyncio.sleep(0)
            if states(m).get(1) == State.UNLOADING:
                break
        await asyncio.sleep(0.05)
        assert states(m)[1] == State.UNLOADING and not servable.unloaded
        with pytest.raises(ServingError) as e:
            m.lease("m", 1)  # no new leases on an unloading version
        assert e.value.message == "Servable not found for request: Specific(m, 1)"
        held.release()
        await idle
        assert states(m) == {2: State.AVAILABLE, 1: State.END} and servable.unloaded

    run(body)


def test_failed_load_ends_with_error_and_previous_keeps_serving():
    loader = FakeLoader()
    loader.fail[2] = 99

    async def body(load, unload):
        m = Manager(loader, load_executor=load, unload_executor=unload)
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        m.set_aspired_versions("m", {2: "/m/2"})
        await m.run_until_idle()
        assert states(m) == {2: State.END, 1: State.AVAILABLE}
        (s2,) = [s for s in m.status("m") if s.version == 2]
        assert s2.error.code == Code.DATA_LOSS and "corrupt /m/2" in s2.error.message
        with m.lease("m") as held:
            assert held.version == 1
        # No further attempt while it stays aspired ...
        m.set_aspired_versions("m", {2: "/m/2"})
        await m.run_until_idle()
        assert loader.calls == [1, 2]
        # ... a fresh one after it leaves and comes back.
        loader.fail[2] = 0
        m.set_aspired_versions("m", {})
        m.set_aspired_versions("m", {2: "/m/2"})
        await m.run_until_idle()
        assert states(m) == {2: State.AVAILABLE, 1: State.END}

    run(body)


def test_retries_then_success_and_retry_interval():
    loader = FakeLoader()
    loader.fail[1] = 2
    sleeps = []

    async def fake_sleep(s):
        sleeps.append(s)

    async def body(load, unload):
        m = Manager(loader, load_executor=load, unload_executor=unload, max_load_retries=2,
                    load_retry_interval_s=1.5, sleep=fake_sleep)
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        assert states(m) == {1: State.AVAILABLE}
        assert loader.calls == [1, 1, 1] and sleeps == [1.5, 1.5]

    run(body)


def test_unknown_model_and_loader_bug_become_statuses():
    def buggy(name, version, path):
        raise KeyError("oops")

    async def body(load, unload):
        m = Manager(buggy, load_executor=load, unload_executor=unload)
        with pytest.raises(ServingError) as e:
            m.lease("nope")
        assert (e.value.code, e.value.message) == (Code.NOT_FOUND, "Servable not found for request: Latest(nope)")
        m.set_aspired_versions("m", {1: "/m/1"})
        await m.run_until_idle()
        (s,) = m.status("m")
        assert s.state == State.END and s.error.code == Code.UNKNOWN and "KeyError" in s.error.message

    run(body)


@pytest.mark.parametrize("threads", [1, 3])
def test_load_concurrency_is_the_load_executors(threads):
    """--num_load_threads sizes the load executor: 1 loads one version at a time."""
    import threading

    active, peak, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def slow_loader(name, version, path):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        gate.wait(0.2)
        with lock:
            active[0] -= 1
        return FakeServable(version)

    async def main():
        with ThreadPoolExecutor(threads) as load, ThreadPoolExecutor(1) as unload:
            m = Manager(slow_loader, load_executor=load, unload_executor=unload)
            for name in ("a", "b", "c"):
                m.set_aspired_versions(name, {1: f"/{name}/1"})
            await m.run_until_idle()
            assert all(states(m, n) == {1: State.AVAILABLE} for n in ("a", "b", "c"))

    asyncio.run(main())
    assert peak[0] == threads


def test_run_until_attempted_returns_when_a_failed_load_waits_for_its_retry():
    """Start-up opens the port then: the good model serves while the bad one keeps retrying."""
    loader = FakeLoader()
    loader.fail[1] = 2  # model "bad" fails twice, then loads
    release = None

    async def held_sleep(s):
        await release.wait()

    async def body(load, unload):
        nonlocal release
        release = asyncio.Event()
        m = Manager(loader, load_executor=load, unload_executor=unload, max_load_retries=5,
                    load_retry_interval_s=60, sleep=held_sleep)
        m.set_aspired_versions("bad", {1: "/bad/1"})
        m.set_aspired_versions("good", {2: "/good/2"})
        await asyncio.wait_for(m.run_until_attempted(), timeout=10)
        assert states(m, "good") == {2: State.AVAILABLE} and states(m, "bad") == {1: State.LOADING}
        (s,) = m.status("bad")
        assert s.error is None and s.retry_error.message == "corrupt /bad/1"  # not a final status yet
        release.set()  # the retries run on: the second one succeeds
        await m.run_until_idle()
        assert states(m, "bad") == {1: State.AVAILABLE} and m.status("bad")[0].retry_error is None
        assert loader.calls.count(1) == 3

    run(body)


def test_wait_for_loads_waits_for_the_named_models_only():
    """A reload waits for the models it added, not for another model's retries."""
    loader = FakeLoader()
    loader.fail[1] = 99  # "bad" keeps failing and retrying
    release = None

    async def held_sleep(s):
        await release.wait()

    async def body(load, unload):
        nonlocal release
        release = asyncio.Event()
        m = Manager(loader, load_executor=load, unload_executor=unload, max_load_retries=5,
                    load_retry_interval_s=60, sleep=held_sleep)
        m.set_aspired_versions("bad", {1: "/bad/1"})
        await m.run_until_attempted()
        m.set_aspired_versions("new", {2: "/new/2", 3: "/new/3"})
        await asyncio.wait_for(m.wait_for_loads(["new"]), timeout=10)
        assert states(m, "new")[3] == State.AVAILABLE and states(m, "bad") == {1: State.LOADING}
        await asyncio.wait_for(m.wait_for_loads(["nothing_here"]), timeout=1)  # no versions: at once
        release.set()
        await m.run_until_idle()
        assert states(m, "bad") == {1: State.END}

    run(body)
