"""devices.yaml: the fleet of PTZ cameras, grouped by deployment (site), validated with pydantic.

The file is a top-level list of deployments (the seed's shape)::

    - name: "site-a"
      cluster: "kube-context"          # optional kubectl context
      cameras:
        - name: "cam-1"
          mode: active                 # active | passive
          ptz_stops: [[0, -10, 0.0]]   # [pan deg, tilt deg, zoom 0..1]
          backend: {kind: simulated, ...}   # or {kind: onvif, ...}

Camera partition keys are ``<deployment>__<camera>`` (:func:`camera_key` / :func:`split_camera_key`).
Secrets never live in the file: ONVIF credentials are given as environment variable NAMES.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from geometry.camera import Intrinsics, ZoomModel
from geometry.rotations import drift_angles, drift_matrix
from ptz_pipeline.datasets import PANORAMA
from ptz_pipeline.results import DEFAULT_THRESHOLD_DEG

KEY_SEPARATOR = "__"
NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?")
_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_SOURCE_NAME = "devices.yaml"


class DevicesConfigError(ValueError):
    """devices.yaml is unreadable or invalid; the message names the file and the field path."""


def _check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a valid deployment/camera name, else raise ValueError.

    Names use ``[a-z0-9._-]``, start and end with a letter or digit (so ``__`` joins stay unambiguous and
    no name is ``.`` or ``..``, which would be a folder level in storage) and never contain ``__``.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} must use only lowercase letters, digits, '.', '_' and '-', "
            "and start and end with a letter or digit"
        )
    if KEY_SEPARATOR in name:
        raise ValueError(
            f"{what} name {name!r} must not contain {KEY_SEPARATOR!r} (the camera key separator)"
        )
    return name


def camera_key(deployment: str, camera: str) -> str:
    """Camera partition key ``<deployment>__<camera>``; raises ValueError on an invalid name."""
    return f"{_check_name(deployment, 'deployment')}{KEY_SEPARATOR}{_check_name(camera, 'camera')}"


def split_camera_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`camera_key`: ``"<deployment>__<camera>" -> (deployment, camera)``."""
    parts = key.split(KEY_SEPARATOR)
    if len(parts) != 2:
        raise ValueError(f"camera key {key!r} must be '<deployment>{KEY_SEPARATOR}<camera>'")
    deployment, camera = parts
    return _check_name(deployment, "deployment"), _check_name(camera, "camera")


def _check_ptz_shape(stop: object) -> object:
    """A stop is written as a 3-element list; anything else gets one clear message."""
    if not isinstance(stop, list | tuple) or len(stop) != 3:
        raise ValueError(f"a PTZ stop must be [pan deg, tilt deg, zoom 0..1], got {stop!r}")
    return stop


def _check_ptz_stop(stop: tuple[float, float, float]) -> tuple[float, float, float]:
    """Check one [pan deg, tilt deg, zoom 0..1] stop."""
    pan, tilt, zoom = stop
    if not -360.0 <= pan <= 360.0:
        raise ValueError(f"pan must be within [-360, 360] degrees, got {pan}")
    if not -90.0 <= tilt <= 90.0:
        raise ValueError(f"tilt must be within [-90, 90] degrees, got {tilt}")
    if not 0.0 <= zoom <= 1.0:
        raise ValueError(f"zoom must be within [0, 1] (ONVIF normalised), got {zoom}")
    return stop


PTZStop = Annotated[
    tuple[float, float, float], BeforeValidator(_check_ptz_shape), AfterValidator(_check_ptz_stop)
]
"""One PTZ position: (pan deg, tilt deg, zoom 0..1)."""


class _Model(BaseModel):
    """Frozen, strict-keys base: an unknown key (a typo) is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceGrid(_Model):
    """Reference scan grid: horizontal x vertical PTZ stops; pan/tilt limits in degrees, ends included."""

    horizontal_stops: int = Field(8, ge=1)
    vertical_stops: int = Field(2, ge=1)
    pan_min: float = Field(0.0, ge=-360.0, le=360.0)
    pan_max: float = Field(315.0, ge=-360.0, le=360.0)
    tilt_min: float = Field(-20.0, ge=-90.0, le=90.0)
    tilt_max: float = Field(-5.0, ge=-90.0, le=90.0)
    zoom: float = Field(0.0, ge=0.0, le=1.0)
    zoom_levels: list[float] = Field(default_factory=list)
    """Extra zoom levels (ONVIF 0..1, increasing, above ``zoom``) scanned after the grid for the
    self-calibrated zoom curve (``intrinsics: self``): 2 x 2 overlapping stops each (:meth:`zoom_stops`)."""

    @model_validator(mode="after")
    def _check_ranges(self) -> ReferenceGrid:
        if self.pan_min > self.pan_max:
            raise ValueError(f"pan_min ({self.pan_min}) must not exceed pan_max ({self.pan_max})")
        if self.tilt_min > self.tilt_max:
            raise ValueError(f"tilt_min ({self.tilt_min}) must not exceed tilt_max ({self.tilt_max})")
        levels = [self.zoom, *self.zoom_levels]
        if any(b <= a for a, b in zip(levels, levels[1:], strict=False)) or any(z > 1.0 for z in levels):
            raise ValueError(
                f"zoom_levels must increase from above zoom ({self.zoom}) to at most 1, got "
                f"{self.zoom_levels}"
            )
        return self

    def zoom_stops(self, focal_ratio: ZoomModel) -> list[tuple[float, float, float]]:
        """Stops (pan deg, tilt deg, zoom) of the extra zoom levels: per level 2 x 2 stops around the grid
        stop nearest the grid's centre, ``s = spacing / 4 / ratio`` degrees from it in pan and tilt, where
        ``spacing`` is the grid's pan step (its tilt step with one pan stop, else 10°; overlapping grids have
        steps under the field of view) and ``ratio`` the nominal focal ratio of the level over ``zoom``
        (devices.yaml ``zoom_focal_ratio``): frames of one level overlap each other and lie inside the
        grid's centre frame."""
        pans = np.linspace(self.pan_min, self.pan_max, self.horizontal_stops)
        tilts = np.linspace(self.tilt_min, self.tilt_max, self.vertical_stops)
        steps = [float(np.diff(v)[0]) for v in (pans, tilts) if len(v) > 1 and np.diff(v)[0] > 0]
        spacing = steps[0] if steps else 10.0
        pan_c, tilt_c = float(pans[len(pans) // 2]), float(tilts[len(tilts) // 2])
        stops = []
        for zoom in self.zoom_levels:
            s = spacing / 4.0 / (focal_ratio.focal(zoom) / focal_ratio.focal(self.zoom))
            stops += [(pan_c + dp * s, tilt_c + dt * s, zoom) for dt in (-1, 1) for dp in (-1, 1)]
        return stops

    def stops(self) -> list[tuple[float, float, float]]:
        """Grid stops (pan deg, tilt deg, zoom), tilt row by tilt row, pan increasing within a row."""
        pans = np.linspace(self.pan_min, self.pan_max, self.horizontal_stops)
        tilts = np.linspace(self.tilt_min, self.tilt_max, self.vertical_stops)
        return [(float(pan), float(tilt), self.zoom) for tilt in tilts for pan in pans]


SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Time origin of the simulated mounts' drift."""


class SimulatedBackend(_Model):
    """A simulated camera (rendered by the ``simulated`` backend): its true lens, mount and drift.

    The mount sits at ``mount_ypr_deg`` (yaw, pitch, roll degrees) and drifts per angle as
    ``drift_offset_deg + drift_amplitude_deg * sin(2 pi h / drift_period_hours + phase)`` (h = hours since
    SIM_EPOCH). The drift the pipeline should report for a query at t against a reference captured at t_ref
    is ``R_WB(t_ref)^T @ R_WB(t)`` (:meth:`true_drift`).
    """

    kind: Literal["simulated"]
    hfov_deg: float = Field(60.0, gt=0.0, lt=180.0)
    image_width: int = Field(640, gt=0)
    image_height: int = Field(480, gt=0)
    dist: tuple[float, ...] = (-0.08, 0.02, 0.0, 0.0, 0.0)
    """OpenCV distortion coefficients (k1, k2, p1, p2[, k3...])."""
    zoom_max_ratio: float = Field(3.0, ge=1.0)
    """Focal length at zoom 1 over focal length at zoom 0."""
    zoom_curve: Literal["linear", "exponential"] = "linear"
    """How the focal length grows with zoom: ``linear`` f0 (1 + (ratio - 1) zoom), or ``exponential``
    f0 ratio^zoom (non-linear in zoom, as many zoom lenses)."""
    dist_at_max_zoom: tuple[float, ...] | None = None
    """Distortion coefficients at zoom 1 (as ``dist``), varying linearly with zoom from ``dist`` at zoom 0;
    None: ``dist`` at every zoom."""
    mount_ypr_deg: tuple[float, float, float] = (25.0, 1.5, -0.8)
    drift_offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    drift_amplitude_deg: tuple[float, float, float] = (0.5, 0.2, 0.1)
    drift_period_hours: float = Field(24.0, gt=0.0)
    seed: int = 0
    fail: Literal["unreachable", "textureless", "never_stable"] | None = None
    """Failure injection for tests."""
    nuisances: bool = True
    """Render noise, exposure, blur and JPEG artefacts."""
    home: PTZStop = (0.0, -15.0, 0.0)
    """PTZ position (pan deg, tilt deg, zoom) when the camera starts."""
    panorama: str | None = None
    """Equirectangular world image the camera renders; None: the packaged panorama (Matthew Petroff,
    CC BY-SA 3.0; see ptz_pipeline/data/panorama/SOURCE.txt)."""
    optical_centre_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """The optical centre's offset from the pan/tilt rotation centre in the camera frame (x right, y down,
    z forward), metres; a real head's is a few cm. Views at different pan/tilt then see near ground with
    parallax (with ``ground_depth_m``)."""
    ground_depth_m: float | None = Field(None, gt=0.0)
    """Height (metres) of the rotation centre above a ground plane carrying the panorama's lower half
    (:func:`geometry.render.render_view`); None: the whole panorama at infinity (no parallax)."""

    @property
    def panorama_path(self) -> Path:
        """The world image file (FileNotFoundError naming it when absent)."""
        path = Path(self.panorama) if self.panorama else PANORAMA
        if not path.is_file():
            raise FileNotFoundError(f"simulator panorama not found at {path}")
        return path

    @property
    def intrinsics(self) -> Intrinsics:
        """True intrinsics at zoom 0 (widest)."""
        return Intrinsics.from_fov(self.hfov_deg, self.image_width, self.image_height, np.array(self.dist))

    @property
    def zoom_model(self) -> ZoomModel:
        """True zoom -> focal model: from f(0) to zoom_max_ratio * f(0), linearly or exponentially in zoom
        (``zoom_curve``; two samples, straight in f or in log f), with the distortion per zoom when
        ``dist_at_max_zoom`` is set."""
        f0 = self.intrinsics.fx
        dist = None
        if self.dist_at_max_zoom is not None:
            n = max(len(self.dist), len(self.dist_at_max_zoom), 5)
            dist = tuple(tuple(d) + (0.0,) * (n - len(d)) for d in (self.dist, self.dist_at_max_zoom))
        return ZoomModel(
            (0.0, 1.0), (f0, f0 * self.zoom_max_ratio), dist, log_focal=self.zoom_curve == "exponential"
        )

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


MqttField = Literal["pan", "tilt", "zoom", "timestamp", "move_status"]


class OnvifBackend(_Model):
    """A real camera: ONVIF PTZ control, RTSP frames, ONVIF or MQTT telemetry.

    Credentials come from the environment variables NAMED by ``username_env`` / ``password_env`` (or from
    the PTZ_SECRETS file for a camera described there), never from this file. Positions: a camera reporting
    degree spaces is used as is; one in ONVIF's generic space (pan/tilt -1..1) is mapped through
    ``pan_range_deg`` / ``tilt_range_deg`` = (degrees at -1, degrees at +1).
    """

    kind: Literal["onvif"]
    host: str = Field(min_length=1)
    port: int = Field(80, ge=1, le=65535)
    username_env: str | None = None
    password_env: str | None = None
    profile_token: str | None = None
    """Media profile; None: the first profile with a PTZ configuration."""
    rtsp_url: str | None = None
    """None: the profile's GetStreamUri."""
    snapshot_fallback: bool = True
    """Take the ONVIF snapshot when the RTSP stream fails (after one reconnect)."""
    telemetry: Literal["onvif", "mqtt"] = "onvif"
    poll_interval_s: float = Field(0.5, gt=0.0)
    """``telemetry: onvif``: seconds between GetStatus calls."""
    mqtt_host: str | None = None
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_topic: str | None = None
    """None: ``ptz/<deployment>__<camera>/telemetry``."""
    mqtt_fields: dict[MqttField, str] = Field(default_factory=dict)
    """Payload field names where they differ from pan / tilt / zoom / timestamp (dotted for nested)."""
    pan_range_deg: tuple[float, float] = (-180.0, 180.0)
    tilt_range_deg: tuple[float, float] = (-90.0, 90.0)
    arrival_tolerance_deg: float = Field(0.2, gt=0.0)
    """A move has arrived when the reported pan/tilt are this close to the target (degrees)."""
    still_tolerance_deg: float = Field(0.02, gt=0.0)
    """Positions within this (degrees) count as unchanged for stillness."""
    settle_s: float = Field(1.0, ge=0.0)
    """Seconds still after arrival before a frame is taken (the image must be exposed after settling)."""
    stream_latency_s: float = Field(2.0, ge=0.0)
    """Worst-case delay of the RTSP stream: a frame arriving this long after settling was exposed after it."""
    move_timeout_s: float = Field(30.0, gt=0.0)
    connect_timeout_s: float = Field(10.0, gt=0.0)

    _credentials: tuple[str, str] | None = PrivateAttr(default=None)

    @field_validator("username_env", "password_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_PATTERN.fullmatch(value):
            raise ValueError(f"must be the NAME of an environment variable holding the secret, got {value!r}")
        return value

    @field_validator("rtsp_url")
    @classmethod
    def _check_rtsp_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError(f"must be an rtsp:// URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; they come from username_env / password_env")
        return value

    @model_validator(mode="after")
    def _check_telemetry(self) -> OnvifBackend:
        if self.telemetry == "mqtt" and not self.mqtt_host:
            raise ValueError("telemetry: mqtt needs mqtt_host (and mqtt_port, mqtt_topic unless defaults)")
        return self

    def credentials(self) -> tuple[str, str]:
        """(username, password): from the secrets file, else the environment variables named here."""
        if self._credentials is not None:
            return self._credentials
        names = [n for n in (self.username_env, self.password_env) if n]
        if len(names) < 2:
            raise DevicesConfigError(
                f"ONVIF camera at {self.host}: no credentials (set username_env and password_env, or "
                "describe the camera in the PTZ_SECRETS file)"
            )
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise DevicesConfigError(
                f"ONVIF camera at {self.host}: environment variable(s) {', '.join(missing)} not set"
            )
        return os.environ[names[0]], os.environ[names[1]]


Backend = Annotated[SimulatedBackend | OnvifBackend, Field(discriminator="kind")]


class ClusterAccess(_Model):
    """The seed's kubectl access to a deployment's cameras: ``kubectl --context C -n N port-forward TARGET
    LOCAL:REMOTE ...`` runs while a camera of the deployment is used (its backend then names 127.0.0.1 and
    the local ports)."""

    context: str | None = None
    namespace: str = "default"
    target: str | None = None
    """``service/<name>`` or ``pod/<name>``; None: only the context is named (no port-forward)."""
    ports: list[tuple[int, int]] = Field(default_factory=list)
    """(local port, remote port) pairs: ONVIF, RTSP, MQTT."""


SECRETS_ENV = "PTZ_SECRETS"


def secret_backend(camera: CameraConfig) -> OnvifBackend:
    """The backend of ``camera`` from the JSON file named by PTZ_SECRETS: ``{"<deployment>/<camera>":
    {"username": ..., "password": ..., <backend fields>}}``. DevicesConfigError naming what is missing."""
    path = os.environ.get(SECRETS_ENV)
    entry_name = f"{camera.deployment}/{camera.name}"
    if not path:
        raise DevicesConfigError(
            f"{camera.key}: no backend in devices.yaml and {SECRETS_ENV} is not set (a secrets.json with an "
            f"entry {entry_name!r} gives the connection details)"
        )
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DevicesConfigError(f"{path}: cannot read the secrets file: {exc}") from None
    entry = entries.get(entry_name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        raise DevicesConfigError(f"{path}: no entry {entry_name!r} for camera {camera.key}")
    fields = {k: v for k, v in entry.items() if k not in ("username", "password")}
    try:
        backend = OnvifBackend.model_validate({"kind": "onvif", **fields})
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(e['loc'])}: {_error_message(e)}" for e in exc.errors())
        raise DevicesConfigError(f"{path}: {entry_name}: {problems}") from None
    if "username" in entry and "password" in entry:
        backend._credentials = (str(entry["username"]), str(entry["password"]))
    return backend


_BACKEND_KINDS = frozenset({"simulated", "onvif"})


class CameraConfig(_Model):
    """One PTZ camera. ``deployment`` and ``key`` are set when its deployment is validated."""

    name: str
    mode: Literal["active", "passive"] = "passive"
    """passive (the seed's default): one frame once the camera is still; active: visit the query stops."""
    ptz_stops: list[PTZStop] = Field(default_factory=list)
    """Active-mode query stops (pan deg, tilt deg, zoom 0..1); empty: the reference grid's stops."""
    stabilize_time: float = Field(30.0, gt=0.0)
    """Passive mode: seconds the camera must be still before a frame is taken."""
    timeout: float = Field(3300.0, gt=0.0)
    """Passive mode: seconds to wait for a still camera before giving up."""
    offset_threshold_deg: float = Field(DEFAULT_THRESHOLD_DEG, gt=0.0, strict=True)
    """|yaw|, |pitch| or |roll| above this (degrees) alerts."""
    reference: ReferenceGrid = Field(default_factory=ReferenceGrid)
    zoom_focal_ratio: list[tuple[float, float]] = Field(default_factory=lambda: [(0.0, 1.0)])
    """(zoom 0..1, focal length / calibrated focal length) samples: the zoom -> focal table (with
    ``intrinsics: self`` and ``reference.zoom_levels`` only the nominal curve that places the zoom stops)."""
    intrinsics: Literal["chessboard", "self"] = "chessboard"
    """How camera_intrinsics calibrates: ``chessboard`` photos, or ``self``-calibration from the reference
    scan (a rotating camera with telemetry; geometry.selfcal), then with ``reference.zoom_levels`` the
    zoom -> focal curve too."""
    backend: Backend | None = None
    """None: the camera's connection details come from the PTZ_SECRETS file (the seed's minimal file)."""

    _deployment: str = PrivateAttr(default="")
    _cluster: ClusterAccess | None = PrivateAttr(default=None)
    _report: Literal["all", "alerts"] = PrivateAttr(default="all")

    @field_validator("name")
    @classmethod
    def _check_camera_name(cls, value: str) -> str:
        return _check_name(value, "camera")

    @field_validator("zoom_focal_ratio")
    @classmethod
    def _check_zoom_table(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        ZoomModel(tuple(z for z, _ in value), tuple(r for _, r in value))  # raises ValueError when invalid
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> CameraConfig:
        if self.mode == "passive" and self.timeout < self.stabilize_time:
            raise ValueError(
                f"timeout ({self.timeout} s) must be at least stabilize_time ({self.stabilize_time} s)"
            )
        if self.reference.zoom_levels and self.intrinsics != "self":
            raise ValueError(
                "reference.zoom_levels needs intrinsics: self (the zoom curve is self-calibrated from them)"
            )
        return self

    @property
    def nominal_zoom_model(self) -> ZoomModel:
        """devices.yaml ``zoom_focal_ratio`` as a zoom -> focal ratio model (ratio 1 at its first zoom)."""
        return ZoomModel(
            tuple(z for z, _ in self.zoom_focal_ratio), tuple(r for _, r in self.zoom_focal_ratio)
        )

    def reference_stops(self) -> list[tuple[float, float, float]]:
        """Every stop of a reference scan (pan deg, tilt deg, zoom): the grid, then its zoom levels' stops."""
        return self.reference.stops() + self.reference.zoom_stops(self.nominal_zoom_model)

    @property
    def deployment(self) -> str:
        """Name of the deployment (site) this camera belongs to."""
        return self._deployment

    @property
    def key(self) -> str:
        """Camera partition key ``<deployment>__<camera>``."""
        return camera_key(self._deployment, self.name)

    @property
    def cluster(self) -> ClusterAccess | None:
        """How the deployment's cameras are reached (kubectl port-forward), None when directly."""
        return self._cluster

    @property
    def report(self) -> Literal["all", "alerts"]:
        """The deployment's Slack report setting: ``all`` results or only ``alerts``."""
        return self._report

    @property
    def query_stops(self) -> list[tuple[float, float, float]]:
        """Active-mode stops: ``ptz_stops``, else the reference grid's stops (no parallax between them)."""
        return [tuple(stop) for stop in self.ptz_stops] or self.reference.stops()

    def connection(self) -> Backend:
        """The backend: from devices.yaml, else from the PTZ_SECRETS file; DevicesConfigError naming what is
        missing when neither describes the camera (raised when the camera is used, not when loading)."""
        return self.backend or secret_backend(self)


class Deployment(_Model):
    """A site: a group of cameras, optionally reached through a Kubernetes cluster (``cluster``)."""

    name: str
    cluster: ClusterAccess | None = None
    report: Literal["all", "alerts"] = "all"
    """Slack: ``all`` (the seed's behaviour) reports every camera's result each run; ``alerts`` only
    offsets beyond the threshold and failures."""
    cameras: list[CameraConfig] = Field(min_length=1)

    @field_validator("cluster", mode="before")
    @classmethod
    def _context_only(cls, value: object) -> object:
        """The seed's form ``cluster: <kubectl context>`` names the context alone."""
        return {"context": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _check_deployment_name(cls, value: str) -> str:
        return _check_name(value, "deployment")

    @model_validator(mode="after")
    def _attach_cameras(self) -> Deployment:
        for camera in self.cameras:
            camera._deployment = self.name
            camera._cluster = self.cluster
            camera._report = self.report
        return self


@dataclass(frozen=True)
class Fleet:
    """All deployments of a devices.yaml, with unique deployment names and camera keys."""

    deployments: list[Deployment]

    def cameras(self) -> Iterator[CameraConfig]:
        """Every camera, in file order."""
        for deployment in self.deployments:
            yield from deployment.cameras

    @cached_property
    def _by_key(self) -> dict[str, CameraConfig]:
        return {camera.key: camera for camera in self.cameras()}

    def camera(self, key: str) -> CameraConfig:
        """The camera with partition key ``key``; KeyError naming the known keys otherwise."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"no camera {key!r} in devices.yaml (known: {', '.join(self._by_key)})") from None


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that rejects a mapping key given twice (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_FLEET_ADAPTER = TypeAdapter(list[Deployment])


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Pydantic error location -> ``[0].cameras[1].ptz_stops[0]`` (the backend's union tag is dropped)."""
    path = ""
    previous: int | str | None = None
    for part in loc:
        if previous == "backend" and part in _BACKEND_KINDS:
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
        previous = part
    return path.lstrip(".") or "(top level)"


def _error_message(error: dict) -> str:
    """Our own ValueError text as written, pydantic's message otherwise."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return error["msg"]


def _names_a_file(text: str) -> bool:
    """A one-line str that ends in .yaml/.yml or names an existing file is a path, not YAML text."""
    if "\n" in text or not text.strip():
        return False
    if text.lower().endswith((".yaml", ".yml")):
        return True
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a name too long to be a path
        return False


def _read_source(path_or_text: str | os.PathLike[str], source_name: str) -> tuple[str, str]:
    """(YAML text, name for messages): a PathLike or a str naming a file is read; other text is YAML."""
    if isinstance(path_or_text, str) and not _names_a_file(path_or_text):
        return path_or_text, source_name
    path = Path(path_or_text)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise DevicesConfigError(f"{path}: cannot read devices file: {exc.strerror or exc}") from exc


def load_devices(path_or_text: str | os.PathLike[str], source_name: str = DEFAULT_SOURCE_NAME) -> Fleet:
    """Load and validate devices.yaml from a path or from YAML text.

    Raises DevicesConfigError whose message names the file (``source_name`` for text) and the exact field
    path, e.g. ``devices.yaml: [0].cameras[1].ptz_stops[0]: pan must be within [-360, 360] degrees``.
    """
    text, name = _read_source(path_or_text, source_name)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DevicesConfigError(f"{name}: invalid YAML at {where}{problem}") from exc
    if data is None:
        raise DevicesConfigError(f"{name}: file is empty; expected a list of deployments")
    try:
        deployments = _FLEET_ADAPTER.validate_python(data)
    except ValidationError as exc:
        lines = [f"{name}: {_field_path(err['loc'])}: {_error_message(err)}" for err in exc.errors()]
        raise DevicesConfigError("\n".join(lines)) from exc
    if not deployments:
        raise DevicesConfigError(f"{name}: the list of deployments is empty")
    _check_unique(deployments, name)
    return Fleet(deployments=deployments)


def _check_unique(deployments: list[Deployment], name: str) -> None:
    """Deployment names and camera keys must be unique across the file."""
    first_deployment: dict[str, int] = {}
    first_camera: dict[str, str] = {}
    for i, deployment in enumerate(deployments):
        if deployment.name in first_deployment:
            raise DevicesConfigError(
                f"{name}: [{i}].name: duplicate deployment {deployment.name!r} "
                f"(first at [{first_deployment[deployment.name]}].name)"
            )
        first_deployment[deployment.name] = i
        for j, camera in enumerate(deployment.cameras):
            path = f"[{i}].cameras[{j}].name"
            if camera.key in first_camera:
                raise DevicesConfigError(
                    f"{name}: {path}: duplicate camera key {camera.key!r} "
                    f"(first at {first_camera[camera.key]})"
                )
            first_camera[camera.key] = path
