"""The aspired-versions manager: version states, the serving snapshot and handles.

Ownership and threads: a ``Manager`` belongs to one asyncio event loop. Every method is
called on that loop; blocking work (``loader``, ``Servable.unload``) runs in the two
executors it is given. Nothing here takes a lock: the loop is the lock.

Flow (TF Serving's vocabulary):
* a source calls ``set_aspired_versions(name, {version: path})`` with the *full* set of
  versions it wants loaded for a model; versions left out are un-aspired;
* ``tick()`` asks the pure policy (``server.lifecycle.policy.next_action``) for each model's
  next action and starts it (a load or an unload runs as a task);
* requests read the immutable ``snapshot`` and take a counted lease on a version through
  ``lease()``; a version that is unloading leaves the snapshot at once (no new leases) and
  is unloaded only after its last lease is released.

``run()`` is the background loop: it ticks whenever something changed. Tests instead call
``tick()`` / ``run_until_idle()`` by hand.

Load identity: each load of a version gets ``Harness.load_id`` (``load_identity`` of its
directory, taken in the load thread just before the loader reads it). Whatever is measured
about a loaded version (rollout evidence, feedback, drift, costs, facts) belongs to that
identity, so that a version directory removed and re-created, or reloaded from changed files,
starts from nothing. It is a fingerprint of the directory, not a counter, so that every
``--num_workers`` process, and a restarted server, give the same files the same identity.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Optional

from protos.errors import Code, ServingError
from server.lifecycle.policy import Action, ActionKind, State, VersionView, next_action
from server.lifecycle.servable import Servable
from server.lifecycle.source import load_identity

if TYPE_CHECKING:
    from server.batching.scheduler import BatchQueue

log = logging.getLogger("verso.manager")

# loader(model_name, version, path) -> servable; blocking, runs in the load executor.
Loader = Callable[[str, int, str], Any]

@dataclass(eq=False)
class Harness:
    """One version of one model and everything the manager knows about it."""

    name: str
    version: int
    path: str
    state: State = State.START
    aspired: bool = True
    error: Optional[ServingError] = None
    # The failure of the last attempt while retries remain (not reported as the version's
    # status, which TF Serving sets only when the load has failed for good).
    retry_error: Optional[ServingError] = None
    servable: Optional[Servable] = None
    # ``load_identity`` of the directory this harness loaded (None until a load succeeds): what
    # is measured about the version belongs to this load (see the module).
    load_id: Optional[str] = None
    leases: int = 0
    # The version's batch queues, one per (signature, output aliases), made by the data plane on
    # first use; dropped with the servable.
    batch_queues: dict[tuple[str, tuple[str, ...]], "BatchQueue"] = field(default_factory=dict)
    _drained: Optional[asyncio.Event] = field(default=None, repr=False)

    def view(self) -> VersionView:
        return VersionView(self.version, self.state, self.aspired)


@dataclass(frozen=True)
class ModelSnapshot:
    """The AVAILABLE versions of one model at one instant (never mutated)."""

    versions: Mapping[int, Harness]
    latest: Optional[Harness]


class Lease:
    """A counted hold on one AVAILABLE version (``Manager.lease``): while any is held the
    version is not unloaded. A context manager: ``with manager.lease(name) as handle:``
    releases it on the way out; ``release()`` does it by hand (a lease handed to a task).
    Released once, whatever is called twice."""

    __slots__ = ("handle", "_manager")

    def __init__(self, manager: "Manager", handle: Harness):
        self.handle: Harness = handle
        self._manager: Optional[Manager] = manager

    def __enter__(self) -> Harness:
        return self.handle

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self._manager is not None:
            self._manager._release(self.handle)
            self._manager = None


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: Optional[ServingError]
    path: str = ""
    retry_error: Optional[ServingError] = None  # LOADING: the last attempt's failure, retries remain


class Manager:
    def __init__(self, loader: Loader, *, load_executor: Executor, unload_executor: Executor,
                 max_load_retries: int = 0, load_retry_interval_s: float = 0.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_unloaded: Optional[Callable[[str, int], None]] = None,
                 on_loaded: Optional[Callable[[str, int, str], None]] = None):
        self._loader = loader
        self._load_executor = load_executor
        self._unload_executor = unload_executor
        self._max_load_retries = max(0, max_load_retries)
        self._retry_interval_s = max(0.0, load_retry_interval_s)
        self._sleep = sleep
        self._on_unloaded = on_unloaded  # on_unloaded(name, version): on the loop after each unload
        # on_loaded(name, version, load_id): on the loop after each load, before it is published
        self._on_loaded = on_loaded
        self._models: dict[str, dict[int, Harness]] = {}
        self._snapshot: Mapping[str, ModelSnapshot] = MappingProxyType({})
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Event()  # set when a load or unload ends and when a retry begins
        self._wake = asyncio.Event()

    def set_load_executor(self, executor: Executor) -> None:
        """Use ``executor`` for loads from now on (start-up loads run on a wider pool)."""
        self._load_executor = executor

    # ---- source side -------------------------------------------------------------------

    def set_aspired_versions(self, name: str, versions: Mapping[int, str]) -> None:
        """The full set of versions (version -> directory) the source wants for ``name``."""
        harnesses = self._models.setdefault(name, {})
        for version, h in list(harnesses.items()):
            now_aspired = version in versions
            if not now_aspired and h.state == State.START:
                del harnesses[version]  # never started loading: nothing to undo
                continue
            if now_aspired and not h.aspired and h.state == State.END:
                # A version that failed or was unloaded, and came back: a fresh attempt.
                del harnesses[version]
                continue
            h.aspired = now_aspired
        for version, path in versions.items():
            if version not in harnesses:
                harnesses[version] = Harness(name, version, path)
        self._wake.set()

    def failed_versions(self, name: str) -> set[int]:
        """The versions of ``name`` whose load failed for good (END with an error); the
        source's version policy passes them over until their directory changes."""
        return {v for v, h in self._models.get(name, {}).items() if h.state == State.END and h.error is not None}

    def model_names(self) -> list[str]:
        return sorted(self._models)

    # ---- request side ------------------------------------------------------------------

    @property
    def snapshot(self) -> Mapping[str, ModelSnapshot]:
        return self._snapshot

    def lease(self, name: str, version: Optional[int] = None) -> Lease:
        """A counted hold on an AVAILABLE version (latest when ``version`` is None), released
        when the ``with`` block it opens ends (or by ``Lease.release``).

        Raises NOT_FOUND with TF Serving's text when the model or version is not serving.
        """
        model = self._snapshot.get(name)
        if version is None:
            h = model.latest if model else None
            if h is None:
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")
        else:
            h = model.versions.get(version) if model else None
            if h is None:
                raise ServingError(Code.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {version})")
        h.leases += 1
        return Lease(self, h)

    def _release(self, h: Harness) -> None:
        h.leases -= 1
        if h.leases == 0 and h._drained is not None:
            h._drained.set()

    def status(self, name: str) -> list[VersionStatus]:
        """Every version the manager knows of ``name``, highest first (as TF Serving)."""
        harnesses = self._models.get(name, {})
        return [VersionStatus(h.version, h.state, h.error, h.path, h.retry_error)
                for h in sorted(harnesses.values(), key=lambda h: -h.version)]

    # ---- the manager's own loop -----------------------------------------------------------

    def tick(self) -> list[tuple[str, Action]]:
        """Start every action the policy asks for now; returns them. Never blocks."""
        self._wake.clear()
        started = []
        for name, harnesses in self._models.items():
            while True:
                action = next_action([h.view() for h in harnesses.values()])
                if action is None:
                    break
                h = harnesses[action.version]
                if action.kind is ActionKind.LOAD:
                    h.state = State.LOADING
                    self._spawn(self._load(h))
                else:
                    h.state = State.UNLOADING
                    self._publish(name)
                    self._spawn(self._unload(h))
                started.append((name, action))
        return started

    async def run_until_idle(self) -> None:
        """Tick and wait for every load/unload until nothing is left to do (for tests and start-up)."""
        while True:
            self.tick()
            # Done tasks may linger until their done-callback runs; awaiting only those would
            # never yield to the loop.
            pending = [t for t in self._tasks if not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_attempted(self) -> None:
        """As ``run_until_idle``, but a load that failed and waits for a retry counts as done:
        returns once every version the policy wants now has been tried at least once (start-up
        opens the port then; the retries go on in the background)."""
        await self._wait_for_loads(self._models, tried_once=True)

    async def wait_for_loads(self, names) -> None:
        """Until no aspired version of the models ``names`` is waiting to load or loading
        (retries included), whatever the other models do: a reload waits for the models it
        added, not for an unrelated version's retries."""
        await self._wait_for_loads(set(names), tried_once=False)

    async def wait_until_tried(self, names) -> None:
        """Until every aspired version of ``names`` has been tried at least once: loaded,
        failed for good, or failed once and waiting for a retry."""
        await self._wait_for_loads(set(names), tried_once=True)

    async def _wait_for_loads(self, names, *, tried_once: bool) -> None:
        """Tick until no aspired version of ``names`` waits to load or is loading; with
        ``tried_once``, a version whose load failed and waits for a retry counts as done."""
        def busy(h: Harness) -> bool:
            return (h.aspired and h.state in (State.START, State.LOADING)
                    and not (tried_once and h.retry_error is not None))

        while True:
            self.tick()
            if not any(busy(h) for name in list(names) for h in self._models.get(name, {}).values()):
                return
            self._changed.clear()
            await self._changed.wait()

    async def run(self) -> None:
        """Background loop: tick whenever aspired versions change or an action finishes."""
        while True:
            await self._wake.wait()
            self.tick()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- actions ---------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, h: Harness) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                log.info("Loading servable version {name: %s version: %d} from %s", h.name, h.version, h.path)
                identity, servable = await loop.run_in_executor(self._load_executor, self._identified_load, h)
            except Exception as e:  # the loader's failure is the version's status, not ours
                err = e if isinstance(e, ServingError) else ServingError(Code.UNKNOWN, f"{type(e).__name__}: {e}")
                attempt += 1
                if attempt <= self._max_load_retries and h.aspired:
                    log.warning("Loading {name: %s version: %d} failed (%s); retry %d of %d in %.1fs",
                                h.name, h.version, err, attempt, self._max_load_retries, self._retry_interval_s)
                    h.retry_error = err
                    self._changed.set()
                    await self._sleep(self._retry_interval_s)
                    if h.aspired:
                        continue
                log.error("Failed to load {name: %s version: %d}: %s", h.name, h.version, err)
                h.state, h.error, h.retry_error = State.END, err, None
                break
            h.servable, h.state, h.error, h.retry_error = servable, State.AVAILABLE, None, None
            h.load_id = identity
            log.info("Successfully loaded servable version {name: %s version: %d}", h.name, h.version)
            if self._on_loaded is not None:
                try:
                    self._on_loaded(h.name, h.version, identity)
                except Exception:  # the version serves whatever its observers do
                    log.exception("on_loaded of {name: %s version: %d} failed", h.name, h.version)
            self._publish(h.name)
            break
        self._changed.set()
        self._wake.set()

    def _identified_load(self, h: Harness) -> tuple[str, Any]:
        """(``load_identity`` of the directory, the loader's servable): the identity first, so
        that a file changed during the load gives an identity that differs from the next one."""
        identity = load_identity(h.path)
        return identity, self._loader(h.name, h.version, h.path)

    async def _unload(self, h: Harness) -> None:
        if h.leases:
            h._drained = asyncio.Event()
            await h._drained.wait()
        servable, h.servable = h.servable, None
        h.batch_queues.clear()
        if servable is not None:
            await asyncio.get_running_loop().run_in_executor(self._unload_executor, servable.unload)
        h.state = State.END
        if self._on_unloaded is not None:
            self._on_unloaded(h.name, h.version)
        log.info("Unloaded servable version {name: %s version: %d}", h.name, h.version)
        self._changed.set()
        self._wake.set()

    def _publish(self, name: str) -> None:
        """Swap in a new snapshot in which ``name`` shows exactly its AVAILABLE versions."""
        available = {v: h for v, h in self._models.get(name, {}).items() if h.state == State.AVAILABLE}
        snap = dict(self._snapshot)
        if available:
            snap[name] = ModelSnapshot(MappingProxyType(available), available[max(available)])
        else:
            snap.pop(name, None)
        self._snapshot = MappingProxyType(snap)
