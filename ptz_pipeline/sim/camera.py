"""In-process simulated PTZ camera: renders what a real camera would see from a panorama, with exact truth.

The mount's true orientation drifts smoothly with (simulated) time:
``R_WB(t) = R_mount @ drift(t)``, ``drift(t) = drift_matrix(offset + amplitude * sin(2*pi*h/period + phase))``
per angle (degrees, h = hours since the epoch). The drift the pipeline should report for a query at t against
a reference captured at t_ref is ``R_WB(t_ref)^T @ R_WB(t)`` (see :meth:`SimulatedPTZCamera.true_drift`).
Telemetry (pan, tilt, zoom) is exact; the image carries realistic nuisances (noise, exposure, blur, JPEG).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from geometry.camera import Intrinsics, ZoomModel
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, drift_angles, drift_matrix

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PANORAMA = REPO_ROOT.parent / "shared" / "data" / "panorama" / "examplepano.jpg"
SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class CameraUnreachableError(ConnectionError):
    """The camera did not answer (network, credentials or power)."""


class NoStableWindowError(TimeoutError):
    """The camera did not stay still long enough before the timeout (passive mode)."""


@dataclass(frozen=True)
class Telemetry:
    """PTZ state at capture: pan/tilt in degrees (mount frame conventions), zoom ONVIF 0..1, UTC timestamp."""

    pan: float
    tilt: float
    zoom: float
    timestamp: datetime


@dataclass(frozen=True)
class SimulatedCameraSpec:
    """Everything that defines a simulated camera; angles in degrees, image size in pixels."""

    hfov_deg: float = 60.0
    image_width: int = 640
    image_height: int = 480
    dist: tuple[float, ...] = (-0.08, 0.02, 0.0, 0.0, 0.0)
    zoom_max_ratio: float = 3.0
    mount_ypr_deg: tuple[float, float, float] = (25.0, 1.5, -0.8)
    drift_offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    drift_amplitude_deg: tuple[float, float, float] = (0.5, 0.2, 0.1)
    drift_period_hours: float = 24.0
    seed: int = 0
    fail: str | None = None
    nuisances: bool = True
    panorama: str | None = None
    home: tuple[float, float, float] = field(default=(0.0, -15.0, 0.0))

    @property
    def intrinsics(self) -> Intrinsics:
        """True intrinsics at zoom 0 (widest)."""
        return Intrinsics.from_fov(self.hfov_deg, self.image_width, self.image_height, np.array(self.dist))

    @property
    def zoom_model(self) -> ZoomModel:
        """True zoom -> focal model: focal length grows linearly from f(0) to zoom_max_ratio * f(0)."""
        f0 = self.intrinsics.fx
        return ZoomModel((0.0, 1.0), (f0, f0 * self.zoom_max_ratio))

    @property
    def R_mount(self) -> np.ndarray:
        """True mount-to-world rotation at the simulation epoch (before any drift)."""
        return drift_matrix(*self.mount_ypr_deg)

    def drift_ypr(self, t: datetime) -> np.ndarray:
        """Mount drift (yaw, pitch, roll degrees) at time ``t`` relative to R_mount."""
        hours = (t - SIM_EPOCH).total_seconds() / 3600.0
        phase = np.array([0.0, 2.1, 4.2]) + self.seed
        return np.asarray(self.drift_offset_deg) + np.asarray(self.drift_amplitude_deg) * np.sin(
            2 * np.pi * hours / self.drift_period_hours + phase
        )

    def R_WB(self, t: datetime) -> np.ndarray:
        """True mount-to-world rotation at time ``t``."""
        return self.R_mount @ drift_matrix(*self.drift_ypr(t))

    def true_drift(self, t_reference: datetime, t_query: datetime) -> tuple[float, float, float]:
        """Ground-truth (yaw, pitch, roll) degrees of the query's mount relative to the reference's."""
        return drift_angles(self.R_WB(t_reference).T @ self.R_WB(t_query))


def panorama_path(spec_path: str | None = None) -> Path:
    """The panorama the simulator renders: explicit path, PTZ_SIM_PANORAMA, or ../shared/data/panorama."""
    path = Path(spec_path or os.environ.get("PTZ_SIM_PANORAMA") or DEFAULT_PANORAMA)
    if not path.is_file():
        raise FileNotFoundError(
            f"simulator panorama not found at {path}: the simulated cameras render ../shared/data/panorama/"
            "examplepano.jpg beside the checkout (or set PTZ_SIM_PANORAMA)"
        )
    return path


@lru_cache(maxsize=2)
def load_panorama(path: str) -> Panorama:
    """Load (once per process) the panorama at ``path``."""
    return Panorama.load(path)


class SimulatedPTZCamera:
    """A pure-rotation PTZ camera rendering the panorama; the capture clock is set by the caller."""

    simulated = True

    def __init__(self, name: str, spec: SimulatedCameraSpec) -> None:
        self.name = name
        self.spec = spec
        self._ptz = spec.home

    def _check_reachable(self) -> None:
        if self.spec.fail == "unreachable":
            raise CameraUnreachableError(
                f"simulated camera {self.name}: connection refused (injected failure)"
            )

    def move_to(self, pan: float, tilt: float, zoom: float) -> None:
        """Command an absolute PTZ position (degrees, degrees, 0..1); the simulator arrives exactly."""
        self._check_reachable()
        if not 0.0 <= zoom <= 1.0:
            raise ValueError(f"zoom must be in 0..1 (ONVIF normalised), got {zoom}")
        self._ptz = (float(pan) % 360.0, float(tilt), float(zoom))

    def wait_stable(self, seconds: float, timeout: float | None = None) -> Telemetry:
        """Wait until the camera has been still for ``seconds`` (the simulator is still unless told not)."""
        self._check_reachable()
        if self.spec.fail == "never_stable":
            raise NoStableWindowError(
                f"simulated camera {self.name}: no stable window of {seconds:.0f} s within {timeout} s"
            )
        pan, tilt, zoom = self._ptz
        return Telemetry(pan, tilt, zoom, datetime.now(UTC))

    def grab(self, at: datetime) -> tuple[np.ndarray, Telemetry]:
        """Render the frame seen at simulated time ``at``: RGB uint8 image and exact telemetry."""
        self._check_reachable()
        pan, tilt, zoom = self._ptz
        spec = self.spec
        intr = spec.zoom_model.intrinsics_at(spec.intrinsics, zoom)
        frame_seed = zlib.crc32(f"{self.name}|{at.isoformat()}|{pan:.4f}|{tilt:.4f}|{zoom:.4f}".encode())
        rng = np.random.default_rng(frame_seed)
        if spec.fail == "textureless":
            image = np.full((spec.image_height, spec.image_width, 3), 128, np.uint8)
            image = np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
        else:
            R_WC = spec.R_WB(at) @ R_BC(pan, tilt)
            pano = load_panorama(str(panorama_path(spec.panorama)))
            image = render_view(
                pano, intr, R_WC, rng=rng, nuisances=Nuisances.typical() if spec.nuisances else None
            )
        return image, Telemetry(pan, tilt, zoom, at)
