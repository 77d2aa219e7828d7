"""Camera access for assets and sensors: devices.yaml and the PTZ camera behind each entry."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from ptz_pipeline.camera import PTZCamera, open_camera
from ptz_pipeline.devices import CameraConfig, Fleet, load_devices
from ptz_pipeline.partitions import is_within_hour


class DevicesResource(dg.ConfigurableResource):
    """The fleet described by devices.yaml (path relative to the working directory)."""

    path: str = "devices.yaml"

    def fleet(self) -> Fleet:
        return load_devices(self.path)

    def camera(self, key: str) -> CameraConfig:
        return self.fleet().camera(key)


class PTZCameraResource(dg.ConfigurableResource):
    """Opens the camera behind a devices.yaml entry with the backend its ``backend.kind`` names
    (ptz_pipeline.camera.BACKENDS)."""

    def open(self, camera: CameraConfig) -> PTZCamera:
        return open_camera(camera)


def can_capture(camera: PTZCamera, hour_start: datetime, now: datetime) -> bool:
    """A real camera captures only during its hour; a virtual-clock camera can render any hour."""
    return camera.virtual_clock or is_within_hour(hour_start, now)
