"""Camera telemetry: stillness detection, a thread-safe latch of recent samples and two sources feeding it.

Samples are :class:`ptz_pipeline.camera.Telemetry` (pan/tilt degrees in the mount frame, zoom ONVIF 0..1,
timezone-aware UTC timestamps). Stillness is measured against the local UTC clock, so a source's timestamps
must come from a synchronised (NTP) clock or be receive times. Sources: :class:`MqttTelemetry` (JSON messages
on an MQTT topic) and :class:`PollingTelemetry` (a position-reading callable such as ONVIF GetStatus).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from ptz_pipeline.camera import (
    CameraError,
    CameraUnreachableError,
    MoveTimeoutError,
    NoStableWindowError,
    Telemetry,
)

log = logging.getLogger(__name__)

MOVE_STATUSES = frozenset({"IDLE", "MOVING"})
"""The MoveStatus values that are used; anything else (empty, "UNKNOWN", template text) is ignored."""


def parse_move_status(value: object) -> str | None:
    """"IDLE" or "MOVING" from a status string (any case) or ONVIF's per-axis ``{"PanTilt": .., "Zoom": ..}``.

    Any axis MOVING -> "MOVING"; every axis IDLE -> "IDLE"; anything else (empty, "UNKNOWN", template text
    such as "string", a non-string) -> None, meaning "no usable status".
    """
    if isinstance(value, str):
        status = value.strip().upper()
        return status if status in MOVE_STATUSES else None
    if isinstance(value, Mapping):
        statuses = {parse_move_status(axis) for axis in value.values()}
        if "MOVING" in statuses:
            return "MOVING"
        if statuses == {"IDLE"}:
            return "IDLE"
    return None


def pan_difference(a: float, b: float) -> float:
    """|a - b| in degrees, the short way round."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _describe(sample: Telemetry | None) -> str:
    if sample is None:
        return "no telemetry received"
    return (f"last telemetry pan {sample.pan:.3f}°, tilt {sample.tilt:.3f}°, zoom {sample.zoom:.3f} "
            f"at {sample.timestamp.isoformat()}")


class StillnessDetector:
    """How long the camera has been still, from telemetry samples fed in time order.

    Still: pan/tilt within ``pan_tilt_tol_deg`` degrees and zoom within ``zoom_tol`` of the sample that began
    the still window, and no usable MoveStatus "MOVING". A usable "IDLE" does not hide a position change; an
    unusable status (see :func:`parse_move_status`) is ignored. Sources may publish only on change, so the
    window lasts until ``now``.
    """

    def __init__(self, pan_tilt_tol_deg: float = 0.05, zoom_tol: float = 0.002) -> None:
        self.pan_tilt_tol_deg = pan_tilt_tol_deg
        self.zoom_tol = zoom_tol
        self._anchor: Telemetry | None = None
        self._since: datetime | None = None

    def _same_position(self, a: Telemetry, b: Telemetry) -> bool:
        return (pan_difference(a.pan, b.pan) <= self.pan_tilt_tol_deg
                and abs(a.tilt - b.tilt) <= self.pan_tilt_tol_deg
                and abs(a.zoom - b.zoom) <= self.zoom_tol)

    def feed(self, sample: Telemetry, move_status: object = None) -> None:
        """Account for one sample; ``move_status`` is the source's raw MoveStatus, if it has one."""
        status = parse_move_status(move_status)
        if status == "MOVING":
            self._anchor, self._since = sample, None
        elif self._since is None or self._anchor is None or not self._same_position(self._anchor, sample):
            self._anchor, self._since = sample, sample.timestamp

    def still_for(self, now: datetime) -> float:
        """Seconds the camera has been still at ``now`` (UTC); 0 while moving or before any sample."""
        if self._since is None:
            return 0.0
        return max(0.0, (now - self._since).total_seconds())


class TelemetryLatch:
    """Thread-safe store of one camera's recent telemetry (the last ``maxlen`` samples) and its stillness."""

    def __init__(self, camera: str, *, maxlen: int = 2000, detector: StillnessDetector | None = None) -> None:
        self.camera = camera
        self._samples: deque[Telemetry] = deque(maxlen=maxlen)
        self._fed = 0  # samples fed so far, to find the ones a waiter has not seen
        self._detector = detector or StillnessDetector()
        self._changed = threading.Condition()

    def feed(self, sample: Telemetry, move_status: object = None) -> None:
        """Add one sample (in time order) with the source's raw MoveStatus, if any; wakes the waiters."""
        with self._changed:
            self._samples.append(sample)
            self._fed += 1
            self._detector.feed(sample, move_status)
            self._changed.notify_all()

    def latest(self) -> Telemetry | None:
        """The most recent sample, None before the first."""
        with self._changed:
            return self._samples[-1] if self._samples else None

    def nearest(self, t: datetime) -> Telemetry:
        """The held sample whose timestamp is nearest ``t`` (UTC), e.g. a frame's exposure time."""
        with self._changed:
            if not self._samples:
                raise CameraError(f"{self.camera}: no telemetry received")
            return min(self._samples, key=lambda sample: abs((sample.timestamp - t).total_seconds()))

    def wait_still(self, seconds: float, timeout: float) -> Telemetry:
        """Wait until the camera has been still ``seconds`` s; the latest sample then.

        Raises NoStableWindowError naming the camera after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                still = self._detector.still_for(datetime.now(UTC))
                if self._samples and still >= seconds:
                    return self._samples[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    latest = self._samples[-1] if self._samples else None
                    raise NoStableWindowError(
                        f"{self.camera}: not still for {seconds:g} s within {timeout:g} s (still for "
                        f"{still:.1f} s at the end; {_describe(latest)})"
                    )
                # With samples, stillness grows by itself: wake up when it would be long enough.
                self._changed.wait(min(remaining, seconds - still) if self._samples else remaining)

    def wait_until(
        self, predicate: Callable[[Telemetry], bool], timeout: float, what: str = "condition"
    ) -> Telemetry:
        """The first sample (the latest held one, or any fed later) satisfying ``predicate``.

        Meant for arrival at a commanded position: raises MoveTimeoutError naming the camera and ``what``
        after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            unseen = 1
            while True:
                for sample in list(self._samples)[-unseen:] if unseen else ():
                    if predicate(sample):
                        return sample
                seen = self._fed
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    latest = self._samples[-1] if self._samples else None
                    raise MoveTimeoutError(
                        f"{self.camera}: {what} not met within {timeout:g} s ({_describe(latest)})"
                    )
                unseen = self._fed - seen


@dataclass(frozen=True)
class PayloadFields:
    """Where the values are in an MQTT telemetry JSON payload: field names, dots for nesting ("ptz.pan").

    ``timestamp``: ISO 8601 (naive means UTC) or Unix seconds (milliseconds when > 1e11); None, or a payload
    without it, means the receive time. ``move_status``: a status string or ONVIF's per-axis mapping; None
    means the payload has none.
    """

    pan: str = "pan"
    tilt: str = "tilt"
    zoom: str = "zoom"
    timestamp: str | None = "timestamp"
    move_status: str | None = None


_MISSING = object()


def _lookup(payload: object, path: str) -> object:
    value = payload
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _number(payload: object, path: str) -> float:
    value = _lookup(payload, path)
    if value is _MISSING:
        raise ValueError(f"field {path!r} missing")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"field {path!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"field {path!r} is not finite: {value!r}")
    return number


def _timestamp(value: object, received: datetime) -> datetime:
    if value is _MISSING or value is None:
        return received
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000.0 if value > 1e11 else float(value)
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO 8601") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"timestamp {value!r} is neither ISO 8601 nor Unix seconds")


def parse_payload(payload: bytes, fields: PayloadFields, received: datetime) -> tuple[Telemetry, object]:
    """(Telemetry, raw MoveStatus or None) from one JSON message; ValueError saying what is wrong.

    Positions are taken as they are (the caller converts from the camera's space if needed).
    """
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    stamp = _timestamp(_lookup(data, fields.timestamp) if fields.timestamp else _MISSING, received)
    sample = Telemetry(_number(data, fields.pan), _number(data, fields.tilt), _number(data, fields.zoom),
                       stamp.astimezone(UTC))
    status = _lookup(data, fields.move_status) if fields.move_status else None
    return sample, None if status is _MISSING else status


PositionConverter = Callable[[float, float, float], tuple[float, float, float]]
"""The camera's reported (x, y, z) -> (pan deg, tilt deg, zoom 0..1), e.g. ``PositionSpace.from_camera``."""
PositionReading = Telemetry | tuple[Telemetry, object]
"""What a polled position source returns: a sample, or a sample and the raw MoveStatus it reported."""


class MqttTelemetry:
    """Feeds a :class:`TelemetryLatch` from JSON messages on an MQTT topic (paho-mqtt 2.x).

    ``to_degrees`` converts reported positions that are not yet in the pipeline's degrees. After
    :meth:`start`, paho reconnects by itself (and resubscribes) when the broker connection drops.
    """

    def __init__(
        self,
        latch: TelemetryLatch,
        host: str,
        port: int,
        topic: str,
        *,
        fields: PayloadFields = PayloadFields(),
        username: str | None = None,
        password: str | None = None,
        to_degrees: PositionConverter | None = None,
        keepalive_s: int = 30,
    ) -> None:
        self.latch = latch
        self.host = host
        self.port = port
        self.topic = topic
        self.fields = fields
        self.to_degrees = to_degrees
        self.keepalive_s = keepalive_s
        self._credentials = (username, password)
        self._client: mqtt.Client | None = None
        self._ready = threading.Event()
        self._refusal: str | None = None

    @property
    def _where(self) -> str:
        return f"{self.latch.camera}: MQTT broker {self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; returns once subscribed. CameraUnreachableError naming host:port after
        ``timeout`` s, or at once when the connection is refused."""
        if self._client is not None:
            return
        deadline = time.monotonic() + timeout
        client_id = f"ptz-pipeline-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.connect_timeout = timeout
        if self._credentials[0] is not None:
            client.username_pw_set(*self._credentials)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._ready.clear()
        self._refusal = None
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except OSError as exc:
            timed_out = isinstance(exc, TimeoutError)
            reason = f"no answer within {timeout:g} s" if timed_out else (exc.strerror or str(exc))
            raise CameraUnreachableError(f"{self._where} unreachable: {reason}") from None
        self._client = client
        client.loop_start()
        answered = self._ready.wait(max(0.0, deadline - time.monotonic()))
        if not answered or self._refusal is not None:
            self.stop()
            reason = self._refusal or f"no answer within {timeout:g} s"
            raise CameraUnreachableError(f"{self._where} unreachable: {reason}")
        log.info("%s: subscribed to %r", self._where, self.topic)

    def stop(self) -> None:
        """Disconnect and stop paho's network thread; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            self._refusal = f"connection refused ({reason_code})"
            self._ready.set()
        else:
            client.subscribe(self.topic)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list,
                      properties: object) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self._refusal = f"subscription to {self.topic!r} refused ({failed[0]})"
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            sample, status = parse_payload(message.payload, self.fields, datetime.now(UTC))
            if self.to_degrees is not None:
                pan, tilt, zoom = self.to_degrees(sample.pan, sample.tilt, sample.zoom)
                sample = Telemetry(pan, tilt, zoom, sample.timestamp)
        except ValueError as exc:
            log.warning("%s: ignoring a message on %r: %s", self._where, message.topic, exc)
            return
        self.latch.feed(sample, status)


class PollingTelemetry:
    """Feeds a :class:`TelemetryLatch` by calling ``read_position()`` every ``interval_s`` s in a thread.

    ``read_position()`` returns a :data:`PositionReading`: a sample, or a sample with the source's raw
    MoveStatus (used by the stillness detector only when usable, see :func:`parse_move_status`).

    ``source`` names what is polled in messages (e.g. "ONVIF GetStatus at 10.0.0.5:80"). A failing read is
    logged (once per run of failures) and retried at the next tick; its text appears in errors, so the
    callable's exceptions must not carry secrets.
    """

    def __init__(
        self,
        latch: TelemetryLatch,
        read_position: Callable[[], PositionReading],
        *,
        interval_s: float = 0.5,
        source: str = "position polling",
    ) -> None:
        self.latch = latch
        self.read_position = read_position
        self.interval_s = interval_s
        self.source = source
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._first = threading.Event()
        self._last_error: Exception | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start polling; returns after the first position. CameraUnreachableError after ``timeout`` s."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._first.clear()
        name = f"telemetry-poll {self.latch.camera}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._first.wait(timeout):
            self.stop()
            detail = f"last error: {self._last_error}" if self._last_error else "no answer"
            raise CameraUnreachableError(
                f"{self.latch.camera}: no position from {self.source} within {timeout:g} s ({detail})"
            )

    def stop(self) -> None:
        """Stop polling and join the thread (a read in progress finishes first); safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            try:
                reading = self.read_position()
            except Exception as exc:  # any failure of the camera call: keep polling
                if self._last_error is None:
                    log.warning("%s: reading the position from %s failed: %s", self.latch.camera,
                                self.source, exc)
                self._last_error = exc
            else:
                self._last_error = None
                sample, status = reading if isinstance(reading, tuple) else (reading, None)
                self.latch.feed(sample, status)
                self._first.set()
            next_tick = max(next_tick + self.interval_s, time.monotonic())
            self._stopping.wait(next_tick - time.monotonic())
