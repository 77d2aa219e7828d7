"""Chessboard intrinsics calibration: corner detection -> Zhang's closed form -> joint Levenberg-Marquardt.

OpenCV is used only to find the chessboard corners (``findChessboardCorners`` + ``cornerSubPix``); the
calibration maths is our own. The camera model is :class:`geometry.camera.Intrinsics`: K with fx, fy, cx, cy
and zero skew (pixels, origin at the top-left pixel's centre) and OpenCV's 5-coefficient distortion
(k1, k2, p1, p2, k3). Board poses are board-to-camera: ``X_C = R(rvec) @ X_board + t``, with the board
points on z = 0 in the units of the square size (metres). Camera frame C is OpenCV's (x right, y down,
z forward). The reported RMS is cv2.calibrateCamera's: sqrt(sum of squared pixel residuals / N points).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from geometry.camera import Intrinsics
from geometry.dlt import dlt_homography
from geometry.rotations import matrix_to_rotvec, project_to_so3

N_DIST = 5
"""Distortion coefficients estimated: OpenCV's (k1, k2, p1, p2, k3)."""
CALIBRATION_PARAMETERS = ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")
"""The parameters of a chessboard calibration, in the order of its covariance."""
_N_K = 4
"""Intrinsic parameters estimated besides distortion: fx, fy, cx, cy (skew fixed at zero)."""
_N_POSE = 6
"""Per-view pose parameters: Rodrigues vector (radians) and translation (board units)."""
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 30, 0.01)
_FIND_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK


@dataclass(frozen=True)
class ChessboardCalibration:
    """Result of a chessboard calibration.

    ``rms`` and ``per_view_rms`` are reprojection errors in pixels (sqrt(sum squared residual / points)),
    ``per_view_rms``, ``rvecs`` (radians) and ``tvecs`` (board units, metres) follow ``used_views``;
    ``rejected_views`` names the images where no board was found. ``covariance`` (9 x 9) is that of
    :data:`CALIBRATION_PARAMETERS` (fx, fy, cx, cy in pixels, distortion unitless), the poses marginalised:
    ``σ² (JᵀJ)⁻¹`` with σ² from the residuals (NaN when not computed).
    """

    intrinsics: Intrinsics
    rms: float
    per_view_rms: tuple[float, ...]
    used_views: tuple[str, ...]
    rejected_views: tuple[str, ...]
    rvecs: np.ndarray
    tvecs: np.ndarray
    covariance: np.ndarray = field(default_factory=lambda: np.full((_N_K + N_DIST, _N_K + N_DIST), np.nan))


def detect_chessboard_corners(
    image: np.ndarray, pattern: tuple[int, int] = (9, 6), subpix_half_window: int = 5
) -> np.ndarray | None:
    """Inner corners (N, 2) in pixels, row by row as OpenCV orders them, or None when no board is found.

    ``pattern`` is (corners per row, corners per column). The corners are refined by ``cornerSubPix`` in a
    (2 * subpix_half_window + 1)^2 search window; the image is 8-bit grayscale or BGR.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(
            f"expected an 8-bit grayscale or BGR image, got dtype {img.dtype}, shape {img.shape}"
        )
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=_FIND_FLAGS)
    if not found:
        return None
    win = (subpix_half_window, subpix_half_window)
    corners = cv2.cornerSubPix(gray, corners, win, (-1, -1), _SUBPIX_CRITERIA)
    return corners.reshape(-1, 2).astype(np.float64)


def board_points(pattern: tuple[int, int], square_size_m: float) -> np.ndarray:
    """Board-frame inner-corner positions (N, 3) on z = 0 in metres, in the order of the detected corners."""
    cols, rows = pattern
    if cols < 2 or rows < 2 or square_size_m <= 0:
        raise ValueError(f"need a pattern of at least 2x2 corners and a positive square size, got {pattern}")
    obj = np.zeros((cols * rows, 3))
    obj[:, :2] = np.indices((cols, rows)).T.reshape(-1, 2) * float(square_size_m)
    return obj


def _zhang_constraint(H: np.ndarray, i: int, j: int) -> np.ndarray:
    """Zhang's v_ij for zero skew: h_i^T B h_j = v_ij . (B11, B22, B13, B23, B33)."""
    hi, hj = H[:, i], H[:, j]
    return np.array(
        [
            hi[0] * hj[0],
            hi[1] * hj[1],
            hi[2] * hj[0] + hi[0] * hj[2],
            hi[2] * hj[1] + hi[1] * hj[2],
            hi[2] * hj[2],
        ]
    )


def zhang_initialisation(
    homographies: Sequence[np.ndarray], image_size: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Zhang's closed form with zero skew: board-to-image homographies -> K and per-view (R, t).

    The homographies map board (X, Y, 1) (z = 0) to pixels. They are first conditioned by a similarity that
    centres the image and scales it to about unit size. Raises ValueError when the views do not constrain K
    (e.g. all boards parallel to the image plane).
    """
    w, h = image_size
    s = 2.0 / (w + h)
    N = np.array([[s, 0.0, -s * (w - 1) / 2.0], [0.0, s, -s * (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    Hn = [N @ H / np.linalg.norm(N @ H) for H in homographies]
    V = np.vstack(
        [[_zhang_constraint(H, 0, 1), _zhang_constraint(H, 0, 0) - _zhang_constraint(H, 1, 1)] for H in Hn]
    )
    _, sv, Vt = np.linalg.svd(V)
    B11, B22, B13, B23, B33 = Vt[-1]
    unique = sv[-2] > 1e-9 * sv[0] and B11 * B22 > 0
    lam = B33 - B13**2 / B11 - B23**2 / B22 if unique else 0.0
    if not (unique and lam / B11 > 0 and lam / B22 > 0):
        raise ValueError(
            "chessboard views do not constrain the intrinsics (Zhang's B is not unique and positive "
            "definite): tilt the board in different directions between views, not only parallel to the image"
        )
    Kn = np.array([[np.sqrt(lam / B11), 0.0, -B13 / B11], [0.0, np.sqrt(lam / B22), -B23 / B22], [0, 0, 1.0]])
    K = np.linalg.solve(N, Kn)
    K /= K[2, 2]
    Kinv = np.linalg.inv(K)
    rotations, translations = [], []
    for H in homographies:
        A = Kinv @ H
        scale = 1.0 / np.linalg.norm(A[:, 0])
        if A[2, 2] * scale < 0:  # the board lies in front of the camera (t_z > 0)
            scale = -scale
        r1, r2 = A[:, 0] * scale, A[:, 1] * scale
        rotations.append(project_to_so3(np.column_stack([r1, r2, np.cross(r1, r2)])))
        translations.append(A[:, 2] * scale)
    return K, rotations, translations


def _camera(params: np.ndarray, image_size: tuple[int, int]) -> Intrinsics:
    """Intrinsics from (fx, fy, cx, cy, k1, k2, p1, p2, k3)."""
    fx, fy, cx, cy = params[:_N_K]
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return Intrinsics(K, params[_N_K : _N_K + N_DIST], image_size)


_SKEW_BASIS = np.array([np.cross(np.eye(3), e) for e in np.eye(3)])
"""_SKEW_BASIS[k] = [e_k]_x, so that [a]_x = einsum("kij,k->ij", _SKEW_BASIS, a)."""


def _rotation_derivatives(rvecs: np.ndarray) -> np.ndarray:
    """dR/dv_k for Rodrigues vectors v (n, 3) -> (n, 3, 3, 3) indexed [view, k, row, col].

    Gallego & Yezzi (2015): dR/dv_k = (v_k [v]_x + [v x (I - R) e_k]_x) R / |v|^2, and [e_k]_x at v = 0.
    """
    R = Rotation.from_rotvec(rvecs).as_matrix()
    theta2 = np.einsum("ni,ni->n", rvecs, rvecs)
    W = np.cross(rvecs[:, None, :], (np.eye(3) - R).transpose(0, 2, 1))  # W[n, k] = v x (I - R) e_k
    M = rvecs[:, :, None, None] * np.einsum("kij,nk->nij", _SKEW_BASIS, rvecs)[:, None]
    M += np.einsum("lij,nkl->nkij", _SKEW_BASIS, W)
    dR = np.einsum("nkij,njl->nkil", M, R) / np.maximum(theta2, 1e-300)[:, None, None, None]
    return np.where((theta2 < 1e-16)[:, None, None, None], _SKEW_BASIS[None], dR)


def _distortion_derivatives(xy: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of OpenCV's 5-coefficient distortion at normalised points ``xy`` (N, 2).

    Returns d(distorted)/d(xy) (N, 2, 2) and d(distorted)/d(k1, k2, p1, p2, k3) (N, 2, 5) of
    x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2), and y_d likewise.
    """
    k1, k2, p1, p2, k3 = dist
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    r4 = r2 * r2
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial_dr2 = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    off_diagonal = 2.0 * x * y * dradial_dr2 + 2.0 * (p1 * x + p2 * y)
    d_xy = np.empty((len(xy), 2, 2))
    d_xy[:, 0, 0] = radial + 2.0 * x * x * dradial_dr2 + 2.0 * p1 * y + 6.0 * p2 * x
    d_xy[:, 0, 1] = d_xy[:, 1, 0] = off_diagonal
    d_xy[:, 1, 1] = radial + 2.0 * y * y * dradial_dr2 + 6.0 * p1 * y + 2.0 * p2 * x
    xy2 = 2.0 * x * y
    d_coef = np.stack(
        [
            np.stack([x * r2, x * r4, xy2, r2 + 2.0 * x * x, x * r4 * r2], axis=1),
            np.stack([y * r2, y * r4, r2 + 2.0 * y * y, xy2, y * r4 * r2], axis=1),
        ],
        axis=1,
    )
    return d_xy, d_coef


class _BoardProblem:
    """Residuals (pixels) and analytic Jacobian of the joint calibration problem, in block form.

    Parameters: ``cam`` = (fx, fy, cx, cy, k1, k2, p1, p2, k3) and ``poses`` (views, 6) = (rvec, t) per view.
    The rational terms k4..k6 of :class:`Intrinsics` stay zero, as :func:`_distortion_derivatives` assumes.
    """

    def __init__(
        self, object_points: list[np.ndarray], image_points: list[np.ndarray], image_size: tuple[int, int]
    ):
        counts = [len(p) for p in object_points]
        self.image_size = image_size
        self.view = np.repeat(np.arange(len(counts)), counts)
        self.view_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        """Index of each view's first point: views are contiguous, for np.add.reduceat."""
        self.X = np.concatenate(object_points)
        self.uv = np.concatenate(image_points)

    def _camera_points(self, poses: np.ndarray) -> np.ndarray:
        R = Rotation.from_rotvec(poses[:, :3]).as_matrix()
        return np.einsum("nij,nj->ni", R[self.view], self.X) + poses[self.view, 3:]

    def linearise(self, cam: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals (N, 2) in pixels and their Jacobians w.r.t. ``cam`` (N, 2, 9) and w.r.t. the pose of
        each point's own view (N, 2, 6)."""
        camera = _camera(cam, self.image_size)
        Xc = self._camera_points(poses)
        z = Xc[:, 2]
        xy = Xc[:, :2] / z[:, None]
        xy_d = camera.distort_normalized(xy)
        f = cam[:2]
        residuals = xy_d * f + cam[2:4] - self.uv
        d_xy, d_coef = _distortion_derivatives(xy, cam[_N_K:])
        J_cam = np.zeros((len(xy), 2, _N_K + N_DIST))
        J_cam[:, 0, 0], J_cam[:, 1, 1] = xy_d[:, 0], xy_d[:, 1]
        J_cam[:, 0, 2] = J_cam[:, 1, 3] = 1.0
        J_cam[:, :, _N_K:] = f[:, None] * d_coef
        A = f[:, None] * d_xy / z[:, None, None]  # d(uv)/d(x_c, y_c) at fixed z
        d_uv_dXc = np.concatenate([A, -np.einsum("nab,nb->na", A, xy)[:, :, None]], axis=2)
        dR = _rotation_derivatives(poses[:, :3])
        dXc_drot = np.einsum("nkij,nj->nik", dR[self.view], self.X)
        J_pose = np.concatenate([d_uv_dXc @ dXc_drot, d_uv_dXc], axis=2)
        return residuals, J_cam, J_pose


class _ScaledNormalEquations:
    """J^T J = [[U, W], [W^T, V]] and J^T r of the board problem, built block-wise: U (9, 9) intrinsics,
    V (views, 6, 6) the block-diagonal pose part, W (views, 9, 6) the coupling. Variables are Jacobi-scaled
    (parameter = scale * scaled variable, scale = 1 / Jacobian column norm) so that the diagonal is one."""

    def __init__(self, view_starts: np.ndarray, r: np.ndarray, J_cam: np.ndarray, J_pose: np.ndarray):
        Jc = J_cam.reshape(-1, J_cam.shape[2])
        U, g_cam = Jc.T @ Jc, Jc.T @ r.ravel()
        V = np.add.reduceat(J_pose.transpose(0, 2, 1) @ J_pose, view_starts)
        W = np.add.reduceat(J_cam.transpose(0, 2, 1) @ J_pose, view_starts)
        g_pose = np.add.reduceat(np.einsum("nai,na->ni", J_pose, r), view_starts)
        self.scale_cam = 1.0 / np.sqrt(np.maximum(np.diag(U), 1e-300))
        self.scale_pose = 1.0 / np.sqrt(np.maximum(np.einsum("vii->vi", V), 1e-300))
        self.U = U * np.outer(self.scale_cam, self.scale_cam)
        self.V = V * self.scale_pose[:, :, None] * self.scale_pose[:, None, :]
        self.W = W * self.scale_cam[None, :, None] * self.scale_pose[:, None, :]
        self.g_cam = g_cam * self.scale_cam
        self.g_pose = g_pose * self.scale_pose

    def step(self, lam: float) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Solve (J^T J + lam I) step = -J^T r (scaled) by eliminating the poses (Schur complement, 9x9).

        Returns the parameter steps (cam (9,), poses (views, 6)), the scaled step's norm and the decrease
        of the cost 0.5 |r|^2 that the linear model predicts for it.
        """
        V_inv = np.linalg.inv(self.V + lam * np.eye(_N_POSE))
        WV_inv = self.W @ V_inv
        S = self.U + lam * np.eye(len(self.U)) - np.einsum("vij,vkj->ik", WV_inv, self.W)
        d_cam = np.linalg.solve(S, np.einsum("vij,vj->i", WV_inv, self.g_pose) - self.g_cam)
        d_pose = -np.einsum("vij,vj->vi", V_inv, self.g_pose + np.einsum("vji,j->vi", self.W, d_cam))
        norm2 = float(d_cam @ d_cam + np.vdot(d_pose, d_pose))
        g_dot_step = float(d_cam @ self.g_cam + np.vdot(d_pose, self.g_pose))
        predicted = 0.5 * (lam * norm2 - g_dot_step)
        return self.scale_cam * d_cam, self.scale_pose * d_pose, float(np.sqrt(norm2)), predicted

    def camera_covariance(self, sigma2: float) -> np.ndarray:
        """Covariance (9 x 9) of the camera parameters, the poses eliminated: ``σ² (U − W V⁻¹ Wᵀ)⁻¹``
        unscaled, for residuals of variance ``sigma2`` (pixels²)."""
        schur = self.U - np.einsum("vij,vjk,vlk->il", self.W, np.linalg.inv(self.V), self.W)
        return sigma2 * np.outer(self.scale_cam, self.scale_cam) * np.linalg.inv(schur)


def _levenberg_marquardt(
    problem: _BoardProblem,
    cam: np.ndarray,
    poses: np.ndarray,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_iterations: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the sum of squared pixel residuals, exploiting the block structure.

    Each iteration solves the damped normal equations with the poses eliminated (see
    :class:`_ScaledNormalEquations`; damping lam * diag(J^T J), i.e. Marquardt's, updated by Nielsen's rule).
    Stops as MINPACK's lmder does with scipy's default tolerances: relative actual and predicted cost
    decrease below ``ftol``, scaled step below ``xtol`` times the scaled parameters, or every cosine
    between the residual vector and a Jacobian column below ``gtol``; or after ``max_iterations``.
    Returns (cam, poses, residuals (N, 2) in pixels).
    """
    r, J_cam, J_pose = problem.linearise(cam, poses)
    cost = 0.5 * float(np.vdot(r, r))
    lam, nu = 1e-3, 2.0
    for _ in range(max_iterations):
        eq = _ScaledNormalEquations(problem.view_starts, r, J_cam, J_pose)
        if max(np.abs(eq.g_cam).max(), np.abs(eq.g_pose).max()) <= gtol * np.sqrt(2.0 * cost):
            break
        x_norm = np.sqrt(np.sum((cam / eq.scale_cam) ** 2) + np.sum((poses / eq.scale_pose) ** 2))
        while True:
            d_cam, d_pose, step_norm, predicted = eq.step(lam)
            cam_new, poses_new = cam + d_cam, poses + d_pose
            r_new, J_cam_new, J_pose_new = problem.linearise(cam_new, poses_new)
            cost_new = 0.5 * float(np.vdot(r_new, r_new))
            small_step = step_norm <= xtol * (x_norm + xtol)
            if cost_new < cost:
                break
            if small_step:
                return cam, poses, r
            lam *= nu
            nu *= 2.0
        rho = (cost - cost_new) / predicted
        lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        nu = 2.0
        small_decrease = cost - cost_new <= ftol * cost and predicted <= ftol * cost
        cam, poses, r, J_cam, J_pose, cost = cam_new, poses_new, r_new, J_cam_new, J_pose_new, cost_new
        if small_step or small_decrease:
            break
    return cam, poses, r


def calibrate_from_corners(
    object_points_list: Sequence[np.ndarray],
    image_points_list: Sequence[np.ndarray],
    image_size: tuple[int, int],
    view_names: Sequence[str] | None = None,
) -> ChessboardCalibration:
    """Calibrate K (fx, fy, cx, cy; zero skew) and (k1, k2, p1, p2, k3) from planar board correspondences.

    ``object_points_list[i]`` (N_i, 3) are board points on z = 0 (metres), ``image_points_list[i]``
    (N_i, 2) their pixels; ``image_size`` is (width, height). Zhang's closed form on the per-view DLT
    homographies initialises K and the poses; Levenberg-Marquardt (analytic Jacobian, poses eliminated by
    a Schur complement) then minimises the
    pixel reprojection error over all parameters jointly, starting from zero distortion.
    """
    if len(object_points_list) != len(image_points_list):
        raise ValueError(
            f"got {len(object_points_list)} object point sets but {len(image_points_list)} image point sets"
        )
    names = (
        tuple(view_names)
        if view_names is not None
        else tuple(f"view {i}" for i in range(len(image_points_list)))
    )
    if len(names) != len(image_points_list):
        raise ValueError(f"got {len(names)} view names for {len(image_points_list)} views")
    if len(names) < 3:
        raise ValueError(f"chessboard calibration needs at least 3 usable views, got {len(names)}")
    if image_size[0] <= 0 or image_size[1] <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    obj, img = [], []
    for name, X, uv in zip(names, object_points_list, image_points_list, strict=True):
        X = np.asarray(X, dtype=np.float64).reshape(-1, 3)
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if len(X) != len(uv) or len(X) < 4:
            raise ValueError(f"{name}: need >= 4 matching board/image points, got {len(X)} and {len(uv)}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(uv))):
            raise ValueError(f"{name}: non-finite board or image points")
        if np.any(np.abs(X[:, 2]) > 1e-9 * max(1.0, float(np.abs(X).max()))):
            raise ValueError(f"{name}: board points must lie on z = 0 (planar chessboard)")
        obj.append(X)
        img.append(uv)
    homographies = [dlt_homography(X[:, :2], uv) for X, uv in zip(obj, img, strict=True)]
    K0, rotations, translations = zhang_initialisation(homographies, image_size)
    poses = [np.concatenate([matrix_to_rotvec(R), t]) for R, t in zip(rotations, translations, strict=True)]
    cam0 = np.concatenate([[K0[0, 0], K0[1, 1], K0[0, 2], K0[1, 2]], np.zeros(N_DIST)])
    problem = _BoardProblem(obj, img, image_size)
    cam, poses_opt, residual = _levenberg_marquardt(problem, cam0, np.array(poses))
    sq = np.einsum("ij,ij->i", residual, residual)
    per_view = tuple(float(np.sqrt(sq[problem.view == i].mean())) for i in range(len(names)))
    r, J_cam, J_pose = problem.linearise(cam, poses_opt)
    dof = r.size - len(cam) - poses_opt.size
    covariance = _ScaledNormalEquations(problem.view_starts, r, J_cam, J_pose).camera_covariance(
        float(np.vdot(r, r)) / max(dof, 1)
    )
    return ChessboardCalibration(
        intrinsics=_camera(cam, image_size),
        rms=float(np.sqrt(sq.mean())),
        per_view_rms=per_view,
        used_views=names,
        rejected_views=(),
        rvecs=poses_opt[:, :3].copy(),
        tvecs=poses_opt[:, 3:].copy(),
        covariance=covariance,
    )


def calibrate_chessboard(
    images: Sequence[np.ndarray | str | Path],
    pattern: tuple[int, int] = (9, 6),
    *,
    square_size_m: float,
    progress: Callable[[int, int, str], None] | None = None,
) -> ChessboardCalibration:
    """Calibrate from chessboard photos (arrays or file paths) with ``pattern`` inner corners.

    Views where the board is not found are listed in ``rejected_views`` (file names, or "image <i>" for
    arrays); ``progress(done, total, name)`` is called after each image. Raises ValueError when fewer than
    3 views are usable or the image sizes differ.
    """
    obj = board_points(pattern, square_size_m)
    object_points, image_points, used, rejected = [], [], [], []
    image_size: tuple[int, int] | None = None
    for i, item in enumerate(images):
        if isinstance(item, str | Path):
            name = Path(item).name
            image = cv2.imread(str(item), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise ValueError(f"cannot read image {item}")
        else:
            name, image = f"image {i}", np.asarray(item)
        size = (int(image.shape[1]), int(image.shape[0]))
        if image_size is not None and size != image_size:
            raise ValueError(f"{name}: image size {size} differs from the first image's {image_size}")
        image_size = size
        corners = detect_chessboard_corners(image, pattern)
        if corners is None:
            rejected.append(name)
        else:
            object_points.append(obj)
            image_points.append(corners)
            used.append(name)
        if progress is not None:
            progress(i + 1, len(images), name)
    if len(used) < 3:
        raise ValueError(
            f"chessboard calibration needs at least 3 views with a {pattern[0]}x{pattern[1]} board, found "
            f"{len(used)}; no board in: {', '.join(rejected) or 'none'}"
        )
    result = calibrate_from_corners(object_points, image_points, image_size, view_names=used)
    return replace(result, rejected_views=tuple(rejected))


def parse_pattern(text: str) -> tuple[int, int]:
    """Chessboard inner corners from text like ``"9x6"`` -> (columns, rows)."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"chessboard pattern must look like '9x6' (inner corners), got {text!r}") from exc
    if cols < 2 or rows < 2:
        raise ValueError(f"chessboard pattern needs at least 2x2 inner corners, got {text!r}")
    return cols, rows
