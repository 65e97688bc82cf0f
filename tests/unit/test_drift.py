"""Drift figures on constructed samples: PSI by hand, KS against its exact small-sample value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.rollout import drift


def test_psi_by_hand():
    ref = np.arange(100, dtype=np.float64)        # deciles cut 10 values per bin
    assert drift.psi(ref, ref) == pytest.approx(0.0)
    live = np.arange(10, dtype=np.float64)        # everything in the first bin
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert drift.psi(ref, live) == pytest.approx(expected)


def test_psi_sees_a_shift_off_a_constant_reference_column():
    ref = np.zeros(500)
    assert drift.psi(ref, np.zeros(50)) == pytest.approx(0.0)
    shifted = drift.psi(ref, np.full(50, 16.0))
    assert shifted == pytest.approx((1 - 1e-4) * math.log(1 / 1e-4) + (1e-4 - 1) * math.log(1e-4 / 1))


def test_ks_exact_small_sample_and_the_worst_feature_named():
    r = drift.compare({"x": np.array([[1.0], [2.0], [3.0], [4.0]])}, {"x": np.array([[5.0], [6.0], [7.0], [8.0]])})
    (f,) = r.worst
    assert f.feature == "x" and f.ks_statistic == 1.0
    assert f.ks_pvalue == pytest.approx(2 / math.comb(8, 4))  # both orders equally extreme: 2 of 70
    assert not r.drifting  # 4 live rows are too few to call drift


def test_inverted_inputs_drift_and_the_same_distribution_does_not():
    rng = np.random.default_rng(1)
    ref = {"images": rng.integers(0, 17, (1000, 8)).astype(np.float32) * (np.arange(8) < 4)}
    same = {"images": rng.integers(0, 17, (400, 8)).astype(np.float32) * (np.arange(8) < 4)}
    assert not drift.compare(ref, same).drifting
    inverted = {"images": 16 - same["images"]}
    r = drift.compare(ref, inverted)
    assert r.drifting and r.features == 8
    assert r.worst[0].feature.startswith("images[") and int(r.worst[0].feature[7:-1]) >= 4  # the constant columns
    assert r.worst[0].psi > drift.PSI_DRIFT


def test_reservoir_is_bounded_and_uniform():
    res = drift.Reservoir(size=100, rng=np.random.default_rng(0))
    for start in range(0, 10_000, 50):
        res.add({"x": np.arange(start, start + 50, dtype=np.float64)[:, None]})
    sample = res.sample()["x"][:, 0]
    assert res.seen == 10_000 and sample.shape == (100,)
    assert len(set(sample.tolist())) == 100
    # Uniform over everything seen: the sample's mean is near 5000 (sd of the mean ~ 290).
    assert abs(sample.mean() - 5000) < 1000
    assert (sample >= 5000).sum() > 30 and (sample < 5000).sum() > 30


def test_monitor_caches_its_report_until_new_rows_and_time_pass():
    t = [0.0]
    m = drift.DriftMonitor({"x": np.zeros((10, 1))}, clock=lambda: t[0])
    m.add({"x": np.zeros((5, 1))})
    first = m.report()
    assert m.report() is first
    m.add({"x": np.ones((5, 1))})
    assert m.report() is first          # new rows, but within REPORT_EVERY_S
    t[0] = drift.REPORT_EVERY_S
    assert m.report() is not first and m.report().live_rows == 10


def test_the_report_reads_recent_inputs_so_late_drift_shows():
    rng = np.random.default_rng(2)
    ref = {"x": rng.integers(0, 5, (1000, 2)).astype(np.float32)}
    m = drift.DriftMonitor(ref, clock=iter(range(0, 1000, 10)).__next__)
    for _ in range(10):
        m.add({"x": rng.integers(0, 5, (500, 2)).astype(np.float32)})  # 5000 ordinary rows
    assert not m.report().drifting
    for _ in range(5):
        m.add({"x": 16 - rng.integers(0, 5, (500, 2)).astype(np.float32)})  # then 2500 inverted ones
    r = m.report()
    assert r.drifting and m.seen == 7500 and r.live_rows <= drift.RESERVOIR_ROWS
