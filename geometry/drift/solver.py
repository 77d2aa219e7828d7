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
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.optimize import least_squares

from geometry.drift.types import BearingMatches, DriftConfig, DriftEstimate
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


def inlier_mask(
    matches: BearingMatches, D: np.ndarray, config: DriftConfig, bias: np.ndarray | None = None
) -> np.ndarray:
    """Mask of the matches whose reprojection error (reference pixels; with the keypoint ``bias``, pixels)
    under drift ``D`` is below ``config.ransac_threshold_px``."""
    r = _bias_corrected(matches, D, np.zeros(2) if bias is None else bias)[0]
    return np.sum(r**2, axis=1) < config.ransac_threshold_px**2


def _refine(
    matches: BearingMatches, D0: np.ndarray, bias0: np.ndarray, config: DriftConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Robust least squares (scipy ``least_squares``, trust region) of the reprojection errors (reference
    pixels) of ``matches`` over the drift and, with a Gaussian prior of ``config.keypoint_bias_sigma_px``,
    the keypoint bias (pixels). Returns the refined drift matrix and keypoint bias."""
    sigma_c = config.keypoint_bias_sigma_px
    n_par = 5 if sigma_c > 0 else 3
    r0 = _bias_corrected(matches, D0, bias0)[0]
    prior_weight = max(1.4826 * float(np.median(np.abs(r0))), 1e-3) / max(sigma_c, 1e-12)
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            D = rotvec_to_matrix(theta[:3]) @ D0
            bias = theta[3:] if n_par == 5 else bias0
            r, J = _bias_corrected(matches, D, bias, bias_jacobian=n_par == 5)
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


def _angle_covariance(matches: BearingMatches, D: np.ndarray, bias: np.ndarray, sigma_c: float) -> np.ndarray:
    """Covariance (deg²) of (yaw, pitch, roll): the inverse of the information ``JᵀJ / σ²`` (σ² from the
    residuals of ``matches``, pixels²) of drift and keypoint bias, the bias with its Gaussian prior
    ``sigma_c`` (pixels; none when 0), propagated to the angles."""
    r, J = _bias_corrected(matches, D, bias, bias_jacobian=True)
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
    config: DriftConfig | None = None,
    hypotheses: Sequence[np.ndarray] = (),
    n_query_frames: int | None = None,
) -> DriftEstimate:
    """Drift D from pooled bearing matches: 2-point RANSAC, robust refinement, covariance and the checks of
    ``config``. ``hypotheses`` are extra candidate D (3 x 3, e.g. per-frame results) scored alongside the
    samples. Angles and σ of the result in degrees."""
    config = config or DriftConfig()
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
    inliers = inlier_mask(matches, D, config)
    for _ in range(2):  # refine on the inliers; once more if that changes more than 1 % of the inlier set
        if inliers.sum() < config.min_inliers:
            break
        D, bias = _refine(matches.subset(inliers), D, bias, config)
        previous = inliers
        inliers = inlier_mask(matches, D, config, bias)
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
    sigma = np.sqrt(np.diag(_angle_covariance(kept, D, bias, config.keypoint_bias_sigma_px)))
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
