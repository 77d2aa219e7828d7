"""Camera access for assets and sensors: devices.yaml and the PTZ camera behind each entry."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

import dagster as dg

from ptz_pipeline.camera import PTZCamera, open_camera
from ptz_pipeline.devices import CameraConfig, Fleet, load_devices
from ptz_pipeline.partitions import is_within_hour


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Fleet:
    """load_devices keyed by the file's identity and version (modification time and size)."""
    return load_devices(path)


class DevicesResource(dg.ConfigurableResource):
    """The fleet described by devices.yaml (path relative to the working directory)."""

    path: str = "devices.yaml"

    def fleet(self) -> Fleet:
        """The validated fleet, parsed once per version of the file (sensors tick every minute; at 1,000
        cameras parsing took 2 s). The returned fleet is shared: never modify it."""
        path = Path(self.path)
        try:
            stat = path.stat()
        except OSError:
            return load_devices(self.path)  # the loader's one-line error names the file
        return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)

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
