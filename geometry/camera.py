"""Pinhole camera with OpenCV distortion, calibration.npz I/O and the zoom -> focal-length model.

Camera frame C is OpenCV's (x right, y down, z forward). Pixels (u, v) have their origin at the top-left
pixel's centre. Distortion follows OpenCV's model: (k1, k2, p1, p2[, k3[, k4, k5, k6]]).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator


def _as_dist(dist: np.ndarray | None) -> np.ndarray:
    d = np.zeros(8) if dist is None else np.asarray(dist, dtype=float).ravel()
    if d.size not in (0, 4, 5, 8):
        raise ValueError(f"distortion must have 4, 5 or 8 coefficients (OpenCV model), got {d.size}")
    out = np.zeros(8)
    out[: d.size] = d
    return out


@dataclass(frozen=True)
class Intrinsics:
    """Camera intrinsics: K (3x3, pixels), OpenCV distortion (8 coefficients), image size (width, height)."""

    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(8))
    image_size: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=float)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError("K must be a finite 3x3 matrix with positive focal lengths")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", _as_dist(self.dist))
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @classmethod
    def from_fov(cls, hfov_deg: float, width: int, height: int, dist: np.ndarray | None = None) -> Intrinsics:
        """Square-pixel intrinsics with horizontal field of view ``hfov_deg``, principal point centred."""
        f = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
        K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        return cls(K, dist, (width, height))

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Apply the distortion model to normalised image coordinates (N, 2) -> (N, 2)."""
        k1, k2, p1, p2, k3, k4, k5, k6 = self.dist
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=1)

    def project(self, points_C: np.ndarray) -> np.ndarray:
        """Project camera-frame points or directions (N, 3) to distorted pixels (N, 2). Points need z > 0."""
        P = np.asarray(points_C, dtype=float).reshape(-1, 3)
        xy = self.distort_normalized(P[:, :2] / P[:, 2:3])
        return xy @ self.K[:2, :2].T + self.K[:2, 2]

    def undistort_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (N, 2) -> normalised undistorted coordinates (N, 2) (iterative inverse)."""
        uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if not self.has_distortion:
            xy = (uv.reshape(-1, 2) - self.K[:2, 2]) @ np.linalg.inv(self.K[:2, :2]).T
            return xy
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
        # OpenCV 5 folded undistortPointsIter into undistortPoints(criteria=...)
        undistort_iter = getattr(cv2, "undistortPointsIter", None)
        if undistort_iter is not None:
            return undistort_iter(uv, self.K, self.dist, None, None, crit).reshape(-1, 2)
        return cv2.undistortPoints(uv, self.K, self.dist, None, None, criteria=crit).reshape(-1, 2)

    def unproject(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (N, 2) -> unit bearing vectors in the camera frame (N, 3)."""
        xy = self.undistort_pixels(pixels)
        b = np.hstack([xy, np.ones((len(xy), 1))])
        return b / np.linalg.norm(b, axis=1, keepdims=True)

    def scaled(self, scale: float) -> Intrinsics:
        """Intrinsics of the same camera with images resized by ``scale`` (pixel centres at integers)."""
        S = np.diag([scale, scale, 1.0])
        S[:2, 2] = 0.5 * scale - 0.5
        w, h = self.image_size
        return Intrinsics(S @ self.K, self.dist, (round(w * scale), round(h * scale)))

    def with_focal(self, fx: float) -> Intrinsics:
        """Same principal point, aspect ratio and distortion with focal length ``fx`` (pixels)."""
        K = self.K.copy()
        ratio = fx / K[0, 0]
        K[0, 0] *= ratio
        K[0, 1] *= ratio
        K[1, 1] *= ratio
        return Intrinsics(K, self.dist, self.image_size)


_ZIP_MAGIC = b"PK\x03\x04"
"""An npz archive is a zip file: its first local file header."""


def save_calibration(
    path: str | Path | BinaryIO, intr: Intrinsics, rms: float, covariance: np.ndarray | None = None
) -> None:
    """Write the seed's ``calibration.npz`` (camera_matrix, dist_coeffs, image_size, rms): path or file;
    ``covariance`` (9 x 9, :data:`geometry.intrinsics.CALIBRATION_PARAMETERS`), when finite, as one more
    array the seed's readers ignore."""
    extra = {} if covariance is None or not np.all(np.isfinite(covariance)) else {"covariance": covariance}
    np.savez(
        path if hasattr(path, "write") else Path(path),
        camera_matrix=intr.K,
        dist_coeffs=intr.dist[np.newaxis, :8] if np.any(intr.dist[5:]) else intr.dist[np.newaxis, :5],
        image_size=np.array(intr.image_size, dtype=np.int64),
        rms=np.float64(rms),
        **extra,
    )


@dataclass(frozen=True)
class CalibrationFile:
    """A ``calibration.npz``: intrinsics, RMS (pixels; NaN when absent) and the parameters' covariance
    (9 x 9; None when the file has none, e.g. the seed's)."""

    intrinsics: Intrinsics
    rms: float
    covariance: np.ndarray | None = None


def read_calibration(path: str | Path | BinaryIO, source: str | None = None) -> CalibrationFile:
    """Read a seed-compatible ``calibration.npz`` from a path or file (:class:`CalibrationFile`).

    Errors name the file (``source``, e.g. a storage URI, for a file object): FileNotFoundError when it is
    absent, ValueError when it is not an npz archive, is truncated or lacks the seed's arrays.
    """
    if hasattr(path, "read"):
        name = source or str(getattr(path, "name", "calibration file"))
        start = path.tell()
        magic = path.read(len(_ZIP_MAGIC))
        path.seek(start)
    else:
        path = Path(path)
        name = source or str(path)
        if not path.exists():
            raise FileNotFoundError(f"calibration file not found: {path}")
        with path.open("rb") as file:
            magic = file.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:
        raise ValueError(f"{name}: not an npz archive (expected the seed's calibration.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"camera_matrix", "dist_coeffs"} - set(z.files)
            if missing:
                raise ValueError(f"missing {sorted(missing)} (expected the seed's calibration.npz)")
            size = tuple(int(v) for v in z["image_size"]) if "image_size" in z.files else (0, 0)
            rms = float(z["rms"]) if "rms" in z.files else float("nan")
            covariance = np.array(z["covariance"], dtype=float) if "covariance" in z.files else None
            if covariance is not None and covariance.shape != (9, 9):
                raise ValueError(f"covariance has shape {covariance.shape}, expected (9, 9)")
            return CalibrationFile(Intrinsics(z["camera_matrix"], z["dist_coeffs"], size), rms, covariance)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{name}: not a readable calibration .npz ({exc})") from None


def load_calibration(path: str | Path | BinaryIO, source: str | None = None) -> tuple[Intrinsics, float]:
    """(intrinsics, rms in pixels) of a seed-compatible ``calibration.npz`` (:func:`read_calibration`)."""
    calibration = read_calibration(path, source)
    return calibration.intrinsics, calibration.rms


def _interpolate(zoom: np.ndarray, values: np.ndarray, at: float) -> np.ndarray:
    """Shape-preserving interpolation of ``values`` (samples along axis 0) at ``at`` within the samples'
    ``zoom`` range: the single value, straight-line between two samples, PCHIP through more."""
    if zoom.size == 1:
        return values[0]
    if zoom.size == 2:
        return (values[1] - values[0]) / (zoom[1] - zoom[0]) * (at - zoom[0]) + values[0]  # as np.interp
    return PchipInterpolator(zoom, values, axis=0)(at)


@dataclass(frozen=True)
class ZoomModel:
    """Focal length (pixels, at the calibrated image size) as a monotone function of ONVIF zoom 0..1, and
    optionally the distortion per zoom.

    A table of (zoom, fx) samples interpolated with a shape-preserving PCHIP spline (straight line between
    two samples); zooms outside the table are clamped to its ends. With ``log_focal`` the spline runs through
    log fx instead (still monotone; exact for the exponential zoom curve f0 exp(a zoom) of many zoom lenses).
    ``dist``, when given, holds OpenCV distortion coefficients (4, 5 or 8) per zoom sample, interpolated
    coefficient-wise the same way (PCHIP: no overshoot between samples); :meth:`intrinsics_at` then uses them
    instead of the base intrinsics' distortion.
    """

    zoom: tuple[float, ...]
    focal_px: tuple[float, ...]
    dist: tuple[tuple[float, ...], ...] | None = None
    log_focal: bool = False

    def __post_init__(self) -> None:
        z, f = np.asarray(self.zoom, float), np.asarray(self.focal_px, float)
        if z.shape != f.shape or z.size == 0:
            raise ValueError("zoom and focal_px must be non-empty and of equal length")
        if np.any(np.diff(z) <= 0) or np.any(np.diff(f) < 0) or np.any(f <= 0):
            raise ValueError("zoom must increase strictly and focal_px must be positive and non-decreasing")
        if z[0] < 0 or z[-1] > 1:
            raise ValueError("zoom samples must lie in 0..1 (ONVIF normalised)")
        if self.dist is not None:
            rows = tuple(tuple(float(c) for c in row) for row in self.dist)
            if len(rows) != z.size or len({len(r) for r in rows}) != 1 or len(rows[0]) not in (4, 5, 8):
                raise ValueError(
                    "dist needs one row of 4, 5 or 8 OpenCV coefficients per zoom sample, all of one length"
                )
            if not np.all(np.isfinite(rows)):
                raise ValueError("dist coefficients must be finite")
            object.__setattr__(self, "dist", rows)

    @classmethod
    def from_dict(cls, table: dict) -> ZoomModel:
        """From ``{"zoom": [...], "focal_px": [...]}`` (the zoom_model.json artefact), optionally with
        ``"dist": [[k1, k2, p1, p2, k3], ...]`` (one row per zoom) and ``"log_focal": true``."""
        try:
            dist = table.get("dist")
            return cls(
                tuple(float(z) for z in table["zoom"]),
                tuple(float(f) for f in table["focal_px"]),
                None if dist is None else tuple(tuple(float(c) for c in row) for row in dist),
                bool(table.get("log_focal", False)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f'a zoom model needs "zoom" and "focal_px" lists, got {table!r}') from exc

    def to_dict(self) -> dict[str, list[float] | list[list[float]] | bool]:
        """The zoom_model.json document; the optional keys only when set (files of older versions match)."""
        out: dict[str, list[float] | list[list[float]] | bool] = {
            "zoom": list(self.zoom),
            "focal_px": list(self.focal_px),
        }
        if self.dist is not None:
            out["dist"] = [list(row) for row in self.dist]
        if self.log_focal:
            out["log_focal"] = True
        return out

    @classmethod
    def constant(cls, fx: float) -> ZoomModel:
        return cls((0.0,), (float(fx),))

    def _clamped(self, zoom: float) -> tuple[np.ndarray, float]:
        z = np.asarray(self.zoom, float)
        return z, float(np.clip(zoom, z[0], z[-1]))

    def focal(self, zoom: float) -> float:
        """Focal length fx (pixels) at ``zoom`` (0..1)."""
        z, zc = self._clamped(zoom)
        f = np.asarray(self.focal_px, float)
        if self.log_focal:
            return float(np.exp(_interpolate(z, np.log(f), zc)))
        return float(_interpolate(z, f, zc))

    def distortion(self, zoom: float) -> np.ndarray | None:
        """OpenCV distortion coefficients at ``zoom`` (0..1), or None when the model has none."""
        if self.dist is None:
            return None
        z, zc = self._clamped(zoom)
        return np.asarray(_interpolate(z, np.asarray(self.dist, float), zc), float)

    def intrinsics_at(self, base: Intrinsics, zoom: float) -> Intrinsics:
        """Intrinsics at ``zoom``: ``base`` with its focal length replaced by the model's (and its distortion,
        when the model has distortion per zoom)."""
        zoomed = base.with_focal(self.focal(zoom))
        dist = self.distortion(zoom)
        return zoomed if dist is None else Intrinsics(zoomed.K, dist, zoomed.image_size)
