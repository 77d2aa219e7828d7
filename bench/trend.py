"""Drift-trend benchmark: classification accuracy on simulated histories and R_align proposal convergence;
writes the 'trend' section of BENCHMARKS.md.

The simulated histories (:func:`simulate_history`, also used by ptz_pipeline_tests/test_trend.py) are hourly
drift estimates of one camera over 7 days with these ranges (degrees, hours):

- noise: a σ per history log-uniform in [0.001, 0.01]; each angle-hour reports σ times U(0.7, 1.4) and is off
  by N(0, that σ) plus N(0, 0.0005) of jitter that σ does not report;
- failed hours: each hour with probability U(0, 0.1) per history, plus (probability 0.3) one outage of
  2-12 hours;
- outliers: each hour with probability 0.02, ±U(10, 50) σ on one angle or on all three;
- level: U(-1, 1) per angle (the drift since the reference scan, before anything happens);
- stable: the level only;
- step: at an hour in [12, 156], a change whose largest angle is U(0.05, 1) (>= 5 σ), the others U(-1, 1)
  times it;
- creep: a mean rate whose largest angle is U(0.02, 0.3) per day (>= 0.14 over the week, >= 14 σ), the others
  U(-1, 1) times it; linear, or (half of them) settling like 1 - exp(-t / τ), τ U(1, 5) weeks;
- oscillation: a 24 h (60 %) or 12 h period, an amplitude whose largest angle is U(0.03, 0.5) (>= 3 σ per
  hour), the others U(0, 1) times it, each angle with its own phase.

Run from the repository root: .venv/bin/python -m bench.trend
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.trend import OffsetHistory, Trend

HOURS = 168
"""Length of a simulated history (hours)."""
CLASSES: tuple[Trend, ...] = ("stable", "step", "creep", "oscillation")


@dataclass(frozen=True)
class SimulatedHistory:
    """A simulated history, the class it was made as and its noise-free drift (n, 3) in degrees."""

    history: OffsetHistory
    trend: Trend
    true_deg: np.ndarray
    step_hour: float = float("nan")
    """Step: the first hour at the new level."""
    step_deg: np.ndarray | None = None
    """Step: the change (yaw, pitch, roll) in degrees."""
    rate_deg_per_day: np.ndarray | None = None
    """Creep: the mean rate over the history (yaw, pitch, roll)."""
    amplitude_deg: np.ndarray | None = None
    period_hours: float = float("nan")


def _vector(rng: np.random.Generator, low: float, high: float, others_low: float) -> np.ndarray:
    """Three values: a random one U(low, high) with a random sign, the others U(others_low, 1) times it."""
    main = rng.uniform(low, high) * rng.choice([-1.0, 1.0])
    v = main * rng.uniform(others_low, 1.0, size=3)
    v[rng.integers(3)] = main
    return v


def simulate_history(rng: np.random.Generator, trend: Trend, hours: int = HOURS) -> SimulatedHistory:
    """One camera's hourly history of class ``trend`` (ranges in the module docstring)."""
    t = np.arange(hours, dtype=float)
    true = np.broadcast_to(rng.uniform(-1.0, 1.0, size=3), (hours, 3)).copy()
    extra: dict[str, object] = {}
    if trend == "step":
        step_hour = float(rng.integers(12, hours - 11))
        step = _vector(rng, 0.05, 1.0, -1.0)
        true += (t >= step_hour)[:, None] * step
        extra = {"step_hour": step_hour, "step_deg": step}
    elif trend == "creep":
        rate = _vector(rng, 0.02, 0.3, -1.0)
        span = t[-1]
        if rng.random() < 0.5:
            shape = t / span
        else:
            tau = rng.uniform(1.0, 5.0) * 168.0
            shape = (1.0 - np.exp(-t / tau)) / (1.0 - np.exp(-span / tau))
        true += shape[:, None] * rate * span / 24.0
        extra = {"rate_deg_per_day": rate}
    elif trend == "oscillation":
        period = 24.0 if rng.random() < 0.6 else 12.0
        amplitude = np.abs(_vector(rng, 0.03, 0.5, 0.0))
        phase = rng.uniform(0.0, 2.0 * np.pi, size=3)
        true += amplitude * np.sin(2.0 * np.pi * t[:, None] / period + phase)
        extra = {"amplitude_deg": amplitude, "period_hours": period}
    sigma_base = float(np.exp(rng.uniform(np.log(0.001), np.log(0.01))))
    sigma = sigma_base * rng.uniform(0.7, 1.4, size=(hours, 3))
    measured = true + rng.normal(size=(hours, 3)) * sigma + rng.normal(scale=0.0005, size=(hours, 3))
    outlier_hours = np.flatnonzero(rng.random(hours) < 0.02)
    for h in outlier_hours:
        angles = slice(None) if rng.random() < 0.5 else rng.integers(3)
        measured[h, angles] += rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 50.0) * sigma_base
    failed = rng.random(hours) < rng.uniform(0.0, 0.1)
    if rng.random() < 0.3:
        start = rng.integers(hours)
        failed[start : start + rng.integers(2, 13)] = True
    measured[failed] = np.nan
    return SimulatedHistory(OffsetHistory(t, measured, sigma), trend, true, **extra)  # type: ignore[arg-type]
