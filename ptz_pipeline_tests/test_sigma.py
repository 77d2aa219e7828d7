"""σ that is the error: the chessboard calibration's covariance, its share of the drift's σ and its correction
by the reference scan (the cause of the demo fleet's roll bias: the chessboard's distortion error)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from geometry.camera import Intrinsics
from geometry.drift import CalibrationUncertainty, DriftConfig, FrameObservation, estimate_drift
from geometry.intrinsics import (
    CALIBRATION_PARAMETERS,
    ChessboardCalibration,
    board_points,
    calibrate_from_corners,
    detect_chessboard_corners,
)
from geometry.rotations import R_BC, drift_matrix
from ptz_pipeline.sim.chessboard import random_board_poses, render_chessboards
from ptz_pipeline_tests.test_drift import R_ALIGN, IdMatcher, angles, sigmas, synthetic_frame

TRUE = Intrinsics.from_fov(60.0, 640, 480, dist=np.array([-0.08, 0.02, 0.0, 0.0, 0.0]))
"""The demo fleet's lens."""


def test_chessboard_covariance_is_opencvs() -> None:
    """The calibration's covariance (poses marginalised, σ² from the residuals) is what OpenCV reports."""
    poses = random_board_poses(6, np.random.default_rng(1001), (9, 6), 0.03, 60.0)
    corners = [detect_chessboard_corners(im, (9, 6)) for im in render_chessboards(TRUE, poses, (9, 6), 0.03)]
    obj = board_points((9, 6), 0.03)
    calibration = calibrate_from_corners([obj] * len(corners), corners, TRUE.image_size)
    assert calibration.covariance.shape == (len(CALIBRATION_PARAMETERS),) * 2
    extended = cv2.calibrateCameraExtended(
        [obj.astype(np.float32)] * len(corners),
        [c.astype(np.float32) for c in corners],
        TRUE.image_size,
        None,
        None,
    )
    np.testing.assert_allclose(np.sqrt(np.diag(calibration.covariance)), extended[5].ravel()[:9], rtol=1e-4)
    # older results without one still construct
    old = ChessboardCalibration(TRUE, 0.1, (0.1,), ("a",), (), np.zeros((1, 3)), np.zeros((1, 3)))
    assert np.all(np.isnan(old.covariance))


CALIBRATED = Intrinsics(
    TRUE.K + np.array([[-0.36, 0.0, 0.62], [0.0, -0.47, -1.0], [0.0, 0.0, 0.0]]),
    TRUE.dist[:5] + np.array([-0.0087, 0.0851, -0.0004, 0.0001, -0.2208]),
    TRUE.image_size,
)
"""The demo lens calibrated from 12 rendered chessboard photos (seed 3 of bench/sigma.py): sub-pixel K and
a distortion that is off towards the image corners."""
COVARIANCE = np.diag([0.5, 0.5, 0.6, 0.45, 0.006, 0.05, 2e-4, 3e-4, 0.13]) ** 2
REF_STOPS = [(float(pan), tilt) for tilt in (-25.0, -12.0) for pan in range(0, 360, 45)]
QUERY_STOPS = [(0.0, -15.0, 1.0), (90.0, -20.0, 1.0), (225.0, -15.0, 1.3)]
DRIFT = (0.6, -0.25, 0.15)


def calibrated_hour(rng: np.random.Generator) -> tuple[list[FrameObservation], list[FrameObservation]]:
    """Keypoints that the true lens sees (0.2 px noise), in frames whose intrinsics derive from the
    calibration (the focal length scaled per zoom, as a zoom table does)."""
    directions = rng.normal(size=(20000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    def frame(R_WC: np.ndarray, pan: float, tilt: float, focal: float, name: str) -> FrameObservation:
        seen = synthetic_frame(
            directions, R_WC, TRUE.with_focal(TRUE.fx * focal), (pan, tilt), rng, 0.2, name=name
        )
        return replace(seen, intrinsics=CALIBRATED.with_focal(CALIBRATED.fx * focal))

    refs = [
        frame(R_ALIGN @ R_BC(pan, tilt), pan, tilt, 1.0, f"r{i}") for i, (pan, tilt) in enumerate(REF_STOPS)
    ]
    D = drift_matrix(*DRIFT)
    queries = [frame(R_ALIGN @ D @ R_BC(p, t), p, t, f, f"q{i}") for i, (p, t, f) in enumerate(QUERY_STOPS)]
    return queries, refs


def test_the_reference_scan_corrects_the_calibration_and_sigma_covers_the_rest() -> None:
    queries, refs = calibrated_hour(np.random.default_rng(40))
    naive = estimate_drift(queries, refs, IdMatcher(), DriftConfig(parallax=False)).joint
    naive_err = np.abs(angles(naive) - DRIFT)
    assert np.max(naive_err) > 0.003 and np.max(naive_err / sigmas(naive)) > 5, (naive_err, sigmas(naive))

    calibration = CalibrationUncertainty(CALIBRATED, COVARIANCE)
    report = estimate_drift(queries, refs, IdMatcher(), DriftConfig(parallax=False), calibration=calibration)
    err = np.abs(angles(report.joint) - DRIFT)
    assert np.all(err < 3 * sigmas(report.joint)) and np.max(err) < np.max(naive_err) / 3, (err, naive_err)
    for name, est in report.per_frame:
        assert est.success and np.all(np.abs(angles(est) - DRIFT) < 3 * sigmas(est)), name
    corrected = report.calibration.intrinsics
    assert abs(corrected.K[0, 2] - TRUE.K[0, 2]) < 0.2 and abs(corrected.K[1, 2] - TRUE.K[1, 2]) < 0.2
    # the posterior is far tighter than the chessboard's prior
    assert np.all(np.diag(report.calibration.covariance) < 0.1 * np.diag(COVARIANCE))


def test_calibration_uncertainty_moves_frames_like_a_zoom_table() -> None:
    calibration = CalibrationUncertainty(CALIBRATED, COVARIANCE)
    frame = CALIBRATED.with_focal(2.0 * CALIBRATED.fx).scaled(0.5)
    delta = np.array([1.0, 2.0, 0.5, -0.5, 0.01, 0.0, 0.0, 0.0, 0.0])
    moved = calibration.perturbed(frame, delta)
    assert moved.fx / frame.fx == pytest.approx(1 + 1.0 / CALIBRATED.fx)
    assert moved.fy / frame.fy == pytest.approx(1 + 2.0 / CALIBRATED.fy)
    np.testing.assert_allclose(moved.K[:2, 2] - frame.K[:2, 2], [0.25, -0.25])
    assert moved.dist[0] == pytest.approx(frame.dist[0] + 0.01)
    with pytest.raises(ValueError, match="9 x 9"):
        CalibrationUncertainty(CALIBRATED, np.eye(4))
