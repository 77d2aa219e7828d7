"""ptz_pipeline.sim.truth: the mount's motion during a scan, against the simulator's drift sinusoids."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from ptz_pipeline.devices import SIM_EPOCH, SimulatedBackend
from ptz_pipeline.sim.truth import mount_motion_deg


def test_mount_motion_is_half_the_drift_over_the_scan() -> None:
    """Yaw alone, at the sinusoid's steepest (amplitude A, period P hours): over a scan of s seconds the mount
    turns A 2π s / (3600 P) degrees, and the frames lie at most half of that from their mean."""
    spec = SimulatedBackend(
        kind="simulated", drift_amplitude_deg=(0.5, 0.0, 0.0), drift_period_hours=12.0, seed=0
    )  # phase 0: sin is steepest at the epoch
    start = SIM_EPOCH
    times = [start + timedelta(seconds=s) for s in np.linspace(0.0, 600.0, 7)]
    turned = 0.5 * 2 * np.pi * 600.0 / (3600.0 * 12.0)
    assert mount_motion_deg(spec, times) == pytest.approx(turned / 2, rel=1e-3)
    assert mount_motion_deg(spec, times[:1]) == pytest.approx(0.0, abs=1e-6)
