"""Bounded work per request: the elements one request may make the server allocate, and one
byte budget for every call in flight in the process.

A few request bytes can name any shape (TensorProto typed fields are filled in: a 35-byte
Predict for ``[134217728]`` float asks for 512 MiB), and the server's real cost is a multiple
of the decoded inputs (the filled copy, the runtime's copies, the outputs, the encoded and
serialized answer: about 5x for an identity model). So two checks, both made before the
allocation they guard, both RESOURCE_EXHAUSTED:

* ``max_elements``: the elements of one request's inputs as filled (and, separately, of the
  outputs it produced, checked before they are encoded);
* ``InflightBudget``: the bytes of every call in flight together (inputs as filled, REST bodies
  and their parse, outputs, serialized answers). A call takes its bytes through a ``Claim``
  and gives them all back when it ends, however it ends (answer, error, cancellation, timeout).

Defaults come from the memory the server may use (``memory_limit``): the cgroup (v2
``memory.max`` or v1 ``memory.limit_in_bytes``, the smallest along the process's cgroup path)
when it sets one, else the machine's physical memory (``derived_defaults``).

Pure Python, no transport: ``ServingCore`` and both transports share one ``RequestLimits``.
A ``Claim`` may be used from the request executor (decodes run there when large): the budget
is locked.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

from protos import tensor_codec
from protos.errors import Code, ServingError

log = logging.getLogger("verso.limits")

# cgroup "no limit" values are near 2**63; anything above this is no limit.
_NO_LIMIT = 2**60
# Of the memory the server may use: the in-flight budget (inputs + outputs of every call, which
# the runtime's own copies multiply by ~2.5 at the peak) and one request's elements (x 4 bytes
# for float32, amplified ~5x: a third of the memory for one request at the limit).
BUDGET_FRACTION = 4        # budget = memory // 4
ELEMENTS_DIVISOR = 64      # max elements = memory // 64
# Python objects per parsed JSON byte are several times the text (a float in a list: 32 bytes
# for ~9 characters); a REST body claims this many times its size while it is parsed and decoded.
JSON_PARSE_FACTOR = 4
# The default REST body limit's ceiling (see ``derived_defaults``).
MAX_DEFAULT_BODY_BYTES = 256 * 2**20
# Per string element: the pointer in the object array and a bytes object's header.
STRING_OVERHEAD = tensor_codec.STRING_ELEMENT_OVERHEAD


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _NO_LIMIT else None


def _ancestors(path: str) -> list[str]:
    """``/a/b`` -> [``/a/b``, ``/a``, ``/``]: a limit set on any ancestor group applies too."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_memory_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> Optional[int]:
    """The smallest memory limit of the cgroups this process is in (v2 unified hierarchy and v1
    memory controller), or None when no group sets one or cgroups cannot be read."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" and path:  # cgroup v2: "0::/path"
            files = [os.path.join(root, p.lstrip("/"), "memory.max") for p in _ancestors(path)]
            # With a hybrid layout the unified hierarchy is mounted under root/unified.
            files += [os.path.join(root, "unified", p.lstrip("/"), "memory.max") for p in _ancestors(path)]
        elif "memory" in controllers.split(","):  # cgroup v1: "N:memory:/path"
            files = [os.path.join(root, "memory", p.lstrip("/"), "memory.limit_in_bytes") for p in _ancestors(path)]
        else:
            continue
        limits += [v for v in map(_read_int, files) if v is not None]
    return min(limits) if limits else None


def physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit() -> tuple[int, str]:
    """(bytes the server may use, where that number comes from): the cgroup memory limit when
    there is one below physical memory, else physical memory (4 GiB if even that is unknown)."""
    physical = physical_memory()
    cgroup = cgroup_memory_limit()
    if cgroup is not None and (physical is None or cgroup < physical):
        return cgroup, "cgroup memory limit"
    if physical is not None:
        return physical, "physical memory"
    return 4 * 2**30, "assumed (memory size unknown)"


@dataclass(frozen=True)
class Defaults:
    memory: int
    source: str
    max_inflight_bytes: int
    max_request_elements: int
    rest_max_body_bytes: int


def derived_defaults(memory: Optional[int] = None, source: str = "given") -> Defaults:
    """The limits a server with ``memory`` bytes gets when their flags are 0:

    * ``--max_inflight_bytes`` = memory / 4: the bytes of all calls in flight (inputs as filled,
      outputs, REST bodies, serialized answers). The runtime's copies come on top, so the peak
      of a full budget is about 60 % of the memory, the rest for the models themselves;
    * ``--max_request_elements`` = memory / 64: one request's input (or output) elements, so a
      float32 request at the limit takes 1/16 of the memory decoded and ~1/3 at its peak;
    * ``--rest_api_max_body_bytes`` = memory / 16, at most 256 MiB: a REST body after
      decompression. Its JSON parse takes several times that in memory, and is one C call that
      holds the GIL (the event loop waits: ~1 s per 10-40 MB of JSON here), hence the cap.

    ``memory`` None: ``memory_limit()`` (the cgroup's limit, else physical memory).
    """
    if memory is None:
        memory, source = memory_limit()
    return Defaults(memory, source, max(memory // BUDGET_FRACTION, 1), max(memory // ELEMENTS_DIVISOR, 1),
                    max(min(memory // 16, MAX_DEFAULT_BODY_BYTES), 1))


# Where ``OFFLOAD_BYTES`` or more are decoded or encoded, the work runs in the request executor,
# not on the event loop (a 512 MiB fill or encode stalled every other call for ~0.7 s).
OFFLOAD_BYTES = 256 * 1024


class LimitExceeded(ServingError):
    """A call refused to protect the server (not the caller's mistake): ``reason`` names the
    limit (``elements``, ``memory``, ``body_size``, ``concurrency``, ``body_timeout``) for the
    rejection metric; ``http`` overrides TF Serving's HTTP status of the code (413, 408).

    Never a version's failure in a rollout's verdict (``caller=True``): the limits and the
    budget are the process's, so a caller who sends heavy requests keyed onto one version
    must not make that version look broken (server/rollout/faults.py)."""

    def __init__(self, code: Code, message: str, reason: str, http: Optional[int] = None):
        super().__init__(code, message, caller=True)
        self.reason = reason
        self.http = http

    @property
    def http_status(self) -> int:
        return self.http if self.http is not None else super().http_status


class InflightBudget:
    """Bytes in flight for the whole process, at most ``capacity``. Thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int, what: str) -> None:
        with self._lock:
            used = self.used
            if used + nbytes <= self.capacity:
                self.used = used + nbytes
                return
        if nbytes > self.capacity:
            raise LimitExceeded(Code.RESOURCE_EXHAUSTED,
                                f"{what} needs {nbytes} bytes, more than the server's in-flight memory budget "
                                f"of {self.capacity} bytes (--max_inflight_bytes)", "memory")
        raise LimitExceeded(Code.RESOURCE_EXHAUSTED,
                            f"{what} needs {nbytes} bytes and {used} of the server's in-flight memory budget of "
                            f"{self.capacity} bytes are in use (--max_inflight_bytes); retry later", "memory")

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Claim:
    """One call's share of the budget: what it took, given back by ``release`` (or leaving the
    ``with`` block), once. ``inputs``/``outputs`` count elements against the per-request limit."""

    __slots__ = ("limits", "held", "input_elements", "released")

    def __init__(self, limits: "RequestLimits"):
        self.limits = limits
        self.held = 0
        self.input_elements = 0
        self.released = False

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limits.budget.give(self.held)
            self.held = 0

    def take(self, nbytes: int, what: str) -> None:
        """Add ``nbytes`` to this call's share; RESOURCE_EXHAUSTED when the budget cannot."""
        if nbytes <= 0:
            return
        self.limits.budget.take(nbytes, what)
        if self.released:  # the call already ended: nothing may stay taken
            self.limits.budget.give(nbytes)
            return
        self.held += nbytes

    def input(self, alias: str, elements: int, nbytes: int) -> None:
        """One request input about to be allocated (``elements``/``nbytes`` as filled)."""
        total = self.input_elements + elements
        limit = self.limits.max_elements
        if total > limit:
            raise LimitExceeded(Code.RESOURCE_EXHAUSTED,
                                f"Request inputs need {total} elements (input {alias}: {elements}), more than the "
                                f"limit of {limit} (--max_request_elements)", "elements")
        self.input_elements = total
        self.take(nbytes, "The request")

    def outputs(self, arrays: Iterable[np.ndarray]) -> None:
        """The outputs a call produced, before they are encoded: their elements against the
        per-request limit, their bytes (twice: the arrays and their encoded copy) into the budget."""
        elements = 0
        nbytes = 0
        for arr in arrays:
            arr = np.asarray(arr)
            elements += arr.size
            nbytes += array_bytes(arr)
        limit = self.limits.max_elements
        if elements > limit:
            raise LimitExceeded(Code.RESOURCE_EXHAUSTED,
                                f"The response would hold {elements} elements, more than the limit of {limit} "
                                f"(--max_request_elements)", "elements")
        # The arrays, and their encoded copy (typed fields or JSON text) that follows.
        self.take(nbytes * 2, "The response")


def array_bytes(arr: np.ndarray) -> int:
    """An array's memory, strings (object arrays) with their bytes and headers."""
    if arr.dtype == object:
        # reshape, not .flat: numpy's flat iterator refuses arrays of more than 32 dimensions,
        # which a JSON body can make (check_inputs refuses them with INVALID_ARGUMENT after this).
        return arr.size * STRING_OVERHEAD + sum(len(v) for v in arr.reshape(-1) if isinstance(v, (bytes, str)))
    return arr.nbytes


def outputs_bytes(outputs: Mapping[str, np.ndarray]) -> int:
    return sum(np.asarray(a).nbytes for a in outputs.values())


class RequestLimits:
    """The per-request element limit and the process's in-flight budget (one per server)."""

    def __init__(self, max_elements: int, max_inflight_bytes: int):
        self.max_elements = max_elements
        self.budget = InflightBudget(max_inflight_bytes)

    @classmethod
    def from_flags(cls, max_request_elements: int = 0, max_inflight_bytes: int = 0,
                   defaults: Optional[Defaults] = None) -> "RequestLimits":
        """0 for a flag: its derived default (``derived_defaults``)."""
        if not (max_request_elements and max_inflight_bytes):
            defaults = defaults or derived_defaults()
        return cls(max_request_elements or defaults.max_request_elements,
                   max_inflight_bytes or defaults.max_inflight_bytes)

    def claim(self) -> Claim:
        return Claim(self)


class Rejections:
    """Calls refused to protect the server, made visible: each counted in the rejection metric
    (``metrics.rejected(transport, reason)``) and logged, at most once per ``every_s`` seconds
    per reason with the number since the last line (a flood must not flood the log too)."""

    def __init__(self, metrics=None, every_s: float = 10.0, clock=None):
        import time
        self.metrics = metrics
        self.every_s = every_s
        self.clock = clock or time.monotonic
        self._last: dict[tuple[str, str], float] = {}
        self._since: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __call__(self, transport: str, err: LimitExceeded) -> None:
        if self.metrics is not None:
            self.metrics.rejected(transport, err.reason)
        key = (transport, err.reason)
        now = self.clock()
        with self._lock:
            self._since[key] = self._since.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                return
            self._last[key] = now
            count, self._since[key] = self._since[key], 0
        log.warning("%s call refused (%s, %d since the last such line): %s", transport, err.reason, count,
                    err.message)
