"""The rollout state of every model under rollout: routing, evidence, shadow calls, feedback,
staleness, verdicts and automatic steps.

Owned by the event loop that owns the ``Manager``: every method runs on it (shadow calls run
their TF work in the ``shadow_executor``, never on the loop or in the request pool). Nothing
here blocks. ``tick()`` takes automatic-mode steps and is called by ``run_auto`` every second;
tests call it by hand with a fake clock.

Safety fails closed when the state file cannot be written (disk full, read-only, locked):

- a change that moves traffic toward the canary or away from a decision (SetRollout, the
  rollout config file, an automatic step forward or a PROMOTE, a removal) is written first and
  applied only once it is durable; when the write fails it is refused (UNAVAILABLE for a call;
  an automatic step is not taken; a config file's entry is tried again every round) and
  nothing changes in memory;
- a ROLLBACK (and a failed-analysis count) always takes effect in memory: the safe direction.
  Its write is tried again every round until it succeeds; meanwhile the rollout's status
  carries an alarm, ``verso_rollout_state_unsaved`` counts it and the failure is logged;
- with ``unavailable`` (the state file could not be opened at start-up) the server runs
  without rollout changes: the config file's rollouts serve their stable version only,
  SetRollout and Feedback answer FAILED_PRECONDITION with the reason, answers get no request id.

Evidence belongs to a loaded servable, not to a version number: what is kept per version (the
evidence window, shadow drops, the drift reservoir, the cost samples) is kept for one load
identity (``Harness.load_id``, a fingerprint of the version directory: server/lifecycle/
manager.py). When the version loaded now has another identity (its directory was removed and
re-created, or reloaded from changed files), all of it starts from nothing and the status says
since when (``evidence_since_unix_time``); a call, shadow call or feedback of the earlier load
is not counted (feedback for its answers is FAILED_PRECONDITION), and other workers' evidence is
merged only when it is of the same load (a fingerprint: every worker computes the same one).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import random
import secrets
import socket
import time
from concurrent.futures import Executor
from typing import Callable, Optional


from protos import rollout_pb2
from protos.errors import Code, ServingError, invalid_argument
from server.lifecycle.manager import Manager
from server.rollout import outlook, routing
from server.rollout.config import gates_of, validated
from server.rollout.cost import SHADOW, CostMeter, amortised_per_1000, money_per_1000, rows_of
from server.rollout.drift import DriftMonitor, DriftReport
from server.rollout.evidence import Evidence, Window, divergence, per_output
from server.rollout.facts import VersionFacts
from server.rollout.faults import CALLER, fault
from server.rollout.quality import class_key, feedback_problem, slice_key
from server.rollout.predlog import Answer, PredictionLog
from server.rollout.store import DECISIONS_KEPT, MEMORY, RolloutStore, Saved, StoreWriteError, entry_bytes
from server.rollout.verdict import HOLD, ROLLBACK, Verdict, decide, is_stale, next_percent

log = logging.getLogger("verso.rollout")

EVIDENCE_FRESH_S = 5.0   # another worker's published evidence older than this is left out
AUTO_LEASE_S = 5.0       # the worker taking automatic steps renews this lease every round
FEEDBACK_TRIES, FEEDBACK_RETRY_S = 4, 0.1  # workers: an answer another worker has not written yet
PENDING_DECISIONS = 100  # per model: decisions kept in memory while the state file cannot be written
FULL_STEP_BACK = 50.0    # a restart at 100 %: the canary's share while stable's evidence refills
DROP_ALARM_S = 300.0     # prediction-log drops stay an alarm this long after the last one


class RolloutManager:
    """Rollouts by model name. ``version_age(name, version)`` gives a version's age in seconds
    (None if unknown); ``clock`` is monotonic seconds, ``wall`` Unix time, ``rand`` uniform [0, 1).

    ``workers`` (``--num_workers``): the workers share the store (one state file). ``sync()``,
    every round of ``run_auto``, publishes this worker's evidence windows there and takes up
    what other workers decided (SetRollout, automatic steps, removals); verdicts and status
    judge every worker's evidence together; one worker at a time, the holder of the ``auto``
    lease in the store, takes the automatic steps.

    ``pins`` (a ``server.rollout.pins.Pins``): a rollout's stable and canary stay loaded
    whatever the model's version policy, and SetRollout checks they are on disk and load.

    ``facts(name, version)``: what a loaded version says about itself
    (``server.rollout.facts.VersionFacts``: its age's origin, its reference sample, its
    resident memory), or None; a version's age counts from its ``born_at`` when known, else
    from ``version_age``. ``costs`` (a ``CostMeter``) is fed by the serving path (every model
    call, rollout or not) and by shadow calls."""

    def __init__(self, manager: Manager, *, shadow_executor: Optional[Executor] = None,
                 version_age: Callable[[str, int], Optional[float]] = lambda name, version: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, workers: bool = False, pins=None,
                 store: Optional[RolloutStore] = None,
                 facts: Callable[[str, int], Optional[VersionFacts]] = lambda name, version: None,
                 costs: Optional[CostMeter] = None, unavailable: Optional[str] = None):
        self.manager = manager
        self.unavailable = unavailable  # why rollouts cannot change (state file unusable at start-up)
        self.facts = facts
        self.costs = costs if costs is not None else CostMeter()
        # Calls run alone now and then to measure their versions' CPU (cost.py): only where a
        # rollout compares versions, so that other models' calls never wait for a sample.
        self.costs.share.sample_when = lambda key: key[0] in self.configs
        self._drift: dict[tuple[str, int], Optional[DriftMonitor]] = {}
        self._slices: dict[str, set[str]] = collections.defaultdict(set)
        self._slice_notes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._classes: dict[str, set[str]] = collections.defaultdict(set)
        self._class_notes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.pins = pins
        self.store = store if store is not None else RolloutStore(MEMORY)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}" if workers and unavailable is None else None
        self.shadow_executor = shadow_executor
        self.version_age = version_age
        self.clock, self.wall, self.rand = clock, wall, rand
        self.configs: dict[str, rollout_pb2.ModelRollout] = {}
        self._windows: dict[tuple[str, int], Window] = {}
        # (model, version) -> the load identity its per-version state belongs to (``_track``)
        self._loads: dict[tuple[str, int], str] = {}
        self.log = PredictionLog(self.store, clock=wall)  # every answer under a rollout, for feedback
        if unavailable is not None:
            self.log.disabled = unavailable  # no feedback can come: no request ids
        self._file_entries: dict[str, bytes] = {}  # the rollout config file's entry last applied, by model
        self._shadow_in_flight: dict[str, int] = collections.Counter()
        self._shadow_dropped: dict[tuple[str, int], int] = collections.Counter()
        self._last_auto: dict[str, float] = {}
        self._alarmed: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._failures: dict[str, int] = collections.Counter()  # consecutive failed analyses (auto)
        self._rolled_back: dict[str, str] = {}  # model -> the final ROLLBACK's text, until a new rollout
        # Fail closed (see the module): what memory holds that the state file does not yet.
        self._unsaved: dict[str, str] = {}  # model -> why its state (a ROLLBACK ...) is not written
        self._pending: dict[str, list[tuple[float, str, str]]] = {}  # model -> decisions not written yet
        self._refused: dict[str, str] = {}  # model -> the automatic step last refused (not durable)
        self._file_backlog: Optional[tuple[dict, str]] = None  # config file entries not applied yet
        self.write_failures = 0  # state file writes that failed (refused changes, retries)
        self.write_error: Optional[str] = None  # the last one's text, until a write succeeds
        self._salts: dict[tuple[str, int], bytes] = {}  # (model, canary) -> routing salt (routing.py)

    # ---- configuration ---------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Take up the state the store kept (before ``apply`` of the config file at start-up):
        the rollouts as they stood, final ROLLBACKs, failed-analysis counts. Returns the models."""
        for name, saved in self.store.load().items():
            self._take_up(name, saved)
            log.info("Rollout of %s restored: stable v%d, canary %s%s", name, saved.config.stable,
                     f"v{saved.config.canary} at {saved.config.canary_percent:g} %" if saved.config.canary else "none",
                     "; final ROLLBACK stands" if saved.final_rollback else "")
            self._resume_full(name)
        return list(self.configs)

    def _resume_full(self, name: str) -> None:
        """An automatic rollout restored at 100 %: stable gets no traffic, so its evidence (gone
        with the process) would never refill and the verdict would HOLD for good. The canary
        steps back to the highest step below 100 % (``FULL_STEP_BACK`` without one), so that both
        sides gather evidence and automatic mode climbs to 100 % and promotes on a fresh
        comparison. A step back is the safe direction: taken in memory even if not written."""
        mr = self.configs[name]
        if not (mr.auto.enabled and mr.canary and mr.canary_percent >= 100) or name in self._rolled_back \
                or self.evidence(name, mr.stable).requests:  # another worker's evidence of stable is fresh
            return
        below = [float(p) for p in mr.auto.steps if 0 < p < 100]
        new = rollout_pb2.ModelRollout()
        new.CopyFrom(mr)
        new.canary_percent = max(below) if below else FULL_STEP_BACK
        self.configs[name] = new
        self._persist(name, f"RESUME: canary v{mr.canary} 100 % -> {new.canary_percent:g} % after a restart: stable "
                            f"v{mr.stable} has no evidence to compare at 100 %, so the rollout gathers it again")

    def apply(self, configs: dict[str, rollout_pb2.ModelRollout], source: str = "config file") -> None:
        """The rollout config file's rollouts (read at start-up or re-read). An entry that
        differs from the one last applied from the file is a newer operator decision: it is
        set (lifting a final ROLLBACK). An unchanged entry changes nothing, so automatic
        decisions and SetRollout calls made since stand, across restarts too. A model that was
        in the file and no longer is loses its rollout (a logged decision); rollouts set by a
        call are the file's only once it lists them.

        Each change is applied once it is written (see the module); the entries whose write
        failed are tried again at every ``run_auto`` round until the file changes, and a
        ServingError (UNAVAILABLE) names them. With ``unavailable`` each rollout is held at its
        stable version (canary and shadow 0 %, automatic mode off): nothing can be written, and
        the version under test gets no traffic."""
        self._file_backlog = None
        failed = []
        for name in [n for n in self.configs if n not in configs and n in self._file_entries]:
            try:
                self.store.delete(name, self._pending.get(name, []) + [
                    (self.wall(), source, "rollout removed: no longer in the rollout config file")])
            except StoreWriteError as e:
                self._write_failed(name, e)
                failed.append(name)
                continue
            log.info("Rollout of %s: rollout removed: no longer in the rollout config file", name)
            self._forget(name)
            del self.configs[name]
        for name, mr in configs.items():
            entry = entry_bytes(mr)
            if self._file_entries.get(name) == entry and name in self.configs:
                continue
            try:
                self._set(_held(mr) if self.unavailable else mr, source, who=source, file_entry=entry)
            except StoreWriteError:
                failed.append(name)
        if failed:
            self._file_backlog = (configs, source)
            raise ServingError(Code.UNAVAILABLE, f"Rollouts of {', '.join(failed)} from {source} not applied (tried "
                                                 f"again every second): {self.write_error}")

    def set(self, mr: rollout_pb2.ModelRollout, source: str = "SetRollout", who: str = "") -> rollout_pb2.RolloutStatus:
        """Configure a rollout as given (validated), without checking its versions: see
        ``set_checked`` for the SetRollout call. ``who``: the caller, for the decision log.
        UNAVAILABLE (nothing changes) when the state file cannot be written."""
        self._check_available()
        self._set(validated(mr), source, who=who or source)
        return self.status(mr.model)

    async def set_checked(self, mr: rollout_pb2.ModelRollout, source: str = "SetRollout",
                          who: str = "") -> rollout_pb2.RolloutStatus:
        """SetRollout: ``set`` once its versions are known good. A version that is not on disk
        is INVALID_ARGUMENT; one that does not load (pinned, then tried once) is
        FAILED_PRECONDITION with the load's error, and the model's pins go back to what they
        were. Nothing changes on either error."""
        self._check_available()
        mr = validated(mr)
        if self.pins is not None:
            wanted = _pinned(mr)
            missing = sorted(wanted - await self.pins.on_disk(mr.model))
            if missing:
                raise invalid_argument(f"Rollout of model {mr.model}: version {', '.join(map(str, missing))} "
                                       f"{'is' if len(missing) == 1 else 'are'} not on disk under the model's base path "
                                       "(or not settled yet)")
            self.pins.pin(mr.model, wanted | self._pins_of(mr.model))
            await self.pins.settle(mr.model)
            model = self.manager.snapshot.get(mr.model)
            failed = sorted(v for v in wanted if model is None or v not in model.versions)
            if failed:
                self.pins.pin(mr.model, self._pins_of(mr.model))
                raise ServingError(Code.FAILED_PRECONDITION, f"Rollout of model {mr.model}: " + "; ".join(
                    f"version {v} is not available ({self.pins.load_error(mr.model, v)})" for v in failed))
        try:
            return self.set(mr, source, who)
        except StoreWriteError:
            if self.pins is not None:
                self.pins.pin(mr.model, self._pins_of(mr.model))  # not durable: the pins as they were
            raise

    def _pins_of(self, name: str) -> set[int]:
        mr = self.configs.get(name)
        return _pinned(mr) if mr is not None else set()

    def _check_available(self) -> None:
        if self.unavailable is not None:
            raise ServingError(Code.FAILED_PRECONDITION, f"Rollouts cannot change on this server: {self.unavailable}. "
                                                         "Make the state file usable and restart the server")

    def _set(self, mr: rollout_pb2.ModelRollout, source: str, who: str, file_entry: Optional[bytes] = None) -> None:
        """Write ``mr`` (and its decision), then make it the rollout: StoreWriteError when the
        write fails, and nothing changes. ``file_entry``: the config file's entry it comes from."""
        text = (f"stable v{mr.stable}, canary {f'v{mr.canary} at {mr.canary_percent:g} %' if mr.canary else 'none'}"
                f"{f', shadow {mr.shadow_percent:g} %' if mr.shadow_percent else ''} ({source})")
        entry = file_entry if file_entry is not None else self._file_entries.get(mr.model)
        try:
            self.store.save(mr.model, mr, file_entry=entry, final_rollback=None, failed_analyses=0, now=self.wall(),
                            decisions=(*self._pending.get(mr.model, ()), (self.wall(), who, text)))
        except StoreWriteError as e:
            if self.write_error != e.message:  # a config file entry is retried every second: logged once
                log.error("Rollout of %s not changed (%s): %s", mr.model, text, e)
            self._write_failed(mr.model, e)
            raise
        self._written(mr.model)
        if file_entry is not None:
            self._file_entries[mr.model] = file_entry
        old = self.configs.get(mr.model)
        if old is not None and old.window != mr.window:
            for key in [k for k in self._windows if k[0] == mr.model]:
                del self._windows[key]  # a new window size starts the evidence afresh
        self.configs[mr.model] = mr
        if self.pins is not None:
            self.pins.pin(mr.model, _pinned(mr))
        self._last_auto[mr.model] = self.clock()
        self._failures.pop(mr.model, None)
        self._rolled_back.pop(mr.model, None)  # an operator's new rollout lifts a final ROLLBACK
        log.info("Rollout of %s: %s", mr.model, text)

    def _persist(self, name: str, decision: Optional[str] = None) -> bool:
        """Write the rollout of ``name`` as memory holds it (with ``decision``, automatic, and
        the decisions still pending) for a change already applied: one in the safe direction
        (a ROLLBACK, a failed-analysis count, a step back). Never raises: a failed write leaves
        the rollout unsaved (alarmed, retried by ``retry_unsaved``). True when written."""
        if decision is not None:
            log.info("Rollout of %s: %s", name, decision)
            self._pending[name] = (self._pending.get(name, []) + [(self.wall(), "automatic", decision)]
                                   )[-PENDING_DECISIONS:]
        try:
            self.store.save(name, self.configs[name], file_entry=self._file_entries.get(name),
                            final_rollback=self._rolled_back.get(name), failed_analyses=self._failures[name],
                            now=self.wall(), decisions=tuple(self._pending.get(name, ())))
        except StoreWriteError as e:
            self._write_failed(name, e, unsaved=True)
            return False
        self._written(name)
        return True

    def _write_failed(self, name: Optional[str], e: StoreWriteError, unsaved: bool = False) -> None:
        """Count and log a failed write; ``unsaved``: memory now holds what the file does not."""
        self.write_failures += 1
        first = self.write_error is None
        self.write_error = e.message
        if unsaved and name is not None and name not in self._unsaved:
            self._unsaved[name] = e.message
            log.error("Rollout of %s: its state holds in memory only and is written again every second: %s",
                      name, e.message)
        elif first:
            log.error("%s", e.message)

    def _written(self, name: str) -> None:
        """A write of ``name``'s rollout succeeded: what was pending is in the file now."""
        self._pending.pop(name, None)
        self.write_error = None
        if self._unsaved.pop(name, None) is not None:
            log.warning("Rollout of %s: its state is written to %s again", name, self.store.path)

    def retry_unsaved(self) -> None:
        """Write again what memory holds and the file does not (every ``run_auto`` round): the
        unsaved rollouts, pending decisions, config file entries not applied yet."""
        for name in [n for n in set(self._unsaved) | set(self._pending) if n in self.configs]:
            self._persist(name)
        if self._file_backlog is not None:
            configs, source = self._file_backlog
            try:
                self.apply(configs, source)
                log.info("Rollout config file %s applied (it could not be written before)", source)
            except ServingError:
                pass  # logged when it failed; tried again next round

    def _forget(self, name: str) -> None:
        """Drop a removed rollout's evidence (a later rollout of the model starts afresh) and
        give its versions back to the model's version policy."""
        for key in [k for k in self._windows if k[0] == name]:
            del self._windows[key]
        if self.pins is not None:
            self.pins.pin(name, set())
        self._last_auto.pop(name, None)
        self._failures.pop(name, None)
        self._rolled_back.pop(name, None)
        self._file_entries.pop(name, None)
        self._unsaved.pop(name, None)
        self._pending.pop(name, None)
        self._refused.pop(name, None)
        self._forget_salts(name)

    def _decide(self, name: str, text: str, who: str = "automatic") -> None:
        """A decision that changes nothing (HOLD): logged; kept in memory (bounded) when the
        file cannot be written, and written with the rollout's next write."""
        log.info("Rollout of %s: %s", name, text)
        decision = (self.wall(), who, text)
        if name in self._pending:
            self._pending[name] = (self._pending[name] + [decision])[-PENDING_DECISIONS:]
            return
        try:
            self.store.log(name, *decision)
        except StoreWriteError as e:
            self._write_failed(name, e)
            self._pending[name] = [decision]

    def window(self, name: str, version: int) -> Window:
        """The evidence window of the servable loaded as ``version`` now (``_track``)."""
        self._track(name, version)
        w = self._windows.get((name, version))
        if w is None:
            mr = self.configs.get(name)
            size = mr.window if mr is not None else 1000
            warmup = gates_of(mr).warmup_calls if mr is not None else 0
            w = self._windows[(name, version)] = Window(size, clock=self.clock, warmup_calls=warmup,
                                                        load=self._loads.get((name, version)), since=self.wall())
        return w

    # ---- load identity ---------------------------------------------------------------------

    def load_of(self, name: str, version: int) -> Optional[str]:
        """The load identity of ``version`` as loaded now (None: not loaded, or not known)."""
        if self.manager is None:  # a rollout manager without a lifecycle manager (tests of its parts)
            return None
        model = self.manager.snapshot.get(name)
        handle = model.versions.get(version) if model is not None else None
        return getattr(handle, "load_id", None)

    def loaded(self, name: str, version: int, load: str) -> None:
        """A version has just loaded as ``load`` (the lifecycle manager's ``on_loaded``, before
        it is published): what is kept about an earlier load of it goes now, before its first
        call is counted. A version of a model under rollout gets its window now: its evidence
        begins at the load (``evidence_since_unix_time``)."""
        if self._loads.get((name, version)) != load:
            self._adopt(name, version, load)
        if name in self.configs:
            self.window(name, version)

    def _track(self, name: str, version: int, load: Optional[str] = None) -> bool:
        """Keep ``version``'s state (window, shadow drops, drift reservoir, costs) to the servable
        loaded now: when that is another load than the one the state belongs to, the state goes
        (``_adopt``). ``load``: the load an observation comes from (a call, a shadow call, an
        answer's feedback); when the version is not loaded now it is taken as the version's only
        if nothing is known of it. Returns whether that observation belongs to the state (None:
        not known, counted)."""
        key = (name, version)
        held = self._loads.get(key)
        current = self.load_of(name, version) or (load if held is None else None)
        if current is not None and current != held:
            self._adopt(name, version, current)
            held = current
        return load is None or load == held

    def _adopt(self, name: str, version: int, load: str) -> None:
        """Make ``load`` the servable ``version``'s state belongs to; an earlier one's goes."""
        key = (name, version)
        self._loads[key] = load
        dropped = self._windows.pop(key, None)
        self._drift.pop(key, None)
        self._shadow_dropped.pop(key, None)
        self.costs.forget(lambda n, v: (n, v) != key)
        if dropped is not None and (dropped.load is not None or dropped.summary().requests):
            log.info("Rollout evidence of %s v%d starts afresh: the version loaded now (%s) is another build than "
                     "the one measured (%s)", name, version, load, dropped.load or "not known")

    # ---- the request path ------------------------------------------------------------------

    def route(self, name: str, choice: Optional[str], label: str, key: Optional[str]) -> Optional[int]:
        """The version a request for ``name`` goes to, or None to resolve it as usual.

        ``choice`` is the ModelSpec's version_choice ("version", "version_label" or None):
        an explicit version is never rerouted, a label only when the rollout lists it."""
        mr = self.configs.get(name)
        if mr is None or choice == "version" or (choice == "version_label" and label not in mr.labels):
            return None
        if self.manager is None:  # a rollout manager without a lifecycle manager (tests of its parts)
            return None
        model = self.manager.snapshot.get(name)
        salt = self._salt(name, mr.canary) if mr.canary and key else b""
        version = routing.choose(mr.stable, mr.canary, mr.canary_percent, routing.position(key, self.rand, salt),
                                 model.versions.keys() if model is not None else ())
        if version is None:  # fail closed: never another version of the model
            raise ServingError(Code.UNAVAILABLE, f"Rollout of model {name}: neither stable v{mr.stable}"
                                                 f"{f' nor canary v{mr.canary}' if mr.canary else ''} is available")
        return version

    def _salt(self, name: str, canary: int) -> bytes:
        """The routing salt of the rollout of ``canary`` (kept in the store: restarts and other
        workers use the same). A store that can neither give nor keep one gives a salt of this
        process alone (logged): routing stays unpredictable, only less sticky across restarts."""
        salt = self._salts.get((name, canary))
        if salt is None:
            salt = self.store.salt(name, canary, routing.new_salt())
            if salt is None:
                log.warning("Rollout of %s: the state file cannot keep a routing salt; this process draws its "
                            "own (routing keys stay sticky until it restarts)", name)
                salt = routing.new_salt()
            self._salts[(name, canary)] = salt
        return salt

    def _forget_salts(self, name: str) -> None:
        for key in [k for k in self._salts if k[0] == name]:
            del self._salts[key]
        self.store.forget_salts(name)

    def stable_of(self, name: str, version: int) -> Optional[int]:
        """The stable version when ``version`` is the canary of ``name``'s rollout, else None:
        a request the canary refuses is its fault when stable accepts it (rollout/faults.py)."""
        mr = self.configs.get(name)
        return mr.stable if mr is not None and mr.canary and version == mr.canary != mr.stable else None

    def observe(self, name: str, version: int, latency_s: float, code: str,
                outputs: Optional[dict] = None, slice: Optional[str] = None, *,
                origin: Optional[str] = None, size: Optional[int] = None,
                load: Optional[str] = None) -> Optional[str]:
        """Record one call of a model under rollout; for a successful call with outputs, log the
        answer (off the request path: a full log queue drops it, counted) with its slice key
        (bounded: see ``quality.slice_key``) and return its request id, which feedback may
        name; else None.

        ``origin``: where a failure arose (server/rollout/faults.py: ``REQUEST``, ``MODEL``, or
        the error's own ``CALLER``/``SERVER``); a failure of the caller's making is counted
        apart and never judged. ``size``: the call's input elements, so that latency is compared
        between calls of comparable size. ``load``: the load identity of the servable that
        answered (the call's handle); a call of an earlier load than the one loaded now is not
        counted (see the module)."""
        mr = self.configs.get(name)
        if mr is None or not self._track(name, version, load):
            return None
        self.window(name, version).record_call(latency_s, code, caller=fault(code, origin) == CALLER, size=size)
        if outputs is None or code != "OK":
            return None
        if slice:
            slice, why = slice_key(slice, self._slices[name])
            if why:
                if not self._slice_notes[name][why]:
                    log.warning("Rollout of %s: %s counted as slice %r", name, why, slice)
                self._slice_notes[name][why] += 1
        request_id = secrets.token_hex(16)  # 128 random bits: an id cannot be guessed
        role = "stable" if version == mr.stable else "canary" if version == mr.canary else "not in rollout"
        if not self.log.append(Answer(request_id, name, version, role, self.wall(), outputs,
                                      mr.evidence_output or None, slice, mr.scores_output or None,
                                      self._loads.get((name, version)))):
            return None  # not logged (dropped, counted): an id feedback could never name is not handed out
        return request_id

    def observe_inputs(self, name: str, version: int, inputs: dict) -> None:
        """A Predict's inputs, for the drift check of a version that ships a reference sample
        (any model, under rollout or not); a dict lookup for the others."""
        key = (name, version)
        monitor = self._drift.get(key, False)  # reset with the rest of the version's state (``_track``)
        if monitor is False:
            facts = self.facts(name, version)
            monitor = self._drift[key] = (DriftMonitor(facts.reference, clock=self.clock)
                                          if facts is not None and facts.reference else None)
        if monitor is not None:
            monitor.add(inputs)

    def forget_version(self, name: str, version: int) -> None:
        """A version unloaded: its drift monitor goes (a reload starts a new one). Evidence
        windows stay (a rollout's verdict may still name the version) until ``forget_versions``."""
        self._drift.pop((name, version), None)

    def forget_versions(self, keep: Callable[[str, int], bool]) -> None:
        """Drop what is kept per version (evidence window, shadow drops, drift monitor, costs)
        of every version for which ``keep(name, version)`` is false and that is not a rollout's
        stable or canary: called when unloaded versions' grace period ends, so that swaps do not
        grow the process (server/transports/metrics.py)."""
        def gone(key: tuple[str, int]) -> bool:
            mr = self.configs.get(key[0])
            return not keep(*key) and (mr is None or key[1] not in (mr.stable, mr.canary))
        for table in (self._windows, self._shadow_dropped, self._drift, self._loads):
            for key in [k for k in table if gone(k)]:
                del table[key]
        self.costs.forget(lambda name, version: not gone((name, version)))

    def drift(self, name: str, version: int) -> Optional[DriftReport]:
        self._track(name, version)
        monitor = self._drift.get((name, version))
        return monitor.report() if monitor else None

    def maybe_shadow(self, name: str, version: int, sig_name: str, inputs: dict, aliases, outputs: dict) -> None:
        """After a stable answer: with the configured probability, run the same inputs on the
        canary off the request path and record how its answer differs. A full shadow budget
        drops the call (counted): the shadow never delays or changes a caller's answer."""
        mr = self.configs.get(name)
        if mr is None or not mr.canary or version != mr.stable or self.rand() * 100.0 >= mr.shadow_percent:
            return
        if self._shadow_in_flight[name] >= mr.shadow_max_in_flight or self.shadow_executor is None:
            self._shadow_dropped[(name, mr.canary)] += 1
            return
        try:
            lease = self.manager.lease(name, mr.canary)
        except ServingError:
            self._shadow_dropped[(name, mr.canary)] += 1
            return
        self._shadow_in_flight[name] += 1
        task = asyncio.get_running_loop().create_task(
            self._shadow(lease, mr.evidence_output or None, sig_name, inputs, list(aliases), outputs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, lease, alias, sig_name, inputs, aliases, primary) -> None:
        """Runs the shadow call on the canary ``lease`` (taken before the task started, so the
        version cannot unload meanwhile) and releases it."""
        handle = lease.handle
        try:
            shadow, cpu = await asyncio.get_running_loop().run_in_executor(
                self.shadow_executor, self.costs.share.keyed((handle.name, handle.version)).timed,
                handle.servable.run, sig_name, inputs, aliases)
            if not self._track(handle.name, handle.version, getattr(handle, "load_id", None)):
                return  # the canary was replaced while its shadow call ran: not this build's evidence
            self.costs.add(handle.name, handle.version, cpu, rows_of(inputs), SHADOW)
            diff, agreeing, rows = divergence(primary, shadow, alias)
            self.window(handle.name, handle.version).record_shadow(diff, agreeing, rows,
                                                                   per_output(primary, shadow))
        except Exception as e:  # the shadow's failure is evidence too, never the caller's problem
            log.info("Shadow call to %s v%d failed: %s", handle.name, handle.version, e)
            self._shadow_dropped[(handle.name, handle.version)] += 1
        finally:
            self._shadow_in_flight[handle.name] -= 1
            lease.release()

    async def drain_shadows(self) -> None:
        """Wait for shadow calls in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- feedback --------------------------------------------------------------------------

    async def feedback(self, request_id: str, labels, targets=()) -> rollout_pb2.FeedbackResponse:
        """Ground truth for an earlier answer (any age within the log's retention, answered by
        this or another worker): one label per row (compared with the answer's top-1: accuracy,
        per-class and per-slice tables, and with class scores the log-loss and Brier score)
        and/or one numeric target per row (squared and absolute error), counted in that
        version's evidence. Each id takes feedback once (ALREADY_EXISTS after). Bounded
        (``quality.feedback_problem``: INVALID_ARGUMENT, the id not used up); classes past
        ``quality.MAX_CLASSES`` count as "other" (``_bounded_classes``). Feedback for an answer of
        an earlier load of the version than the one loaded now (removed and re-created, or
        reloaded from changed files) is FAILED_PRECONDITION and counted nowhere (the id is used
        up: that build's evidence is gone)."""
        self._check_available()
        labels, targets = list(labels), list(targets)
        problem = feedback_problem(labels, targets)
        if problem is not None:
            raise invalid_argument(problem)
        for attempt in range(FEEDBACK_TRIES):
            try:
                judged = await asyncio.wrap_future(self.log.feedback(request_id, labels, targets))
                break
            except ServingError as e:
                # Under --num_workers the answer may come from another worker whose writer has
                # not committed it yet (it writes every 50 ms): look again shortly.
                if e.code != Code.NOT_FOUND or self.worker_id is None or attempt == FEEDBACK_TRIES - 1:
                    raise
                await asyncio.sleep(FEEDBACK_RETRY_S)
        if not self._track(judged.model, judged.version, judged.load):
            raise ServingError(Code.FAILED_PRECONDITION, f"Request id {request_id} was answered by an earlier build "
                                                         f"of {judged.model} version {judged.version}, which has been "
                                                         "replaced since: its feedback is not counted")
        if judged.model in self.configs:
            self.window(judged.model, judged.version).record_feedback(self._bounded_classes(judged.model, judged.rows))
        return rollout_pb2.FeedbackResponse(model=judged.model, version=judged.version, rows=len(judged.rows),
                                            correct=sum(judged.correct))

    def _bounded_classes(self, name: str, rows) -> list:
        """Feedback rows with their label and answer as the class tables count them
        (``quality.class_key``: over-long or past the model's first classes -> "other"; noted
        for the alarms, logged once per reason). ``correct`` was judged on the full texts."""
        known, notes = self._classes[name], self._class_notes[name]
        out = []
        for row in rows:
            label, why_label = class_key(row.label, known)
            predicted, why_predicted = class_key(row.predicted, known)
            for why in {why_label, why_predicted} - {""}:  # a row counts once per reason
                if not notes[why]:
                    log.warning("Rollout of %s: %s counted as class \"other\"", name, why)
                notes[why] += 1
            out.append(row._replace(label=label, predicted=predicted))
        return out

    # ---- evidence, verdicts, status ----------------------------------------------------------

    def evidence(self, name: str, version: int) -> Evidence:
        """This worker's window of ``version``, with every other worker's (``sync``) under
        ``--num_workers``."""
        window = self.window(name, version)  # of the load now (``_track``): so are the costs and parts
        costs = self.costs.samples(name, version)
        if self.worker_id is None:
            return dataclasses.replace(window.summary(), cost_samples=costs)
        now = self.wall()
        parts = [(max(0.0, now - updated), json.loads(data)) for updated, data in
                 self.store.evidence_of(name, version, exclude=self.worker_id, since=now - EVIDENCE_FRESH_S)]
        return dataclasses.replace(window.merged(parts).summary() if parts else window.summary(), cost_samples=costs)

    def sync(self) -> None:
        """Under ``--num_workers``: publish this worker's evidence, and take up the rollouts as
        the store has them now (another worker's SetRollout, automatic step or removal)."""
        if self.worker_id is None:
            return
        try:
            self.store.put_evidence(self.worker_id, [(n, v, json.dumps(w.export())) for (n, v), w in
                                                     self._windows.items() if n in self.configs], self.wall())
        except StoreWriteError as e:
            self._write_failed(None, e)  # the others judge without this worker's evidence meanwhile
        saved = self.store.load()
        for name in [n for n in self.configs if n not in saved and n not in self._unsaved]:
            self._forget(name)
            del self.configs[name]
        for name, sv in saved.items():
            if name in self._unsaved:
                continue  # memory is ahead of the file (a ROLLBACK not written yet): it stands
            mine = self.configs.get(name)
            if mine == sv.config and self._rolled_back.get(name) == sv.final_rollback:
                continue
            if mine is not None and mine.window != sv.config.window:
                for key in [k for k in self._windows if k[0] == name]:
                    del self._windows[key]
            self._take_up(name, sv)

    def _take_up(self, name: str, saved: Saved) -> None:
        """Make ``saved`` (the store's row) this process's state of the rollout of ``name``."""
        self.configs[name] = saved.config
        self._rolled_back.pop(name, None)
        if saved.final_rollback is not None:
            self._rolled_back[name] = saved.final_rollback
        self._failures[name] = saved.failed_analyses
        if saved.file_entry is not None:
            self._file_entries[name] = saved.file_entry
        self._last_auto.setdefault(name, self.clock())
        if self.pins is not None:
            self.pins.pin(name, _pinned(saved.config))

    def verdict(self, name: str, evidence: Optional[dict[int, Evidence]] = None) -> Verdict:
        """The rollout's verdict: a final ROLLBACK while one stands, else an analysis now (with
        the consecutive failed analyses automatic mode has counted). ``evidence`` (by version)
        reuses summaries already taken."""
        mr = self._config(name)
        if name in self._rolled_back:
            return Verdict(ROLLBACK, (f"final: {self._rolled_back[name]}",
                                      "the canary stays at 0 % until an operator sets a new rollout"), final=True)
        if not mr.canary:
            return Verdict(HOLD, ("no canary configured",))
        evidence = evidence or {}
        stable = evidence.get(mr.stable) or self.evidence(name, mr.stable)
        canary = evidence.get(mr.canary) or self.evidence(name, mr.canary)
        return decide(stable, canary, gates_of(mr), self._failures[name], self.holds(name))

    def holds(self, name: str) -> list[str]:
        """Reasons not to promote the canary that no check measures: it is older than the
        stable version it would replace, or its live inputs drift from its reference sample."""
        mr = self._config(name)
        out = []
        a_canary, a_stable = self.age(name, mr.canary), self.age(name, mr.stable)
        if _canary_older(mr, a_canary, a_stable):
            out.append(f"canary v{mr.canary} is older than stable v{mr.stable} ({_days(a_canary)} against "
                       f"{_days(a_stable)})")
        drift = self.drift(name, mr.canary) if mr.canary else None
        if drift is not None and drift.drifting:
            out.append(f"canary v{mr.canary}'s inputs drift from its reference sample ({_worst(drift)})")
        return out

    def age(self, name: str, version: int) -> Optional[float]:
        """Seconds since the version was trained (``verso_model.json``) or its model files were
        written; else ``version_age``'s answer."""
        facts = self.facts(name, version)
        if facts is not None and facts.born_at is not None:
            return max(0.0, self.wall() - facts.born_at)
        return self.version_age(name, version)

    def _ages(self, name: str) -> dict[int, Optional[float]]:
        if self.manager is None:  # a rollout manager without a lifecycle manager (tests of its parts)
            return None
        model = self.manager.snapshot.get(name)
        return {v: self.age(name, v) for v in (model.versions if model else ())}

    def alarms(self, name: str, ages: Optional[dict[int, Optional[float]]] = None,
               evidence: Optional[dict[int, Evidence]] = None) -> list[str]:
        """Staleness flags: a served version older than max_age_seconds; a canary older than
        the stable version it would replace. Logged once each. ``ages``: from ``_ages`` when
        the caller has them already; with ``evidence`` (by version, as ``status`` has it), also
        a canary whose calls fail by the caller's fault far more often than stable's."""
        mr = self._config(name)
        found: list[tuple[tuple, str]] = []
        ages = self._ages(name) if ages is None else ages
        for v, age in sorted(ages.items()):
            if is_stale(age, mr.max_age_seconds):
                found.append(((name, "stale", v),
                              f"v{v} is stale: {age:.0f} s old > max_age_seconds {mr.max_age_seconds:g}"))
        for role, v in (("stable", mr.stable), ("canary", mr.canary)):
            if v and v not in ages:
                other = mr.canary if role == "stable" else mr.stable
                found.append(((name, "unavailable", v), f"{role} v{v} is not available: its traffic goes to "
                                                          f"{'canary' if role == 'stable' else 'stable'} v{other}"
                               if other and other in ages else f"{role} v{v} is not available"))
        if _canary_older(mr, ages.get(mr.canary), ages.get(mr.stable)):
            found.append(((name, "older canary", mr.canary), f"canary v{mr.canary} is older than stable v{mr.stable}"))
        for role, v in (("stable", mr.stable), ("canary", mr.canary)):
            drift = self.drift(name, v) if v and v in ages else None
            if drift is not None and drift.drifting:
                found.append(((name, "drifting", v), f"{role} v{v}'s inputs drift from its reference sample "
                                                      f"({_worst(drift)})"))
        if evidence is not None and mr.canary in evidence and mr.stable in evidence:
            text = _caller_alarm(mr, evidence[mr.stable], evidence[mr.canary])
            if text:
                found.append(((name, "caller errors", mr.canary), text))
        for why, n in sorted(self._slice_notes[name].items()):
            found.append(((name, "slices", why), f"{n} answers had {why}: counted as slice \"other\""))
        for why, n in sorted(self._class_notes[name].items()):
            found.append(((name, "classes", why), f"{n} feedback rows had {why}: counted as class \"other\""))
        keys = {key for key, _ in found}
        self._alarmed -= {k for k in self._alarmed if k[0] == name and k not in keys}  # cleared: may recur
        for key, text in found:
            if key not in self._alarmed:
                self._alarmed.add(key)
                log.warning("Rollout of %s: %s", name, text)
        return [text for _, text in found]

    def stale_versions(self, name: str) -> set[int]:
        mr = self._config(name)
        return {v for v, age in self._ages(name).items() if is_stale(age, mr.max_age_seconds)}

    def status(self, name: str) -> rollout_pb2.RolloutStatus:
        if self.unavailable is not None and name not in self.configs:
            self._check_available()  # the reason, rather than NOT_FOUND: the rollout may be in the file
        mr = self._config(name)
        st = rollout_pb2.RolloutStatus(config=mr, state_file="" if self.store.path == MEMORY else self.store.path)
        if self.manager is None:  # a rollout manager without a lifecycle manager (tests of its parts)
            return None
        model = self.manager.snapshot.get(name)
        versions = sorted(set(model.versions if model else ()) | {v for (n, v) in self._windows if n == name}
                          | ({mr.stable} | ({mr.canary} if mr.canary else set())))
        # One stat per version and one summary per window, shared by the rows, verdict and alarms.
        ages = {v: self.age(name, v) for v in versions}
        served = {v: ages[v] for v in (model.versions if model else ())}  # staleness concerns these
        evidence = {v: self.evidence(name, v) for v in versions}
        for v in versions:
            e = evidence[v]
            role = "stable" if v == mr.stable else ("canary" if v == mr.canary else
                                                    "not in rollout" if v in served else "")
            share = (100.0 - mr.canary_percent if role == "stable" and mr.canary else
                     mr.canary_percent if role == "canary" else (100.0 if role == "stable" else 0.0))
            age = ages[v]
            st.versions.add(
                version=v, role=role, traffic_percent=share, requests=e.requests, errors=e.errors,
                error_rate=e.error_rate, p50_ms=_or(e.p50_ms), p99_ms=_or(e.p99_ms),
                requests_per_second=e.requests_per_second, shadow_compared=e.shadow_compared,
                max_abs_diff=_or(e.max_abs_diff), top1_agreement=_or(e.top1_agreement), feedback=e.feedback,
                accuracy=_or(e.accuracy), age_seconds=_or(age), stale=v in served and is_stale(age, mr.max_age_seconds),
                shadow_dropped=self._shadow_dropped[(name, v)], latency_deciles_ms=e.latency_deciles_ms,
                available=v in served, caller_errors=e.caller_errors,
                evidence_since_unix_time=e.since or 0.0, load_id=e.load or "")
            entry = st.versions[-1]
            for alias, (diff, agreement) in e.by_output.items():
                entry.outputs[alias].max_abs_diff = _or(diff)
                entry.outputs[alias].top1_agreement = _or(agreement)
            for seconds_ago, accuracy, rows, loss in e.accuracy_history:
                entry.accuracy_history.add(seconds_ago=seconds_ago, accuracy=_or(accuracy), rows=rows, loss=_or(loss))
            self._fill_quality(entry, e)
            self._fill_version(entry, name, v, mr)
            outlook.fill_latency(entry, e.latencies_ms)
        verdict = self.verdict(name, evidence)
        _fill_verdict(st.verdict, verdict)
        for t, who, text in self.store.decisions(name, DECISIONS_KEPT):
            st.decisions.add(unix_time=t, text=text, who=who)
        self._fill_outlook(st, name, mr, verdict, evidence)
        st.alarms.extend(self.alarms(name, served, evidence))
        st.alarms.extend(self.safety_alarms(name))
        return st

    def _fill_outlook(self, st: rollout_pb2.RolloutStatus, name: str, mr: rollout_pb2.ModelRollout,
                      verdict: Verdict, evidence: dict[int, Evidence]) -> None:
        """What happens next, for the views: when the next automatic analysis runs and what it
        does, the failure threshold, a forecast per INCONCLUSIVE check, the checks of a final
        ROLLBACK (an analysis of the evidence as it stands), a promotion said as such, and
        which decisions belong to this rollout (``server/rollout/outlook.py``)."""
        gates = gates_of(mr)
        out = st.verdict
        out.failure_threshold = gates.failure_threshold
        if verdict.final:
            out.failed_analyses = self._failures[name]  # the count the ROLLBACK was taken at
        if verdict.final and not out.checks and mr.canary:
            again = decide(evidence[mr.stable], evidence[mr.canary], gates, 0, ())
            for c in again.checks:
                out.checks.add(name=c.name, result=c.result, statistic=c.statistic, low=c.low, high=c.high,
                               limit=c.limit, canary_samples=c.canary_samples, stable_samples=c.stable_samples,
                               subject=c.subject)
            out.checks_note = (outlook.FINAL_CHECKS if out.checks else
                               "no checks: the evidence the ROLLBACK was judged on is gone (" + "; ".join(again.reasons)
                               + ")")
        if mr.canary:
            outlook.fill_forecasts(out.checks, gates, mr.window or 1000, evidence[mr.canary], evidence[mr.stable])
        due = None
        if mr.auto.enabled and mr.canary and not verdict.final and self.unavailable is None:
            last = self._last_auto.get(name, self.clock())
            due = max(0.0, last + mr.auto.interval_seconds - self.clock())
        out.next_analysis_in_seconds = -1.0 if due is None else due
        out.next_analysis_unix_time = 0.0 if due is None else self.wall() + due
        out.next_step = outlook.next_step(mr, verdict.final, self._failures[name], gates.failure_threshold)
        outlook.fill_history(st, mr)

    def safety_alarms(self, name: str) -> list[str]:
        """Where the rollout's state or the prediction log fails closed (see the module)."""
        out = []
        if self.unavailable is not None:
            out.append(f"rollouts cannot change on this server: {self.unavailable}; this rollout is held at stable "
                       f"v{self.configs[name].stable}")
        if name in self._unsaved:
            out.append(f"the rollout state file cannot be written ({self._unsaved[name]}): this rollout's state "
                       "(a ROLLBACK, failed analyses) holds in memory only and is written again every second; a "
                       "restart now would lose it")
        if name in self._refused:
            out.append(self._refused[name])
        if self.log.failing is not None:
            out.append(f"the prediction log cannot be written ({self.log.failing}): {self.log.waiting} answers wait "
                       f"in memory; past {self.log.capacity} answers get no request id")
        last = self.log.last_drop
        if last is not None and self.wall() - last < DROP_ALARM_S:  # the counter stays in the metrics
            out.append(f"{self.log.dropped} answers were not logged and got no request id ("
                       + ", ".join(f"{why}: {n}" for why, n in sorted(self.log.dropped_by.items()))
                       + f"), the last {self.wall() - last:.0f} s ago")
        return out

    def safety(self) -> dict:
        """The fail-closed state, for the metrics: whether rollouts can change, rollouts whose
        state holds in memory only, failed state writes, prediction-log drops by reason."""
        return {"available": self.unavailable is None, "unsaved": len(self._unsaved),
                "write_failures": self.write_failures, "log_failing": self.log.failing is not None,
                "log_waiting": self.log.waiting, "log_dropped": dict(self.log.dropped_by)}

    @staticmethod
    def _fill_quality(entry: rollout_pb2.VersionEvidence, e: Evidence) -> None:
        entry.loss.rows = e.loss_rows
        entry.loss.log_loss, entry.loss.brier = _or(e.log_loss), _or(e.brier)
        entry.loss.mse, entry.loss.mae = _or(e.mse), _or(e.mae)
        for c in e.classes:
            entry.classes.add(label=c.label, support=c.support, predicted=c.predicted, recall=_or(c.recall),
                              precision=_or(c.precision))
        for sl in e.slices:
            entry.slices.add(slice=sl.slice, rows=sl.rows, accuracy=_or(sl.accuracy), loss=_or(sl.loss))
        for (label, predicted), n in e.confusion.items():
            entry.confusion.add(label=label, predicted=predicted, count=n)

    def _fill_version(self, entry, name: str, version: int, mr: Optional[rollout_pb2.ModelRollout] = None) -> None:
        """Cost, drift and what the version says about itself (status and the dashboard)."""
        cpu, rows = self.costs.totals(name, version)
        shadow_cpu, shadow_rows = self.costs.totals(name, version, SHADOW)
        facts = self.facts(name, version)
        resident = facts.resident_bytes if facts is not None and facts.resident_bytes is not None else -1
        per_row, alone = self.costs.per_prediction(name, version)
        c = entry.cost
        c.predictions, c.cpu_seconds = rows, cpu
        c.cpu_seconds_per_1000 = per_row * 1000 if per_row is not None else -1.0
        c.cpu_alone_calls = alone
        c.shadow_predictions, c.shadow_cpu_seconds = shadow_rows, shadow_cpu
        c.shadow_cpu_seconds_per_1000 = shadow_cpu / shadow_rows * 1000 if shadow_rows else -1.0
        c.resident_bytes = resident
        if mr is not None:
            money = money_per_1000(per_row * 1000 if per_row is not None else None, resident, entry.requests_per_second,
                                   mr.prices.cost_per_cpu_hour, mr.prices.cost_per_gib_hour)
            c.money_per_1000 = _or(money)
            c.currency = mr.prices.currency or ("USD" if money is not None else "")
        else:
            c.money_per_1000 = -1.0
        self._fill_training(c, facts.training_cost if facts is not None else None, rows,
                            mr.prices.currency if mr is not None else "")
        d = entry.drift
        report = self.drift(name, version)
        d.has_reference = bool(facts is not None and facts.reference)
        if report is not None:
            d.live_rows, d.drifting = report.live_rows, report.drifting
            for f in report.worst:
                d.worst.add(feature=f.feature, psi=f.psi, ks_statistic=f.ks_statistic, ks_pvalue=f.ks_pvalue)
        if facts is not None:
            i = entry.info
            i.age_source = facts.age_source
            i.trained_at, i.data_until = facts.trained_at or 0.0, facts.data_until or 0.0
            i.metrics.update(facts.metrics)
            i.problems.extend(facts.problems)
            d.problem = facts.reference_problem

    @staticmethod
    def _fill_training(c: rollout_pb2.Cost, training, served: int, currency: str) -> None:
        """The training cost (verso_model.json) and its money amortised over the ``served``
        predictions; the total per 1000 when serving and training money share a currency (a
        training cost without one is taken to be in the rollout's)."""
        c.training_money_per_1000 = c.total_money_per_1000 = -1.0
        if training is None:
            return
        t = c.training
        t.cpu_hours, t.gpu_hours, t.money = (-1.0 if x is None else x
                                             for x in (training.cpu_hours, training.gpu_hours, training.money))
        t.currency = training.currency
        per_1000 = amortised_per_1000(training.money, served)
        if per_1000 is None:
            return
        c.training_money_per_1000 = per_1000
        serving_currency = c.currency or currency or "USD"
        if c.money_per_1000 >= 0 and (training.currency or serving_currency) == serving_currency:
            c.total_money_per_1000 = c.money_per_1000 + per_1000

    def version_overview(self, name: str, version: int) -> dict:
        """A loaded version's age, drift, memory and cost for the dashboard (JSON-ready)."""
        from google.protobuf import json_format
        entry = rollout_pb2.VersionEvidence(version=version)
        self._fill_version(entry, name, version)
        for part in (entry.info, entry.drift, entry.cost):  # present, defaults and all, when nothing filled them
            part.SetInParent()
        doc = json_format.MessageToDict(entry, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
        age = self.age(name, version)
        return {"age_seconds": age, "age_source": entry.info.age_source, "info": doc["info"], "drift": doc["drift"],
                "resident_bytes": entry.cost.resident_bytes, "cost": doc["cost"]}

    def _config(self, name: str) -> rollout_pb2.ModelRollout:
        mr = self.configs.get(name)
        if mr is None:
            raise ServingError(Code.NOT_FOUND, f"No rollout configured for model {name}")
        return mr

    # ---- automatic mode ----------------------------------------------------------------------

    def tick(self) -> list[tuple[str, str]]:
        """Take the automatic steps that are due: for each model in auto mode whose interval has
        passed, the verdict moves canary_percent one step up, to 0, or leaves it; PROMOTE at 100 %
        makes the canary the stable version. Returns (model, decision text) for each change.

        A step forward or a PROMOTE is taken once written; when the write fails it is not taken
        (logged, alarmed) and the next interval decides again. A ROLLBACK is taken whatever the
        write does (see the module). Under ``--num_workers``, when the state file cannot be
        written no worker can hold the lease: each then takes ROLLBACKs only, itself."""
        changes: list[tuple[str, str]] = []
        rollback_only = False
        if self.worker_id is not None:
            try:
                if not self.store.take_lease("auto", self.worker_id, self.wall(), AUTO_LEASE_S):
                    return changes  # another worker takes the steps
            except StoreWriteError as e:
                self._write_failed(None, e)
                rollback_only = True
        now = self.clock()
        for name, mr in list(self.configs.items()):
            if not mr.auto.enabled or not mr.canary or name in self._rolled_back \
                    or now - self._last_auto.get(name, now) < mr.auto.interval_seconds:
                continue
            self._last_auto[name] = now
            verdict = self.verdict(name)
            failures = verdict.failed_analyses if verdict.failed else 0
            if failures != self._failures[name]:
                self._failures[name] = failures
                self._persist(name)
            if rollback_only and verdict.decision != ROLLBACK:
                continue
            if verdict.decision == "PROMOTE" and mr.canary_percent >= 100:
                new = rollout_pb2.ModelRollout()
                new.CopyFrom(mr)
                new.stable, new.canary, new.canary_percent, new.shadow_percent = mr.canary, 0, 0.0, 0.0
                text = f"PROMOTE: v{mr.canary} is now stable (was v{mr.stable}); " + "; ".join(verdict.reasons)
            else:
                percent = next_percent(mr.canary_percent, verdict.decision, list(mr.auto.steps))
                # A ROLLBACK of a shadow-only canary (0 %) still has its shadow to turn off.
                shadow_off = verdict.decision == "ROLLBACK" and mr.shadow_percent > 0
                if percent == mr.canary_percent and not shadow_off:
                    if verdict.failed:  # a failed analysis short of the threshold: logged, nothing moves
                        self._decide(name, f"HOLD: canary v{mr.canary} stays at {mr.canary_percent:g} %; "
                                           + "; ".join(verdict.reasons))
                    continue
                new = rollout_pb2.ModelRollout()
                new.CopyFrom(mr)
                new.canary_percent = percent
                if verdict.decision == "ROLLBACK":
                    new.shadow_percent = 0.0
                text = (f"{verdict.decision}: canary v{mr.canary} {mr.canary_percent:g} % -> {percent:g} %; "
                        + "; ".join(verdict.reasons))
            if verdict.decision == ROLLBACK:
                # The safe direction: in memory at once, written now or by a later round.
                self.configs[name] = new
                self._rolled_back[name] = text  # final: no later verdict climbs back
                self._refused.pop(name, None)
                self._persist(name, text)
                changes.append((name, text))
                continue
            try:
                self.store.save(name, new, file_entry=self._file_entries.get(name), final_rollback=None,
                                failed_analyses=self._failures[name], now=self.wall(),
                                decisions=(*self._pending.get(name, ()), (self.wall(), "automatic", text)))
            except StoreWriteError as e:
                self._write_failed(name, e)
                self._refused[name] = (f"automatic step not taken (the state file cannot be written: {e.message}): "
                                       f"{text}")
                log.error("Rollout of %s: automatic step not taken, the state file cannot be written (%s): %s",
                          name, e.message, text)
                continue
            self._written(name)
            self._refused.pop(name, None)
            self.configs[name] = new
            log.info("Rollout of %s: %s", name, text)
            changes.append((name, text))
        return changes

    async def run_auto(self, every_s: float = 1.0) -> None:
        """``retry_unsaved()``, ``sync()`` (workers), ``tick()`` and the staleness alarms every
        ``every_s`` seconds, until cancelled. A failing part is logged and the others and the
        next round run: automatic mode must not stop silently, and a failing ``sync`` must not
        keep ``tick`` from a ROLLBACK."""
        while True:
            await asyncio.sleep(every_s)
            for part in (self.retry_unsaved, self.sync, self.tick, self._all_alarms):
                try:
                    part()
                except Exception:
                    log.exception("Rollout automatic round failed (%s)", part.__name__)

    async def close(self) -> None:
        """At shutdown: a last write of what memory holds and the file does not, logged when it
        still fails (the next start takes up the file's older state); then the prediction log is
        flushed and the store closed, off the loop."""
        self.retry_unsaved()
        for name, why in self._unsaved.items():
            log.error("Rollout of %s: its state as it stands (%s) is lost at exit: the state file cannot be written "
                      "(%s); the next start takes up the file's older state", name,
                      self._rolled_back.get(name) or "failed analyses", why)
        await asyncio.get_running_loop().run_in_executor(None, self.log.close)
        self.store.close()

    def _all_alarms(self) -> None:
        for name in list(self.configs):
            self.alarms(name)


def _held(mr: rollout_pb2.ModelRollout) -> rollout_pb2.ModelRollout:
    """``mr`` held at its stable version: no canary traffic, no shadow, no automatic steps."""
    held = rollout_pb2.ModelRollout()
    held.CopyFrom(mr)
    held.canary_percent, held.shadow_percent = 0.0, 0.0
    held.auto.enabled = False
    return held


def _pinned(mr: rollout_pb2.ModelRollout) -> set[int]:
    return {mr.stable} | ({mr.canary} if mr.canary else set())


def _fill_verdict(out: rollout_pb2.Verdict, verdict: Verdict) -> None:
    out.decision = verdict.decision
    out.reasons.extend(verdict.reasons)
    out.failed_analyses = verdict.failed_analyses
    out.final = verdict.final
    out.tradeoff, out.worst_drop = verdict.tradeoff, verdict.worst_drop
    for c in verdict.checks:
        out.checks.add(name=c.name, result=c.result, statistic=c.statistic, low=c.low, high=c.high, limit=c.limit,
                       canary_samples=c.canary_samples, stable_samples=c.stable_samples, subject=c.subject,
                       canary_p99_ms=c.canary_p99_ms, stable_p99_ms=c.stable_p99_ms, allowance_ms=c.allowance_ms)


CALLER_ALARM_POINTS = 0.10  # canary share of calls failed by the caller's fault above stable's


def _caller_alarm(mr: rollout_pb2.ModelRollout, stable: Evidence, canary: Evidence) -> Optional[str]:
    """An alarm, not a verdict (a caller can aim bad requests at one side): the canary's calls
    fail by the caller's fault ``CALLER_ALARM_POINTS`` more often than stable's, over at least
    ``min_samples`` calls of each. It may be requests aimed at the canary, or a canary that
    refuses requests stable takes (a changed signature), which no check judges."""
    need = max(gates_of(mr).min_samples, 1)
    nc, ns = canary.requests + canary.caller_error_count, stable.requests + stable.caller_error_count
    if min(nc, ns) < need:
        return None
    pc, ps = canary.caller_error_count / nc, stable.caller_error_count / ns
    if pc - ps <= CALLER_ALARM_POINTS:
        return None
    codes = ", ".join(f"{k} {n}" for k, n in sorted(canary.caller_errors.items(), key=lambda kv: -kv[1])[:3])
    return (f"canary v{mr.canary}: {pc * 100:.0f} % of its calls failed by the caller's fault ({codes}) against "
            f"{ps * 100:.0f} % of stable v{mr.stable}'s: requests aimed at it, or a canary that refuses requests "
            "stable takes (a changed signature?); not judged")


def _or(x: Optional[float]) -> float:
    return -1.0 if x is None else float(x)


def _canary_older(mr: rollout_pb2.ModelRollout, a_canary: Optional[float], a_stable: Optional[float]) -> bool:
    return bool(mr.canary) and a_canary is not None and a_stable is not None and a_canary > a_stable


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} d" if seconds >= 86400 else f"{seconds / 3600:.1f} h"


def _worst(report: DriftReport) -> str:
    return ", ".join(f"{f.feature} PSI {f.psi:.2f}" for f in report.worst[:3])
