"""Mount drift (yaw/pitch/roll, degrees) from query frames matched to a reference scan, with uncertainty.

Model (conventions in :mod:`geometry.rotations`): a reference frame r has ``R_WC = R_align · R_BC(pan_r,
tilt_r)``, a query frame q has ``R_WC = R_align · D · R_BC(pan_q, tilt_q)`` with one drift ``D`` shared by
every query frame of the hour. For a matched feature with unit bearings ``b_q`` (query camera frame) and
``b_r`` (reference camera frame) ``b_r = R_BC(r)ᵀ · D · R_BC(q) · b_q``, i.e. in the mount frame
``m_r = D · m_q`` with ``m = R_BC · b`` — so ``R_align`` drops out and every (query, reference) pair votes for
``D`` itself. The solver also estimates a keypoint bias: a 2-D shift in pixels common to all keypoints (a
detector's sub-pixel bias, or a principal-point error of the calibration), a nuisance parameter.

- :mod:`geometry.drift.types`: frames, settings (:class:`DriftConfig`), results.
- :mod:`geometry.drift.solver`: RANSAC, robust least squares, covariance -> σ on pooled bearing matches.
- :mod:`geometry.drift.parallax`: the optical centre's offset from the pan/tilt axes, from the reference
  scan; with it each match's depth is marginalised (the views are no longer pure rotations).
- :mod:`geometry.drift.calibration`: the calibration's share of σ and its correction by the reference scan.
- :mod:`geometry.drift.photometric`: the photometric refinement of a frame's matches under a first drift.
- :mod:`geometry.drift.estimate`: the per-hour estimate, :func:`estimate_drift`; it flags query frames whose
  scene changed (occluded, repainted, looking elsewhere; darker or hazier than the reference) instead of
  measuring them.
"""

from geometry.drift.estimate import estimate_drift
from geometry.drift.parallax import estimate_optical_centre_offset
from geometry.drift.solver import kabsch_rotation, reprojection_errors, solve_drift
from geometry.drift.types import (
    BearingMatches,
    CalibrationUncertainty,
    DriftConfig,
    DriftEstimate,
    DriftReport,
    FrameObservation,
    OpticalCentreOffset,
)

__all__ = [
    "BearingMatches",
    "CalibrationUncertainty",
    "DriftConfig",
    "DriftEstimate",
    "DriftReport",
    "FrameObservation",
    "OpticalCentreOffset",
    "estimate_drift",
    "estimate_optical_centre_offset",
    "kabsch_rotation",
    "reprojection_errors",
    "solve_drift",
]
