"""Direct Linear Transform and Gold Standard estimation of camera matrices and plane homographies.

The calibration maths of the seed (``seeds/002``), implemented with numpy and scipy:

1. Hartley normalisation of both point sets (centroid to the origin, mean distance sqrt(2) in 2-D and
   sqrt(3) in 3-D), so that the linear system is well conditioned;
2. DLT: every correspondence gives two rows of ``A p = 0`` (from ``x x (P X) = 0``); the solution with
   ``||p|| = 1`` is the right singular vector of ``A`` with the smallest singular value;
3. Gold Standard: starting from the normalised DLT, Levenberg-Marquardt minimises the geometric error
   ``sum_i ||x_i - P X_i||^2``. Hartley normalisation is a similarity, so this error in normalised
   coordinates is the pixel error times a constant and the minimiser is the same;
4. denormalisation: ``P = T_x^-1 P_n T_X`` (and ``H = T_2^-1 H_n T_1``).

For homographies the Gold Standard error is the transfer error in image 2 only (``x1`` taken as exact,
e.g. metric map coordinates), not the symmetric transfer error.

Conventions: pixels (N, 2), world points (N, 3), plane points (N, 2); ``x ~ P [X; 1]``, ``x2 ~ H [x1; 1]``.
Returned camera matrices are scaled so that ``||P[2, :3]|| = 1`` and the observed points have positive
depth (``(P [X; 1])_3 > 0``); then ``(P [X; 1])_3`` is the depth along the optical axis in world units.
Returned homographies have unit Frobenius norm and ``det H > 0``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.optimize import least_squares

_RANK_TOL = 1e-9
"""Relative singular-value threshold below which a point set counts as flat (coplanar / collinear)."""


def _as_points(pts: np.ndarray, dim: int, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _check_pairs(a: np.ndarray, b: np.ndarray, min_n: int, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: mismatched numbers of points ({len(a)} vs {len(b)})")
    if len(a) < min_n:
        raise ValueError(f"{what} needs at least {min_n} correspondences, got {len(a)}")


def _flatness(pts: np.ndarray) -> float:
    """Smallest over largest singular value of the centred points (0 for a flat set)."""
    s = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
    return float(s[-1] / s[0]) if s[0] > 0 else 0.0


def _homogeneous(pts: np.ndarray) -> np.ndarray:
    return np.hstack([pts, np.ones((len(pts), 1))])


def normalize_points(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hartley normalisation of (N, d) points, d = 2 or 3.

    Returns ``(pts_normalised, T)`` with T the (d+1)x(d+1) similarity mapping homogeneous points to
    normalised ones: centroid at the origin, mean distance from it sqrt(d).
    """
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (N, 2) or (N, 3), got {a.shape}")
    if len(a) == 0 or not np.all(np.isfinite(a)):
        raise ValueError("points must be non-empty and finite (no NaN or inf)")
    d = a.shape[1]
    centroid = a.mean(axis=0)
    mean_dist = np.linalg.norm(a - centroid, axis=1).mean()
    if mean_dist <= 0:
        raise ValueError("all points coincide: cannot normalise")
    s = np.sqrt(d) / mean_dist
    T = np.eye(d + 1)
    T[:d, :d] *= s
    T[:d, d] = -s * centroid
    return (a - centroid) * s, T


def _null_vector(A: np.ndarray, what: str) -> np.ndarray:
    """Unit vector minimising ||A p||; raises when the minimiser is not unique (degenerate data)."""
    _, s, Vt = np.linalg.svd(A, full_matrices=A.shape[0] < A.shape[1])  # thin SVD unless A is wide
    if s[-2] <= _RANK_TOL * s[0]:
        raise ValueError(f"{what}: degenerate configuration (solution not unique, rank of A too low)")
    return Vt[-1]


def _dlt_system(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2N x 3k DLT matrix A with A m = 0 for ``dst ~ M [src; 1]``, m = M.ravel() (M is 3 x k).

    Rows are the two independent components of ``dst x (M src) = 0`` with dst's third coordinate 1.
    """
    sh = _homogeneous(src)
    z = np.zeros_like(sh)
    return np.vstack([np.hstack([z, -sh, dst[:, 1:2] * sh]), np.hstack([sh, z, -dst[:, 0:1] * sh])])


def _transfer_residuals(m: np.ndarray, src_h: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Geometric error ``dst - M src`` (dehomogenised), flattened (2N,)."""
    q = src_h @ m.reshape(3, -1).T
    return (q[:, :2] / q[:, 2:3] - dst).ravel()


def _transfer_jacobian(m: np.ndarray, src_h: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Analytic Jacobian of :func:`_transfer_residuals` with respect to m = M.ravel()."""
    q = src_h @ m.reshape(3, -1).T
    w = q[:, 2:3]
    uv = q[:, :2] / w
    n, k = src_h.shape
    J = np.zeros((n, 2, 3 * k))
    J[:, 0, 0:k] = src_h / w
    J[:, 1, k : 2 * k] = src_h / w
    J[:, 0, 2 * k :] = -uv[:, 0:1] * src_h / w
    J[:, 1, 2 * k :] = -uv[:, 1:2] * src_h / w
    return J.reshape(2 * n, 3 * k)


def _normalised_estimate(src: np.ndarray, dst: np.ndarray, refine: bool, what: str) -> np.ndarray:
    """``dst ~ M [src; 1]``: Hartley normalisation, DLT (SVD), optional Levenberg-Marquardt on the
    transfer error in dst, denormalisation ``M = T_dst^-1 M_n T_src``."""
    sn, Ts = normalize_points(src)
    dn, Td = normalize_points(dst)
    m = _null_vector(_dlt_system(sn, dn), what)
    # MINPACK's LM needs at least as many residuals as unknowns; with exactly as many the DLT already fits.
    if refine and 2 * len(src) > m.size:
        m = least_squares(
            _transfer_residuals, m, jac=_transfer_jacobian, args=(_homogeneous(sn), dn), method="lm",
            ftol=1e-15, xtol=1e-15, gtol=1e-15,
        ).x  # fmt: skip
    return np.linalg.inv(Td) @ m.reshape(3, -1) @ Ts


def _fix_camera_scale(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Scale P to ||P[2, :3]|| = 1 with positive depth for most of the points X."""
    P = P / np.linalg.norm(P[2, :3])
    w = _homogeneous(X) @ P[2]
    return -P if np.count_nonzero(w > 0) < np.count_nonzero(w < 0) else P


def _check_camera_input(X: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = _as_points(X, 3, "world points X")
    x = _as_points(x, 2, "pixels x")
    _check_pairs(X, x, 6, "camera matrix estimation")
    if _flatness(X) < _RANK_TOL:
        raise ValueError("world points X are coplanar: a camera matrix needs points off a single plane")
    if _flatness(x) < _RANK_TOL:
        raise ValueError("pixels x are collinear: degenerate configuration")
    return X, x


def dlt_camera_matrix(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Normalised DLT camera matrix (3x4) from N >= 6 world points X (N, 3) and pixels x (N, 2)."""
    X, x = _check_camera_input(X, x)
    return _fix_camera_scale(_normalised_estimate(X, x, False, "camera matrix DLT"), X)


def gold_standard_camera_matrix(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gold Standard camera matrix (3x4): normalise, DLT, Levenberg-Marquardt on the geometric
    reprojection error (pixels), denormalise. X (N, 3) world points, x (N, 2) pixels, N >= 6."""
    X, x = _check_camera_input(X, x)
    return _fix_camera_scale(_normalised_estimate(X, x, True, "camera matrix DLT"), X)


def reprojection_rms(P: np.ndarray, X: np.ndarray, x: np.ndarray) -> float:
    """RMS over points of the Euclidean reprojection error (pixels): sqrt(mean ||x_i - P X_i||^2)."""
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4):
        raise ValueError(f"P must be 3x4, got {P.shape}")
    X = _as_points(X, 3, "world points X")
    x = _as_points(x, 2, "pixels x")
    _check_pairs(X, x, 1, "reprojection error")
    r = _transfer_residuals(P.ravel(), _homogeneous(X), x)
    return float(np.sqrt(np.mean(r**2) * 2.0))


def decompose_camera_matrix(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RQ decomposition ``P ~ K [R | t]``: K upper triangular with K[2, 2] = 1 and positive focal lengths,
    R a proper rotation (world -> camera), t (3,) in world units. P is defined up to scale and sign, so
    ``K [R | t] = lambda P`` with lambda possibly negative (e.g. for a mirrored world frame)."""
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise ValueError(f"P must be a finite 3x4 matrix, got shape {P.shape}")
    M = P[:, :3]
    det = np.linalg.det(M)
    if abs(det) <= _RANK_TOL * np.linalg.norm(M) ** 3:
        raise ValueError("P[:, :3] is singular: camera at infinity, no K[R|t] decomposition")
    if det < 0:
        P = -P
        M = -M
    K, R = scipy.linalg.rq(M)
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R  # D = D^-1, so K R is unchanged
    t = np.linalg.solve(K, P[:, 3])
    return K / K[2, 2], R, t  # K[R|t] = P / K[2, 2]


def _check_homography_input(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x1 = _as_points(x1, 2, "points x1")
    x2 = _as_points(x2, 2, "points x2")
    _check_pairs(x1, x2, 4, "homography estimation")
    for name, pts in (("x1", x1), ("x2", x2)):
        if _flatness(pts) < _RANK_TOL:
            raise ValueError(f"points {name} are collinear: a homography needs points in general position")
    return x1, x2


def _fix_homography_scale(H: np.ndarray) -> np.ndarray:
    H = H / np.linalg.norm(H)
    return -H if np.linalg.det(H) < 0 else H


def dlt_homography(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Normalised DLT homography (3x3) with ``x2 ~ H x1`` from N >= 4 correspondences (N, 2) each."""
    x1, x2 = _check_homography_input(x1, x2)
    return _fix_homography_scale(_normalised_estimate(x1, x2, False, "homography DLT"))


def gold_standard_homography(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Gold Standard homography (3x3), ``x2 ~ H x1``: normalised DLT, then Levenberg-Marquardt on the
    transfer error in image 2 only, ``sum_i ||x2_i - H x1_i||^2`` (x1 treated as exact, e.g. map
    coordinates), then denormalisation. N >= 4 correspondences, (N, 2) each."""
    x1, x2 = _check_homography_input(x1, x2)
    return _fix_homography_scale(_normalised_estimate(x1, x2, True, "homography DLT"))
