"""Camera access for assets: devices.yaml and the PTZ camera behind each entry (simulated or ONVIF)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import dagster as dg
import numpy as np

from ptz_pipeline.devices import CameraConfig, Fleet, SimulatedBackend, load_devices
from ptz_pipeline.partitions import is_within_hour
from ptz_pipeline.sim.camera import (
    CameraUnreachableError,
    SimulatedCameraSpec,
    SimulatedPTZCamera,
    Telemetry,
)


class PTZCamera(Protocol):
    """One interface for every camera backend."""

    simulated: bool

    def move_to(self, pan: float, tilt: float, zoom: float) -> None: ...
    def wait_stable(self, seconds: float, timeout: float | None = None) -> Telemetry: ...
    def grab(self, at: datetime) -> tuple[np.ndarray, Telemetry]: ...


def simulated_spec(backend: SimulatedBackend, panorama: str | None = None) -> SimulatedCameraSpec:
    """The simulator's camera for a devices.yaml ``backend: {kind: simulated}`` entry."""
    fields = backend.model_dump(exclude={"kind"})
    return SimulatedCameraSpec(**fields, panorama=panorama)


class DevicesResource(dg.ConfigurableResource):
    """The fleet described by devices.yaml (path relative to the working directory)."""

    path: str = "devices.yaml"

    def fleet(self) -> Fleet:
        return load_devices(self.path)

    def camera(self, key: str) -> CameraConfig:
        return self.fleet().camera(key)


class PTZCameraResource(dg.ConfigurableResource):
    """Opens the camera behind a devices.yaml entry. ``panorama`` overrides the simulator's world image."""

    panorama: str | None = None

    def open(self, camera: CameraConfig) -> PTZCamera:
        backend = camera.backend
        if isinstance(backend, SimulatedBackend):
            return SimulatedPTZCamera(camera.key, simulated_spec(backend, self.panorama))
        raise CameraUnreachableError(
            f"{camera.key}: the ONVIF/RTSP/MQTT backend is not part of this build (simulated cameras only)"
        )

    def simulated_spec(self, camera: CameraConfig) -> SimulatedCameraSpec | None:
        """Ground truth of a simulated camera (None for real cameras)."""
        if isinstance(camera.backend, SimulatedBackend):
            return simulated_spec(camera.backend, self.panorama)
        return None


def can_capture(camera: PTZCamera, hour_start: datetime, now: datetime) -> bool:
    """A real camera captures only during its hour; the simulator can render any hour (virtual clock)."""
    return camera.simulated or is_within_hour(hour_start, now)
