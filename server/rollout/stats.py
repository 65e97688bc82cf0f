"""Confidence intervals for comparing a canary with its stable version: pure, from scipy.stats.

Every interval here is two-sided at ``2 * confidence - 1``, so each of its ends is a one-sided
bound at ``confidence``: a check that asks "is the canary worse than the margin?" reads the
low end, "is it within the margin?" the high end, each at the configured confidence.

- ``proportion_difference``: Newcombe's hybrid score interval for p1 - p2 (Newcombe 1998,
  method 10), built from the two Wilson score intervals that ``scipy.stats.binomtest`` gives.
  It stays inside [-1, 1], behaves at 0 and n successes, and needs no normal approximation of
  the difference itself.
- ``mean_difference``: Welch's t interval for a difference of means (the loss gate).
- ``mean_ratio``: a percentile bootstrap of a ratio of means (the cost gate).
- ``p99_ratio``: a percentile bootstrap (``scipy.stats.bootstrap``, two independent samples)
  of canary p99 / stable p99, with a fixed seed, so the same evidence always gives the same
  verdict.
- ``p99_excess``: the same bootstrap of canary p99 minus the latency gate's allowance, the
  larger of ``ratio`` x stable p99 and stable p99 + ``allowance_ms``: one interval for "within
  the ratio OR within the absolute allowance", both read on the same resample.

Nothing here does I/O or keeps state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 999
BOOTSTRAP_SEED = 20261202


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def _two_sided(confidence: float) -> float:
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be within (0.5, 1), got {confidence}")
    return 2 * confidence - 1


def wilson(successes: int, n: int, confidence: float) -> Interval:
    """The Wilson score interval of a proportion (``n`` >= 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = stats.binomtest(successes, n).proportion_ci(_two_sided(confidence), method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high))


def proportion_difference(k1: int, n1: int, k2: int, n2: int, confidence: float) -> Interval:
    """p1 - p2 (``k1 / n1 - k2 / n2``) with Newcombe's hybrid score interval."""
    a, b = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


def _bootstrapped(c: np.ndarray, s: np.ndarray, statistic, estimate: float, confidence: float,
                  resamples: int) -> Interval:
    """``estimate`` with the percentile-bootstrap interval of ``statistic(canary, stable, axis)``
    over two independent samples (fixed seed: the same evidence, the same interval)."""
    ci = stats.bootstrap((c, s), statistic, n_resamples=resamples, confidence_level=_two_sided(confidence),
                         method="percentile", vectorized=True, paired=False,
                         rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high))


def _p99_ratio(canary: np.ndarray, stable: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.percentile(canary, 99, axis=axis) / np.percentile(stable, 99, axis=axis)


def p99_ratio(canary_ms: Sequence[float], stable_ms: Sequence[float], confidence: float,
              resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """canary p99 / stable p99 with a percentile-bootstrap interval (each sample >= 2 values,
    stable's p99 > 0)."""
    c = np.asarray(canary_ms, dtype=np.float64)
    s = np.asarray(stable_ms, dtype=np.float64)
    if c.size < 2 or s.size < 2:
        raise ValueError("each sample needs at least 2 latencies")
    estimate = float(_p99_ratio(c, s))
    if not math.isfinite(estimate):
        raise ValueError("stable's p99 latency is 0")
    return _bootstrapped(c, s, _p99_ratio, estimate, confidence, resamples)


def p99_excess(canary_ms: Sequence[float], stable_ms: Sequence[float], ratio: float, allowance_ms: float,
               confidence: float, resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """canary p99 - max(``ratio`` * stable p99, stable p99 + ``allowance_ms``) in ms, with a
    percentile-bootstrap interval (fixed seed; each sample >= 2 values).

    Its high end <= 0: the canary is within the ratio or within the allowance with
    ``confidence``; its low end > 0: it is worse than both with ``confidence``. Both limits are
    evaluated on each resample's own stable p99, so the one interval combines them exactly
    (no second test, no correction for two)."""
    c = np.asarray(canary_ms, dtype=np.float64)
    s = np.asarray(stable_ms, dtype=np.float64)
    if c.size < 2 or s.size < 2:
        raise ValueError("each sample needs at least 2 latencies")
    allowance = max(0.0, float(allowance_ms))

    def excess(cc: np.ndarray, ss: np.ndarray, axis: int = -1) -> np.ndarray:
        s99 = np.percentile(ss, 99, axis=axis)
        return np.percentile(cc, 99, axis=axis) - np.maximum(ratio * s99, s99 + allowance)

    estimate = float(excess(c, s))
    if np.ptp(c) == 0 and np.ptp(s) == 0:
        return Interval(estimate, estimate, estimate)
    return _bootstrapped(c, s, excess, estimate, confidence, resamples)


def mean_difference(canary: Sequence[float], stable: Sequence[float], confidence: float) -> Interval:
    """mean(canary) - mean(stable) with Welch's t interval (``scipy.stats.ttest_ind`` with
    unequal variances; each sample >= 2 values). Two constant samples give a zero-width
    interval at their difference."""
    c = np.asarray(canary, dtype=np.float64)
    s = np.asarray(stable, dtype=np.float64)
    if c.size < 2 or s.size < 2:
        raise ValueError("each sample needs at least 2 values")
    d = float(c.mean() - s.mean())
    if c.var() == 0 and s.var() == 0:  # t is undefined; the difference is known exactly
        return Interval(d, d, d)
    ci = stats.ttest_ind(c, s, equal_var=False).confidence_interval(_two_sided(confidence))
    return Interval(d, float(ci.low), float(ci.high))


def _mean_ratio(canary: np.ndarray, stable: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(canary, axis=axis) / np.mean(stable, axis=axis)


def mean_ratio(canary: Sequence[float], stable: Sequence[float], confidence: float,
               resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """mean(canary) / mean(stable) with a percentile-bootstrap interval (fixed seed; each
    sample >= 2 values, stable's mean > 0)."""
    c = np.asarray(canary, dtype=np.float64)
    s = np.asarray(stable, dtype=np.float64)
    if c.size < 2 or s.size < 2:
        raise ValueError("each sample needs at least 2 values")
    if not s.mean() > 0:
        raise ValueError("stable's mean is 0")
    estimate = float(_mean_ratio(c, s))
    if np.ptp(c) == 0 and np.ptp(s) == 0:
        return Interval(estimate, estimate, estimate)
    return _bootstrapped(c, s, _mean_ratio, estimate, confidence, resamples)
