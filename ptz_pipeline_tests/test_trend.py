"""Drift trends and R_align proposals (geometry.trend, geometry.proposal) on simulated hourly histories.

The 200-history accuracy test uses bench.trend's generator (its docstring states the ranges: 7 days hourly,
noise σ 0.001-0.01°, failed hours, outliers; steps 0.05-1°, creep 0.02-0.3°/day, oscillations of 0.03-0.5°
with 24 h or 12 h periods).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from bench.trend import simulate_history, simulated_set
from geometry.proposal import ProposalConfig, propose_r_align
from geometry.rotations import Rx, Rz, drift_angles, drift_matrix, rotation_angle_deg
from geometry.trend import OffsetHistory, Trend, TrendConfig, classify_trend

R_ALIGN = Rz(0.4) @ Rx(0.03)
"""An arbitrary mount alignment."""
SIGMA = 0.002
"""σ of the hand-made histories (degrees)."""


def history(true_deg: np.ndarray, rng: np.random.Generator, sigma: float = SIGMA) -> OffsetHistory:
    """Hourly estimates (hours 0..n-1) of the drift ``true_deg`` (n, 3) with noise σ."""
    n = len(true_deg)
    return OffsetHistory(
        np.arange(n, dtype=float), true_deg + rng.normal(scale=sigma, size=(n, 3)), np.full((n, 3), sigma)
    )


def step_drift(hours: int, step_hour: int, before: tuple, after: tuple) -> np.ndarray:
    """(hours, 3) yaw, pitch, roll: ``before`` until ``step_hour``, ``after`` from it on (degrees)."""
    return np.where(np.arange(hours)[:, None] >= step_hour, after, before).astype(float)


def test_classifies_200_simulated_histories() -> None:
    sims = simulated_set()  # 50 of each class, seed 2026
    results = [classify_trend(s.history) for s in sims]
    confusion = Counter((s.trend, r.trend) for s, r in zip(sims, results, strict=True))
    accuracy = sum(n for (truth, got), n in confusion.items() if truth == got) / len(sims)
    assert accuracy >= 0.95, f"accuracy {accuracy:.1%}: {dict(confusion)}"
    for s, r in zip(sims, results, strict=True):
        if r.trend != s.trend:
            continue
        assert 0.0 <= r.confidence <= 1.0
        if s.trend == "step":
            # The first hour used after the step: a failed or outlier hour there moves it on.
            used = np.flatnonzero(np.any(s.history.valid & ~r.outliers, axis=1))
            assert r.step_hour == s.history.hours[used[s.history.hours[used] >= s.step_hour][0]]
            for e, truth in zip(r.angles, s.step_deg, strict=True):
                assert abs(e.step_deg - truth) < 5 * e.step_sigma_deg
        elif s.trend == "creep":  # settling creep is not quite a parabola: absolute bound
            rates = [e.rate_deg_per_day for e in r.angles]
            np.testing.assert_allclose(rates, s.rate_deg_per_day, atol=0.01)
        elif s.trend == "oscillation":
            assert abs(r.period_hours - s.period_hours) < 0.2
            for e, truth in zip(r.angles, s.amplitude_deg, strict=True):
                assert abs(e.amplitude_deg - truth) < 5 * e.amplitude_sigma_deg


def test_step_evidence_and_peak_hour() -> None:
    rng = np.random.default_rng(1)
    r = classify_trend(history(step_drift(96, 40, (0.1, 0.0, -0.2), (0.35, -0.1, -0.2)), rng))
    assert r.trend == "step" and r.step_hour == 40 and r.confidence > 0.99
    np.testing.assert_allclose([e.step_deg for e in r.angles], [0.25, -0.1, 0.0], atol=0.003)
    np.testing.assert_allclose([e.level_deg for e in r.angles], [0.1, 0.0, -0.2], atol=0.003)
    assert r.reason.startswith("step at hour 40: yaw +0.25")

    t = np.arange(96.0)
    daily = np.stack([0.2 * np.cos(2 * np.pi * (t - 14.0) / 24.0), 0 * t, 0 * t], axis=1)
    noisy = history(daily, rng)  # on an hour axis of hours since an epoch at midnight
    r = classify_trend(OffsetHistory(noisy.hours + 24.0 * 1000, noisy.angles_deg, noisy.sigma_deg))
    assert r.trend == "oscillation"
    assert abs(r.period_hours - 24.0) < 0.05 and r.angles[0].peak_hour == pytest.approx(
        24_000 + 72 + 14, abs=0.2
    )


def test_history_validation_and_failed_hours() -> None:
    with pytest.raises(ValueError, match="distinct"):
        OffsetHistory([0.0, 1.0, 1.0], np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        OffsetHistory([0.0, 1.0], np.zeros((2, 2)), np.ones((2, 2)))
    h = OffsetHistory(
        [2.0, 0.0, 1.0], [[2, 2, 2], [0, 0, 0], [1, np.inf, 1]], [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    )
    np.testing.assert_array_equal(h.hours, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(h.valid, [[True, False, True], [True, False, True], [True, True, True]])
    assert len(h.window(0.5)) == 2

    r = classify_trend(history(np.zeros((8, 3)), np.random.default_rng(0)))
    assert r.trend == "insufficient" and r.confidence == 0.0 and "need 12" in r.reason


def test_outliers_failed_hours_and_optimistic_sigma() -> None:
    rng = np.random.default_rng(5)
    h = history(np.tile([0.3, -0.2, 0.1], (72, 1)), rng)
    angles = h.angles_deg.copy()
    angles[20, 0] += 0.5  # a bad estimate
    angles[30:36] = np.nan  # an outage
    r = classify_trend(OffsetHistory(h.hours, angles, h.sigma_deg))
    assert r.trend == "stable" and r.outliers[20, 0] and r.outliers.sum() == 1
    assert r.angles[0].samples == 72 - 6 - 1 and r.angles[0].outliers == 1

    # σ reported 5x too small: the noise scale absorbs it instead of inventing a trend.
    r = classify_trend(OffsetHistory(h.hours, h.angles_deg, h.sigma_deg / 5), TrendConfig(floor_deg=0.0))
    assert r.trend == "stable" and 3.5 < r.noise_scale < 6.5


def test_tiny_significant_changes_count_as_stable() -> None:
    rng = np.random.default_rng(3)
    h = history(step_drift(72, 30, (0.0, 0.0, 0.0), (0.004, 0.0, 0.0)), rng, sigma=1e-5)
    exact = TrendConfig(floor_deg=0.0, min_effect_deg=0.0)
    assert classify_trend(h, exact).trend == "step"
    assert classify_trend(h, TrendConfig(floor_deg=0.0)).trend == "stable"


# --- R_align proposals --------------------------------------------------------------------------------------


def test_proposal_after_a_step_zeroes_the_drift() -> None:
    rng = np.random.default_rng(11)
    before, after = (0.05, -0.02, 0.01), (0.45, -0.3, 0.12)
    true = step_drift(80, 60, before, after)
    h = history(true, rng)
    config = ProposalConfig(hours=6)

    waiting = propose_r_align(R_ALIGN, h.window(end_hour=64), config)  # 5 hours after the step
    assert not waiting.proposed and "too few hours: 5 valid of 6 since the step at hour 60" in waiting.reason

    p = propose_r_align(R_ALIGN, h.window(end_hour=65), config)
    assert p.proposed, p.reason
    assert p.trend.trend == "step" and p.hours_used == (60.0, 61.0, 62.0, 63.0, 64.0, 65.0)
    Delta_true = drift_matrix(*after)
    assert rotation_angle_deg(p.delta, Delta_true) < 3 * SIGMA
    np.testing.assert_allclose(p.delta_deg, after, atol=3 * max(p.delta_sigma_deg))
    np.testing.assert_allclose(p.delta_sigma_deg, SIGMA / np.sqrt(6), rtol=0.3)  # floor 0.001° included
    np.testing.assert_allclose(p.R_align, R_ALIGN @ p.delta, atol=1e-12)
    assert p.spread_deg < 4 * SIGMA

    # Applied: the next hours measure the drift against the new R_align, Δ_new = Δ_proposal⁻¹ · Δ_true.
    Delta_new = p.delta.T @ Delta_true
    np.testing.assert_allclose(p.R_align @ Delta_new, R_ALIGN @ Delta_true, atol=1e-12)
    assert np.all(np.abs(drift_angles(Delta_new)) < SIGMA)
    later = history(np.tile(drift_angles(Delta_new), (60, 1)), rng)
    again = propose_r_align(p.R_align, later, config)
    assert not again.proposed and again.reason.startswith("nothing to correct")
    assert np.all(np.abs(again.delta_deg) < SIGMA)


@pytest.mark.parametrize("trend", ["creep", "oscillation"])
def test_proposal_refused_while_the_drift_keeps_changing(trend: Trend) -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        p = propose_r_align(R_ALIGN, simulate_history(rng, trend).history)
        assert not p.proposed and p.reason.startswith(f"drift keeps changing: {trend}")


def test_proposal_refusals() -> None:
    rng = np.random.default_rng(8)
    level = np.tile([0.2, 0.1, -0.1], (60, 1))
    config = ProposalConfig(hours=6, max_missing_hours=1)
    assert propose_r_align(R_ALIGN, history(level, rng), config).proposed

    h = history(level, rng)
    gappy = h.angles_deg.copy()
    gappy[[53, 55, 57]] = np.nan
    p = propose_r_align(R_ALIGN, OffsetHistory(h.hours, gappy, h.sigma_deg), config)
    assert not p.proposed and "span 8 h: more than 1 missing" in p.reason

    silent = h.angles_deg.copy()
    silent[-3:] = np.nan  # the camera stopped answering
    p = propose_r_align(R_ALIGN, OffsetHistory(h.hours, silent, h.sigma_deg), config)
    assert not p.proposed and p.reason.startswith("no valid hour in the last 3 h (since hour 56)")

    jumped = h.angles_deg.copy()
    jumped[-1] += 0.3  # the latest hour moved: an outlier or the start of a new step
    p = propose_r_align(R_ALIGN, OffsetHistory(h.hours, jumped, h.sigma_deg), config)
    assert not p.proposed and p.reason.startswith("the latest hour 59 disagrees")

    p = propose_r_align(R_ALIGN, history(level[:10], rng), config)
    assert not p.proposed and p.reason.startswith("insufficient")
    p = propose_r_align(R_ALIGN, history(level[:40], rng), config)
    assert not p.proposed and p.reason.startswith("history too short: 39 h of the 48 h")
    no_floor = replace(config, trend=TrendConfig(floor_deg=0.0))
    p = propose_r_align(R_ALIGN, OffsetHistory(h.hours, h.angles_deg, h.sigma_deg / 10), no_floor)
    assert not p.proposed and "fits badly (noise scale" in p.reason  # σ 10x too small

    with pytest.raises(ValueError, match="rotation"):
        propose_r_align(2 * R_ALIGN, h, config)
