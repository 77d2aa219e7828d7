"""The ``simulated`` camera backend: renders what a real PTZ camera would see from a panorama, exact truth.

The camera's lens, mount and drift are its devices.yaml ``backend: {kind: simulated}`` entry
(:class:`ptz_pipeline.devices.SimulatedBackend`). Telemetry (pan, tilt, zoom) is exact; the image carries
realistic nuisances (noise, exposure, blur, JPEG). The capture clock is virtual: any hour can be rendered.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC
from ptz_pipeline.camera import CameraUnreachableError, NoStableWindowError, Telemetry
from ptz_pipeline.devices import CameraConfig, SimulatedBackend


@lru_cache(maxsize=2)
def load_panorama(path: str) -> Panorama:
    """Load (once per process) the panorama at ``path``."""
    return Panorama.load(path)


def render_frame(
    spec: SimulatedBackend, name: str, pan: float, tilt: float, zoom: float, at: datetime
) -> np.ndarray:
    """RGB uint8 view of camera ``name`` at (pan deg, tilt deg, zoom 0..1) and time ``at``; the noise is
    seeded by camera, time and pose, so the same request renders the same image. The optical centre sits at
    ``optical_centre_offset_m`` (camera frame) from the rotation centre, which the drift rotates about."""
    intr = spec.zoom_model.intrinsics_at(spec.intrinsics, zoom)
    frame_seed = zlib.crc32(f"{name}|{at.isoformat()}|{pan:.4f}|{tilt:.4f}|{zoom:.4f}".encode())
    rng = np.random.default_rng(frame_seed)
    if spec.fail == "textureless":
        image = np.full((spec.image_height, spec.image_width, 3), 128, np.uint8)
        return np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
    R_WC = spec.R_WB(at) @ R_BC(pan, tilt)
    pano = load_panorama(str(spec.panorama_path))
    return render_view(
        pano,
        intr,
        R_WC,
        rng=rng,
        nuisances=Nuisances.typical() if spec.nuisances else None,
        ground_depth_m=spec.ground_depth_m,
        camera_centre_W=None if spec.ground_depth_m is None else R_WC @ spec.optical_centre_offset_m,
    )


class SimulatedPTZCamera:
    """A pure-rotation PTZ camera rendering the panorama (PTZCamera); arrives exactly, is always still
    unless its ``fail`` injection says otherwise."""

    virtual_clock = True

    def __init__(self, camera: CameraConfig) -> None:
        if not isinstance(camera.backend, SimulatedBackend):
            raise TypeError(f"{camera.key}: not a simulated camera (backend kind {camera.backend.kind!r})")
        self.name = camera.key
        self.spec = camera.backend
        self._ptz = self.spec.home

    def _check_reachable(self) -> None:
        if self.spec.fail == "unreachable":
            raise CameraUnreachableError(
                f"simulated camera {self.name}: connection refused (injected failure)"
            )

    def _telemetry(self, at: datetime) -> Telemetry:
        return Telemetry(*self._ptz, at)

    def move_to(self, pan: float, tilt: float, zoom: float) -> Telemetry:
        """Command an absolute PTZ position (degrees, degrees, 0..1); the simulator arrives exactly."""
        self._check_reachable()
        if not 0.0 <= zoom <= 1.0:
            raise ValueError(f"zoom must be in 0..1 (ONVIF normalised), got {zoom}")
        self._ptz = (float(pan) % 360.0, float(tilt), float(zoom))
        return self._telemetry(datetime.now(UTC))

    def wait_stable(self, seconds: float, timeout: float | None = None) -> Telemetry:
        """Wait until the camera has been still for ``seconds`` (the simulator is still unless told not)."""
        self._check_reachable()
        if self.spec.fail == "never_stable":
            raise NoStableWindowError(
                f"simulated camera {self.name}: no stable window of {seconds:.0f} s within {timeout} s"
            )
        return self._telemetry(datetime.now(UTC))

    def grab(self, at: datetime) -> tuple[np.ndarray, Telemetry]:
        """Render the frame seen at simulated time ``at``: RGB uint8 image and exact telemetry."""
        self._check_reachable()
        return render_frame(self.spec, self.name, *self._ptz, at), self._telemetry(at)

    def close(self) -> None:
        """Nothing to release."""
