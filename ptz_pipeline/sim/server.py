"""One simulated PTZ camera served over the real protocols: ONVIF (SOAP/HTTP), RTSP (H.264) and MQTT.

The camera's lens, mount and drift come from its devices.yaml ``backend: {kind: simulated}`` entry. A
:class:`~ptz_pipeline.sim.head.SlewingHead` moves at finite rates toward what ONVIF ``AbsoluteMove``
commands; the view (RTSP frames and ONVIF snapshots) is rendered at the head's current position at wall-clock
time with the spec's drift plus the head's external disturbance. Telemetry JSON
``{"pan": deg, "tilt": deg, "zoom": 0..1, "timestamp": ISO-8601 UTC, "moving": bool}`` is published on
``ptz/<camera key>/telemetry`` at ``telemetry_hz`` when an MQTT broker is given.

Admin endpoints on the ONVIF HTTP port (HTTP basic or digest auth with the camera's user/password):

- ``POST /sim/disturbance`` with JSON ``{"yaw": deg, "pitch": deg, "roll": deg}`` (missing angles are 0): set
  the external mount motion ("the mount moves"), added to the simulated drift; answers like ``/sim/truth``.
- ``POST /sim/stream`` with JSON ``{"running": false}`` kills the RTSP stream (ffmpeg and every connection;
  the port refuses connections), ``{"running": true}`` starts it again on the same port; answers
  ``{"running": bool}``.
- ``GET /sim/truth``: JSON of the true state now — pose, target, moving, mount, drift (spec, disturbance and
  their sum, yaw/pitch/roll degrees) and ``R_WB`` (mount-to-world rotation, 3x3 rows).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from ptz_pipeline.devices import CameraConfig, SimulatedBackend
from ptz_pipeline.sim.camera import render_frame
from ptz_pipeline.sim.head import SlewingHead
from ptz_pipeline.sim.onvif_service import SNAPSHOT_PATH, OnvifServer
from ptz_pipeline.sim.rtsp import RtspServer

log = logging.getLogger(__name__)

STILL_FRAME_MAX_AGE_S = 1.0
"""A still head's view is re-rendered at most this often (seconds); a moving head's on every frame."""
MQTT_CONNECT_TIMEOUT_S = 5.0
_DISTURBANCE_BODY = 'JSON {"yaw": deg, "pitch": deg, "roll": deg}'


@dataclass(frozen=True)
class _CachedFrame:
    key: tuple[tuple[float, float, float], tuple[float, float, float]]  # (pose, disturbance)
    rendered_at: float  # monotonic seconds
    frame: np.ndarray


class SimulatorServer:
    """Serves ``camera`` (which must have a SimulatedBackend) on ``host``: ONVIF on ``onvif_port``, RTSP on
    ``rtsp_port`` (0: free ports, see the ``*_url`` properties), MQTT telemetry to ``mqtt_host:mqtt_port``.

    ``slew_deg_s`` is the pan and tilt rate (degrees/s), ``zoom_rate_s`` the zoom rate (zoom units/s);
    ``latency_s`` delays the RTSP stream; see :class:`~ptz_pipeline.sim.onvif_service.OnvifServer` for
    ``generic_space``, ``pan_range_deg``, ``tilt_range_deg`` and ``move_status``.
    """

    def __init__(
        self,
        camera: CameraConfig,
        *,
        user: str,
        password: str,
        host: str = "127.0.0.1",
        onvif_port: int = 0,
        rtsp_port: int = 0,
        mqtt_host: str | None = None,
        mqtt_port: int = 1883,
        generic_space: bool = False,
        pan_range_deg: tuple[float, float] = (-180.0, 180.0),
        tilt_range_deg: tuple[float, float] = (-90.0, 90.0),
        latency_s: float = 0.0,
        timestamp_overlay: bool = False,
        move_status: Literal["valid", "garbage"] = "valid",
        slew_deg_s: float = 60.0,
        zoom_rate_s: float = 0.5,
        fps: float = 5.0,
        telemetry_hz: float = 10.0,
        profile_token: str = "profile_1",
    ) -> None:
        if not isinstance(camera.backend, SimulatedBackend):
            raise TypeError(f"{camera.key}: not a simulated camera (backend kind {camera.backend.kind!r})")
        if telemetry_hz <= 0:
            raise ValueError(f"telemetry_hz must be positive, got {telemetry_hz}")
        self.camera = camera
        self.spec: SimulatedBackend = camera.backend
        self.head = SlewingHead(self.spec.home, slew_deg_s, slew_deg_s, zoom_rate_s)
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port
        self.telemetry_topic = f"ptz/{camera.key}/telemetry"
        self.telemetry_hz = telemetry_hz
        self.rtsp = RtspServer(self.current_frame, host, rtsp_port, path="stream", fps=fps,
                               latency_s=latency_s, timestamp_overlay=timestamp_overlay)
        self.onvif = OnvifServer(
            self.head, self.snapshot_jpeg, self.rtsp.url, user, password, host=host, port=onvif_port,
            profile_token=profile_token, serial_number=camera.key,
            resolution=(self.spec.image_width, self.spec.image_height), fps=fps, generic_space=generic_space,
            pan_range_deg=pan_range_deg, tilt_range_deg=tilt_range_deg, move_status=move_status,
            routes={"/sim/disturbance": self._disturbance_route, "/sim/truth": self._truth_route,
                    "/sim/stream": self._stream_route},
        )
        self._render_lock = threading.Lock()
        self._cached: _CachedFrame | None = None
        self._mqtt: mqtt.Client | None = None
        self._stopping = threading.Event()
        self._publisher: threading.Thread | None = None

    @property
    def onvif_url(self) -> str:
        """The ONVIF device service ``http://host:port/onvif/device_service``."""
        return self.onvif.url

    @property
    def rtsp_url(self) -> str:
        """The H.264 stream ``rtsp://host:port/stream``."""
        return self.rtsp.url

    @property
    def snapshot_url(self) -> str:
        """The JPEG snapshot ``http://host:port/onvif/snapshot.jpg`` (HTTP digest or basic auth)."""
        return self.onvif.base_url + SNAPSHOT_PATH

    @property
    def telemetry_url(self) -> str | None:
        """``mqtt://broker:port/ptz/<camera key>/telemetry``; None without a broker."""
        if self.mqtt_host is None:
            return None
        return f"mqtt://{self.mqtt_host}:{self.mqtt_port}/{self.telemetry_topic}"

    def start(self) -> None:
        """Start RTSP, ONVIF and (with ``mqtt_host``) the telemetry publisher; returns once each answers.

        Raises FileNotFoundError (no panorama), OSError (a port in use), ConnectionError (MQTT broker),
        RuntimeError (ffmpeg); whatever was started is stopped again.
        """
        self.spec.panorama_path  # noqa: B018 - FileNotFoundError naming the file before anything starts
        self._stopping.clear()
        try:
            self.rtsp.start()
            self.onvif.stream_uri = self.rtsp.url  # the bound port when rtsp_port was 0
            self.onvif.start()
            if self.mqtt_host is not None:
                self._mqtt = self._connect_mqtt(self.mqtt_host, self.mqtt_port)
                self._publisher = threading.Thread(target=self._publish_loop, args=(self._mqtt,),
                                                   name="sim-telemetry", daemon=True)
                self._publisher.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every service, ffmpeg and thread; idempotent."""
        self._stopping.set()
        if self._publisher is not None:
            self._publisher.join()
            self._publisher = None
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._mqtt = None
        self.onvif.stop()
        self.rtsp.stop()

    # --- the view -----------------------------------------------------------------------------------------

    def _spec_at(self, disturbance: tuple[float, float, float]) -> SimulatedBackend:
        """The spec with the external disturbance added to its drift offset (yaw, pitch, roll degrees)."""
        offset = tuple(float(a + b) for a, b in zip(self.spec.drift_offset_deg, disturbance, strict=True))
        return self.spec.model_copy(update={"drift_offset_deg": offset})

    def current_frame(self) -> np.ndarray:
        """RGB uint8 view at the head's current pose, rendered at wall-clock time; a still head's view is
        re-used for up to STILL_FRAME_MAX_AGE_S."""
        with self._render_lock:
            now = time.monotonic()
            key = (self.head.position(now), self.head.disturbance_ypr_deg)
            cached = self._cached
            if (cached is not None and cached.key == key and not self.head.moving(now)
                    and now - cached.rendered_at < STILL_FRAME_MAX_AGE_S):
                return cached.frame
            frame = render_frame(self._spec_at(key[1]), self.camera.key, *key[0], datetime.now(UTC))
            self._cached = _CachedFrame(key, now, frame)
            return frame

    def snapshot_jpeg(self) -> bytes:
        """The current view as JPEG bytes (quality 90)."""
        bgr = cv2.cvtColor(self.current_frame(), cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("JPEG encoding of the simulated view failed")
        return jpeg.tobytes()

    # --- admin endpoints ----------------------------------------------------------------------------------

    def truth(self) -> dict:
        """The true state now: pose (degrees, 0..1), mount and drift (yaw, pitch, roll degrees), R_WB."""
        now, utc = time.monotonic(), datetime.now(UTC)
        pan, tilt, zoom = self.head.position(now)
        disturbance = self.head.disturbance_ypr_deg
        spec = self._spec_at(disturbance)
        return {
            "camera": self.camera.key,
            "timestamp": utc.isoformat(),
            "pan": pan, "tilt": tilt, "zoom": zoom,
            "moving": self.head.moving(now),
            "target": list(self.head.target),
            "mount_ypr_deg": list(self.spec.mount_ypr_deg),
            "spec_drift_ypr_deg": self.spec.drift_ypr(utc).tolist(),
            "disturbance_ypr_deg": list(disturbance),
            "drift_ypr_deg": spec.drift_ypr(utc).tolist(),
            "R_WB": spec.R_WB(utc).tolist(),
        }

    def _json(self, status: int, body: object) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(body).encode()

    def _truth_route(self, method: str, body: bytes) -> tuple[int, str, bytes]:
        if method != "GET":
            return self._json(405, {"error": "use GET"})
        return self._json(200, self.truth())

    def _disturbance_route(self, method: str, body: bytes) -> tuple[int, str, bytes]:
        if method != "POST":
            return self._json(405, {"error": f"use POST with {_DISTURBANCE_BODY}"})
        try:
            angles = json.loads(body or b"{}")
            ypr = [float(angles.get(name, 0.0)) for name in ("yaw", "pitch", "roll")]
        except (ValueError, TypeError, AttributeError):
            return self._json(400, {"error": f"expected {_DISTURBANCE_BODY}"})
        if not all(math.isfinite(angle) for angle in ypr):
            return self._json(400, {"error": f"angles must be finite, got {ypr}"})
        self.head.disturb(*ypr)
        return self._json(200, self.truth())

    def _stream_route(self, method: str, body: bytes) -> tuple[int, str, bytes]:
        if method != "POST":
            return self._json(405, {"error": 'use POST with JSON {"running": true|false}'})
        try:
            running = json.loads(body or b"{}").get("running")
        except (ValueError, AttributeError):
            running = None
        if not isinstance(running, bool):
            return self._json(400, {"error": 'expected JSON {"running": true|false}'})
        if running and not self.rtsp.running:
            self.rtsp.start()
        elif not running:
            self.rtsp.kill_stream()
        return self._json(200, {"running": self.rtsp.running})

    # --- MQTT telemetry -----------------------------------------------------------------------------------

    def _connect_mqtt(self, host: str, port: int) -> mqtt.Client:
        """A connected paho client with its network loop running (ConnectionError when the broker fails)."""
        connected = threading.Event()
        outcome: list[ReasonCode] = []

        def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                       properties: object) -> None:
            outcome.append(reason)
            connected.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"ptz-sim-{self.camera.key}-{secrets.token_hex(3)}")
        client.on_connect = on_connect
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to the MQTT broker at {host}:{port}: "
                                  f"{exc.strerror or exc}") from exc
        client.loop_start()
        if not connected.wait(MQTT_CONNECT_TIMEOUT_S) or outcome[0].is_failure:
            client.loop_stop()
            client.disconnect()
            detail = outcome[0] if outcome else f"no answer within {MQTT_CONNECT_TIMEOUT_S:g} s"
            raise ConnectionError(f"MQTT broker at {host}:{port} refused the connection: {detail}")
        return client

    def _publish_loop(self, client: mqtt.Client) -> None:
        """Publish the head's reported position every 1/telemetry_hz seconds until stopped."""
        period = 1.0 / self.telemetry_hz
        next_tick = time.monotonic()
        while not self._stopping.wait(max(next_tick - time.monotonic(), 0.0)):
            now, utc = time.monotonic(), datetime.now(UTC)
            pan, tilt, zoom = self.head.position(now)
            payload = {"pan": pan, "tilt": tilt, "zoom": zoom, "timestamp": utc.isoformat(),
                       "moving": self.head.moving(now)}
            client.publish(self.telemetry_topic, json.dumps(payload), qos=0)
            next_tick = max(next_tick + period, now)
