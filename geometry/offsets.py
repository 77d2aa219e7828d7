"""Mount drift (yaw/pitch/roll, degrees) from query frames matched to a reference scan, with uncertainty.

Model (DESIGN.md conventions): a reference frame r has ``R_WC = R_align · R_BC(pan_r, tilt_r)``, a query
frame q has ``R_WC = R_align · D · R_BC(pan_q, tilt_q)`` with one drift ``D`` shared by every query frame of
the hour.
For a matched feature with unit bearings ``b_q`` (query camera frame) and ``b_r`` (reference camera frame)
``b_r = R_BC(r)ᵀ · D · R_BC(q) · b_q``, i.e. in the mount frame ``m_r = D · m_q`` with ``m = R_BC · b`` — so
``R_align`` drops out and every (query, reference) pair votes for ``D`` itself.

Pipeline: match each query frame to the reference frames its telemetry overlaps (once; each query keypoint
keeps its match in the nearest reference frame, each reference keypoint one match, so that residuals are
independent); a 2-point RANSAC (Kabsch on two bearing pairs, MSAC scoring) on the mount-frame bearings; when
the frames carry their images, up to ``refine_max_matches`` inliers per query frame re-found in the reference
by photometric alignment (:mod:`geometry.refine`, which removes the detector's position bias); robust
non-linear least squares (scipy ``least_squares``) on the reprojection error in the (undistorted) reference
image, in pixels, over the drift and a keypoint offset common to all keypoints (a detector's sub-pixel bias
or a principal-point error, with a Gaussian prior: it biases the drift wherever query and reference zooms
differ); covariance ``(JᵀJ / σ² + prior)⁻¹`` with σ² from the residuals, propagated to yaw/pitch/roll.
An estimate that the data cannot support (too few inliers, inliers bunched in a small part of the image,
σ too large, no overlapping reference) is returned with ``success=False``, NaN angles and the reason —
never as a number. Each query frame is estimated alone, and all of them jointly (one drift).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import cv2
import numpy as np
from scipy.optimize import least_squares

from geometry.camera import Intrinsics
from geometry.features import Features
from geometry.matching import Matcher, select_reference_frames
from geometry.refine import RefineConfig, refine_matches
from geometry.rotations import R_BC, drift_angles, rotvec_to_matrix


@dataclass(frozen=True)
class FrameObservation:
    """One frame: its features (pixels in the original image), PTZ telemetry (degrees, zoom 0..1) and the
    intrinsics at that zoom and at the image's size.

    ``image``: the grey image (H, W) float32 (:func:`geometry.refine.grey`). When a query frame and its
    reference frames all have one, the matches are refined photometrically (:mod:`geometry.refine`).
    """

    features: Features
    pan_deg: float
    tilt_deg: float
    zoom: float
    intrinsics: Intrinsics
    name: str = ""
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.pan_deg) and np.isfinite(self.tilt_deg)):
            raise ValueError(f"frame {self.name!r}: pan and tilt must be finite")
        if not 0.0 <= self.zoom <= 1.0:
            raise ValueError(
                f"frame {self.name!r}: zoom must lie in 0..1 (ONVIF normalised), got {self.zoom}"
            )
        w, h = self.intrinsics.image_size
        if w <= 0 or h <= 0:
            raise ValueError(f"frame {self.name!r}: intrinsics need the image size (width, height)")
        if self.image is not None and (self.image.ndim != 2 or self.image.shape[::-1] != (w, h)):
            raise ValueError(
                f"frame {self.name!r}: image must be grey (H, W) = {(h, w)}, got {self.image.shape}"
            )
        if tuple(self.features.image_size) != (w, h):
            raise ValueError(
                f"frame {self.name!r}: features were extracted on a {tuple(self.features.image_size)} image "
                f"but the intrinsics are for {(w, h)} (scale them with Intrinsics.scaled)"
            )

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view (degrees) of the undistorted pinhole model."""
        return float(np.degrees(2.0 * np.arctan2(self.intrinsics.image_size[0] / 2.0, self.intrinsics.fx)))


_LOSSES = ("linear", "huber", "soft_l1", "cauchy", "arctan")
"""The robust losses of scipy's ``least_squares``."""


@dataclass(frozen=True)
class OffsetConfig:
    """Thresholds and solver settings of :func:`estimate_offsets` (pixels are reference-image pixels)."""

    ransac_threshold_px: float = 2.0
    """Inlier threshold on the reprojection error in the reference image (pixels)."""
    ransac_max_iterations: int = 2000
    ransac_confidence: float = 0.9999
    ransac_batch: int = 64
    """Minimal samples scored per vectorised batch."""
    max_reference_frames: int = 1
    """Reference frames matched per query frame (those its telemetry overlaps most). Measured on an 8 x 2
    scan (bench/offsets.py): a second one leaves the joint error unchanged and doubles the matching time."""
    loss: str = "huber"
    """scipy ``least_squares`` robust loss of the refinement."""
    loss_scale_px: float = 1.0
    """Scale of the robust loss (pixels): residuals beyond it are down-weighted."""
    min_inliers: int = 30
    min_hull_fraction: float = 0.05
    """Smallest convex-hull area of the inliers, as a fraction of the query image (summed over frames)."""
    max_sigma_deg: float = 0.02
    """Largest standard deviation (degrees) of yaw, pitch or roll that is still reported."""
    keypoint_offset_sigma_px: float = 0.5
    """Prior σ (pixels) of an offset common to all keypoints (a detector's bias; OpenCV's SIFT has 0.25 px).
    It biases the drift where query and reference zooms differ, so it is estimated with the drift and its
    uncertainty enters σ. It is kept after photometric refinement, where it absorbs a principal-point error of
    the calibration instead (demo fleet, chessboard K: roll error 0.006 -> 0.002°). 0 assumes unbiased
    keypoints and an exact K."""
    refine: RefineConfig | None = field(default_factory=RefineConfig)
    """Photometric refinement of the matches when the frames carry images (None: keypoints as detected)."""
    refine_max_matches: int = 200
    """Inliers refined per query frame (an even random subset when there are more; the others are dropped:
    a few hundred refined matches constrain a frame better than thousands of detected ones)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ransac_threshold_px <= 0 or self.loss_scale_px <= 0 or self.max_sigma_deg <= 0:
            raise ValueError("ransac_threshold_px, loss_scale_px and max_sigma_deg must be positive")
        if self.ransac_max_iterations < 1 or self.ransac_batch < 1 or self.max_reference_frames < 1:
            raise ValueError("ransac_max_iterations, ransac_batch and max_reference_frames must be >= 1")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if not 0.0 < self.ransac_confidence < 1.0:
            raise ValueError("ransac_confidence must lie strictly between 0 and 1")
        if self.refine_max_matches < self.min_inliers:
            raise ValueError("refine_max_matches must be at least min_inliers")
        if self.min_inliers < 3 or self.min_hull_fraction < 0 or self.keypoint_offset_sigma_px < 0:
            raise ValueError("min_inliers must be >= 3, min_hull_fraction and keypoint_offset_sigma_px >= 0")


@dataclass(frozen=True)
class DriftEstimate:
    """Mount drift ``D = Rz(-yaw) Rx(pitch) Ry(roll)`` (degrees) with 1-σ uncertainties (degrees).

    On failure ``success`` is False, ``reason`` says why and the angles, σ and ``D`` are NaN.
    """

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    sigma_yaw_deg: float
    sigma_pitch_deg: float
    sigma_roll_deg: float
    inliers: int
    n_matches: int
    n_query_frames: int
    success: bool
    reason: str = ""
    D: np.ndarray = field(default_factory=lambda: np.full((3, 3), np.nan))

    @classmethod
    def failure(cls, reason: str, n_matches: int, n_query_frames: int, inliers: int = 0) -> DriftEstimate:
        nan = float("nan")
        return cls(nan, nan, nan, nan, nan, nan, inliers, n_matches, n_query_frames, False, reason)


@dataclass(frozen=True)
class OffsetReport:
    """One estimate per query frame (that frame alone, keyed by its name) and the joint estimate."""

    per_frame: list[tuple[str, DriftEstimate]]
    joint: DriftEstimate


@dataclass(frozen=True)
class BearingMatches:
    """Matched bearings pooled over (query, reference) frame pairs: N matches from Q query frames.

    ``m_query`` (N, 3): unit query bearings in the mount frame at the query's telemetry, ``R_BC(q) · b_q``.
    ``query_offset_dirs`` (N, 3, 2): change of ``m_query`` (up to its length, which projection ignores) per
    pixel of keypoint offset in the query image, ``R_BC(q)[:, :2] · K_q[:2, :2]⁻¹ / ‖(x, y, 1)‖``.
    ``b_reference`` (N, 3): unit reference bearings in the reference camera frame (undistorted).
    ``R_CB_reference`` (N, 3, 3): ``R_BC(r)ᵀ`` of each match's reference frame.
    ``focal_reference`` (N, 2, 2): the reference frame's ``K[:2, :2]`` (pixels) for reprojection errors.
    ``query_index`` (N,), ``query_pixels`` (N, 2): which query frame and where in it (pixels).
    ``reference_index`` (N,): which reference frame (index into the references).
    ``keypoint_ids`` (N, 2): ids of the query and of the reference keypoint, unique over all frames.
    ``query_image_sizes``: (width, height) of each of the Q query frames.
    """

    m_query: np.ndarray
    query_offset_dirs: np.ndarray
    b_reference: np.ndarray
    R_CB_reference: np.ndarray
    focal_reference: np.ndarray
    query_index: np.ndarray
    query_pixels: np.ndarray
    reference_index: np.ndarray
    keypoint_ids: np.ndarray
    query_image_sizes: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.m_query)

    @property
    def m_reference(self) -> np.ndarray:
        """Unit reference bearings in the mount frame (N, 3)."""
        return np.einsum("nji,nj->ni", self.R_CB_reference, self.b_reference)

    def first_per_keypoint(self, column: int) -> BearingMatches:
        """The first match of every query (``column`` 0) or reference (1) keypoint: a keypoint in several
        matches would make correlated residuals, which the covariance assumes independent."""
        return self.subset(np.sort(np.unique(self.keypoint_ids[:, column], return_index=True)[1]))

    def subset(self, mask: np.ndarray) -> BearingMatches:
        """The matches selected by a boolean mask or index array (same query frames)."""
        return replace(self, **{name: getattr(self, name)[mask] for name in _ARRAY_FIELDS})

    @classmethod
    def concatenate(cls, parts: Sequence[BearingMatches]) -> BearingMatches:
        """Pool the matches of several frame pairs (of the same query frames)."""
        if not parts:
            raise ValueError("concatenate needs at least one BearingMatches")
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAY_FIELDS}
        return cls(**arrays, query_image_sizes=parts[0].query_image_sizes)


_ARRAY_FIELDS = tuple(f.name for f in fields(BearingMatches) if f.name != "query_image_sizes")


def kabsch_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R minimising Σ‖dst_k − R·src_k‖² (Kabsch). ``src``, ``dst``: (..., k, 3) unit bearings with
    k ≥ 2 non-parallel; returns (..., 3, 3). With k = 2 this is the minimal 2-point rotation solver."""
    src, dst = np.asarray(src, dtype=float), np.asarray(dst, dtype=float)
    if src.shape != dst.shape or src.shape[-1] != 3 or src.ndim < 2 or src.shape[-2] < 2:
        raise ValueError(
            f"kabsch_rotation needs matching (..., k>=2, 3) arrays, got {src.shape} and {dst.shape}"
        )
    U, _, Vt = np.linalg.svd(np.einsum("...ki,...kj->...ij", dst, src))
    U[..., :, 2] *= np.where(np.linalg.det(U @ Vt) < 0, -1.0, 1.0)[..., None]
    return U @ Vt


def reprojection_errors(
    matches: BearingMatches, D: np.ndarray, offset_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (N, 2) in the undistorted reference image (pixels) of drift ``D`` and their Jacobian
    (N, 2, 3) with respect to a left perturbation ``D ← exp([ω]×)·D`` (ω in radians). With
    ``offset_jacobian`` the Jacobian is (N, 2, 5), its last two columns with respect to an offset (pixels)
    added to every query and reference keypoint (a detector's bias)."""
    R = matches.R_CB_reference
    p = np.einsum("nij,nj->ni", R, matches.m_query @ D.T)
    z = np.maximum(p[:, 2:3], 1e-12)
    xy = p[:, :2] / z
    K = matches.focal_reference
    residuals = np.einsum("nij,nj->ni", K, xy - matches.b_reference[:, :2] / matches.b_reference[:, 2:3])
    # g: gradient of xy = p[:2] / p[2] with respect to p; d(xy_k)/dω = R_CBᵀ (p × g_k)
    g = np.zeros((len(p), 2, 3))
    g[:, 0, 0] = g[:, 1, 1] = 1.0 / z[:, 0]
    g[:, :, 2] = -xy / z
    d_xy = [np.stack([np.einsum("nji,nj->ni", R, np.cross(p, g[:, k])) for k in (0, 1)], axis=1)]
    if offset_jacobian:
        d_xy.append(g @ np.einsum("nij,njk->nik", R, D @ matches.query_offset_dirs))
    J = K @ np.concatenate(d_xy, axis=2)
    if offset_jacobian:
        J[:, :, 3:] -= np.eye(2)  # the reference keypoint moves by the offset itself
    return residuals, J


def _hull_fraction(matches: BearingMatches) -> float:
    """Convex-hull area of the matches in each query image as a fraction of that image, summed over frames."""
    total = 0.0
    for q in np.unique(matches.query_index):
        pts = matches.query_pixels[matches.query_index == q].astype(np.float32)
        if len(pts) >= 3:
            w, h = matches.query_image_sizes[q]
            total += cv2.contourArea(cv2.convexHull(pts)) / float(w * h)
    return total


def _ransac(
    matches: BearingMatches, config: OffsetConfig, hypotheses: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray | None:
    """Best drift hypothesis (MSAC) of 2-point Kabsch samples on mount-frame bearings and ``hypotheses``."""
    m_q, m_r = matches.m_query, matches.m_reference
    n = len(m_q)
    # chord² between D·m_q and m_r is 2 − 2 m_rᵀ D m_q = 2 − 2 <m_r m_qᵀ, D>_F: one matrix product per batch.
    outer = np.einsum("ni,nj->nij", m_r, m_q).reshape(n, 9)
    thr_rad = config.ransac_threshold_px / matches.focal_reference[:, 0, 0]
    thr2 = thr_rad**2
    min_cos_sep = np.cos(10.0 * thr_rad.max())

    def score(Rs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chord2 = 2.0 - 2.0 * (outer @ Rs.reshape(-1, 9).T)
        return np.minimum(chord2 / thr2[:, None], 1.0).sum(axis=0), (chord2 < thr2[:, None]).sum(axis=0)

    best_R, best_cost, best_inliers = None, np.inf, 0
    if hypotheses:
        costs, counts = score(np.stack(hypotheses))
        k = int(np.argmin(costs))
        best_R, best_cost, best_inliers = hypotheses[k], costs[k], int(counts[k])
    needed, done = config.ransac_max_iterations, 0
    while done < needed:
        idx = rng.integers(0, n, size=(config.ransac_batch, 2))
        a, c = m_q[idx], m_r[idx]
        cos_a = np.einsum("bi,bi->b", a[:, 0], a[:, 1])
        cos_c = np.einsum("bi,bi->b", c[:, 0], c[:, 1])
        # a rotation keeps angles: drop pairs too close together or whose angle changed beyond the threshold
        ok = (cos_a < min_cos_sep) & (np.abs(cos_a - cos_c) < 2.0 * thr_rad[idx].max(axis=1))
        done += config.ransac_batch
        if not np.any(ok):
            continue
        Rs = kabsch_rotation(a[ok], c[ok])
        costs, counts = score(Rs)
        k = int(np.argmin(costs))
        if costs[k] < best_cost:
            best_R, best_cost, best_inliers = Rs[k], costs[k], int(counts[k])
        w = best_inliers / n
        if w >= 1.0:
            break
        if w > 0:
            needed = min(needed, int(np.ceil(np.log(1 - config.ransac_confidence) / np.log(1 - w * w))))
    return best_R


def _offset_corrected(
    matches: BearingMatches, D: np.ndarray, offset: np.ndarray, offset_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reprojection_errors` with the keypoint offset ``offset`` (pixels, a detector's bias common to
    all keypoints) removed to first order; the Jacobian (N, 2, 5) then has the offset's columns."""
    if not offset_jacobian and not np.any(offset):
        return reprojection_errors(matches, D)
    r, J = reprojection_errors(matches, D, offset_jacobian=True)
    r = r - J[:, :, 3:] @ offset
    J[:, :, 3:] *= -1.0
    return r, (J if offset_jacobian else J[:, :, :3])


def _inliers(
    matches: BearingMatches, D: np.ndarray, config: OffsetConfig, offset: np.ndarray | None = None
) -> np.ndarray:
    """Mask of the matches whose reprojection error (with the keypoint ``offset``, pixels) under drift ``D``
    is below ``config.ransac_threshold_px``."""
    r = _offset_corrected(matches, D, np.zeros(2) if offset is None else offset)[0]
    return np.sum(r**2, axis=1) < config.ransac_threshold_px**2


def _refine(
    matches: BearingMatches, D0: np.ndarray, offset0: np.ndarray, config: OffsetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Robust least squares (scipy ``least_squares``, trust region) of the reprojection errors of ``matches``
    over the drift and, with a Gaussian prior of ``config.keypoint_offset_sigma_px``, a keypoint offset
    common to all keypoints (pixels). Returns the refined drift matrix and offset."""
    sigma_c = config.keypoint_offset_sigma_px
    n_par = 5 if sigma_c > 0 else 3
    r0 = _offset_corrected(matches, D0, offset0)[0]
    prior_weight = max(1.4826 * float(np.median(np.abs(r0))), 1e-3) / max(sigma_c, 1e-12)
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            D = rotvec_to_matrix(theta[:3]) @ D0
            offset = theta[3:] if n_par == 5 else offset0
            r, J = _offset_corrected(matches, D, offset, offset_jacobian=n_par == 5)
            r, J = r.ravel(), J.reshape(-1, n_par)
            if n_par == 5:  # prior residuals offset / σ_c, in units of the residuals' robust scale
                r = np.concatenate([r, prior_weight * theta[3:]])
                J = np.vstack([J, np.hstack([np.zeros((2, 3)), prior_weight * np.eye(2)])])
            cache[key] = r, J
        return cache[key]

    x0 = np.concatenate([np.zeros(3), offset0])[:n_par]
    result = least_squares(
        lambda theta: evaluate(theta)[0],
        x0,
        jac=lambda theta: evaluate(theta)[1],
        method="trf",
        loss=config.loss,
        f_scale=config.loss_scale_px,
    )
    offset = result.x[3:] if n_par == 5 else offset0
    return rotvec_to_matrix(result.x[:3]) @ D0, offset


def _angle_covariance(
    matches: BearingMatches, D: np.ndarray, offset: np.ndarray, sigma_c: float
) -> np.ndarray:
    """Covariance (deg²) of (yaw, pitch, roll): the inverse of the information ``JᵀJ / σ²`` (σ² from the
    residuals of ``matches``) of drift and keypoint offset, the offset with its Gaussian prior ``sigma_c``
    (pixels; none when 0), propagated to the angles."""
    r, J = _offset_corrected(matches, D, offset, offset_jacobian=True)
    n_par = 5 if sigma_c > 0 else 3
    J = J[:, :, :n_par].reshape(-1, n_par)
    sigma2 = float(np.sum(r**2)) / (r.size - n_par)
    info = J.T @ J / sigma2
    info[3:, 3:] += np.eye(n_par - 3) / max(sigma_c, 1e-12) ** 2
    try:
        cov_w = np.linalg.inv(info)[:3, :3]
    except np.linalg.LinAlgError:
        return np.full((3, 3), np.inf)
    h = 1e-6
    G = np.empty((3, 3))
    for k in range(3):
        dw = np.zeros(3)
        dw[k] = h
        plus = np.array(drift_angles(rotvec_to_matrix(dw) @ D))
        minus = np.array(drift_angles(rotvec_to_matrix(-dw) @ D))
        G[:, k] = (plus - minus) / (2 * h)
    return G @ cov_w @ G.T


def solve_drift(
    matches: BearingMatches,
    config: OffsetConfig | None = None,
    hypotheses: Sequence[np.ndarray] = (),
    n_query_frames: int | None = None,
) -> DriftEstimate:
    """Drift D from pooled bearing matches: 2-point RANSAC, robust refinement, covariance and the checks of
    ``config``. ``hypotheses`` are extra candidate D (e.g. per-frame results) scored alongside the samples."""
    config = config or OffsetConfig()
    n = len(matches)
    nq = len(np.unique(matches.query_index)) if n_query_frames is None else n_query_frames
    if n < config.min_inliers:
        return DriftEstimate.failure(
            f"too few matches ({n} < {config.min_inliers}): textureless view, scene changed or wrong camera",
            n,
            nq,
        )
    rng = np.random.default_rng(config.seed)
    D = _ransac(matches, config, hypotheses, rng)
    if D is None:
        return DriftEstimate.failure("no valid 2-point sample (all matched bearings nearly coincide)", n, nq)
    offset = np.zeros(2)
    inliers = _inliers(matches, D, config)
    for _ in range(2):  # refine on the inliers; once more if that changes more than 1 % of the inlier set
        if inliers.sum() < config.min_inliers:
            break
        D, offset = _refine(matches.subset(inliers), D, offset, config)
        previous = inliers
        inliers = _inliers(matches, D, config, offset)
        if np.count_nonzero(inliers != previous) <= 0.01 * previous.sum():
            break
    n_in = int(inliers.sum())
    if n_in < config.min_inliers:
        return DriftEstimate.failure(
            f"too few inliers ({n_in} < {config.min_inliers} of {n} matches): textureless view, scene "
            "changed or wrong camera",
            n,
            nq,
            n_in,
        )
    kept = matches.subset(inliers)
    spread = _hull_fraction(kept)
    if spread < config.min_hull_fraction:
        return DriftEstimate.failure(
            f"inliers cover too little of the image (convex hull {spread:.3f} < {config.min_hull_fraction} "
            "of the frame): drift poorly constrained",
            n,
            nq,
            n_in,
        )
    sigma = np.sqrt(np.diag(_angle_covariance(kept, D, offset, config.keypoint_offset_sigma_px)))
    if not np.all(sigma <= config.max_sigma_deg):
        return DriftEstimate.failure(
            "uncertainty too large (σ yaw/pitch/roll = "
            + "/".join(f"{s:.4f}" for s in sigma)
            + f"° > {config.max_sigma_deg}°)",
            n,
            nq,
            n_in,
        )
    yaw, pitch, roll = drift_angles(D)
    return DriftEstimate(yaw, pitch, roll, *map(float, sigma), n_in, n, nq, True, "", D)


def _mount_bearings(frame: FrameObservation) -> tuple[np.ndarray, np.ndarray]:
    """Unit mount-frame bearings (N, 3) of a frame's keypoints at its telemetry and their derivative with
    respect to the keypoint (N, 3, 2; per pixel, up to the bearing's length)."""
    xy = frame.intrinsics.undistort_pixels(frame.features.keypoints)
    h = np.hstack([xy, np.ones((len(xy), 1))])
    length = np.linalg.norm(h, axis=1)
    R = R_BC(frame.pan_deg, frame.tilt_deg)
    dirs = (R[:, :2] @ np.linalg.inv(frame.intrinsics.K[:2, :2]))[None] / length[:, None, None]
    return (h / length[:, None]) @ R.T, dirs


def _pair_matches(
    query_index: int,
    reference_index: int,
    query: FrameObservation,
    query_bearings: tuple[np.ndarray, np.ndarray],
    reference: FrameObservation,
    b_reference: np.ndarray,
    pairs: np.ndarray,
    keypoint_ids: np.ndarray,
    sizes: tuple[tuple[int, int], ...],
) -> BearingMatches:
    """Bearing matches of one (query, reference) pair from index pairs [query_idx, reference_idx]; their
    keypoint ids are ``pairs + keypoint_ids`` (the two frames' first ids)."""
    n = len(pairs)
    m_query, dirs = query_bearings
    return BearingMatches(
        m_query[pairs[:, 0]],
        dirs[pairs[:, 0]],
        b_reference[pairs[:, 1]],
        np.broadcast_to(R_BC(reference.pan_deg, reference.tilt_deg).T, (n, 3, 3)),
        np.broadcast_to(reference.intrinsics.K[:2, :2], (n, 2, 2)),
        np.full(n, query_index),
        query.features.keypoints[pairs[:, 0]].astype(float),
        np.full(n, reference_index),
        pairs + keypoint_ids,
        sizes,
    )


def estimate_offsets(
    queries: list[FrameObservation],
    references: list[FrameObservation],
    matcher: Matcher,
    config: OffsetConfig | None = None,
) -> OffsetReport:
    """Mount drift of one camera-hour: each query frame is matched (once) to the reference frames its
    telemetry overlaps; the report holds one estimate per query frame (that frame alone) and the joint
    estimate of the single drift shared by all of them. Angles and σ in degrees; failures carry a reason."""
    if not queries:
        raise ValueError("estimate_offsets needs at least one query frame")
    if not references:
        raise ValueError("estimate_offsets needs at least one reference frame")
    config = config or OffsetConfig()
    sizes = tuple(q.intrinsics.image_size for q in queries)
    reference_pan_tilts = np.array([[r.pan_deg, r.tilt_deg] for r in references])
    reference_hfovs = np.array([r.hfov_deg for r in references])
    reference_bearings: dict[int, np.ndarray] = {}
    first_ids = np.cumsum([0] + [len(f.features) for f in [*queries, *references]])

    per_query: list[BearingMatches] = []
    per_frame: list[tuple[str, DriftEstimate]] = []
    for qi, query in enumerate(queries):
        ref_ids = select_reference_frames(
            (query.pan_deg, query.tilt_deg),
            query.hfov_deg,
            reference_pan_tilts,
            reference_hfovs,
            max_frames=config.max_reference_frames,
        )
        name = query.name or f"query_{qi}"
        if not ref_ids:
            reason = (
                f"no reference frame overlaps the query's telemetry (pan {query.pan_deg:.1f}°, tilt "
                f"{query.tilt_deg:.1f}°, hfov {query.hfov_deg:.1f}°)"
            )
            per_frame.append((name, DriftEstimate.failure(reason, 0, 1)))
            continue
        query_bearings = _mount_bearings(query)
        parts = []
        for ri in ref_ids:
            reference = references[ri]
            if ri not in reference_bearings:
                reference_bearings[ri] = reference.intrinsics.unproject(reference.features.keypoints)
            pairs = np.asarray(matcher.match(query.features, reference.features)[0], dtype=int).reshape(-1, 2)
            parts.append(
                _pair_matches(
                    qi,
                    ri,
                    query,
                    query_bearings,
                    reference,
                    reference_bearings[ri],
                    pairs,
                    first_ids[[qi, len(queries) + ri]],
                    sizes,
                )
            )
        matches = BearingMatches.concatenate(parts).first_per_keypoint(0)  # nearest reference first
        D0 = (
            _initial_drift(matches, config)
            if _can_refine(query, [references[i] for i in ref_ids], config)
            else None
        )
        estimate = None
        if D0 is not None:
            refined = _photometrically_refined(matches, D0, query, references, config)
            estimate = solve_drift(refined, config, [D0], n_query_frames=1)
        if estimate is not None and estimate.success:
            matches = refined
        else:  # no refinement possible, or too little of it converged: the matches as detected
            estimate = solve_drift(matches, config, n_query_frames=1)
        per_query.append(matches)
        per_frame.append((name, estimate))

    if not per_query:
        reason = "no reference frame overlaps any query frame's telemetry"
        return OffsetReport(per_frame, DriftEstimate.failure(reason, 0, len(queries)))
    hypotheses = [e.D for _, e in per_frame if e.success]
    pooled = BearingMatches.concatenate(per_query).first_per_keypoint(1)
    return OffsetReport(per_frame, solve_drift(pooled, config, hypotheses, n_query_frames=len(queries)))


def _initial_drift(matches: BearingMatches, config: OffsetConfig) -> np.ndarray | None:
    """A first drift for the photometric refinement: the RANSAC hypothesis re-fitted (Kabsch, bearings) to
    its inliers; None with fewer than ``min_inliers`` of them (then :func:`solve_drift` says why)."""
    if len(matches) < config.min_inliers:
        return None
    D = _ransac(matches, config, [], np.random.default_rng(config.seed))
    if D is None:
        return None
    inliers = _inliers(matches, D, config)
    if inliers.sum() < config.min_inliers:
        return None
    return kabsch_rotation(matches.m_query[inliers], matches.m_reference[inliers])


def _can_refine(query: FrameObservation, references: list[FrameObservation], config: OffsetConfig) -> bool:
    return config.refine is not None and all(f.image is not None for f in [query, *references])


def _photometrically_refined(
    matches: BearingMatches,
    D: np.ndarray,
    query: FrameObservation,
    references: list[FrameObservation],
    config: OffsetConfig,
) -> BearingMatches:
    """The inliers of drift ``D`` among one query frame's ``matches`` (at most ``refine_max_matches`` of
    them) with their reference positions refined photometrically (:func:`geometry.refine.refine_matches`);
    matches whose refinement fails are dropped. The query keypoints stay as detected: they only say where
    the query is sampled, so the query detector's bias no longer matters."""
    inliers = np.flatnonzero(_inliers(matches, D, config))
    if len(inliers) > config.refine_max_matches:
        rng = np.random.default_rng(config.seed)
        inliers = np.sort(rng.choice(inliers, config.refine_max_matches, replace=False))
    matches = matches.subset(inliers)
    b_reference = matches.b_reference.copy()
    keep = np.zeros(len(matches), dtype=bool)
    R_q = R_BC(query.pan_deg, query.tilt_deg)
    for ri in np.unique(matches.reference_index):
        reference = references[ri]
        sel = np.flatnonzero(matches.reference_index == ri)
        R_rq = R_BC(reference.pan_deg, reference.tilt_deg).T @ D @ R_q  # query camera -> reference camera
        q_int, r_int = query.intrinsics, reference.intrinsics
        pixels = matches.query_pixels[sel]
        refined, ok = refine_matches(
            query.image,
            reference.image,
            pixels,
            lambda p, r_int=r_int, q_int=q_int, R_rq=R_rq: q_int.project(r_int.unproject(p) @ R_rq),
            r_int.project(q_int.unproject(pixels) @ R_rq.T),
            config.refine,
        )
        b_reference[sel] = r_int.unproject(refined)
        keep[sel] = ok
    return replace(matches, b_reference=b_reference).subset(keep)
