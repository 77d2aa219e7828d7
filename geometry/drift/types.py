"""Data types of the drift estimation: the frames it reads, its settings, its results and the matched
bearings the solver works on.

Units: angles in degrees, pixels in the image they belong to (keypoints in the original image; thresholds
and residuals of the solver in the undistorted reference image). Frames (:mod:`geometry.rotations`): camera
``C`` (OpenCV: x right, y down, z forward), mount ``B`` (z up), world ``W``; bearings are unit vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from geometry.camera import Intrinsics
from geometry.features import Features
from geometry.refine import RefineConfig
from geometry.rotations import R_BC


@dataclass(frozen=True)
class FrameObservation:
    """One frame: its features (pixels in the original image), PTZ telemetry (pan and tilt in degrees, zoom
    ONVIF-normalised 0..1) and the intrinsics at that zoom and at the image's size (pixels).

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

    def mount_bearings(self, pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit mount-frame bearings (N, 3) of the keypoints (or of ``pixels`` (N, 2)) at the frame's
        telemetry and their derivative with respect to the pixel (N, 3, 2; per pixel, up to the bearing's
        length)."""
        xy = self.intrinsics.undistort_pixels(self.features.keypoints if pixels is None else pixels)
        h = np.hstack([xy, np.ones((len(xy), 1))])
        length = np.linalg.norm(h, axis=1)
        R = R_BC(self.pan_deg, self.tilt_deg)
        dirs = (R[:, :2] @ np.linalg.inv(self.intrinsics.K[:2, :2]))[None] / length[:, None, None]
        return (h / length[:, None]) @ R.T, dirs


_LOSSES = ("linear", "huber", "soft_l1", "cauchy", "arctan")
"""The robust losses of scipy's ``least_squares``."""


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and solver settings of :func:`geometry.drift.estimate_drift` (pixels are pixels of the
    undistorted reference image, angles degrees)."""

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
    min_explained_fraction: float = 0.7
    """Smallest share of a query frame's view that the reference explains: of the 8 x 6 cells of the query
    image where the reference's keypoints land under the estimated drift, those holding an inlier. Below it
    the frame is flagged as a changed scene (occluded, repainted, rebuilt, looking elsewhere) and not used
    (measured: 97-100 % on unchanged frames with typical nuisances, 41-58 % with 60 % occluded or 50 %
    repainted)."""
    max_darkening: float = 2.0
    """Largest factor by which a query frame's image may be darker (mean grey level) or flatter (RMS gradient
    per reference pixel) than its reference's; beyond it the view (night, infrared light, heavy fog, glare)
    is flagged as a changed scene, even where the features still match."""
    max_sigma_deg: float = 0.02
    """Largest standard deviation (degrees) of yaw, pitch or roll that is still reported."""
    keypoint_bias_sigma_px: float = 0.5
    """Prior σ (pixels) of the keypoint bias: a 2-D shift common to all keypoints (a detector's bias;
    OpenCV's SIFT has 0.25 px). It biases the drift where query and reference zooms differ, so it is
    estimated with the drift and its uncertainty enters σ. It is kept after photometric refinement, where it
    absorbs a principal-point error of the calibration instead (demo fleet, chessboard K: roll error 0.006 ->
    0.002°). 0 assumes unbiased keypoints and an exact K."""
    refine: RefineConfig | None = field(default_factory=RefineConfig)
    """Photometric refinement of the matches when the frames carry images (None: keypoints as detected)."""
    refine_max_matches: int = 200
    """Inliers refined per query frame (an even random subset when there are more; the others are dropped:
    a few hundred refined matches constrain a frame better than thousands of detected ones)."""
    parallax: bool = True
    """Model the parallax of an optical centre offset from the pan/tilt axes: when :func:`estimate_drift` is
    given no offset, it estimates one from the reference scan (:mod:`geometry.drift.parallax`) and uses it
    when the reference frames show parallax (otherwise every view is a rotation about the optical centre)."""
    offset_length_m: float = 0.05
    """Nominal length (metres) of the estimated optical-centre offset: only its direction is observable, each
    match's depth absorbs the scale (measured: 4 or 8 cm for a true 6 cm gave the same drift)."""
    offset_axis_sigma_rad: float = 0.5
    """Prior σ (radians) of the offset's angle from the optical axis: a direction the reference scan cannot
    see (e.g. sideways when no pan neighbours overlap) stays near the axis, with this uncertainty in σ."""
    inverse_depth_sigma_per_m: float = 1.0
    """Prior σ (1/m, at the nominal offset length) of a matched point's inverse depth, which is
    marginalised: along its epipolar line a residual is down-weighted by ``1/√(1 + (σ_ρ·|d|/σ_n)²)`` (|d|:
    pixels of parallax per unit inverse depth, σ_n: the matches' noise), across it kept."""
    min_parallax_px: float = 0.05
    """Smallest median parallax (reference pixels, along the epipolar lines of the reference scan's
    overlapping frame pairs) for which the offset is used; below it the views are treated as rotations."""
    offset_pairs_per_frame: int = 3
    """Overlapping reference frames matched to each reference frame to estimate the offset."""
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
        if self.max_darkening <= 1.0:
            raise ValueError(f"max_darkening must be > 1, got {self.max_darkening}")
        if not 0.0 <= self.min_explained_fraction <= 1.0:
            raise ValueError(f"min_explained_fraction must lie in [0, 1], got {self.min_explained_fraction}")
        if self.min_inliers < 3 or self.min_hull_fraction < 0 or self.keypoint_bias_sigma_px < 0:
            raise ValueError("min_inliers must be >= 3, min_hull_fraction and keypoint_bias_sigma_px >= 0")
        if min(self.offset_length_m, self.inverse_depth_sigma_per_m, self.offset_axis_sigma_rad) <= 0:
            raise ValueError("offset_length_m, inverse_depth_sigma_per_m, offset_axis_sigma_rad must be > 0")
        if self.min_parallax_px < 0:
            raise ValueError("min_parallax_px must be >= 0")
        if self.offset_pairs_per_frame < 1:
            raise ValueError("offset_pairs_per_frame must be >= 1")


@dataclass(frozen=True)
class DriftEstimate:
    """Mount drift ``D = Rz(-yaw) Rx(pitch) Ry(roll)`` (angles in degrees; the true ``R_WB = R_align · D``,
    so a query frame has ``R_WC = R_align · D · R_BC(pan, tilt)``) with 1-σ uncertainties (degrees).

    ``inliers`` and ``n_matches`` count matches (keypoint pairs), ``n_query_frames`` the query frames used.
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
class CalibrationUncertainty:
    """The calibration every frame's intrinsics derive from (``intrinsics``, at its image size) and the
    covariance (9 x 9) of its parameters (:data:`geometry.intrinsics.CALIBRATION_PARAMETERS`: fx, fy, cx,
    cy in pixels, k1, k2, p1, p2, k3 unitless), e.g. :attr:`geometry.intrinsics.ChessboardCalibration.
    covariance`. Its error is shared by the query and the reference frames, and enters the drift's σ."""

    intrinsics: Intrinsics
    covariance: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.covariance) != (9, 9) or not np.all(np.isfinite(self.covariance)):
            raise ValueError("the calibration covariance must be a finite 9 x 9 matrix")

    def perturbed(self, frame: Intrinsics, delta: np.ndarray) -> Intrinsics:
        """A frame's intrinsics (derived from the calibration at the frame's zoom and image size) with the
        calibration's parameters moved by ``delta`` (9,): the focal lengths by the calibrated ones' relative
        change (a zoom table scales with them), the principal point by ``delta`` scaled to the frame's image
        size, the distortion by ``delta``."""
        K = frame.K.copy()
        K[0, :2] *= 1.0 + delta[0] / self.intrinsics.fx
        K[1, 1] *= 1.0 + delta[1] / self.intrinsics.fy
        K[:2, 2] += delta[2:4] * frame.image_size[0] / self.intrinsics.image_size[0]
        dist = frame.dist.copy()
        dist[:5] += delta[4:]
        return Intrinsics(K, dist, frame.image_size)


@dataclass(frozen=True)
class OpticalCentreOffset:
    """The optical centre's offset from the pan/tilt rotation centre, constant per camera, in the camera
    frame (x right, y down, z forward), metres, as estimated from the reference scan
    (:func:`geometry.drift.parallax.estimate_optical_centre_offset`).

    Only the direction is observable (each match's depth absorbs the scale): ``offset_m`` is the direction
    times :attr:`DriftConfig.offset_length_m`, or zero when the reference scan shows no parallax
    (``reason`` says why). ``covariance`` (3 x 3, m², rank 2: the direction's uncertainty) enters the drift's
    σ. ``parallax_px``: median parallax of the reference pairs' inliers along their epipolar lines (pixels);
    ``n_matches``: those inliers. ``inverse_depths``: per reference frame, the mean and σ (K_r, 2) of each
    keypoint's inverse depth (1/m at the nominal length) measured by that parallax, NaN where unknown; a
    query match to that keypoint then knows where along its epipolar line it lies.
    """

    offset_m: np.ndarray
    covariance: np.ndarray
    parallax_px: float
    n_matches: int
    reason: str = ""
    inverse_depths: tuple[np.ndarray, ...] = ()

    @classmethod
    def none(cls, reason: str, parallax_px: float = 0.0, n_matches: int = 0) -> OpticalCentreOffset:
        """No offset: views are rotations about the optical centre."""
        return cls(np.zeros(3), np.zeros((3, 3)), parallax_px, n_matches, reason)

    @property
    def used(self) -> bool:
        """Whether the drift is estimated with parallax (a non-zero offset)."""
        return bool(np.any(self.offset_m))


@dataclass(frozen=True)
class ReferenceScanModel:
    """What the reference scan's overlapping frame pairs (exact rotations apart) tell about the camera: its
    optical-centre ``offset`` (with the keypoints' depths) and, given a calibration with its covariance, that
    calibration corrected by the scan: ``correction`` (9,) of its parameters
    (:data:`geometry.intrinsics.CALIBRATION_PARAMETERS`, pixels / unitless) and ``calibration``, the corrected
    calibration with the posterior covariance (None without a calibration)."""

    offset: OpticalCentreOffset
    calibration: CalibrationUncertainty | None = None
    correction: np.ndarray = field(default_factory=lambda: np.zeros(9))


@dataclass(frozen=True)
class DriftReport:
    """The drift of one camera-hour: one estimate per query frame (that frame alone, keyed by its name) and
    the joint estimate of the single drift shared by all of them; ``offset``: the optical-centre offset the
    estimates used (None: parallax not modelled); ``calibration``: the calibration (corrected by the
    reference scan, with its covariance) whose uncertainty σ includes (None: none given)."""

    per_frame: list[tuple[str, DriftEstimate]]
    joint: DriftEstimate
    offset: OpticalCentreOffset | None = None
    calibration: CalibrationUncertainty | None = None


@dataclass(frozen=True)
class BearingMatches:
    """Matched bearings pooled over (query, reference) frame pairs: N matches from Q query frames.

    ``m_query`` (N, 3): unit query bearings in the mount frame at the query's telemetry, ``R_BC(q) · b_q``.
    ``query_bias_dirs`` (N, 3, 2): change of ``m_query`` (up to its length, which projection ignores) per
    pixel of keypoint bias in the query image, ``R_BC(q)[:, :2] · K_q[:2, :2]⁻¹ / ‖(x, y, 1)‖``.
    ``b_reference`` (N, 3): unit reference bearings in the reference camera frame (undistorted).
    ``R_CB_reference`` (N, 3, 3): ``R_BC(r)ᵀ`` of each match's reference frame.
    ``R_BC_query`` (N, 3, 3): ``R_BC(q)`` of each match's query frame (places its optical centre).
    ``reference_pixels`` (N, 2): the reference keypoints (pixels; refined positions once refined).
    ``query_calibration_dirs`` (N, 3, k), ``reference_calibration_dirs`` (N, 3, k): derivatives of
    ``m_query`` and ``b_reference`` with respect to the k parameters of the camera's calibration
    (:class:`CalibrationUncertainty`; k = 0 without one), for its share of σ.
    ``inverse_depth_prior`` (N, 2): mean and σ of the inverse depth (1/m, at the optical-centre offset's
    nominal length) of each match's point, from the reference scan (:attr:`OpticalCentreOffset.inverse_depths`
    of its reference keypoint); NaN where none is known.
    ``focal_reference`` (N, 2, 2): the reference frame's ``K[:2, :2]`` (pixels) for reprojection errors.
    ``query_index`` (N,), ``query_pixels`` (N, 2): which query frame and where in it (pixels).
    ``reference_index`` (N,): which reference frame (index into the references).
    ``keypoint_ids`` (N, 2): ids of the query and of the reference keypoint, unique over all frames.
    ``query_image_sizes``: (width, height) in pixels of each of the Q query frames.
    """

    m_query: np.ndarray
    query_bias_dirs: np.ndarray
    b_reference: np.ndarray
    R_CB_reference: np.ndarray
    R_BC_query: np.ndarray
    reference_pixels: np.ndarray
    query_calibration_dirs: np.ndarray
    reference_calibration_dirs: np.ndarray
    inverse_depth_prior: np.ndarray
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

    @classmethod
    def from_pair(
        cls,
        indices: tuple[int, int],
        query: FrameObservation,
        query_bearings: tuple[np.ndarray, np.ndarray],
        reference: FrameObservation,
        b_reference: np.ndarray,
        pairs: np.ndarray,
        keypoint_ids: np.ndarray,
        sizes: tuple[tuple[int, int], ...],
        reference_depths: np.ndarray | None = None,
    ) -> BearingMatches:
        """Matches of one (query, reference) frame pair from keypoint index pairs [query_idx, reference_idx]:
        ``indices`` (query index, reference index), the query's :meth:`FrameObservation.mount_bearings`, the
        reference's unit camera-frame bearings, the two frames' first keypoint ids (``keypoint_ids`` (2,)),
        the query image sizes and the reference keypoints' inverse depths (mean, σ) (K_r, 2) if known."""
        n = len(pairs)
        m_query, dirs = query_bearings
        depths = np.full((n, 2), np.nan) if reference_depths is None else reference_depths[pairs[:, 1]]
        return cls(
            m_query[pairs[:, 0]],
            dirs[pairs[:, 0]],
            b_reference[pairs[:, 1]],
            np.broadcast_to(R_BC(reference.pan_deg, reference.tilt_deg).T, (n, 3, 3)),
            np.broadcast_to(R_BC(query.pan_deg, query.tilt_deg), (n, 3, 3)),
            reference.features.keypoints[pairs[:, 1]].astype(float),
            np.zeros((n, 3, 0)),
            np.zeros((n, 3, 0)),
            depths,
            np.broadcast_to(reference.intrinsics.K[:2, :2], (n, 2, 2)),
            np.full(n, indices[0]),
            query.features.keypoints[pairs[:, 0]].astype(float),
            np.full(n, indices[1]),
            pairs + keypoint_ids,
            sizes,
        )

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
