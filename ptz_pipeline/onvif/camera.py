"""The ``onvif`` camera backend: a real PTZ camera over ONVIF (media and PTZ), RTSP frames and ONVIF or MQTT
telemetry, reached directly or through ``kubectl port-forward``.

Conventions (ptz_pipeline.camera): pan/tilt in degrees in the mount frame, zoom ONVIF-normalised 0..1, times
timezone-aware UTC. Positions are commanded and read in the PTZ configuration's default absolute space
(degrees, or ONVIF's generic space mapped through ``pan_range_deg``/``tilt_range_deg``); MQTT telemetry
payloads carry degrees and zoom 0..1 already (as ``python -m ptz_pipeline.sim`` publishes them). Every
Telemetry returned is what the camera REPORTED, never what was commanded. Error messages name the camera and
its host:port, never a credential.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import requests
from onvif import ONVIFCamera
from zeep.transports import Transport

from ptz_pipeline.camera import (
    CameraError,
    CameraUnreachableError,
    CaptureError,
    MoveTimeoutError,
    NoStableWindowError,
    Telemetry,
)
from ptz_pipeline.devices import CameraConfig, ClusterAccess, OnvifBackend
from ptz_pipeline.onvif.frames import RtspGrabber, snapshot
from ptz_pipeline.onvif.portforward import port_forward
from ptz_pipeline.onvif.spaces import PositionSpace
from ptz_pipeline.onvif.telemetry import (
    MqttTelemetry,
    PayloadFields,
    PollingTelemetry,
    StillnessDetector,
    TelemetryLatch,
    pan_difference,
)

log = logging.getLogger(__name__)

ZOOM_ARRIVAL_TOLERANCE = 0.01
"""A move has arrived when the reported zoom is this close (ONVIF 0..1) to the commanded one."""
_FOREVER_S = 365 * 86400.0
"""wait_stable without a timeout waits this long (a finite bound the condition variables accept)."""
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
_T = TypeVar("_T")


def _os_reason(exc: BaseException) -> str | None:
    """The operating system's reason (e.g. "Connection refused") somewhere in ``exc``'s chain, else None."""
    return next((cause.strerror for cause in _chain(exc) if isinstance(cause, OSError) and cause.strerror),
                None)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__ or cause.__context__


def _unauthorized(exc: BaseException) -> bool:
    """A SOAP NotAuthorized fault or an HTTP 401/403 answer somewhere in ``exc``'s chain."""
    return any("notauthorized" in str(cause).lower().replace(" ", "")
               or getattr(cause, "status_code", None) in (401, 403) for cause in _chain(exc))


def _with_credentials(url: str, username: str, password: str) -> str:
    """``url`` with ``username:password@`` (percent-encoded) in its authority, as RTSP cameras expect
    (unchanged without a user name)."""
    parts = urlsplit(url)
    if not username:
        return url
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _pick_space(spaces: list, default_uri: str | None):
    """The space of ``spaces`` (ONVIF Space1D/2DDescription) whose URI is ``default_uri``, else the first."""
    return next((space for space in spaces if space.URI == default_uri), spaces[0])


def _limits(range_: object) -> tuple[float, float]:
    return float(range_.Min), float(range_.Max)


class OnvifPTZCamera:
    """One real PTZ camera (PTZCamera) described by a devices.yaml ``backend: {kind: onvif}`` entry (or the
    PTZ_SECRETS file).

    Opening starts the deployment's port-forward (when its ``cluster`` names a target and ports), connects
    over ONVIF within ``connect_timeout_s`` s, reads the media profile (stream and snapshot URIs) and the PTZ
    node's absolute position spaces, and starts the telemetry source. ``close()`` stops all of it.
    """

    virtual_clock = False

    def __init__(self, camera: CameraConfig) -> None:
        backend = camera.connection()
        if not isinstance(backend, OnvifBackend):
            raise TypeError(f"{camera.key}: not an ONVIF camera (backend kind {backend.kind!r})")
        self.name = camera.key
        self.backend = backend
        self._where = f"{camera.key}: ONVIF camera at {backend.host}:{backend.port}"
        self._closing = ExitStack()  # everything started, stopped in reverse order by close()
        self._forwards: dict[int, int] = {}  # remote port -> local port while port-forwarding
        self._onvif_lock = threading.Lock()  # one ONVIF call at a time (zeep's WS-Security token is shared)
        self._settled_at: datetime | None = None
        self.latch = TelemetryLatch(camera.key, detector=StillnessDetector(backend.still_tolerance_deg))
        self._username, self._password = backend.credentials()
        try:
            self._forward(camera.cluster)
            self._connect()
            self._read_profile()
            self._read_space()
            self._start_telemetry(camera)
            self._grabber = RtspGrabber(
                _with_credentials(self.stream_url, self._username, self._password),
                open_timeout_s=backend.connect_timeout_s, settle_s=backend.stream_latency_s,
            )
            self._closing.callback(self._grabber.close)
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------------

    def _forward(self, cluster: ClusterAccess | None) -> None:
        """Start ``kubectl port-forward`` for the deployment, when it names a target and ports."""
        if cluster is None or cluster.target is None or not cluster.ports:
            return
        self._closing.enter_context(
            port_forward(cluster.context, cluster.namespace, cluster.target, cluster.ports,
                         ready_timeout_s=self.backend.connect_timeout_s)
        )
        self._forwards = {remote: local for local, remote in cluster.ports}

    def _local(self, url: str) -> str:
        """``url`` as reached from here: through the port-forward when its port is forwarded (a camera
        behind a port-forward answers with its own address in XAddrs and media URIs)."""
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        if port not in self._forwards:
            return url
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self._forwards[port]}"))

    def _connection_error(self, exc: BaseException) -> CameraError:
        """One clear line for a failed ONVIF call: unauthorized, unreachable or the camera's own fault."""
        timeout = self.backend.connect_timeout_s
        text = " ".join(str(exc).split())  # one line
        text = text.replace(self._password, "***") if self._password else text
        if _unauthorized(exc):
            return CameraUnreachableError(
                f"{self._where}: not authorized (wrong user name or password; check username_env / "
                "password_env or the PTZ_SECRETS entry)"
            )
        if any(isinstance(cause, requests.Timeout | TimeoutError) for cause in _chain(exc)):
            return CameraUnreachableError(f"{self._where} unreachable: no answer within {timeout:g} s")
        reason = _os_reason(exc)
        if reason is not None:
            return CameraUnreachableError(f"{self._where} unreachable: {reason}")
        return CameraError(f"{self._where}: ONVIF request failed: {text.removeprefix('Unknown error: ')}")

    def _call(self, call: Callable[[], _T]) -> _T:
        """Run one ONVIF request (serialised); failures become one-line CameraErrors without secrets."""
        with self._onvif_lock:
            try:
                return call()
            except Exception as exc:
                raise self._connection_error(exc) from None

    def _connect(self) -> None:
        timeout = self.backend.connect_timeout_s
        transport = Transport(timeout=timeout, operation_timeout=timeout)
        self._closing.callback(transport.session.close)
        self._onvif = self._call(lambda: ONVIFCamera(
            self.backend.host, self.backend.port, self._username, self._password, transport=transport
        ))
        self._onvif.xaddrs = {namespace: self._local(url) for namespace, url in self._onvif.xaddrs.items()}
        self._media = self._call(self._onvif.create_media_service)
        self._ptz = self._call(self._onvif.create_ptz_service)

    def _read_profile(self) -> None:
        """The media profile (``profile_token`` or the first with PTZ), its stream and snapshot URIs."""
        profiles = self._call(self._media.GetProfiles)
        wanted = self.backend.profile_token
        profile = next((p for p in profiles if (p.token == wanted if wanted else p.PTZConfiguration)), None)
        if profile is None or profile.PTZConfiguration is None:
            tokens = ", ".join(p.token for p in profiles) or "none"
            what = f"media profile {wanted!r} with PTZ" if wanted else "media profile with PTZ"
            raise CameraError(f"{self._where}: no {what} (profiles: {tokens})")
        self.profile_token: str = profile.token
        self._ptz_configuration = profile.PTZConfiguration
        request = {"ProfileToken": profile.token}
        self.stream_url = self.backend.rtsp_url or self._local(
            self._call(lambda: self._media.GetStreamUri({"StreamSetup": _STREAM_SETUP, **request})).Uri
        )
        self.snapshot_url: str | None = None
        if self.backend.snapshot_fallback:
            try:
                self.snapshot_url = self._local(self._call(lambda: self._media.GetSnapshotUri(request)).Uri)
            except CameraError as exc:
                log.warning("%s; no snapshot fallback", exc)

    def _read_space(self) -> None:
        """The PositionSpace of the PTZ configuration's default absolute spaces (node limits)."""
        config = self._ptz_configuration
        spaces = None
        try:
            spaces = self._call(
                lambda: self._ptz.GetConfigurationOptions({"ConfigurationToken": config.token})
            ).Spaces
        except CameraError as exc:
            log.info("%s; reading the PTZ node instead", exc)
        if spaces is None or not spaces.AbsolutePanTiltPositionSpace:  # some cameras describe only the node
            nodes = self._call(self._ptz.GetNodes)
            node = next((n for n in nodes if n.token == config.NodeToken), nodes[0] if nodes else None)
            spaces = node.SupportedPTZSpaces if node is not None else None
        if spaces is None or not spaces.AbsolutePanTiltPositionSpace:
            raise CameraError(f"{self._where}: the PTZ node has no absolute pan/tilt position space")
        pan_tilt = _pick_space(spaces.AbsolutePanTiltPositionSpace,
                               config.DefaultAbsolutePantTiltPositionSpace)  # sic: ONVIF's spelling
        zooms = spaces.AbsoluteZoomPositionSpace
        zoom = _pick_space(zooms, config.DefaultAbsoluteZoomPositionSpace) if zooms else None
        self.space = PositionSpace.from_node(
            pan_tilt.URI, _limits(pan_tilt.XRange), _limits(pan_tilt.YRange),
            pan_range_deg=self.backend.pan_range_deg, tilt_range_deg=self.backend.tilt_range_deg,
            zoom_limits=_limits(zoom.XRange) if zoom is not None else (0.0, 1.0),
        )
        self._space_uris = (pan_tilt.URI, zoom.URI if zoom is not None else None)

    def _start_telemetry(self, camera: CameraConfig) -> None:
        backend = self.backend
        source: MqttTelemetry | PollingTelemetry
        if backend.telemetry == "mqtt":
            assert backend.mqtt_host is not None  # OnvifBackend validates it
            source = MqttTelemetry(self.latch, backend.mqtt_host, backend.mqtt_port,
                                   backend.mqtt_topic or f"ptz/{camera.key}/telemetry",
                                   fields=PayloadFields(**backend.mqtt_fields))
        else:
            source = PollingTelemetry(self.latch, self._read_status, interval_s=backend.poll_interval_s,
                                      source=f"ONVIF GetStatus at {backend.host}:{backend.port}")
        source.start(timeout=backend.connect_timeout_s)
        self._closing.callback(source.stop)

    # --- telemetry ----------------------------------------------------------------------------------------

    def _read_status(self) -> tuple[Telemetry, Mapping[str, object] | None]:
        """GetStatus: (reported position in degrees at the request's midpoint in time, raw MoveStatus)."""
        sent = datetime.now(UTC)
        status = self._call(lambda: self._ptz.GetStatus({"ProfileToken": self.profile_token}))
        received = datetime.now(UTC)
        position = status.Position
        zoom = position.Zoom.x if position.Zoom is not None else self.space.zoom_range[0]
        pan, tilt, zoom = self.space.from_camera(position.PanTilt.x, position.PanTilt.y, zoom)
        move = status.MoveStatus
        raw = None if move is None else {"PanTilt": move.PanTilt, "Zoom": move.Zoom}
        return Telemetry(pan, tilt, zoom, sent + (received - sent) / 2), raw

    # --- PTZCamera ----------------------------------------------------------------------------------------

    def move_to(self, pan: float, tilt: float, zoom: float) -> Telemetry:
        """AbsoluteMove to (pan deg, tilt deg, zoom 0..1); returns the reported position once it is within
        ``arrival_tolerance_deg`` of the target and has been still ``settle_s`` s. MoveTimeoutError naming
        the camera and the target after ``move_timeout_s`` s; ValueError when the target is out of range."""
        backend = self.backend
        target = f"pan {pan:g}°, tilt {tilt:g}°, zoom {zoom:g}"
        try:
            x, y, z = self.space.to_camera(pan, tilt, zoom)
        except ValueError as exc:
            raise ValueError(f"{self.name}: cannot move to {target}: {exc}") from None
        pan_tilt_space, zoom_space = self._space_uris
        position = {"PanTilt": {"x": x, "y": y, "space": pan_tilt_space},
                    "Zoom": {"x": z, **({"space": zoom_space} if zoom_space else {})}}
        deadline = time.monotonic() + backend.move_timeout_s
        self._settled_at = None
        self._call(lambda: self._ptz.AbsoluteMove({"ProfileToken": self.profile_token, "Position": position}))

        def arrived(sample: Telemetry) -> bool:
            return (pan_difference(sample.pan, pan) <= backend.arrival_tolerance_deg
                    and abs(sample.tilt - tilt) <= backend.arrival_tolerance_deg
                    and abs(sample.zoom - zoom) <= ZOOM_ARRIVAL_TOLERANCE)

        self.latch.wait_until(arrived, backend.move_timeout_s, f"arrival at {target}")
        try:
            settled = self.latch.wait_still(backend.settle_s, max(0.0, deadline - time.monotonic()))
        except NoStableWindowError:
            raise MoveTimeoutError(
                f"{self.name}: arrived at {target} but not still for {backend.settle_s:g} s within "
                f"{backend.move_timeout_s:g} s"
            ) from None
        self._settled_at = datetime.now(UTC)
        return settled

    def wait_stable(self, seconds: float, timeout: float | None = None) -> Telemetry:
        """Wait until the reported position has been still ``seconds`` s; the latest sample then.
        NoStableWindowError naming the camera after ``timeout`` s (None: no limit)."""
        self._settled_at = None
        sample = self.latch.wait_still(seconds, _FOREVER_S if timeout is None else timeout)
        self._settled_at = datetime.now(UTC)
        return sample

    def grab(self, at: datetime) -> tuple[np.ndarray, Telemetry]:
        """An RGB uint8 frame (the stream's size) exposed after the camera settled (the last move_to or
        wait_stable; else now) and the reported telemetry nearest its exposure. ``at`` is ignored: a real
        camera captures now. When the stream fails (after one reconnect) and ``snapshot_fallback`` is on,
        the ONVIF snapshot is taken instead; CaptureError naming the camera when that fails too."""
        settled = self._settled_at or datetime.now(UTC)
        try:
            image, exposure = self._grabber.grab_after(settled)
        except CaptureError as exc:
            if self.snapshot_url is None:
                raise CaptureError(f"{self.name}: {exc}") from None
            log.warning("%s: %s; taking the ONVIF snapshot instead", self.name, exc)
            sent = datetime.now(UTC)
            try:
                image = snapshot(self.snapshot_url, self._username, self._password,
                                 self.backend.connect_timeout_s)
            except CaptureError as fallback:
                raise CaptureError(f"{self.name}: {exc}; snapshot fallback: {fallback}") from None
            exposure = sent + (datetime.now(UTC) - sent) / 2
        return image, self.latch.nearest(exposure)

    def close(self) -> None:
        """Stop telemetry, the stream and the port-forward; safe to call twice."""
        self._closing.close()
