"""Data drift: a version's live inputs against the reference sample of its training inputs
(``assets.extra/reference.npz``, one array per input alias, a row per example).

Each input's rows are flattened into features (``images[13]``: alias and flat column). Per
feature, the **population stability index** over ten bins cut at the reference's deciles
(``sum (live% - ref%) * ln(live% / ref%)``, each share floored at 1e-4) and the **two-sample
Kolmogorov-Smirnov test** (``scipy.stats.ks_2samp``). A version is *drifting* when its worst
feature's PSI exceeds ``PSI_DRIFT`` (0.25, the usual "significant shift") and that feature's KS
p-value is below ``KS_ALPHA`` / features (Bonferroni: many features are tested at once), over
at least ``MIN_LIVE_ROWS`` live rows. Live rows are kept in a bounded reservoir sample
(Vitter's algorithm R), so memory stays flat however long a version serves; a new reservoir
starts every ``HORIZON_ROWS`` rows, and the report reads the newest one that holds
``MIN_LIVE_ROWS`` (so it describes the last few thousand inputs, not everything since the
load: drift that starts late is seen as soon as it dominates).

``DriftMonitor.add`` runs on the event loop per request (~5 us: a few numpy slices);
``report`` runs the tests (~5 ms for 64 features: every PSI, the KS test of the worst five;
cached until ``REPORT_EVERY_S`` or ``REPORT_EVERY_ROWS`` new rows have passed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
from scipy import stats

PSI_DRIFT = 0.25
KS_ALPHA = 0.01
MIN_LIVE_ROWS = 100
RESERVOIR_ROWS = 1000
HORIZON_ROWS = 2000
BINS = 10
FLOOR = 1e-4
WORST_SHOWN = 5
MAX_FEATURES = 256       # features per version tested (the first ones of each input)
REPORT_EVERY_S = 2.0
REPORT_EVERY_ROWS = 1000  # ... or after this many new rows, whichever comes first


def bins(reference: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """A reference column's bin edges (its quantiles, ties merged) and shares per bin."""
    ref = np.asarray(reference, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # side="left": bin i holds edges[i-1] < x <= edges[i], so a constant reference column still
    # separates its own value from anything above it.
    shares = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1) / ref.size
    return edges, np.maximum(shares, FLOOR)


def psi_of(edges: np.ndarray, ref_shares: np.ndarray, live: np.ndarray) -> float:
    cur = np.asarray(live, dtype=np.float64)
    c = np.maximum(np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1) / cur.size, FLOOR)
    return float(np.sum((c - ref_shares) * np.log(c / ref_shares)))


def psi(reference: np.ndarray, live: np.ndarray, bins_: int = BINS) -> float:
    """Population stability index of ``live`` against ``reference`` (1-D samples): bins cut
    at the reference's quantiles (ties merged), each share floored at ``FLOOR``."""
    return psi_of(*bins(reference, bins_), live)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float


@dataclass(frozen=True)
class DriftReport:
    live_rows: int
    drifting: bool
    worst: tuple[FeatureDrift, ...] = ()     # worst PSI first, up to WORST_SHOWN
    features: int = 0


def compare(reference: Mapping[str, np.ndarray], live: Mapping[str, np.ndarray],
            cache: Optional[dict] = None) -> DriftReport:
    """Every feature of the inputs present in both, live against reference: the PSI of each,
    and the KS test of the ``WORST_SHOWN`` with the highest PSI (a KS test costs ~0.4 ms, a PSI
    against cached reference bins ~50 us; the Bonferroni correction still counts every
    feature). ``cache`` keeps the reference's bins between calls (the reference never changes)."""
    cache = {} if cache is None else cache
    scored: list[tuple[float, str, np.ndarray, np.ndarray]] = []
    rows = 0
    for alias in sorted(reference.keys() & live.keys()):
        ref = np.asarray(reference[alias])
        cur = np.asarray(live[alias])
        if ref.ndim < 1 or cur.ndim < 1 or ref.shape[1:] != cur.shape[1:] or not len(ref) or not len(cur):
            continue
        if ref.dtype.kind not in "biuf" or cur.dtype.kind not in "biuf":
            continue
        rows = max(rows, len(cur))
        ref2, cur2 = ref.reshape(len(ref), -1), cur.reshape(len(cur), -1)
        for j in range(min(ref2.shape[1], MAX_FEATURES - len(scored))):
            name = f"{alias}[{j}]" if ref2.shape[1] > 1 else alias
            if name not in cache:
                cache[name] = bins(ref2[:, j])
            scored.append((psi_of(*cache[name], cur2[:, j]), name, ref2[:, j], cur2[:, j]))
    scored.sort(key=lambda f: -f[0])
    worst = []
    for value, name, ref_col, cur_col in scored[:WORST_SHOWN]:
        ks = stats.ks_2samp(ref_col, cur_col)
        worst.append(FeatureDrift(name, value, float(ks.statistic), float(ks.pvalue)))
    drifting = bool(worst) and rows >= MIN_LIVE_ROWS and worst[0].psi > PSI_DRIFT \
        and worst[0].ks_pvalue < KS_ALPHA / len(scored)
    return DriftReport(rows, drifting, tuple(worst), len(scored))


class Reservoir:
    """A uniform sample of at most ``size`` rows of everything ``add``-ed (algorithm R), per
    input alias. Not thread-safe: one owner."""

    def __init__(self, size: int = RESERVOIR_ROWS, rng: Optional[np.random.Generator] = None):
        self.size = size
        self.seen = 0
        self._rng = rng or np.random.default_rng(0)
        self._rows: dict[str, np.ndarray] = {}
        self._filled = 0

    def add(self, inputs: Mapping[str, np.ndarray]) -> None:
        n = min((len(a) for a in inputs.values()), default=0)
        if n == 0:
            return
        if not self._rows:
            self._rows = {k: np.empty((self.size, *np.shape(a)[1:]), dtype=np.asarray(a).dtype)
                          for k, a in inputs.items()}
        if any(k not in self._rows or np.shape(a)[1:] != self._rows[k].shape[1:] for k, a in inputs.items()):
            return  # another shape than the first rows: not comparable, left out
        take = min(n, self.size - self._filled)
        if take:
            for k, a in inputs.items():
                self._rows[k][self._filled:self._filled + take] = a[:take]
            self._filled += take
        rest = n - take
        if rest:
            # Row i (0-based over everything seen) replaces slot j ~ U[0, i] when j < size.
            positions = self.seen + take + np.arange(rest)
            slots = (self._rng.random(rest) * (positions + 1)).astype(np.int64)
            keep = slots < self.size
            if keep.any():
                src = np.nonzero(keep)[0] + take
                for k, a in inputs.items():
                    self._rows[k][slots[keep]] = np.asarray(a)[src]
        self.seen += n

    def sample(self) -> dict[str, np.ndarray]:
        return {k: v[:self._filled] for k, v in self._rows.items()}


@dataclass
class DriftMonitor:
    """One version's live inputs against its reference sample."""

    reference: Mapping[str, np.ndarray]
    clock: Callable[[], float] = time.monotonic
    reservoir: Reservoir = field(default_factory=Reservoir)
    previous: Optional[Reservoir] = None
    seen: int = 0
    _cached: Optional[tuple[float, int, DriftReport]] = None
    _bins: dict = field(default_factory=dict)

    def add(self, inputs: Mapping[str, np.ndarray]) -> None:
        if self.reservoir.seen >= HORIZON_ROWS:
            self.previous, self.reservoir = self.reservoir, Reservoir(self.reservoir.size)
        before = self.reservoir.seen
        self.reservoir.add({k: v for k, v in inputs.items() if k in self.reference})
        self.seen += self.reservoir.seen - before

    def report(self) -> DriftReport:
        now = self.clock()
        if self._cached is not None:
            at, seen, cached = self._cached
            if seen == self.seen or (now - at < REPORT_EVERY_S and self.seen - seen < REPORT_EVERY_ROWS):
                return cached
        live = self.reservoir
        if live.seen < MIN_LIVE_ROWS and self.previous is not None:
            live = self.previous
        r = compare(self.reference, live.sample(), self._bins)
        self._cached = (now, self.seen, r)
        return r
