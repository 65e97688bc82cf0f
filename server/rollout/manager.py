"""The rollout state of every model under rollout: routing, evidence, shadow calls, feedback,
staleness, verdicts and automatic steps.

Owned by the event loop that owns the ``Manager``: every method runs on it (shadow calls run
their TF work in the ``shadow_executor``, never on the loop or in the request pool). Nothing
here blocks. ``tick()`` takes automatic-mode steps and is called by ``run_auto`` every second;
tests call it by hand with a fake clock.
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
from server.rollout import routing
from server.rollout.config import gates_of, validated
from server.rollout.cost import SHADOW, CostMeter, money_per_1000, rows_of
from server.rollout.drift import DriftMonitor, DriftReport
from server.rollout.evidence import Evidence, Window, divergence, per_output
from server.rollout.facts import VersionFacts
from server.rollout.faults import CALLER, fault
from server.rollout.quality import slice_key
from server.rollout.predlog import Answer, PredictionLog
from server.rollout.store import DECISIONS_KEPT, MEMORY, RolloutStore, Saved, entry_bytes
from server.rollout.verdict import HOLD, ROLLBACK, Verdict, decide, is_stale, next_percent

log = logging.getLogger("verso.rollout")

EVIDENCE_FRESH_S = 5.0   # another worker's published evidence older than this is left out
AUTO_LEASE_S = 5.0       # the worker taking automatic steps renews this lease every round
FEEDBACK_TRIES, FEEDBACK_RETRY_S = 4, 0.1  # workers: an answer another worker has not written yet


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
                 costs: Optional[CostMeter] = None):
        self.manager = manager
        self.facts = facts
        self.costs = costs if costs is not None else CostMeter()
        self._drift: dict[tuple[str, int], Optional[DriftMonitor]] = {}
        self._slices: dict[str, set[str]] = collections.defaultdict(set)
        self._slice_notes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.pins = pins
        self.store = store if store is not None else RolloutStore(MEMORY)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}" if workers else None
        self.shadow_executor = shadow_executor
        self.version_age = version_age
        self.clock, self.wall, self.rand = clock, wall, rand
        self.configs: dict[str, rollout_pb2.ModelRollout] = {}
        self._windows: dict[tuple[str, int], Window] = {}
        self.log = PredictionLog(self.store, clock=wall)  # every answer under a rollout, for feedback
        self._file_entries: dict[str, bytes] = {}  # the rollout config file's entry last applied, by model
        self._shadow_in_flight: dict[str, int] = collections.Counter()
        self._shadow_dropped: dict[tuple[str, int], int] = collections.Counter()
        self._last_auto: dict[str, float] = {}
        self._alarmed: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._failures: dict[str, int] = collections.Counter()  # consecutive failed analyses (auto)
        self._rolled_back: dict[str, str] = {}  # model -> the final ROLLBACK's text, until a new rollout
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
        return list(self.configs)

    def apply(self, configs: dict[str, rollout_pb2.ModelRollout], source: str = "config file") -> None:
        """The rollout config file's rollouts (read at start-up or re-read). An entry that
        differs from the one last applied from the file is a newer operator decision: it is
        set (lifting a final ROLLBACK). An unchanged entry changes nothing, so automatic
        decisions and SetRollout calls made since stand, across restarts too. A model that was
        in the file and no longer is loses its rollout (a logged decision); rollouts set by a
        call are the file's only once it lists them."""
        for name in [n for n in self.configs if n not in configs and n in self._file_entries]:
            self._decide(name, "rollout removed: no longer in the rollout config file", who=source)
            self._forget(name)
            del self.configs[name]
        for name, mr in configs.items():
            entry = entry_bytes(mr)
            if self._file_entries.get(name) == entry and name in self.configs:
                continue
            self._file_entries[name] = entry
            self._set(mr, source, who=source)

    def set(self, mr: rollout_pb2.ModelRollout, source: str = "SetRollout", who: str = "") -> rollout_pb2.RolloutStatus:
        """Configure a rollout as given (validated), without checking its versions: see
        ``set_checked`` for the SetRollout call. ``who``: the caller, for the decision log."""
        self._set(validated(mr), source, who=who or source)
        return self.status(mr.model)

    async def set_checked(self, mr: rollout_pb2.ModelRollout, source: str = "SetRollout",
                          who: str = "") -> rollout_pb2.RolloutStatus:
        """SetRollout: ``set`` once its versions are known good. A version that is not on disk
        is INVALID_ARGUMENT; one that does not load (pinned, then tried once) is
        FAILED_PRECONDITION with the load's error, and the model's pins go back to what they
        were. Nothing changes on either error."""
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
        return self.set(mr, source, who)

    def _pins_of(self, name: str) -> set[int]:
        mr = self.configs.get(name)
        return _pinned(mr) if mr is not None else set()

    def _set(self, mr: rollout_pb2.ModelRollout, source: str, who: str) -> None:
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
        self._persist(mr.model)
        self._decide(mr.model, f"stable v{mr.stable}, canary "
                               f"{f'v{mr.canary} at {mr.canary_percent:g} %' if mr.canary else 'none'}"
                               f"{f', shadow {mr.shadow_percent:g} %' if mr.shadow_percent else ''} ({source})", who)

    def _persist(self, name: str) -> None:
        self.store.save(name, self.configs[name], file_entry=self._file_entries.get(name),
                        final_rollback=self._rolled_back.get(name), failed_analyses=self._failures[name],
                        now=self.wall())

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
        self.store.delete(name)
        self._forget_salts(name)

    def _decide(self, name: str, text: str, who: str = "automatic") -> None:
        log.info("Rollout of %s: %s", name, text)
        self.store.log(name, self.wall(), who, text)

    def window(self, name: str, version: int) -> Window:
        w = self._windows.get((name, version))
        if w is None:
            mr = self.configs.get(name)
            size = mr.window if mr is not None else 1000
            warmup = gates_of(mr).warmup_calls if mr is not None else 0
            w = self._windows[(name, version)] = Window(size, clock=self.clock, warmup_calls=warmup)
        return w

    # ---- the request path ------------------------------------------------------------------

    def route(self, name: str, choice: Optional[str], label: str, key: Optional[str]) -> Optional[int]:
        """The version a request for ``name`` goes to, or None to resolve it as usual.

        ``choice`` is the ModelSpec's version_choice ("version", "version_label" or None):
        an explicit version is never rerouted, a label only when the rollout lists it."""
        mr = self.configs.get(name)
        if mr is None or choice == "version" or (choice == "version_label" and label not in mr.labels):
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
                origin: Optional[str] = None, size: Optional[int] = None) -> Optional[str]:
        """Record one call of a model under rollout; for a successful call with outputs, log the
        answer (off the request path: a full log queue drops it, counted) with its slice key
        (bounded: see ``quality.slice_key``) and return its request id, which feedback may
        name; else None.

        ``origin``: where a failure arose (server/rollout/faults.py: ``REQUEST``, ``MODEL``, or
        the error's own ``CALLER``/``SERVER``); a failure of the caller's making is counted
        apart and never judged. ``size``: the call's input elements, so that latency is compared
        between calls of comparable size."""
        mr = self.configs.get(name)
        if mr is None:
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
        self.log.append(Answer(request_id, name, version, role, self.wall(), outputs, mr.evidence_output or None,
                               slice, mr.scores_output or None))
        return request_id

    def observe_inputs(self, name: str, version: int, inputs: dict) -> None:
        """A Predict's inputs, for the drift check of a version that ships a reference sample
        (any model, under rollout or not); a dict lookup for the others."""
        key = (name, version)
        monitor = self._drift.get(key, False)
        if monitor is False:
            facts = self.facts(name, version)
            monitor = self._drift[key] = (DriftMonitor(facts.reference, clock=self.clock)
                                          if facts is not None and facts.reference else None)
        if monitor is not None:
            monitor.add(inputs)

    def forget_version(self, name: str, version: int) -> None:
        """A version unloaded: its drift monitor goes (a reload starts a new one). Evidence
        windows stay (a rollout's verdict may still name the version)."""
        self._drift.pop((name, version), None)

    def drift(self, name: str, version: int) -> Optional[DriftReport]:
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
                self.shadow_executor, self.costs.share.timed, handle.servable.run, sig_name, inputs, aliases)
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
        version's evidence. Each id takes feedback once (ALREADY_EXISTS after)."""
        labels, targets = list(labels), list(targets)
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
        if judged.model in self.configs:
            self.window(judged.model, judged.version).record_feedback(judged.rows)
        return rollout_pb2.FeedbackResponse(model=judged.model, version=judged.version, rows=len(judged.rows),
                                            correct=sum(judged.correct))

    # ---- evidence, verdicts, status ----------------------------------------------------------

    def evidence(self, name: str, version: int) -> Evidence:
        """This worker's window of ``version``, with every other worker's (``sync``) under
        ``--num_workers``."""
        window = self.window(name, version)
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
        self.store.put_evidence(self.worker_id, [(n, v, json.dumps(w.export())) for (n, v), w in self._windows.items()
                                                 if n in self.configs], self.wall())
        saved = self.store.load()
        for name in [n for n in self.configs if n not in saved]:
            self._forget(name)
            del self.configs[name]
        for name, sv in saved.items():
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
        mr = self._config(name)
        st = rollout_pb2.RolloutStatus(config=mr)
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
                available=v in served, caller_errors=e.caller_errors)
            entry = st.versions[-1]
            for alias, (diff, agreement) in e.by_output.items():
                entry.outputs[alias].max_abs_diff = _or(diff)
                entry.outputs[alias].top1_agreement = _or(agreement)
            for seconds_ago, accuracy, rows, loss in e.accuracy_history:
                entry.accuracy_history.add(seconds_ago=seconds_ago, accuracy=_or(accuracy), rows=rows, loss=_or(loss))
            self._fill_quality(entry, e)
            self._fill_version(entry, name, v, mr)
        _fill_verdict(st.verdict, self.verdict(name, evidence))
        for t, who, text in self.store.decisions(name, DECISIONS_KEPT):
            st.decisions.add(unix_time=t, text=text, who=who)
        st.alarms.extend(self.alarms(name, served, evidence))
        return st

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
        c = entry.cost
        c.predictions, c.cpu_seconds = rows, cpu
        c.cpu_seconds_per_1000 = cpu / rows * 1000 if rows else -1.0
        c.shadow_predictions, c.shadow_cpu_seconds = shadow_rows, shadow_cpu
        c.shadow_cpu_seconds_per_1000 = shadow_cpu / shadow_rows * 1000 if shadow_rows else -1.0
        c.resident_bytes = resident
        if mr is not None:
            money = money_per_1000(cpu / rows * 1000 if rows else None, resident, entry.requests_per_second,
                                   mr.prices.cost_per_cpu_hour, mr.prices.cost_per_gib_hour)
            c.money_per_1000 = _or(money)
            c.currency = mr.prices.currency or ("USD" if money is not None else "")
        else:
            c.money_per_1000 = -1.0
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

    def version_overview(self, name: str, version: int) -> dict:
        """A loaded version's age, drift, memory and cost for the dashboard (JSON-ready)."""
        from google.protobuf import json_format
        entry = rollout_pb2.VersionEvidence(version=version)
        self._fill_version(entry, name, version)
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
        makes the canary the stable version. Returns (model, decision text) for each change."""
        changes: list[tuple[str, str]] = []
        if self.worker_id is not None and not self.store.take_lease("auto", self.worker_id, self.wall(),
                                                                    AUTO_LEASE_S):
            return changes  # another worker takes the steps
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
                    self._rolled_back[name] = text  # final: no later verdict climbs back
            self.configs[name] = new
            self._persist(name)
            self._decide(name, text)
            changes.append((name, text))
        return changes

    async def run_auto(self, every_s: float = 1.0) -> None:
        """``sync()`` (workers), ``tick()`` and the staleness alarms every ``every_s`` seconds,
        until cancelled. A failing round is logged and the next one runs: automatic mode must
        not stop silently."""
        while True:
            await asyncio.sleep(every_s)
            try:
                self.sync()
                self.tick()
                for name in list(self.configs):
                    self.alarms(name)
            except Exception:
                log.exception("Rollout automatic round failed")


def _pinned(mr: rollout_pb2.ModelRollout) -> set[int]:
    return {mr.stable} | ({mr.canary} if mr.canary else set())


def _fill_verdict(out: rollout_pb2.Verdict, verdict: Verdict) -> None:
    out.decision = verdict.decision
    out.reasons.extend(verdict.reasons)
    out.failed_analyses = verdict.failed_analyses
    out.final = verdict.final
    for c in verdict.checks:
        out.checks.add(name=c.name, result=c.result, statistic=c.statistic, low=c.low, high=c.high, limit=c.limit,
                       canary_samples=c.canary_samples, stable_samples=c.stable_samples, subject=c.subject)


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
