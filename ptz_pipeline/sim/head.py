"""A simulated PTZ head that slews at finite rates, plus an optional external mount disturbance.

Pan/tilt are degrees in the mount frame (pan clockwise seen from above, wrapped to [0, 360); tilt positive
up, [-90, 90]), zoom is ONVIF-normalised 0..1. Each axis moves at its own constant rate from where it is
toward the commanded target (pan the short way round) and stops there; positions are functions of
``time.monotonic()`` seconds. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


def wrap_pan(pan_deg: float) -> float:
    """Pan in degrees wrapped to [0, 360)."""
    wrapped = float(pan_deg) % 360.0
    return 0.0 if wrapped == 360.0 else wrapped  # -1e-17 % 360 rounds to 360.0


def _approach(start: float, delta: float, rate: float, elapsed: float) -> float:
    """``start`` moved toward ``start + delta`` at ``rate`` units/s for ``elapsed`` s (stops on arrival)."""
    step = rate * elapsed
    if step >= abs(delta):
        return start + delta
    return start + step if delta > 0 else start - step


@dataclass(frozen=True)
class _Segment:
    """One commanded move: the position at ``t0`` (monotonic s) and the signed way to go per axis."""

    t0: float
    start: tuple[float, float, float]
    delta: tuple[float, float, float]


class SlewingHead:
    """PTZ head moving at ``pan_rate_deg_s`` / ``tilt_rate_deg_s`` degrees/s and ``zoom_rate_s`` zoom units/s.

    ``disturbance_ypr_deg`` is an external mount motion (yaw, pitch, roll degrees), added to the simulated
    mount drift when rendering; it does not change the reported pan/tilt/zoom.
    """

    def __init__(
        self,
        home: tuple[float, float, float] = (0.0, 0.0, 0.0),
        pan_rate_deg_s: float = 60.0,
        tilt_rate_deg_s: float = 60.0,
        zoom_rate_s: float = 0.5,
    ) -> None:
        rates = (pan_rate_deg_s, tilt_rate_deg_s, zoom_rate_s)
        if min(rates) <= 0:
            raise ValueError(f"slew rates must be positive, got pan/tilt/zoom {rates}")
        self._rates = rates
        self._lock = threading.Lock()
        self._segment = _Segment(time.monotonic(), self._clamp(*home), (0.0, 0.0, 0.0))
        self._disturbance = (0.0, 0.0, 0.0)

    @staticmethod
    def _clamp(pan: float, tilt: float, zoom: float) -> tuple[float, float, float]:
        return wrap_pan(pan), min(max(float(tilt), -90.0), 90.0), min(max(float(zoom), 0.0), 1.0)

    def _position(self, segment: _Segment, now: float) -> tuple[float, float, float]:
        elapsed = max(now - segment.t0, 0.0)
        pan, tilt, zoom = (
            _approach(start, delta, rate, elapsed)
            for start, delta, rate in zip(segment.start, segment.delta, self._rates, strict=True)
        )
        return wrap_pan(pan), tilt, zoom

    def move_to(self, pan: float, tilt: float, zoom: float, now: float | None = None) -> None:
        """Start moving from the current position toward (pan deg, tilt deg, zoom 0..1); tilt is clamped
        to [-90, 90] and zoom to [0, 1]."""
        now = time.monotonic() if now is None else now
        target = self._clamp(pan, tilt, zoom)
        with self._lock:
            start = self._position(self._segment, now)
            pan_delta = (target[0] - start[0] + 180.0) % 360.0 - 180.0  # the short way round, (-180, 180]
            self._segment = _Segment(now, start, (pan_delta, target[1] - start[1], target[2] - start[2]))

    def stop(self, now: float | None = None) -> None:
        """Stop where the head is now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._segment = _Segment(now, self._position(self._segment, now), (0.0, 0.0, 0.0))

    def position(self, now: float | None = None) -> tuple[float, float, float]:
        """(pan deg in [0, 360), tilt deg, zoom 0..1) at monotonic time ``now`` (default: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._position(self._segment, now)

    def moving_axes(self, now: float | None = None) -> tuple[bool, bool, bool]:
        """Whether pan, tilt and zoom are each still on their way at monotonic time ``now`` (default: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            segment = self._segment
        elapsed = max(now - segment.t0, 0.0)
        pan, tilt, zoom = (
            rate * elapsed < abs(delta) for delta, rate in zip(segment.delta, self._rates, strict=True)
        )
        return pan, tilt, zoom

    def moving(self, now: float | None = None) -> bool:
        """Whether any axis is still on its way at monotonic time ``now`` (default: now)."""
        return any(self.moving_axes(now))

    @property
    def target(self) -> tuple[float, float, float]:
        """Where the head is going (or is): (pan deg in [0, 360), tilt deg, zoom 0..1)."""
        with self._lock:
            segment = self._segment
        pan, tilt, zoom = (start + delta for start, delta in zip(segment.start, segment.delta, strict=True))
        return wrap_pan(pan), tilt, zoom

    @property
    def disturbance_ypr_deg(self) -> tuple[float, float, float]:
        """External mount motion (yaw, pitch, roll degrees) added to the simulated drift."""
        with self._lock:
            return self._disturbance

    def disturb(self, yaw_deg: float, pitch_deg: float, roll_deg: float) -> None:
        """Set the external mount motion ("the mount moves") to (yaw, pitch, roll) degrees."""
        with self._lock:
            self._disturbance = (float(yaw_deg), float(pitch_deg), float(roll_deg))
