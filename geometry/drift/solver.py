"""The drift solver on pooled bearing matches: 2-point RANSAC, robust least squares, covariance -> σ.

Every match votes for the drift ``D`` itself: in the mount frame ``m_r = D · m_q`` (see
:mod:`geometry.drift`). A 2-point RANSAC (Kabsch on two bearing pairs, MSAC scoring) finds a first ``D``;
robust non-linear least squares (scipy ``least_squares``) on the reprojection error in the (undistorted)
reference image, in pixels, refines the drift together with the keypoint bias — a 2-D shift (pixels)
common to all keypoints (a detector's sub-pixel bias, or a principal-point error of the calibration) with a
Gaussian prior: it biases the drift wherever query and reference zooms differ. The covariance
``(JᵀJ / σ² + prior)⁻¹`` with σ² from the residuals is propagated to yaw/pitch/roll (degrees). An estimate
that the data cannot support (too few inliers, inliers bunched in a small part of the image, σ too large)
is returned with ``success=False``, NaN angles and the reason — never as a number.

With an optical centre offset from the pan/tilt axes (:mod:`geometry.drift.parallax`) views are not pure
rotations: a match's reference point lies on an epipolar line, at an unknown depth. Each depth is
marginalised (:func:`whitening`: the residual across the line is kept, the one along it down-weighted by the
depth's prior, which the reference scan may have measured); the offset's uncertainty enters σ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares

from geometry.drift.types import BearingMatches, DriftConfig, DriftEstimate, OpticalCentreOffset
from geometry.rotations import drift_angles, rotvec_to_matrix


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
    matches: BearingMatches, D: np.ndarray, bias_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (N, 2) in the undistorted reference image (pixels) of drift ``D`` and their Jacobian
    (N, 2, 3) with respect to a left perturbation ``D ← exp([ω]×)·D`` (ω in radians, mount frame). With
    ``bias_jacobian`` the Jacobian is (N, 2, 5), its last two columns with respect to a keypoint bias
    (pixels) added to every query and reference keypoint."""
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
    if bias_jacobian:
        d_xy.append(g @ np.einsum("nij,njk->nik", R, D @ matches.query_bias_dirs))
    J = K @ np.concatenate(d_xy, axis=2)
    if bias_jacobian:
        J[:, :, 3:] -= np.eye(2)  # the reference keypoint moves by the bias itself
    return residuals, J


def line_directions(matches: BearingMatches, D: np.ndarray, offset_m: np.ndarray) -> np.ndarray:
    """Motion (N, 2) of each match's predicted reference point (undistorted reference pixels) per unit inverse
    depth (1/m) of its scene point along the query bearing: the direction and scale of its epipolar line.

    The optical centres sit at ``R_BC · offset_m`` from the rotation centre (``offset_m``: camera frame,
    metres), the query's turned by the drift ``D`` about the rotation centre; a point at inverse depth ρ
    projects at ``R_CB_r (D m_q + ρ (c_q − c_r))`` in the reference camera, a straight line in ρ."""
    R = matches.R_CB_reference
    p = np.einsum("nij,nj->ni", R, matches.m_query @ D.T)
    baseline = matches.R_BC_query @ offset_m @ D.T - np.einsum("nji,j->ni", R, offset_m)
    t = np.einsum("nij,nj->ni", R, baseline)
    z = p[:, 2:3]
    e = (t[:, :2] - p[:, :2] / z * t[:, 2:3]) / z
    return np.einsum("nij,nj->ni", matches.focal_reference, e)


@dataclass(frozen=True)
class Whitening:
    """Each match's residual with its unknown depth marginalised: its predicted reference point moves along
    its epipolar line by ρ·d pixels (``line`` d (N, 2), :func:`line_directions`) for an inverse depth ρ with
    a Gaussian prior (``prior_mean`` and ``prior_sigma`` (N,), 1/m). The residual plus the prior's parallax
    ``ρ̄·d`` has covariance ``σ_n² I + σ_ρ² d dᵀ``; whitening keeps its component across the line and scales
    the one along it by ``1/√(1 + (σ_ρ |d| / σ_n)²)``. ``noise_px``: σ_n (pixels), the robust scale of the
    across-line residuals."""

    line: np.ndarray
    prior_mean: np.ndarray
    prior_sigma: np.ndarray
    noise_px: float

    def _direction_and_shrink(self) -> tuple[np.ndarray, np.ndarray]:
        norm = np.linalg.norm(self.line, axis=1)
        shrink = 1.0 - 1.0 / np.sqrt(1.0 + (self.prior_sigma * norm / self.noise_px) ** 2)
        return self.line / np.maximum(norm, 1e-300)[:, None], shrink

    def apply(self, r: np.ndarray, J: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Whitened residuals (N, 2) (pixels) and Jacobian (N, 2, k) (None stays None)."""
        direction, shrink = self._direction_and_shrink()
        along = shrink[:, None] * direction
        r = r + self.prior_mean[:, None] * self.line
        r = r - along * np.einsum("ni,ni->n", direction, r)[:, None]
        if J is not None:
            J = J - along[:, :, None] * np.einsum("ni,nik->nk", direction, J)[:, None, :]
        return r, J

    def inverse_depths(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and σ (N,) of the inverse depths (1/m) given the (not whitened) residuals (N, 2)."""
        information = (
            1.0 / self.prior_sigma**2 + np.einsum("ni,ni->n", self.line, self.line) / self.noise_px**2
        )
        mean = self.prior_mean - np.einsum(
            "ni,ni->n", self.line, r + self.prior_mean[:, None] * self.line
        ) / (self.noise_px**2 * information)
        return mean, 1.0 / np.sqrt(information)

    def subset(self, mask: np.ndarray) -> Whitening:
        return Whitening(self.line[mask], self.prior_mean[mask], self.prior_sigma[mask], self.noise_px)


def whitening(
    matches: BearingMatches,
    D: np.ndarray,
    bias: np.ndarray,
    offset_m: np.ndarray | None,
    config: DriftConfig,
    noise_px: float | None = None,
) -> Whitening | None:
    """The depth marginalisation of ``matches`` under drift ``D``, keypoint ``bias`` (pixels) and optical
    centre offset ``offset_m`` (camera frame, metres); None without an offset (pure rotations). The depth
    priors are the matches' (:attr:`BearingMatches.inverse_depth_prior`), else ``N(0, σ_ρ²)`` with σ_ρ =
    ``config.inverse_depth_sigma_per_m``. ``noise_px``: σ_n, by default the robust scale of the across-line
    residuals."""
    if offset_m is None or not np.any(offset_m):
        return None
    d = line_directions(matches, D, offset_m)
    known = np.isfinite(matches.inverse_depth_prior[:, 0])
    mean = np.where(known, matches.inverse_depth_prior[:, 0], 0.0)
    sigma = np.where(known, matches.inverse_depth_prior[:, 1], config.inverse_depth_sigma_per_m)
    if noise_px is None:
        r = _bias_corrected(matches, D, bias)[0]
        across = np.abs(d[:, 0] * r[:, 1] - d[:, 1] * r[:, 0]) / np.maximum(np.linalg.norm(d, axis=1), 1e-300)
        noise_px = max(1.4826 * float(np.median(across)) if len(across) else 0.0, 1e-3)
    return Whitening(d, mean, sigma, noise_px)


def _hull_fraction(matches: BearingMatches) -> float:
    """Convex-hull area of the matches in each query image as a fraction of that image, summed over frames."""
    total = 0.0
    for q in np.unique(matches.query_index):
        pts = matches.query_pixels[matches.query_index == q].astype(np.float32)
        if len(pts) >= 3:
            w, h = matches.query_image_sizes[q]
            total += cv2.contourArea(cv2.convexHull(pts)) / float(w * h)
    return total


def ransac_drift(
    matches: BearingMatches, config: DriftConfig, hypotheses: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray | None:
    """Best drift hypothesis (MSAC, threshold ``config.ransac_threshold_px`` in reference pixels) of 2-point
    Kabsch samples on mount-frame bearings and of ``hypotheses`` (3 x 3 drift matrices); None when no
    sample is valid."""
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


def _bias_corrected(
    matches: BearingMatches, D: np.ndarray, bias: np.ndarray, bias_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reprojection_errors` (pixels) with the keypoint bias ``bias`` (pixels, common to all
    keypoints) removed to first order; with ``bias_jacobian`` the Jacobian (N, 2, 5) has the bias's
    columns."""
    if not bias_jacobian and not np.any(bias):
        return reprojection_errors(matches, D)
    r, J = reprojection_errors(matches, D, bias_jacobian=True)
    r = r - J[:, :, 3:] @ bias
    J[:, :, 3:] *= -1.0
    return r, (J if bias_jacobian else J[:, :, :3])


def _residuals(
    matches: BearingMatches,
    D: np.ndarray,
    bias: np.ndarray,
    weights: Whitening | None,
    bias_jacobian: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_bias_corrected` residuals and Jacobian, whitened by the depth marginalisation ``weights``."""
    r, J = _bias_corrected(matches, D, bias, bias_jacobian)
    return (r, J) if weights is None else weights.apply(r, J)


def inlier_mask(
    matches: BearingMatches,
    D: np.ndarray,
    config: DriftConfig,
    bias: np.ndarray | None = None,
    offset_m: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of the matches whose reprojection error (reference pixels; with the keypoint ``bias``, pixels,
    and the optical centre ``offset_m``, metres: the error across the epipolar line, along it down-weighted)
    under drift ``D`` is below ``config.ransac_threshold_px``."""
    bias = np.zeros(2) if bias is None else bias
    r = _residuals(matches, D, bias, whitening(matches, D, bias, offset_m, config))[0]
    return np.sum(r**2, axis=1) < config.ransac_threshold_px**2


def refine_drift(
    matches: BearingMatches,
    D0: np.ndarray,
    bias0: np.ndarray,
    config: DriftConfig,
    offset_m: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust least squares (scipy ``least_squares``, trust region) of the reprojection errors (reference
    pixels) of ``matches`` over the drift and, with a Gaussian prior of ``config.keypoint_bias_sigma_px``,
    the keypoint bias (pixels); with an optical centre ``offset_m`` (metres) each match's depth is
    marginalised (:func:`whitening`, weights from ``D0``). Returns the refined drift matrix and keypoint
    bias."""
    sigma_c = config.keypoint_bias_sigma_px
    n_par = 5 if sigma_c > 0 else 3
    weights = whitening(matches, D0, bias0, offset_m, config)
    r0 = _residuals(matches, D0, bias0, weights)[0]
    prior_weight = max(1.4826 * float(np.median(np.abs(r0))), 1e-3) / max(sigma_c, 1e-12)
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            D = rotvec_to_matrix(theta[:3]) @ D0
            bias = theta[3:] if n_par == 5 else bias0
            r, J = _residuals(matches, D, bias, weights, bias_jacobian=n_par == 5)
            r, J = r.ravel(), J.reshape(-1, n_par)
            if n_par == 5:  # prior residuals bias / σ_c, in units of the residuals' robust scale
                r = np.concatenate([r, prior_weight * theta[3:]])
                J = np.vstack([J, np.hstack([np.zeros((2, 3)), prior_weight * np.eye(2)])])
            cache[key] = r, J
        return cache[key]

    x0 = np.concatenate([np.zeros(3), bias0])[:n_par]
    result = least_squares(
        lambda theta: evaluate(theta)[0],
        x0,
        jac=lambda theta: evaluate(theta)[1],
        method="trf",
        loss=config.loss,
        f_scale=config.loss_scale_px,
    )
    bias = result.x[3:] if n_par == 5 else bias0
    return rotvec_to_matrix(result.x[:3]) @ D0, bias


def _offset_jacobian(
    matches: BearingMatches, D: np.ndarray, bias: np.ndarray, weights: Whitening, offset_m: np.ndarray, config
) -> np.ndarray:
    """Derivative (2N, 3) of the whitened residuals with respect to the optical centre offset (per metre),
    central differences (the noise scale σ_n held)."""
    h = 1e-3 * config.offset_length_m
    columns = []
    for step in h * np.eye(3):
        plus, minus = (
            _residuals(matches, D, bias, whitening(matches, D, bias, offset_m + s, config, weights.noise_px))[
                0
            ]
            for s in (step, -step)
        )
        columns.append((plus - minus).ravel() / (2 * h))
    return np.stack(columns, axis=1)


def calibration_jacobian(matches: BearingMatches, D: np.ndarray, weights: Whitening | None) -> np.ndarray:
    """Derivative (2N, k) of the whitened residuals with respect to the calibration's parameters, from the
    bearings' derivatives (:attr:`BearingMatches.query_calibration_dirs`, ``reference_calibration_dirs``)."""
    R, K = matches.R_CB_reference, matches.focal_reference

    def projection_gradient(p: np.ndarray) -> np.ndarray:
        g = np.zeros((len(p), 2, 3))
        g[:, 0, 0] = g[:, 1, 1] = 1.0 / p[:, 2]
        g[:, :, 2] = -p[:, :2] / p[:, 2:3] ** 2
        return g

    p = np.einsum("nij,nj->ni", R, matches.m_query @ D.T)
    d_pred = projection_gradient(p) @ np.einsum("nij,njk->nik", R, D @ matches.query_calibration_dirs)
    d_obs = projection_gradient(matches.b_reference) @ matches.reference_calibration_dirs
    J = K @ (d_pred - d_obs)
    if weights is not None:
        J = weights.apply(np.zeros(J.shape[:2]), J)[1]
    return J.reshape(-1, J.shape[2])


def _angle_covariance(
    matches: BearingMatches,
    D: np.ndarray,
    bias: np.ndarray,
    config: DriftConfig,
    offset: OpticalCentreOffset | None,
    calibration_covariance: np.ndarray | None,
) -> np.ndarray:
    """Covariance (deg²) of (yaw, pitch, roll): the inverse of the information ``JᵀJ / σ²`` (σ² from the
    (whitened) residuals of ``matches``, pixels²) of drift and keypoint bias, the bias with its Gaussian
    prior ``config.keypoint_bias_sigma_px`` (pixels; none when 0), plus the spread that the uncertainty of
    the optical centre ``offset`` (its covariance) and of the calibration (``calibration_covariance`` of the
    parameters the matches' bearings have derivatives for) cause, propagated to the angles."""
    sigma_c = config.keypoint_bias_sigma_px
    offset_m = None if offset is None else offset.offset_m
    weights = whitening(matches, D, bias, offset_m, config)
    r, J = _residuals(matches, D, bias, weights, bias_jacobian=True)
    n_par = 5 if sigma_c > 0 else 3
    J = J[:, :, :n_par].reshape(-1, n_par)
    sigma2 = float(np.sum(r**2)) / (r.size - n_par)
    info = J.T @ J / sigma2
    info[3:, 3:] += np.eye(n_par - 3) / max(sigma_c, 1e-12) ** 2
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full((3, 3), np.inf)
    cov_w = cov[:3, :3]
    # considered parameters c (covariance C, not estimated): d(drift)/dc = -info⁻¹ Jᵀ (dr/dc) / σ²
    considered = []
    if weights is not None and np.any(offset.covariance):
        considered.append((_offset_jacobian(matches, D, bias, weights, offset_m, config), offset.covariance))
    if calibration_covariance is not None and matches.query_calibration_dirs.shape[2]:
        considered.append((calibration_jacobian(matches, D, weights), calibration_covariance))
    for J_c, C in considered:
        S = (cov @ (J.T @ J_c) / sigma2)[:3]
        cov_w = cov_w + S @ C @ S.T
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
    config: DriftConfig | None = None,
    hypotheses: Sequence[np.ndarray] = (),
    n_query_frames: int | None = None,
    offset: OpticalCentreOffset | None = None,
    calibration_covariance: np.ndarray | None = None,
) -> DriftEstimate:
    """Drift D from pooled bearing matches: 2-point RANSAC, robust refinement, covariance and the checks of
    ``config``. ``hypotheses`` are extra candidate D (3 x 3, e.g. per-frame results) scored alongside the
    samples; with an optical centre ``offset`` each match's depth is marginalised (the RANSAC still scores
    rotations). ``calibration_covariance`` (k x k) of the calibration parameters the bearings carry
    derivatives for enters σ. Angles and σ of the result in degrees."""
    config = config or DriftConfig()
    offset_m = None if offset is None else offset.offset_m
    n = len(matches)
    nq = len(np.unique(matches.query_index)) if n_query_frames is None else n_query_frames
    if n < config.min_inliers:
        return DriftEstimate.failure(
            f"too few matches ({n} < {config.min_inliers}): textureless view, scene changed or wrong camera",
            n,
            nq,
        )
    rng = np.random.default_rng(config.seed)
    D = ransac_drift(matches, config, hypotheses, rng)
    if D is None:
        return DriftEstimate.failure("no valid 2-point sample (all matched bearings nearly coincide)", n, nq)
    bias = np.zeros(2)
    inliers = inlier_mask(matches, D, config, offset_m=offset_m)
    for _ in range(2):  # refine on the inliers; once more if that changes more than 1 % of the inlier set
        if inliers.sum() < config.min_inliers:
            break
        D, bias = refine_drift(matches.subset(inliers), D, bias, config, offset_m)
        previous = inliers
        inliers = inlier_mask(matches, D, config, bias, offset_m)
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
    sigma = np.sqrt(np.diag(_angle_covariance(kept, D, bias, config, offset, calibration_covariance)))
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
