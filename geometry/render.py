"""Render what a PTZ camera sees from an equirectangular panorama (the simulator's world, the tests' truth).

Panorama convention (world frame W = local ENU: x east, y north, z up):
- azimuth ``az`` is measured clockwise from north (+y) seen from above, so a direction is
  ``d_W = (cos(el) sin(az), cos(el) cos(az), sin(el))`` (the same as ``rotations.pan_tilt_of_direction``);
- the panorama's centre column faces north and azimuth grows to the right (the usual equirectangular view from
  inside, as in pannellum): the image's left edge is ``az = -180°``, its right edge ``az = +180°``;
- elevation is +90° at the top edge (row 0's top) and -90° at the bottom edge.
With pixel centres at integers, the continuous pixel of a direction in a ``W x H`` panorama is
``col = W (az + 180°) / 360° - 0.5`` (modulo ``W``) and ``row = H (90° - el) / 180° - 0.5``.

The world is the panorama at infinite distance (a pure rotation camera), or with ``ground_depth_m`` a
finite-depth world: the panorama's lower half lies on a ground plane ``z = -ground_depth_m`` (metres) below
the world origin (the PTZ head's rotation centre) and its upper half at infinity. A ground point ``X_W``
carries the panorama's colour in the direction of ``X_W`` from the origin, so a camera whose optical centre
sits at the origin sees exactly the infinite-distance image, and one whose optical centre is displaced
(``camera_centre_W``, metres) sees the ground with parallax; each pixel's ray is cast onto the plane.

A small mip pyramid (2x2 box averages) is kept so that wide fields of view render without aliasing: each
output pixel blends the two levels around ``log2(pixel angle / panorama row angle)`` (trilinear mip mapping,
isotropic: near the poles the panorama's columns are oversampled, which is harmless). Within a level the
lookup is bicubic, with wrap-around in azimuth.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from geometry.camera import Intrinsics

_PAD = 4
"""Columns copied from the opposite edge on each side of every level (wrap-around for the cubic kernel)."""

_BEARING_CACHE: OrderedDict[tuple[bytes, bytes, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = (
    OrderedDict()
)
_BEARING_CACHE_SIZE = 8
_BEARING_CACHE_LOCK = threading.Lock()


class Panorama:
    """Equirectangular RGB panorama (uint8, ``H x W x 3``, ``W = 2 H``) with its mip pyramid.

    See the module docstring for the mapping between world directions and panorama pixels. ``image`` is the
    full-resolution panorama; ``levels`` the mip levels (level 0 = full resolution), each with a few columns
    copied from the opposite edge on both sides for the wrap-around.
    """

    def __init__(self, image_rgb: np.ndarray, max_levels: int = 8) -> None:
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"panorama must be an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}"
            )
        h, w = image.shape[:2]
        if w != 2 * h or h < 8:
            raise ValueError(
                f"an equirectangular panorama has width = 2 x height (at least 16x8), got {w}x{h}"
            )
        if max_levels < 1:
            raise ValueError("max_levels must be at least 1")
        levels = [image]
        while len(levels) < max_levels and levels[-1].shape[0] >= 64:
            prev = levels[-1]
            size = (prev.shape[1] // 2, prev.shape[0] // 2)
            levels.append(cv2.resize(prev, size, interpolation=cv2.INTER_AREA))
        self.image = image
        self.levels = tuple(cv2.copyMakeBorder(lv, 0, 0, _PAD, _PAD, cv2.BORDER_WRAP) for lv in levels)
        self._level_sizes = tuple((lv.shape[1], lv.shape[0]) for lv in levels)

    @classmethod
    def load(cls, path: str | Path, max_levels: int = 8) -> Panorama:
        """Read an equirectangular image file (any format OpenCV reads) as RGB."""
        path = Path(path)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read panorama image {path}")
        return cls(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_levels=max_levels)

    @property
    def width(self) -> int:
        return self._level_sizes[0][0]

    @property
    def height(self) -> int:
        return self._level_sizes[0][1]

    @property
    def row_angle_rad(self) -> float:
        """Angular height of one full-resolution panorama pixel (radians)."""
        return float(np.pi / self.height)

    def pixel_of_direction(self, d_W: np.ndarray) -> np.ndarray:
        """World directions (N, 3) -> continuous full-resolution panorama pixels (N, 2) as (col, row)."""
        u_frac, v_frac = _panorama_fractions(np.asarray(d_W, dtype=np.float64).reshape(-1, 3))
        return np.stack([u_frac * self.width - 0.5, v_frac * self.height - 0.5], axis=1)

    def direction_of_pixel(self, pixels: np.ndarray) -> np.ndarray:
        """Continuous full-resolution panorama pixels (N, 2) as (col, row) -> unit world directions (N, 3)."""
        uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        az = 2 * np.pi * (uv[:, 0] + 0.5) / self.width - np.pi
        el = np.pi / 2 - np.pi * (uv[:, 1] + 0.5) / self.height
        return np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], axis=1)

    def sample(self, u_frac: np.ndarray, v_frac: np.ndarray, level: int) -> np.ndarray:
        """Bicubic lookup at panorama fractions (``u`` in [0, 1) along azimuth, ``v`` in [0, 1] down) on one
        mip level; the arrays' shape (2-D, float32) is the output image's."""
        w, h = self._level_sizes[level]
        map_x = (u_frac * w + (_PAD - 0.5)).astype(np.float32)
        map_y = (v_frac * h - 0.5).astype(np.float32)
        return cv2.remap(self.levels[level], map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

    @property
    def num_levels(self) -> int:
        return len(self.levels)


def _panorama_fractions(d_W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directions (..., 3) -> (u, v) fractions of the panorama: u = (az + 180°) / 360° in [0, 1),
    v = (90° - el) / 180° in [0, 1]. Directions need not be unit length."""
    x, y, z = d_W[..., 0], d_W[..., 1], d_W[..., 2]
    az = np.arctan2(x, y)
    el = np.arctan2(z, np.hypot(x, y))
    u = np.mod(az / (2 * np.pi) + 0.5, 1.0)
    v = 0.5 - el / np.pi
    return u, v


def _bearing_grid(intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Unit camera-frame bearings of every pixel centre, (H, W, 3) float32, and log2 of each pixel's angular
    size in radians, (H, W) float32. Cached per intrinsics (undistortion is the slow part)."""
    key = (intrinsics.K.tobytes(), intrinsics.dist.tobytes(), intrinsics.image_size)
    with _BEARING_CACHE_LOCK:
        cached = _BEARING_CACHE.get(key)
        if cached is not None:
            _BEARING_CACHE.move_to_end(key)
            return cached
    w, h = intrinsics.image_size
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    bearings = intrinsics.unproject(np.stack([uu.ravel(), vv.ravel()], axis=1)).reshape(h, w, 3)
    # Angle to the right and lower neighbours (chord length = angle for small angles); the last column/row
    # repeats its neighbour's value.
    dx = np.linalg.norm(np.diff(bearings, axis=1), axis=2)
    dy = np.linalg.norm(np.diff(bearings, axis=0), axis=2)
    dx = np.concatenate([dx, dx[:, -1:]], axis=1)
    dy = np.concatenate([dy, dy[-1:, :]], axis=0)
    log2_angle = np.log2(np.maximum(np.maximum(dx, dy), 1e-12))
    entry = (bearings.astype(np.float32), log2_angle.astype(np.float32))
    with _BEARING_CACHE_LOCK:
        _BEARING_CACHE[key] = entry
        if len(_BEARING_CACHE) > _BEARING_CACHE_SIZE:
            _BEARING_CACHE.popitem(last=False)
    return entry


def _check_rotation(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ValueError(f"R_WC must be a finite 3x3 rotation matrix, got shape {R.shape}")
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise ValueError("R_WC must be a rotation (orthonormal, det = +1)")
    return R


@dataclass(frozen=True)
class Nuisances:
    """Image degradations applied after the geometric rendering, in this order: a repainted part of the scene,
    moving occluders (opaque shapes in front of the scene), haze, infrared night illumination, optical blur,
    exposure and white balance, sensor noise, JPEG compression.

    Attributes:
        occluder_fraction: fraction of the image (0..0.9) covered by a few random opaque ellipses/rectangles.
        blur_sigma_px: Gaussian blur sigma in output pixels (0 = none).
        exposure_gain: multiplies all channels (1 = unchanged).
        white_balance: per-channel (R, G, B) gains applied on top of ``exposure_gain``.
        noise_sigma: additive Gaussian sensor noise, in 8-bit digital numbers.
        jpeg_quality: JPEG round trip at this quality (1..100), or None for none.
        repainted_fraction: fraction of the image (0..0.9) in one rectangle whose content is cut into 16 px
            blocks put back in random order: still textured, but no longer the scene (repainted, rebuilt).
        haze: share (0..0.95) of the light replaced by grey airlight (fog): contrast falls to ``1 - haze``.
        infrared_night: a night view under an infrared illuminator: monochrome from a near-infrared-like
            channel mix (vegetation bright), a third of the light, falling off from the centre.
    """

    occluder_fraction: float = 0.0
    blur_sigma_px: float = 0.0
    exposure_gain: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    repainted_fraction: float = 0.0
    haze: float = 0.0
    infrared_night: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.occluder_fraction <= 0.9 or not 0.0 <= self.repainted_fraction <= 0.9:
            raise ValueError("occluder_fraction and repainted_fraction must lie in [0, 0.9]")
        if not 0.0 <= self.haze <= 0.95:
            raise ValueError(f"haze must lie in [0, 0.95], got {self.haze}")
        if self.blur_sigma_px < 0 or self.noise_sigma < 0:
            raise ValueError("blur_sigma_px and noise_sigma must be non-negative")
        if self.exposure_gain <= 0 or len(self.white_balance) != 3 or min(self.white_balance) <= 0:
            raise ValueError("exposure_gain and the three white_balance gains must be positive")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must lie in 1..100 or be None, got {self.jpeg_quality}")

    @classmethod
    def typical(cls) -> Nuisances:
        """A realistic outdoor security camera: slight blur, mild warm white balance, 2 DN noise, JPEG 85,
        a passing object covering 3 % of the frame."""
        return cls(
            occluder_fraction=0.03,
            blur_sigma_px=0.6,
            exposure_gain=1.0,
            white_balance=(1.03, 1.0, 0.97),
            noise_sigma=2.0,
            jpeg_quality=85,
        )

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade an RGB uint8 image (H, W, 3); returns a new uint8 image."""
        out = image.copy()
        if self.repainted_fraction > 0:
            _repaint(out, self.repainted_fraction, rng)
        if self.occluder_fraction > 0:
            _draw_occluders(out, self.occluder_fraction, rng)
        if self.haze > 0:
            out = np.rint((1.0 - self.haze) * out + self.haze * 200.0).astype(np.uint8)
        if self.infrared_night:
            out = _infrared_night(out)
        if self.blur_sigma_px > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur_sigma_px)
        gains = self.exposure_gain * np.asarray(self.white_balance, dtype=np.float32)
        if self.noise_sigma > 0 or np.any(gains != 1.0):
            f = out.astype(np.float32) * gains
            if self.noise_sigma > 0:
                f += rng.normal(0.0, self.noise_sigma, size=f.shape).astype(np.float32)
            out = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        if self.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
        return out


def _repaint(image: np.ndarray, fraction: float, rng: np.random.Generator, block: int = 16) -> None:
    """Shuffle (in place) the 16 px blocks of a random rectangle covering ``fraction`` of the image."""
    h, w = image.shape[:2]
    aspect = rng.uniform(0.6, 1.6)
    rh = min(h, max(block, int(np.sqrt(fraction * h * w / aspect)) // block * block))
    rw = min(w, max(block, int(fraction * h * w / rh)) // block * block)
    rh -= rh % block
    y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    region = image[y0 : y0 + rh, x0 : x0 + rw]
    blocks = (
        region.reshape(rh // block, block, rw // block, block, 3).swapaxes(1, 2).reshape(-1, block, block, 3)
    )
    blocks = blocks[rng.permutation(len(blocks))]
    image[y0 : y0 + rh, x0 : x0 + rw] = (
        blocks.reshape(rh // block, rw // block, block, block, 3).swapaxes(1, 2).reshape(rh, rw, 3)
    )


def _infrared_night(image: np.ndarray) -> np.ndarray:
    """A near-infrared-like monochrome view (0.8 R + 0.2 G: foliage bright) at a third of the light, the
    illuminator's spot falling off from the centre."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    spot = 1.0 - 0.7 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / 2
    nir = (0.8 * image[..., 0] + 0.2 * image[..., 1]) * spot / 3.0
    return np.repeat(np.clip(np.rint(nir), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _draw_occluders(
    image: np.ndarray, fraction: float, rng: np.random.Generator, max_shapes: int = 12
) -> None:
    """Paint random opaque ellipses and rotated rectangles (in place) until ``fraction`` of the image is
    covered; each shape covers about a third of the target area, so a few shapes do it."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    target = fraction * h * w
    for _ in range(max_shapes):
        if np.count_nonzero(mask) >= target:
            break
        area = target / 3.0
        aspect = rng.uniform(0.4, 2.5)
        a = np.sqrt(area * aspect / np.pi)
        b = np.sqrt(area / (aspect * np.pi))
        centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        angle = float(rng.uniform(0, 180))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            cv2.ellipse(shape, (centre, (2 * a, 2 * b), angle), 255, -1)
        else:
            box = cv2.boxPoints((centre, (np.sqrt(np.pi) * a, np.sqrt(np.pi) * b), angle))
            cv2.fillConvexPoly(shape, np.rint(box).astype(np.int32), 255)
        image[shape > 0] = colour
        mask |= shape


def _ground_directions(directions_W: np.ndarray, centre_W: np.ndarray, ground_depth_m: float) -> np.ndarray:
    """Rays from ``centre_W`` (metres, world frame) along ``directions_W`` (..., 3) cast onto the ground
    plane ``z = -ground_depth_m``: the direction of each hit point from the world origin (not unit length);
    rays that do not point down keep their own direction (the panorama at infinity)."""
    c = centre_W.astype(np.float32)
    dz = directions_W[..., 2]
    below = dz < 0
    distance = np.where(below, (np.float32(-ground_depth_m) - c[2]) / np.where(below, dz, -1), 0)
    hit = c + distance[..., None] * directions_W
    return np.where(below[..., None], hit, directions_W)


def render_view(
    pano: Panorama,
    intrinsics: Intrinsics,
    R_WC: np.ndarray,
    rng: np.random.Generator | int | None = None,
    nuisances: Nuisances | None = None,
    *,
    ground_depth_m: float | None = None,
    camera_centre_W: np.ndarray | None = None,
) -> np.ndarray:
    """Image (H, W, 3) uint8 RGB seen by a camera with ``intrinsics`` (distortion included) and world
    orientation ``R_WC`` (camera-to-world, e.g. ``R_align @ R_BC(pan, tilt)``), sampled from ``pano``.

    Each output pixel centre is unprojected to a camera-frame bearing (``Intrinsics.unproject``, cached per
    intrinsics), rotated to W and looked up in the panorama. With ``ground_depth_m`` (metres) the lower half
    of the world is a ground plane that far below the origin and each ray starts at the optical centre
    ``camera_centre_W`` (metres, world frame relative to the rotation centre; default the origin), see the
    module docstring. ``nuisances`` (random parts drawn from ``rng``) are applied afterwards.
    """
    w, h = intrinsics.image_size
    if w <= 0 or h <= 0:
        raise ValueError(f"intrinsics.image_size must be positive, got {intrinsics.image_size}")
    R = _check_rotation(R_WC).astype(np.float32)
    bearings_C, log2_angle = _bearing_grid(intrinsics)
    directions_W = bearings_C @ R.T
    if ground_depth_m is not None:
        centre = np.zeros(3) if camera_centre_W is None else np.asarray(camera_centre_W, dtype=np.float64)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"camera_centre_W must be a finite 3-vector (metres), got {camera_centre_W!r}")
        if not ground_depth_m > -centre[2]:
            raise ValueError(f"the optical centre must lie above the ground plane, got {ground_depth_m} m")
        directions_W = _ground_directions(directions_W, centre, ground_depth_m)
    elif camera_centre_W is not None:
        raise ValueError("camera_centre_W needs ground_depth_m: at infinite distance it has no effect")
    u_frac, v_frac = _panorama_fractions(directions_W)

    level = np.clip(log2_angle - np.float32(np.log2(pano.row_angle_rad)), 0, pano.num_levels - 1)
    lo, hi = int(np.floor(level.min())), int(np.ceil(level.max()))
    if lo == hi:
        image = pano.sample(u_frac, v_frac, lo)
    else:
        acc = np.zeros((h, w, 3), np.float32)
        for k in range(lo, hi + 1):
            weight = np.maximum(0.0, 1.0 - np.abs(level - k))
            if np.any(weight > 0):
                acc += weight[..., None] * pano.sample(u_frac, v_frac, k).astype(np.float32)
        image = np.clip(np.rint(acc), 0, 255).astype(np.uint8)

    if nuisances is not None:
        image = nuisances.apply(image, np.random.default_rng(rng))
    return image
