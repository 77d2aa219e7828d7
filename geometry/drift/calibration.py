"""The chessboard calibration as the drift sees it: its uncertainty in σ, and its correction by the reference
scan.

Every frame's intrinsics derive from one calibration (K and distortion from the chessboard, the zoom table
scaled by its focal length), so a calibration error is shared by the query and the reference frames. It does
not cancel: on the demo fleet's cameras (``bench/sigma.py``) the chessboard calibration's error, mostly its
focal length and distortion (fitted together, on boards that do not reach the image corners), biased the
drift by 0.002-0.0055° in roll per camera where the true K gives 0.0002°. Two remedies, both given the
calibration's covariance (:attr:`geometry.intrinsics.ChessboardCalibration.covariance`):

- σ: the bearings' derivatives with respect to the calibration's parameters
  (:func:`with_calibration_dirs`) let the solver add the spread the calibration's covariance causes.
- correction: overlapping reference frames are exact rotations apart (their telemetry; with an optical
  centre offset, up to each match's depth along its epipolar line), and their overlaps lie at the image
  edges the chessboard did not cover. Gauss-Newton on the reference pairs' (whitened) residuals over the
  calibration's 9 parameters, with the chessboard's covariance as prior, gives the corrected calibration and
  its posterior covariance (:func:`refine_calibration`). The scan's telemetry is taken as exact.

Parameters (:data:`geometry.intrinsics.CALIBRATION_PARAMETERS`): fx, fy, cx, cy in pixels of the calibrated
image, k1, k2, p1, p2, k3 unitless.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geometry.drift.solver import calibration_jacobian, reprojection_errors, whitening
from geometry.drift.types import BearingMatches, CalibrationUncertainty, DriftConfig, FrameObservation

_STEPS = np.array([0.05, 0.05, 0.05, 0.05, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4])
"""Central-difference steps of the calibration's parameters (fx, fy, cx, cy pixels; distortion)."""
_ITERATIONS = 3
"""Gauss-Newton iterations of the correction (the problem is nearly linear: 2 measured enough)."""


def with_bearings(
    matches: BearingMatches, queries: list[FrameObservation], references: list[FrameObservation]
) -> BearingMatches:
    """``matches`` with their bearings recomputed from their pixels through the frames' intrinsics
    (``query_index`` into ``queries``, ``reference_index`` into ``references``)."""
    m_query, dirs = matches.m_query.copy(), matches.query_bias_dirs.copy()
    b_reference, focal = matches.b_reference.copy(), matches.focal_reference.copy()
    for qi in np.unique(matches.query_index):
        sel = matches.query_index == qi
        m_query[sel], dirs[sel] = queries[qi].mount_bearings(matches.query_pixels[sel])
    for ri in np.unique(matches.reference_index):
        sel = matches.reference_index == ri
        b_reference[sel] = references[ri].intrinsics.unproject(matches.reference_pixels[sel])
        focal[sel] = references[ri].intrinsics.K[:2, :2]
    return replace(
        matches, m_query=m_query, query_bias_dirs=dirs, b_reference=b_reference, focal_reference=focal
    )


def with_calibration_dirs(
    matches: BearingMatches,
    queries: list[FrameObservation],
    references: list[FrameObservation],
    calibration: CalibrationUncertainty,
) -> BearingMatches:
    """``matches`` with the derivatives of their bearings (mount-frame query bearings, reference camera-frame
    bearings) with respect to the calibration's parameters (central differences)."""

    def derivative(frame: FrameObservation, pixels: np.ndarray) -> np.ndarray:
        columns = []
        for step in np.diag(_STEPS):
            plus, minus = (
                calibration.perturbed(frame.intrinsics, s).unproject(pixels) for s in (step, -step)
            )
            columns.append((plus - minus) / (2 * step.sum()))
        return np.stack(columns, axis=2)

    d_query = np.zeros((len(matches), 3, len(_STEPS)))
    d_reference = np.zeros_like(d_query)
    for qi in np.unique(matches.query_index):
        sel = matches.query_index == qi
        d_query[sel] = np.einsum(
            "nij,njk->nik", matches.R_BC_query[sel], derivative(queries[qi], matches.query_pixels[sel])
        )
    for ri in np.unique(matches.reference_index):
        sel = matches.reference_index == ri
        d_reference[sel] = derivative(references[ri], matches.reference_pixels[sel])
    return replace(matches, query_calibration_dirs=d_query, reference_calibration_dirs=d_reference)


def corrected(
    frames: list[FrameObservation], calibration: CalibrationUncertainty, correction: np.ndarray
) -> list[FrameObservation]:
    """The frames with their intrinsics (derived from ``calibration``) moved by ``correction`` (9,)."""
    return [replace(f, intrinsics=calibration.perturbed(f.intrinsics, correction)) for f in frames]


def refine_calibration(
    matches: BearingMatches,
    references: list[FrameObservation],
    calibration: CalibrationUncertainty,
    offset_m: np.ndarray | None,
    config: DriftConfig,
) -> tuple[np.ndarray, CalibrationUncertainty]:
    """The correction (9,) of ``calibration`` that the reference pairs' ``matches`` (drift ``I``; with an
    optical centre ``offset_m``, metres, their depths marginalised) call for, with the calibration's
    covariance as prior, and the corrected calibration with its posterior covariance (Gauss-Newton on the
    inliers, residual variance from them)."""
    prior_information = np.linalg.inv(calibration.covariance)
    correction = np.zeros(len(_STEPS))
    identity, zero = np.eye(3), np.zeros(2)
    for _ in range(_ITERATIONS):
        frames = corrected(references, calibration, correction)
        current = with_calibration_dirs(with_bearings(matches, frames, frames), frames, frames, calibration)
        weights = whitening(current, identity, zero, offset_m, config)
        r = reprojection_errors(current, identity)[0]
        r = r if weights is None else weights.apply(r)[0]
        inliers = np.sum(r**2, axis=1) < config.ransac_threshold_px**2
        kept = current.subset(inliers)
        J = calibration_jacobian(kept, identity, None if weights is None else weights.subset(inliers))
        r_kept = r[inliers].ravel()
        sigma2 = float(r_kept @ r_kept) / max(r_kept.size - len(correction), 1)
        information = J.T @ J / sigma2 + prior_information
        correction = correction - np.linalg.solve(
            information, J.T @ r_kept / sigma2 + prior_information @ correction
        )
    posterior = CalibrationUncertainty(
        calibration.perturbed(calibration.intrinsics, correction), np.linalg.inv(information)
    )
    return correction, posterior
