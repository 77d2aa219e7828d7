"""Self-calibration of a rotating PTZ camera: K, distortion and the zoom curve from a scan, no chessboard.

A scan is a camera rotating about its optical centre, each frame with approximate telemetry (pan, tilt,
zoom). Overlapping frames fix the intrinsics (Hartley 1997, "Self-calibration of stationary cameras"):

1. Pairs of frames whose optical axes are close by telemetry (and, across zoom levels, each frame with the
   nearest frames one zoom level lower) are matched with any :class:`geometry.matching.Matcher`, and a
   homography is fitted per pair (RANSAC with a loose threshold: distortion is not modelled yet).
2. Initial K per zoom level, from that level's own pairs: Hartley's linear solution. A rotation's homography
   ``H = K R K⁻¹`` (det 1) leaves the image of the absolute conic ``ω = (K Kᵀ)⁻¹`` unchanged,
   ``Hᵀ ω H = ω``, which is linear in ω; zero skew and square pixels leave 4 unknowns (up to scale). Where
   that is not positive definite or disagrees with the focal length the telemetry implies by more than
   ``init_agreement`` (narrow fields of view make it ill-conditioned), the telemetry's focal length with the
   principal point at the image centre is used. A level without pairs of its own starts from its frames'
   homographies to a lower, already initialised level.
3. Bundle adjustment of the focal length and radial distortion (k1, k2) per zoom level, one principal point
   shared by all levels, a rotation per frame with its telemetry as prior, and a direction per track of
   matched keypoints. The Jacobian's structure (each track's 2 parameters touch only its own observations)
   is used by variable projection: the tracks are solved in closed 2x2 blocks inside the residual function,
   and :func:`scipy.optimize.least_squares` sees only the camera parameters (a few per frame) with Kaufman's
   Jacobian, the Schur complement of the track blocks. A first pass uses a robust loss on the homographies'
   inliers; then every candidate match of every pair that this model explains within
   ``inlier_threshold_px`` (edge matches that the homographies rejected for distortion, too) enters a plain
   least-squares pass that gives the estimate and its covariance (scaled by the residuals' reduced χ²).
4. The lowest zoom level's calibration covariance in the chessboard's 9 parameters (fx, fy, cx, cy, k1, k2,
   p1, p2, k3; :attr:`SelfCalibration.covariance`), with honest terms for what the model ties (fy = fx) or
   fixes (p1 = p2 = k3 = 0): the drift estimate corrects the calibration and carries its uncertainty into σ
   with it, as it does the chessboard's (:mod:`geometry.drift.calibration`).

The adjustment's dense linear algebra is small (rows: 2 per observation, columns: a few per frame): on a
shared CPU, limit BLAS to one thread around the call (``threadpoolctl.threadpool_limits(1)``).

Failures raise :class:`SelfCalibrationError` saying why (too little overlap, unconstrained parameters,
images that disagree with the telemetry) rather than return a wrong K.

Convention:
    - pixels ``(u, v)``: origin at the top-left pixel's centre (pixel centres at integers), as
      :class:`geometry.camera.Intrinsics`; K has ``fx = fy = f`` and zero skew.
    - camera frame C: OpenCV (x right, y down, z forward); mount frame B; telemetry rotation
      ``R_BC(pan, tilt)`` (:mod:`geometry.rotations`, degrees).
    - frame i's orientation ``R_i = R_BC(pan_i, tilt_i) · exp([δ_i]×)``: δ_i (radians, camera frame) is the
      telemetry's error, with prior ``δ_i ~ N(0, telemetry_sigma² I)``.
    - a scene point is a direction ``v_p`` in B (at infinity: the camera only rotates), seen by frame i at
      ``u = f · distort(π(R_iᵀ v_p)) + (cx, cy)``, ``distort(x) = x (1 + k1 |x|² + k2 |x|⁴)``.
    - pair homography: ``x_j ~ H_ij x_i``, ``H_ij = K_j R_jᵀ R_i K_i⁻¹``.
    - zoom: ONVIF 0..1; frames whose zoom agrees within ``zoom_tolerance`` form one zoom level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.transform import Rotation

from geometry.camera import Intrinsics, ZoomModel
from geometry.features import Features
from geometry.matching import Matcher, optical_axis_angles_deg
from geometry.rotations import R_BC

_LEVEL_PARAMS = 3
"""Parameters per zoom level: f (pixels), k1, k2."""


class SelfCalibrationError(ValueError):
    """The scan does not determine the intrinsics; the message says why and what to change."""


@dataclass(frozen=True)
class ScanFrame:
    """One frame of a scan: its features (pixels of the original image), the telemetry it was captured at
    (pan and tilt in degrees, zoom ONVIF 0..1) and a name for messages."""

    features: Features
    pan_deg: float
    tilt_deg: float
    zoom: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.pan_deg) and np.isfinite(self.tilt_deg)):
            raise ValueError(f"frame {self.name!r}: pan and tilt must be finite")
        if not 0.0 <= self.zoom <= 1.0:
            raise ValueError(
                f"frame {self.name!r}: zoom must lie in 0..1 (ONVIF normalised), got {self.zoom}"
            )


@dataclass(frozen=True)
class SelfCalConfig:
    """Settings of :func:`self_calibrate` (pixels of the frames' images, angles in degrees)."""

    telemetry_sigma_deg: float = 0.1
    """Prior σ of each frame's telemetry rotation error, per axis."""
    keypoint_sigma_px: float = 0.5
    """Assumed σ of a keypoint's position; weighs the pixel residuals against the priors (the covariance is
    rescaled by the measured residuals)."""
    distortion_prior_sigma: float = 1.0
    """Weak prior σ of k1 and k2 around 0: keeps them finite where a narrow field of view barely sees them.
    Also the prior σ of k3 (fixed at 0) in :attr:`SelfCalibration.covariance`."""
    tangential_prior_sigma: float = 0.005
    """Prior σ of the tangential distortion p1, p2 (fixed at 0) in :attr:`SelfCalibration.covariance`:
    decentering of assembled lenses is typically |p| <= 1e-3; 0.005 moves a 60° view's corner by ~2 px,
    which the scan's residuals would show (they, not this prior, then bound it)."""
    square_pixel_sigma_fraction: float = 0.01
    """σ of fy - fx (fy is fx: square pixels) as a fraction of σ(fx) in :attr:`SelfCalibration.covariance`:
    a tiny independent part that keeps the covariance invertible."""
    max_pair_angle_deg: float = 90.0
    """Frames of one zoom level are matched when their optical axes are at most this far apart."""
    cross_zoom_neighbours: int = 2
    """Each frame is matched with this many frames of the next lower zoom level (nearest optical axes)."""
    homography_threshold: float = 0.01
    """RANSAC threshold of the pair homographies, as a fraction of the image diagonal (loose: the
    homographies ignore distortion)."""
    min_pair_inliers: int = 30
    """A pair with fewer homography (or, later, model) inliers does not count as overlapping."""
    max_matches_per_pair: int = 300
    """Matches of a pair used in the adjustment (a random subset of the inliers when there are more)."""
    inlier_threshold_px: float = 2.0
    """A candidate match enters the final adjustment when the first pass's model transfers it within this
    distance in both directions."""
    loss_scale_px: float = 1.0
    """Scale of the first pass's robust (Huber) loss."""
    zoom_tolerance: float = 1e-3
    """Frames whose zoom differs by less than this share one zoom level."""
    init_agreement: float = 0.2
    """Largest relative difference between Hartley's and the telemetry's focal length for Hartley's K to be
    used as the start."""
    min_frames: int = 3
    """Fewest overlapping frames to calibrate from."""
    max_focal_rel_sigma: float = 0.0015
    """Largest σ(f) / f of any zoom level that is still reported (2σ = 0.3 %)."""
    max_principal_point_sigma_px: float = 1.0
    """Largest σ of cx or cy that is still reported (2σ = 2 px)."""
    max_telemetry_error_deg: float = 1.0
    """Largest rotation between a frame's telemetry and its adjusted orientation that is still believed."""
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {
            "telemetry_sigma_deg": self.telemetry_sigma_deg,
            "keypoint_sigma_px": self.keypoint_sigma_px,
            "distortion_prior_sigma": self.distortion_prior_sigma,
            "tangential_prior_sigma": self.tangential_prior_sigma,
            "square_pixel_sigma_fraction": self.square_pixel_sigma_fraction,
            "max_pair_angle_deg": self.max_pair_angle_deg,
            "homography_threshold": self.homography_threshold,
            "inlier_threshold_px": self.inlier_threshold_px,
            "loss_scale_px": self.loss_scale_px,
            "zoom_tolerance": self.zoom_tolerance,
            "init_agreement": self.init_agreement,
            "max_focal_rel_sigma": self.max_focal_rel_sigma,
            "max_principal_point_sigma_px": self.max_principal_point_sigma_px,
            "max_telemetry_error_deg": self.max_telemetry_error_deg,
        }
        bad = [name for name, value in positive.items() if not value > 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")
        if self.min_pair_inliers < 8 or self.max_matches_per_pair < self.min_pair_inliers:
            raise ValueError("min_pair_inliers must be >= 8 and max_matches_per_pair >= min_pair_inliers")
        if self.cross_zoom_neighbours < 0 or self.min_frames < 2:
            raise ValueError("cross_zoom_neighbours must be >= 0 and min_frames >= 2")


@dataclass(frozen=True)
class ZoomLevelCalibration:
    """The intrinsics at one zoom level: K (principal point shared by all levels) and distortion
    (k1, k2, 0, 0, 0), with the σ of f (pixels) and of k1, k2 from the adjustment's covariance, the frames
    of the level that were used, the RMS (pixels) of their residuals and how the level was started
    ("hartley", "telemetry" or "cross-zoom")."""

    zoom: float
    intrinsics: Intrinsics
    sigma_focal_px: float
    sigma_k: tuple[float, float]
    frames: tuple[str, ...]
    rms_px: float
    initialisation: str


@dataclass(frozen=True)
class SelfCalibration:
    """Result of :func:`self_calibrate`.

    ``levels`` by increasing zoom; ``sigma_principal_point_px`` the σ of (cx, cy); ``rms_px`` the RMS pixel
    residual of all observations; ``observations`` and ``tracks`` the adjustment's size; ``frames_used``
    (in input order) with their adjusted orientations ``rotations`` (frames_used, 3, 3), camera -> mount (the
    telemetry's ``R_BC`` corrected); ``frames_dropped`` the frames that overlap none of the others;
    ``pairs`` the overlapping pairs (frame, frame, matches in the final adjustment);
    ``max_telemetry_correction_deg`` the largest rotation between a frame's telemetry and its adjusted
    orientation.
    """

    levels: tuple[ZoomLevelCalibration, ...]
    sigma_principal_point_px: tuple[float, float]
    rms_px: float
    observations: int
    tracks: int
    frames_used: tuple[str, ...]
    frames_dropped: tuple[str, ...]
    pairs: tuple[tuple[str, str, int], ...]
    rotations: np.ndarray
    max_telemetry_correction_deg: float
    covariance: np.ndarray
    """(9, 9): the lowest zoom level's calibration, :data:`geometry.intrinsics.CALIBRATION_PARAMETERS` (fx,
    fy, cx, cy pixels; k1, k2, p1, p2, k3), as :meth:`_Adjustment.calibration_covariance` derives it."""

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics at the lowest zoom level of the scan (the widest view)."""
        return self.levels[0].intrinsics

    @property
    def sigma(self) -> dict[str, float]:
        """σ of the lowest zoom level's parameters: f, cx, cy (pixels), k1, k2."""
        level = self.levels[0]
        cx, cy = self.sigma_principal_point_px
        return {"f": level.sigma_focal_px, "cx": cx, "cy": cy, "k1": level.sigma_k[0], "k2": level.sigma_k[1]}

    def zoom_model(self) -> ZoomModel:
        """The levels' focal lengths and distortion as a monotone :class:`ZoomModel`
        (:func:`fit_zoom_model`)."""
        return fit_zoom_model(self.levels)


def self_calibrate(
    frames: Sequence[ScanFrame], matcher: Matcher, config: SelfCalConfig | None = None
) -> SelfCalibration:
    """Intrinsics (K with f, cx, cy; distortion k1, k2) per zoom level of a camera from a scan of
    overlapping frames with telemetry, as the module docstring describes. All frames must share one image
    size. Raises :class:`SelfCalibrationError` when the scan does not determine them."""
    config = config or SelfCalConfig()
    names = [f.name or f"frame {i}" for i, f in enumerate(frames)]
    if len({f.features.image_size for f in frames}) > 1:
        raise ValueError("all frames of a scan must have one image size")
    level_of = _zoom_levels(frames, config.zoom_tolerance)
    pairs = _match_pairs(frames, matcher, level_of, config)
    used = _overlapping_frames(pairs, len(frames))
    if used.sum() < config.min_frames:
        raise SelfCalibrationError(
            f"only {int(used.sum())} of {len(frames)} frames overlap (pairs with >= "
            f"{config.min_pair_inliers} homography inliers), need {config.min_frames}: scan with stops "
            "closer than the field of view"
        )
    scan = _Scan(frames, used, level_of)
    new_index = np.cumsum(used) - 1
    pairs = [_Pair(new_index[p.i], new_index[p.j], p.candidates, p.inliers, p.H) for p in pairs if used[p.i]]
    start, methods = _initial_intrinsics(pairs, scan, config)
    rng = np.random.default_rng(config.seed)
    n_levels = len(methods)

    def adjust(
        x0: np.ndarray, pair_matches: list[tuple[int, int, np.ndarray]], robust: bool
    ) -> tuple[_Adjustment, np.ndarray, np.ndarray, np.ndarray]:
        """The adjustment of these matches' tracks from camera parameters x0: (problem, x, J, residuals)."""
        problem = _Adjustment(
            *scan.observations(pair_matches, x0, n_levels), scan.level_of, scan.R_tel, config
        )
        return problem, *problem.solve(x0, robust)

    first = [(p.i, p.j, _subsample(p.candidates[p.inliers], config.max_matches_per_pair, rng)) for p in pairs]
    problem, x, _, _ = adjust(np.concatenate([start, np.zeros(3 * len(scan.frames))]), first, robust=True)
    intrinsics = _level_intrinsics(x, n_levels, scan.image_size)
    R = problem.rotations(x)
    second = []
    for p in pairs:
        ui, uj = scan.keypoints[p.i][p.candidates[:, 0]], scan.keypoints[p.j][p.candidates[:, 1]]
        Ki, Kj = intrinsics[scan.level_of[p.i]], intrinsics[scan.level_of[p.j]]
        error = np.maximum(
            _transfer_error(ui, Ki, R[p.i], uj, Kj, R[p.j]), _transfer_error(uj, Kj, R[p.j], ui, Ki, R[p.i])
        )
        good = p.candidates[error < config.inlier_threshold_px]
        if len(good) >= config.min_pair_inliers:
            second.append((p.i, p.j, _subsample(good, config.max_matches_per_pair, rng)))
    unobserved = sorted(set(range(n_levels)) - {int(scan.level_of[i]) for pair in second for i in pair[:2]})
    if unobserved:
        raise SelfCalibrationError(
            f"zoom {scan.level_zoom[unobserved[0]]:.3g}: no pair of frames keeps {config.min_pair_inliers} "
            "matches under the first adjustment's model (mismatched frames or telemetry far off)"
        )
    problem, x, J, residuals = adjust(x, second, robust=False)
    return _result(problem, x, J, residuals, scan, second, methods, names, config)


def hartley_intrinsics(homographies: Sequence[np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
    """K (3x3; zero skew, fx = fy) of a rotating camera from its inter-frame homographies (Hartley 1997).

    Each homography maps pixels of one frame to another of the same camera: ``H = K R K⁻¹``. Pixels are
    first conditioned (centred, scaled to about unit size); each H, scaled to det 1, gives the 6 linear
    equations ``Hᵀ ω H - ω = 0`` in ``ω = [[w1, 0, w2], [0, w1, w3], [w2, w3, w4]]``, solved up to scale by
    SVD. Raises ValueError when ω is not positive definite (degenerate or too noisy rotations).
    """
    w, h = image_size
    s = 2.0 / (w + h)
    T = np.array([[s, 0.0, -s * (w - 1) / 2.0], [0.0, s, -s * (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    basis = np.zeros((4, 3, 3))
    basis[0, 0, 0] = basis[0, 1, 1] = 1.0
    basis[1, 0, 2] = basis[1, 2, 0] = 1.0
    basis[2, 1, 2] = basis[2, 2, 1] = 1.0
    basis[3, 2, 2] = 1.0
    upper = np.triu_indices(3)
    rows = []
    for H in homographies:
        Hn = T @ np.asarray(H, float) @ np.linalg.inv(T)
        Hn /= np.cbrt(np.linalg.det(Hn))
        rows.append(np.stack([(Hn.T @ E @ Hn - E)[upper] for E in basis], axis=1))
    if not rows:
        raise ValueError("Hartley's self-calibration needs at least one homography")
    w1, w2, w3, w4 = np.linalg.svd(np.vstack(rows))[2][-1]
    if w1 < 0:
        w1, w2, w3, w4 = -w1, -w2, -w3, -w4
    cx, cy = -w2 / w1, -w3 / w1
    f2 = w4 / w1 - cx * cx - cy * cy
    if not (w1 > 0 and f2 > 0):
        raise ValueError("the homographies do not give a positive-definite image of the absolute conic")
    Kn = np.array([[np.sqrt(f2), 0.0, cx], [0.0, np.sqrt(f2), cy], [0.0, 0.0, 1.0]])
    K = np.linalg.solve(T, Kn)
    return K / K[2, 2]


def fit_zoom_model(levels: Sequence[ZoomLevelCalibration]) -> ZoomModel:
    """A monotone zoom model through calibrated zoom levels: log f made non-decreasing in zoom by weighted
    isotonic regression (weights 1 / σ(log f)², pool-adjacent-violators), interpolated by PCHIP in log f
    (:class:`ZoomModel` with ``log_focal``) with the levels' distortion per zoom."""
    order = sorted(levels, key=lambda lv: lv.zoom)
    if not order:
        raise ValueError("fit_zoom_model needs at least one zoom level")
    log_f = np.log([lv.intrinsics.fx for lv in order])
    weights = np.array([(lv.intrinsics.fx / max(lv.sigma_focal_px, 1e-12)) ** 2 for lv in order])
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for value, weight in zip(log_f, weights, strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    monotone = np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])
    return ZoomModel(
        tuple(lv.zoom for lv in order),
        tuple(float(f) for f in np.exp(monotone)),
        tuple(tuple(float(c) for c in lv.intrinsics.dist[:5]) for lv in order),
        log_focal=True,
    )


# --- pairs and the initial intrinsics ------------------------------------------------------------------


def _zoom_levels(frames: Sequence[ScanFrame], tolerance: float) -> np.ndarray:
    """Zoom level per frame (0 = lowest zoom): the sorted zooms split where they differ by ``tolerance``."""
    zooms = np.array([f.zoom for f in frames])
    order = np.argsort(zooms, kind="stable")
    level_sorted = np.concatenate([[0], np.cumsum(np.diff(zooms[order]) >= tolerance)])
    level_of = np.empty(len(frames), dtype=np.int64)
    level_of[order] = level_sorted
    return level_of


@dataclass(frozen=True)
class _Pair:
    """Two frames' candidate matches (M, 2) [keypoint in i, keypoint in j], the homography's inlier mask and
    the homography (pixels of i -> pixels of j)."""

    i: int
    j: int
    candidates: np.ndarray
    inliers: np.ndarray
    H: np.ndarray


def _candidate_pairs(
    frames: Sequence[ScanFrame], level_of: np.ndarray, config: SelfCalConfig
) -> list[tuple[int, int]]:
    """Frame pairs (i, j) to match: within a zoom level when their optical axes are close enough, and each
    frame with the nearest frames of the next lower level."""
    pan_tilts = [(f.pan_deg, f.tilt_deg) for f in frames]
    pairs = []
    for i, frame in enumerate(frames):
        angles = optical_axis_angles_deg((frame.pan_deg, frame.tilt_deg), pan_tilts)
        same = np.flatnonzero((level_of == level_of[i]) & (np.arange(len(frames)) > i))
        pairs += [(i, int(j)) for j in same if angles[j] <= config.max_pair_angle_deg]
        lower = np.flatnonzero(level_of == level_of[i] - 1)
        nearest = lower[np.argsort(angles[lower], kind="stable")[: config.cross_zoom_neighbours]]
        pairs += [(int(j), i) for j in nearest if angles[j] <= config.max_pair_angle_deg]
    return pairs


def _match_pairs(
    frames: Sequence[ScanFrame], matcher: Matcher, level_of: np.ndarray, config: SelfCalConfig
) -> list[_Pair]:
    """The candidate pairs with at least ``min_pair_inliers`` homography inliers."""
    out = []
    for i, j in _candidate_pairs(frames, level_of, config):
        fi, fj = frames[i].features, frames[j].features
        m = np.asarray(matcher.match(fi, fj)[0], dtype=np.int64).reshape(-1, 2)
        if len(m) < config.min_pair_inliers:
            continue
        threshold = config.homography_threshold * float(np.hypot(*fj.image_size))
        H, mask = cv2.findHomography(fi.keypoints[m[:, 0]], fj.keypoints[m[:, 1]], cv2.RANSAC, threshold)
        if H is not None and mask is not None and int(mask.sum()) >= config.min_pair_inliers:
            out.append(_Pair(i, j, m, mask.ravel().astype(bool), H))
    return out


def _overlapping_frames(pairs: Sequence[_Pair], n_frames: int) -> np.ndarray:
    """Mask of the frames in the largest set connected by overlapping pairs."""
    if not pairs:
        return np.zeros(n_frames, bool)
    ij = np.array([(p.i, p.j) for p in pairs])
    graph = coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n_frames, n_frames))
    labels = connected_components(graph, directed=False)[1]
    connected = np.zeros(n_frames, bool)
    connected[ij.ravel()] = True
    counts = np.bincount(labels[connected], minlength=n_frames)
    return connected & (labels == np.argmax(counts))


def _telemetry_focal(H: np.ndarray, R_ji: np.ndarray, centre: np.ndarray) -> float:
    """Focal length (pixels) that a pair homography ``H`` (pixels of frame i -> frame j, one camera) implies
    for their relative rotation ``R_ji = R_jᵀ R_i`` (telemetry), with the principal point at ``centre``.

    In centred pixels ``λ H = F R F⁻¹`` (F = diag(f, f, 1)): the 2x2 block and the corner give λ, the last
    column ``λ H[:2, 2] = f R[:2, 2]`` and row ``λ H[2, :2] = R[2, :2] / f`` give f by least squares.
    NaN when the rotation does not move the optical axis.
    """
    C = np.array([[1.0, 0.0, centre[0]], [0.0, 1.0, centre[1]], [0.0, 0.0, 1.0]])
    Hc = np.linalg.solve(C, H) @ C
    free = (np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2]))
    lam = (Hc[free] @ R_ji[free]) / (Hc[free] @ Hc[free])
    if np.linalg.norm(R_ji[:2, 2]) < 1e-3:
        return float("nan")
    A = np.concatenate([R_ji[:2, 2], lam * Hc[2, :2]])
    y = np.concatenate([lam * Hc[:2, 2], R_ji[2, :2]])
    return float(A @ y / (A @ A))


def _cross_zoom_focal(H: np.ndarray, R_ji: np.ndarray, centre: np.ndarray, f_i: float) -> float:
    """Focal length (pixels) of frame j implied by a homography ``H`` from frame i (focal length ``f_i``) of
    another zoom level and their relative rotation ``R_ji`` (telemetry), principal point at ``centre``: in
    centred pixels ``λ H F_i = F_j R``; the last row gives λ, the first two f_j."""
    C = np.array([[1.0, 0.0, centre[0]], [0.0, 1.0, centre[1]], [0.0, 0.0, 1.0]])
    G = np.linalg.solve(C, H) @ C @ np.diag([f_i, f_i, 1.0])
    lam = (G[2] @ R_ji[2]) / (G[2] @ G[2])
    return float(lam * np.sum(G[:2] * R_ji[:2]) / np.sum(R_ji[:2] ** 2))


def _finite_median(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v) and v > 0]
    return float(np.median(finite)) if finite else float("nan")


def _initial_intrinsics(
    pairs: Sequence[_Pair], scan: _Scan, config: SelfCalConfig
) -> tuple[np.ndarray, list[str]]:
    """Starting [cx, cy, (f, 0, 0) per level] and how each level was started (see the module docstring):
    levels in increasing zoom, each from its own pairs, else from its pairs with lower levels."""
    level_of, R, n_levels = scan.level_of, scan.R_tel, len(scan.level_zoom)
    centre = (np.asarray(scan.image_size, float) - 1.0) / 2.0
    focal = np.full(n_levels, np.nan)
    methods = ["none"] * n_levels
    principal_point = None
    for level in range(n_levels):
        own = [p for p in pairs if level_of[p.i] == level_of[p.j] == level]
        f_tel = _finite_median([_telemetry_focal(p.H, R[p.j].T @ R[p.i], centre) for p in own])
        try:
            K = hartley_intrinsics([p.H for p in own], scan.image_size)
        except ValueError:
            K = None
        if K is not None and np.all(np.abs(K[:2, 2] - centre) <= centre) and np.isfinite(f_tel):
            if abs(K[0, 0] / f_tel - 1.0) <= config.init_agreement:
                focal[level], methods[level] = K[0, 0], "hartley"
                principal_point = K[:2, 2] if principal_point is None else principal_point
                continue
        if np.isfinite(f_tel):
            focal[level], methods[level] = f_tel, "telemetry"
            continue
        cross = [p for p in pairs if level_of[p.j] == level and level_of[p.i] < level]
        f_cross = [_cross_zoom_focal(p.H, R[p.j].T @ R[p.i], centre, focal[level_of[p.i]]) for p in cross]
        focal[level], methods[level] = _finite_median(f_cross), "cross-zoom"
    missing = [f"{scan.level_zoom[lv]:.3g}" for lv in range(n_levels) if not np.isfinite(focal[lv])]
    if missing:
        raise SelfCalibrationError(
            f"zoom {', '.join(missing)}: no pair of frames whose rotation moves the optical axis, within the "
            "zoom or to a lower one; scan each zoom with overlapping stops, or at the poses of a lower zoom"
        )
    start = np.zeros(2 + _LEVEL_PARAMS * n_levels)
    start[:2] = centre if principal_point is None else principal_point
    start[2::_LEVEL_PARAMS] = focal
    return start, methods


# --- bundle adjustment ------------------------------------------------------------------------------------


def _frame_rotations(R_tel: np.ndarray, camera: np.ndarray, n_levels: int) -> np.ndarray:
    """Adjusted frame orientations R_i = R_tel_i exp([δ_i]×) (F, 3, 3), camera -> mount, from the
    adjustment's parameters [cx, cy, (f, k1, k2) per level, δ per frame]."""
    return R_tel @ Rotation.from_rotvec(camera[2 + _LEVEL_PARAMS * n_levels :].reshape(-1, 3)).as_matrix()


def _level_intrinsics(camera: np.ndarray, n_levels: int, image_size: tuple[int, int]) -> list[Intrinsics]:
    """Intrinsics per zoom level from the adjustment's leading parameters [cx, cy, (f, k1, k2) per level]."""
    cx, cy = camera[:2]
    out = []
    for f, k1, k2 in camera[2 : 2 + _LEVEL_PARAMS * n_levels].reshape(-1, _LEVEL_PARAMS):
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        out.append(Intrinsics(K, np.array([k1, k2, 0.0, 0.0, 0.0]), image_size))
    return out


def _tracks(
    frame_pairs: Sequence[tuple[int, int, np.ndarray]], offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks (connected keypoints) from pairwise matches (i, j, (M, 2) keypoint indices); a track that holds
    two keypoints of one frame is dropped. Returns per observation its frame, keypoint and track (N,)."""
    edges = np.vstack([np.stack([offsets[i] + m[:, 0], offsets[j] + m[:, 1]], 1) for i, j, m in frame_pairs])
    n = int(offsets[-1])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    nodes = np.unique(edges)
    frame = np.searchsorted(offsets, nodes, side="right") - 1
    track = labels[nodes]
    n_frames = len(offsets) - 1
    per_frame = np.unique(track * n_frames + frame, return_counts=True)
    conflicted = np.unique(per_frame[0][per_frame[1] > 1] // n_frames)
    keep = ~np.isin(track, conflicted)
    _, track = np.unique(track[keep], return_inverse=True)
    return frame[keep], nodes[keep] - offsets[frame[keep]], track


def _subsample(matches: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return (
        matches if len(matches) <= limit else matches[np.sort(rng.choice(len(matches), limit, replace=False))]
    )


def _transfer_error(
    uv_from: np.ndarray,
    K_from: Intrinsics,
    R_from: np.ndarray,
    uv_to: np.ndarray,
    K_to: Intrinsics,
    R_to: np.ndarray,
) -> np.ndarray:
    """Distance (pixels) between ``uv_to`` and ``uv_from`` carried into the other frame (inf behind it)."""
    X = K_from.unproject(uv_from) @ R_from.T @ R_to
    ahead = X[:, 2] > 1e-6
    error = np.full(len(X), np.inf)
    error[ahead] = np.linalg.norm(K_to.project(X[ahead]) - uv_to[ahead], axis=1)
    return error


class _Scan:
    """The frames kept for the adjustment (re-indexed), their telemetry rotations and zoom levels."""

    def __init__(self, frames: Sequence[ScanFrame], used: np.ndarray, level_of: np.ndarray) -> None:
        self.index = np.flatnonzero(used)
        self.frames = [frames[i] for i in self.index]
        self.keypoints = [f.features.keypoints.astype(np.float64) for f in self.frames]
        self.offsets = np.cumsum([0] + [len(k) for k in self.keypoints])
        _, self.level_of = np.unique(level_of[self.index], return_inverse=True)
        zooms = np.array([f.zoom for f in self.frames])
        self.level_zoom = np.array(
            [zooms[self.level_of == lv].mean() for lv in range(self.level_of.max() + 1)]
        )
        self.R_tel = np.array([R_BC(f.pan_deg, f.tilt_deg) for f in self.frames])
        self.image_size = self.frames[0].features.image_size

    def observations(
        self, pair_matches: Sequence[tuple[int, int, np.ndarray]], x: np.ndarray, n_levels: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tracks of the pairwise matches: per observation its frame, track and pixel, and per track its
        direction in the mount frame (mean of its bearings under the camera parameters x, see
        :class:`_Adjustment`)."""
        frame, keypoint, track = _tracks(pair_matches, self.offsets)
        intrinsics = _level_intrinsics(x, n_levels, self.image_size)
        R = _frame_rotations(self.R_tel, x, n_levels)
        uv = np.empty((len(frame), 2))
        bearings = np.empty((len(frame), 3))
        for i in np.unique(frame):
            sel = frame == i
            uv[sel] = self.keypoints[i][keypoint[sel]]
            bearings[sel] = intrinsics[self.level_of[i]].unproject(uv[sel]) @ R[i].T
        directions = np.zeros((track.max() + 1, 3))
        np.add.at(directions, track, bearings)
        return frame, track, uv, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _basis(d: np.ndarray) -> np.ndarray:
    """Rotations (N, 3, 3) whose third column is the unit direction d (N, 3)."""
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return np.stack([e1, np.cross(d, e1), d], axis=2)


def _inverse_2x2(M: np.ndarray) -> np.ndarray:
    """Inverses (N, 2, 2) of 2x2 matrices (N, 2, 2); inf or NaN where singular (no exception)."""
    det = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
    adjugate = np.stack([M[:, 1, 1], -M[:, 0, 1], -M[:, 1, 0], M[:, 0, 0]], axis=1).reshape(-1, 2, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return adjugate / det[:, None, None]


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices [v]× (N, 3, 3) of vectors v (N, 3)."""
    z = np.zeros(len(v))
    return np.stack(
        [
            np.stack([z, -v[:, 2], v[:, 1]], 1),
            np.stack([v[:, 2], z, -v[:, 0]], 1),
            np.stack([-v[:, 1], v[:, 0], z], 1),
        ],
        axis=1,
    )


def _right_jacobian(rotvec: np.ndarray) -> np.ndarray:
    """SO(3) right Jacobians (N, 3, 3): exp(v + dv) ≈ exp(v) exp(J_r(v) dv)."""
    theta = np.linalg.norm(rotvec, axis=1)[:, None, None]
    small = theta < 1e-8
    t = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1.0 - np.cos(t)) / t**2)
    b = np.where(small, 1.0 / 6.0, (t - np.sin(t)) / t**3)
    S = _skew(rotvec)
    return np.eye(3) - a * S + b * (S @ S)


class _Adjustment:
    """Bundle adjustment of a rotating camera (see the module's Convention) by variable projection.

    Camera parameters ``x = [cx, cy, (f, k1, k2) per level, δ per frame (3)]``; track p's direction is
    ``B_p (a_p, b_p, 1)``, ``B_p`` a rotation whose third column is its starting direction. For given camera
    parameters every track is solved alone (Gauss-Newton on its 2 parameters, plain least squares also in the
    robust pass), so that :func:`scipy.optimize.least_squares` only sees the camera parameters, with Kaufman's
    Jacobian of the projected residuals (the tracks' 2x2 blocks of JᵀJ eliminated: the Schur complement).
    Residuals: pixel errors / keypoint σ (2 per observation), δ / telemetry σ, (k1, k2) / prior σ.
    """

    def __init__(
        self,
        obs_frame: np.ndarray,
        obs_track: np.ndarray,
        uv: np.ndarray,
        directions: np.ndarray,
        level_of: np.ndarray,
        R_tel: np.ndarray,
        config: SelfCalConfig,
    ) -> None:
        self.frame, self.track, self.uv = obs_frame, obs_track, uv
        self.level = level_of[obs_frame]
        self.R_tel = R_tel
        self.n_levels = int(level_of.max()) + 1
        self.n_frames, self.n_tracks = len(R_tel), len(directions)
        self.B = _basis(directions)
        self.config = config
        self.n_camera = 2 + _LEVEL_PARAMS * self.n_levels + 3 * self.n_frames
        level_cols = 2 + _LEVEL_PARAMS * self.level[:, None] + np.arange(_LEVEL_PARAMS)
        frame_cols = 2 + _LEVEL_PARAMS * self.n_levels + 3 * self.frame[:, None] + np.arange(3)
        self.cols = np.hstack([np.tile([0, 1], (len(uv), 1)), level_cols, frame_cols])
        """The camera parameters each observation depends on (N, 8)."""
        n = len(uv)
        self._per_track = csr_matrix((np.ones(n), (obs_track, np.arange(n))), shape=(self.n_tracks, n))

    def _sum_per_track(self, values: np.ndarray) -> np.ndarray:
        """Sums (P, ...) over each track's observations of per-observation ``values`` (N, ...)."""
        total = self._per_track @ values.reshape(len(values), -1)
        return np.asarray(total).reshape(self.n_tracks, *values.shape[1:])

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cx, cy), level parameters (L, 3), δ (F, 3)."""
        k = 2 + _LEVEL_PARAMS * self.n_levels
        return x[:2], x[2:k].reshape(-1, _LEVEL_PARAMS), x[k:].reshape(-1, 3)

    def rotations(self, x: np.ndarray) -> np.ndarray:
        """Adjusted frame orientations R_i (F, 3, 3), camera -> mount."""
        return _frame_rotations(self.R_tel, x, self.n_levels)

    def _track_to_camera(self, x: np.ndarray) -> np.ndarray:
        """Per observation ``R_iᵀ B_p`` (N, 3, 3): track coordinates (a, b, 1) -> camera frame."""
        return self.rotations(x).transpose(0, 2, 1)[self.frame] @ self.B[self.track]

    def _camera_points(self, RtB: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per observation its track's direction in the camera frame X (N, 3), its normalised image point
        ``xy = (X_x, X_y) / X_z`` (N, 2) and ``|xy|²`` (N, 1)."""
        X = np.einsum("nij,nj->ni", RtB, np.hstack([ab[self.track], np.ones((len(self.track), 1))]))
        xy = X[:, :2] / X[:, 2:3]
        return X, xy, np.einsum("ni,ni->n", xy, xy)[:, None]

    def _model(
        self, x: np.ndarray, RtB: np.ndarray, ab: np.ndarray, camera_jacobian: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Pixel residuals (N, 2) / keypoint σ at tracks ``ab`` (P, 2) (``RtB`` from
        :meth:`_track_to_camera`), their derivatives with respect to the observation's track (N, 2, 2) and,
        with ``camera_jacobian``, to its camera parameters (N, 2, 8)."""
        c, lv, delta = self.split(x)
        X, xy, r2 = self._camera_points(RtB, ab)
        z = X[:, 2:3]
        f, k1, k2 = (v[:, None] for v in lv[self.level].T)
        radial = 1.0 + r2 * (k1 + r2 * k2)
        sigma = self.config.keypoint_sigma_px
        residuals = ((f * radial) * xy + c - self.uv) / sigma
        d_xy = radial[:, :, None] * np.eye(2) + (2.0 * (k1 + 2.0 * k2 * r2))[:, :, None] * (
            xy[:, :, None] * xy[:, None, :]
        )
        P = np.concatenate([np.eye(2)[None] / z[:, :, None], -xy[:, :, None] / z[:, :, None]], axis=2)
        d_X = (f / sigma)[:, :, None] * d_xy @ P  # (N, 2, 3)
        J_track = d_X @ RtB[:, :, :2]
        if not camera_jacobian:
            return residuals, J_track, None
        d_delta = d_X @ _skew(X) @ _right_jacobian(delta)[self.frame]
        d_level = np.stack([radial * xy, f * xy * r2, f * xy * r2 * r2], axis=2) / sigma
        d_c = np.broadcast_to(np.eye(2) / sigma, (len(X), 2, 2))
        return residuals, J_track, np.concatenate([d_c, d_level, d_delta], axis=2)

    def _solve_tracks(
        self, x: np.ndarray, iterations: int = 20, max_step: float = 0.05
    ) -> tuple[np.ndarray, np.ndarray]:
        """``R_iᵀ B_p`` per observation and the tracks' (a, b) (P, 2) minimising their pixel residuals at
        camera parameters x: Gauss-Newton from the starting directions (so that the residuals are a function
        of x alone), steps clipped to ``max_step`` (radians). A trial x far off may leave NaN, which
        least_squares rejects."""
        RtB = self._track_to_camera(x)
        ab = np.zeros((self.n_tracks, 2))
        for _ in range(iterations):
            residuals, J_track, _ = self._model(x, RtB, ab, camera_jacobian=False)
            g = self._sum_per_track(np.einsum("nai,na->ni", J_track, residuals))
            M = self._sum_per_track(J_track.transpose(0, 2, 1) @ J_track)
            step = np.einsum("pij,pj->pi", _inverse_2x2(M), g)
            step *= np.minimum(1.0, max_step / np.maximum(np.linalg.norm(step, axis=1), 1e-300))[:, None]
            ab -= step
            if not np.abs(step).max() > 1e-10:
                break
        return RtB, ab

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Residual vector at camera parameters x, the tracks solved."""
        _, lv, delta = self.split(x)
        return np.concatenate(
            [
                self._model(x, *self._solve_tracks(x), camera_jacobian=False)[0].ravel(),
                delta.ravel() / np.radians(self.config.telemetry_sigma_deg),
                lv[:, 1:].ravel() / self.config.distortion_prior_sigma,
            ]
        )

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """Kaufman's Jacobian (dense) of :meth:`residuals`: the pixel rows' camera derivatives minus their
        projection onto the tracks' (J_c - J_t M⁻¹ Σ J_tᵀ J_c per track), then the priors' rows."""
        _, J_track, J_local = self._model(x, *self._solve_tracks(x), camera_jacobian=True)
        n = len(J_local)
        J = np.zeros((n, 2, len(x)))
        for k in range(self.cols.shape[1]):
            J[np.arange(n), :, self.cols[:, k]] = J_local[:, :, k]
        J = self._project_out_tracks(J_track, J)
        k = 2 + _LEVEL_PARAMS * self.n_levels
        rotation_rows = np.zeros((3 * self.n_frames, len(x)))
        rotation_rows[:, k:] = np.eye(3 * self.n_frames) / np.radians(self.config.telemetry_sigma_deg)
        distortion_rows = np.zeros((2 * self.n_levels, len(x)))
        columns = (2 + _LEVEL_PARAMS * np.arange(self.n_levels)[:, None] + np.array([1, 2])).ravel()
        distortion_rows[np.arange(len(columns)), columns] = 1.0 / self.config.distortion_prior_sigma
        return np.vstack([J.reshape(2 * n, len(x)), rotation_rows, distortion_rows])

    def _project_out_tracks(self, J_track: np.ndarray, J: np.ndarray) -> np.ndarray:
        """Pixel-residual derivatives J (N, 2, k) with their projection onto the tracks' parameters taken out
        (Kaufman: J - J_t M⁻¹ Σ J_tᵀ J per track, ``J_track`` (N, 2, 2))."""
        T = self._sum_per_track(J_track.transpose(0, 2, 1) @ J)
        M_inv = _inverse_2x2(self._sum_per_track(J_track.transpose(0, 2, 1) @ J_track))
        return J - J_track @ (M_inv @ T)[self.track]

    def fixed_distortion_jacobian(self, x: np.ndarray) -> np.ndarray:
        """Derivatives (2N, 3) of the pixel residuals with respect to the lowest zoom level's distortion terms
        that the model fixes at 0, (p1, p2, k3) (OpenCV's tangential and sixth-order radial terms), the
        tracks projected out as in :meth:`jacobian`; zero for the observations of other levels."""
        RtB, ab = self._solve_tracks(x)
        _, J_track, _ = self._model(x, RtB, ab, camera_jacobian=False)
        _, xy, r2 = self._camera_points(RtB, ab)
        f = self.split(x)[1][self.level, 0] * (self.level == 0) / self.config.keypoint_sigma_px
        u, v = xy[:, 0], xy[:, 1]
        d = np.stack(
            [
                np.stack([2.0 * u * v, r2[:, 0] + 2.0 * v * v], axis=1),  # p1
                np.stack([r2[:, 0] + 2.0 * u * u, 2.0 * u * v], axis=1),  # p2
                xy * r2**3,  # k3
            ],
            axis=2,
        )
        return self._project_out_tracks(J_track, d * f[:, None, None]).reshape(-1, 3)

    def solve(self, x0: np.ndarray, robust: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adjusted camera parameters from x0 (Huber loss when ``robust``) with the Jacobian and the
        residuals there."""
        lower = np.full(len(x0), -np.inf)
        lower[2 : 2 + _LEVEL_PARAMS * self.n_levels : _LEVEL_PARAMS] = 1.0  # f >= 1 px
        result = least_squares(
            self.residuals,
            x0,
            jac=self.jacobian,
            bounds=(lower, np.inf),
            loss="huber" if robust else "linear",
            f_scale=self.config.loss_scale_px / self.config.keypoint_sigma_px,
            x_scale="jac",
            method="trf",
        )
        return result.x, self.jacobian(result.x), self.residuals(result.x)

    def residual_variance(self, J: np.ndarray, residuals: np.ndarray) -> float:
        """Reduced χ² of the (whitened) residuals: 2 degrees of freedom per track taken off, and one per
        column of J."""
        dof = max(len(residuals) - J.shape[1] - 2 * self.n_tracks, 1)
        return float(residuals @ residuals) / dof

    def covariance(self, J: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Covariance of the camera parameters (the tracks eliminated), scaled by the reduced χ² of the
        residuals."""
        return np.linalg.inv(J.T @ J) * self.residual_variance(J, residuals)

    def calibration_covariance(self, x: np.ndarray, J: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Covariance (9 x 9, :data:`geometry.intrinsics.CALIBRATION_PARAMETERS`: fx, fy, cx, cy pixels;
        k1, k2, p1, p2, k3) of the lowest zoom level's calibration, for the drift estimate's share of σ and
        its correction by the reference scan (:class:`geometry.drift.CalibrationUncertainty`).

        From the adjustment's normal equations at its solution (``J``, ``residuals``: the whitened Jacobian
        and residuals, tracks eliminated), every other parameter (frame rotations, other zoom levels)
        marginalised, scaled by the residuals' reduced χ². The model ties or fixes some of the 9:

        - p1, p2, k3 are fixed at 0, which is an assumption, not a measurement. They enter as 3 more columns
          of the normal equations (:meth:`fixed_distortion_jacobian`) with a weak prior around 0,
          σ ``tangential_prior_sigma`` for p1, p2 and ``distortion_prior_sigma`` (as k1, k2) for k3: their
          variance is what the scan's residuals leave of that prior (the scan could not have missed a
          larger term; where it barely sees one, a narrow field of view, the prior remains), and the other
          parameters' covariance grows by what the fixed terms could have biased them (their correlations).
        - fy is fx (square pixels): fy = fx + e with e independent, σ(e) = ``square_pixel_sigma_fraction``
          x σ(fx), so fy has fx's variance plus that small part, correlation ~1: the matrix inverts (the
          drift's calibration correction uses its inverse as a prior) while a correction can hardly move
          fx and fy apart.
        """
        prior = np.array(
            [self.config.tangential_prior_sigma] * 2 + [self.config.distortion_prior_sigma], dtype=float
        )
        n_prior = 3 * self.n_frames + 2 * self.n_levels
        fixed = np.vstack([self.fixed_distortion_jacobian(x), np.zeros((n_prior, 3)), np.diag(1.0 / prior)])
        J_all = np.hstack([np.vstack([J, np.zeros((3, J.shape[1]))]), fixed])
        full = self.covariance(J_all, np.concatenate([residuals, np.zeros(3)]))
        n = J.shape[1]
        # [f, cx, cy, k1, k2, p1, p2, k3] of the lowest level
        C = full[np.ix_(*[[2, 0, 1, 3, 4, n, n + 1, n + 2]] * 2)]
        tie = np.zeros((9, 8))
        tie[0, 0] = tie[1, 0] = 1.0
        tie[2:, 1:] = np.eye(7)
        covariance = tie @ C @ tie.T
        covariance[1, 1] += (self.config.square_pixel_sigma_fraction**2) * C[0, 0]
        return covariance


def _result(
    problem: _Adjustment,
    x: np.ndarray,
    J: csr_matrix,
    residuals: np.ndarray,
    scan: _Scan,
    pair_matches: list[tuple[int, int, np.ndarray]],
    methods: list[str],
    names: list[str],
    config: SelfCalConfig,
) -> SelfCalibration:
    """The calibration with its σ and diagnostics, after the checks that turn an undetermined result into a
    :class:`SelfCalibrationError`."""
    n_levels = len(methods)
    sigma = np.sqrt(np.diag(problem.covariance(J, residuals)))
    intrinsics = _level_intrinsics(x, n_levels, scan.image_size)
    pixel = residuals[: 2 * len(problem.frame)].reshape(-1, 2) * config.keypoint_sigma_px
    sq = np.einsum("ni,ni->n", pixel, pixel)
    obs_level = scan.level_of[problem.frame]
    levels = []
    for lv in range(n_levels):
        s_f, s_k1, s_k2 = sigma[2 + _LEVEL_PARAMS * lv : 2 + _LEVEL_PARAMS * (lv + 1)]
        f, zoom = intrinsics[lv].fx, float(scan.level_zoom[lv])
        if not s_f / f <= config.max_focal_rel_sigma:
            raise SelfCalibrationError(
                f"zoom {zoom:.3g}: the focal length is not determined (σ {s_f:.3g} px = "
                f"{100 * s_f / f:.2g} % > {100 * config.max_focal_rel_sigma:.2g} %): scan this zoom with "
                "more overlap between frames"
            )
        levels.append(
            ZoomLevelCalibration(
                zoom=zoom,
                intrinsics=intrinsics[lv],
                sigma_focal_px=float(s_f),
                sigma_k=(float(s_k1), float(s_k2)),
                frames=tuple(names[scan.index[i]] for i in np.flatnonzero(scan.level_of == lv)),
                rms_px=float(np.sqrt(sq[obs_level == lv].mean()))
                if np.any(obs_level == lv)
                else float("nan"),
                initialisation=methods[lv],
            )
        )
    sigma_pp = (float(sigma[0]), float(sigma[1]))
    if not max(sigma_pp) <= config.max_principal_point_sigma_px:
        raise SelfCalibrationError(
            f"the principal point is not determined (σ cx {sigma_pp[0]:.3g} px, cy {sigma_pp[1]:.3g} px): "
            "scan the lowest zoom over a wider range of directions (e.g. two tilt rows)"
        )
    R = problem.rotations(x)
    corrections = np.degrees(np.linalg.norm(problem.split(x)[2], axis=1))
    worst = int(np.argmax(corrections))
    if corrections[worst] > config.max_telemetry_error_deg:
        raise SelfCalibrationError(
            f"the images and the telemetry disagree by {corrections[worst]:.2f}° at "
            f"{names[scan.index[worst]]} (> {config.max_telemetry_error_deg}°): wrong telemetry, a moving "
            "mount or mismatched frames"
        )
    used_names = [names[i] for i in scan.index]
    dropped = np.setdiff1d(np.arange(len(names)), scan.index)
    return SelfCalibration(
        levels=tuple(levels),
        sigma_principal_point_px=sigma_pp,
        rms_px=float(np.sqrt(sq.mean())),
        observations=len(problem.frame),
        tracks=problem.n_tracks,
        frames_used=tuple(used_names),
        frames_dropped=tuple(names[i] for i in dropped),
        pairs=tuple((used_names[i], used_names[j], len(m)) for i, j, m in pair_matches),
        rotations=R,
        max_telemetry_correction_deg=float(corrections[worst]),
        covariance=problem.calibration_covariance(x, J, residuals),
    )
