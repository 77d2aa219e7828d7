"""Scenes that changed are flagged, never measured: an occluder over 60 % of the view, the camera looking
elsewhere, night under infrared light against a day reference, heavy fog, a partly repainted scene. Every
frame and the joint estimate fail, with a reason a user understands."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from geometry.drift import estimate_drift
from geometry.render import Nuisances
from geometry.rotations import R_BC, drift_matrix
from ptz_pipeline_tests.test_drift import R_ALIGN, render_query, scene  # noqa: F401  (scene: a fixture)

DRIFT = drift_matrix(1.0, -0.5, 0.5)
STOPS = [(8.0, -14.0), (50.0, -22.0)]
CHANGED = {
    "occluded": (replace(Nuisances.typical(), occluder_fraction=0.6), "scene changed"),
    "repainted": (replace(Nuisances.typical(), repainted_fraction=0.5), "scene changed"),
    "night": (replace(Nuisances.typical(), infrared_night=True), "darker than the reference"),
    "fog": (replace(Nuisances.typical(), haze=0.9), "less contrast than the reference"),
}


@pytest.mark.parametrize("kind", [*CHANGED, "elsewhere"])
def test_changed_scene_is_flagged_with_a_reason(scene: dict, kind: str) -> None:  # noqa: F811
    rng = np.random.default_rng(50)
    if kind == "elsewhere":  # telemetry says one place, the camera sees another
        queries = [
            render_query(
                scene, DRIFT, pan, tilt, 1.0, rng, view_R=R_ALIGN @ R_BC(pan + 160, tilt), with_image=True
            )
            for pan, tilt in STOPS
        ]
        words = "scene changed or wrong camera"
    else:
        nuisances, words = CHANGED[kind]
        queries = [
            render_query(scene, DRIFT, pan, tilt, 1.0, rng, nuisances, with_image=True) for pan, tilt in STOPS
        ]
    report = estimate_drift(queries, scene["refs_with_images"], scene["matcher"])
    for name, est in [*report.per_frame, ("joint", report.joint)]:
        assert not est.success, (kind, name)
        assert words in est.reason, (kind, name, est.reason)
        assert np.all(np.isnan([est.yaw_deg, est.pitch_deg, est.roll_deg, est.sigma_yaw_deg]))


def test_one_changed_frame_does_not_spoil_the_hour(scene: dict) -> None:  # noqa: F811
    """A flagged frame stays out of the joint estimate, which the unchanged frames still give."""
    rng = np.random.default_rng(51)
    good = render_query(scene, DRIFT, 8.0, -14.0, 1.0, rng, with_image=True)
    occluded = render_query(scene, DRIFT, 50.0, -22.0, 1.0, rng, CHANGED["occluded"][0], with_image=True)
    report = estimate_drift([good, occluded], scene["refs_with_images"], scene["matcher"])
    (_, ok), (_, flagged) = report.per_frame
    assert ok.success and not flagged.success and "scene changed" in flagged.reason
    assert report.joint.success and report.joint.inliers == ok.inliers


def test_changed_scene_nuisances_change_what_they_claim() -> None:
    rng = np.random.default_rng(52)
    image = rng.integers(0, 256, (96, 128, 3)).astype(np.uint8)
    repainted = Nuisances(repainted_fraction=0.5).apply(image, rng)
    changed = np.any(repainted != image, axis=2)
    assert 0.4 < changed.mean() < 0.6 and np.array_equal(
        np.sort(repainted, axis=None), np.sort(image, axis=None)
    )
    fog = Nuisances(haze=0.9).apply(image, rng).astype(float)
    assert fog.std() == pytest.approx(0.1 * image.std(), rel=0.05)
    night = Nuisances(infrared_night=True).apply(image, rng)
    assert np.all(night[..., 0] == night[..., 2]) and night.mean() < 0.4 * image.mean()
    with pytest.raises(ValueError, match="haze"):
        Nuisances(haze=0.99)
