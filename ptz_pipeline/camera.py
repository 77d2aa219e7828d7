"""The pipeline's camera interface: what every PTZ backend provides, its errors, and the backend registry.

A backend is chosen by devices.yaml's ``backend.kind`` and loaded only when a camera of that kind is opened
(so the simulator is a plug-in, imported by nothing else). Every backend class takes the camera's
``CameraConfig`` and implements :class:`PTZCamera`.

Conventions: pan/tilt in degrees in the mount frame (pan clockwise seen from above, tilt positive up), zoom
ONVIF-normalised 0..1, timestamps timezone-aware UTC. Telemetry is what the camera REPORTS, never what was
commanded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ptz_pipeline.devices import CameraConfig


@dataclass(frozen=True)
class Telemetry:
    """PTZ state at capture: pan/tilt in degrees (mount frame), zoom ONVIF 0..1, UTC timestamp."""

    pan: float
    tilt: float
    zoom: float
    timestamp: datetime


class CameraError(RuntimeError):
    """A camera could not do what was asked; the message names the camera (never a credential)."""


class CameraUnreachableError(CameraError, ConnectionError):
    """The camera (or its broker or stream) did not answer: network, credentials or power."""


class NoStableWindowError(CameraError, TimeoutError):
    """The camera did not stay still long enough before the timeout (passive mode)."""


class MoveTimeoutError(CameraError, TimeoutError):
    """The camera did not arrive at the commanded position in time."""


class CaptureError(CameraError):
    """No usable frame could be taken (stream and snapshot both failed)."""


@runtime_checkable
class PTZCamera(Protocol):
    """One interface for every camera backend.

    ``virtual_clock`` is True for a camera that can show any moment (the simulator renders the past), False
    for a real camera, which can only capture the present.
    """

    name: str
    virtual_clock: bool

    def move_to(self, pan: float, tilt: float, zoom: float) -> Telemetry:
        """Go to (pan deg, tilt deg, zoom 0..1), wait for arrival; the reported position on arrival."""
        ...

    def wait_stable(self, seconds: float, timeout: float | None = None) -> Telemetry:
        """Wait until the camera has been still ``seconds`` s (NoStableWindowError after ``timeout`` s)."""
        ...

    def grab(self, at: datetime) -> tuple[np.ndarray, Telemetry]:
        """An RGB uint8 frame exposed after the camera settled and the telemetry nearest its exposure.

        ``at`` is the capture time on a virtual clock; real cameras capture now and ignore it.
        """
        ...

    def close(self) -> None:
        """Release connections (streams, brokers, port-forwards); safe to call twice."""
        ...


BACKENDS: dict[str, str] = {
    "simulated": "ptz_pipeline.sim.camera:SimulatedPTZCamera",
    "onvif": "ptz_pipeline.onvif.camera:OnvifPTZCamera",
}
"""devices.yaml ``backend.kind`` -> ``module:class`` implementing PTZCamera (imported on first use)."""


def backend_class(kind: str) -> type:
    """The PTZCamera class registered for ``kind``; KeyError naming the known kinds otherwise."""
    try:
        module, _, name = BACKENDS[kind].partition(":")
    except KeyError:
        raise KeyError(f"no camera backend {kind!r} (known: {', '.join(sorted(BACKENDS))})") from None
    return getattr(importlib.import_module(module), name)


def open_camera(camera: CameraConfig) -> PTZCamera:
    """Open the camera behind a devices.yaml entry with the backend its ``backend.kind`` names (devices.yaml
    or the PTZ_SECRETS file)."""
    return backend_class(camera.connection().kind)(camera)
