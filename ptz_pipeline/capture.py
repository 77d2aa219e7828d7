"""Capture, shared by the assets and the command line: a reference grid scan and one hour's query frames from
an open :class:`~ptz_pipeline.camera.PTZCamera`, local scan folders, and the seed's :func:`extract_query`.

Telemetry rows are what the camera REPORTS with each frame: (pan deg, tilt deg, zoom 0..1, UTC timestamp);
images are RGB uint8.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import ValidationError

from ptz_pipeline import scans
from ptz_pipeline.camera import PTZCamera, Telemetry, open_camera
from ptz_pipeline.devices import CameraConfig, camera_key, split_camera_key
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.settings import local_resources

TelemetryRow = tuple[float, float, float, datetime]
"""(pan deg, tilt deg, zoom 0..1, timestamp) as scans.write_scan stores it."""

Progress = Callable[[int, int, Telemetry], None]
"""Called after each stop with (stops done, stops in all, the telemetry reported at that stop)."""

QUERY_STOP_INTERVAL = timedelta(seconds=10)
"""Active mode on a virtual clock: the n-th stop is rendered n x this after the capture time."""


def stop_line(done: int, total: int, t: Telemetry) -> str:
    """One progress line for a reference stop (degrees, zoom 0..1)."""
    return f"reference stop {done}/{total} pan={t.pan:.2f} tilt={t.tilt:.2f} zoom={t.zoom:.2f}"


def _row(t: Telemetry) -> TelemetryRow:
    return t.pan, t.tilt, t.zoom, t.timestamp


def _visit(
    ptz: PTZCamera,
    stops: Sequence[tuple[float, float, float]],
    at: Callable[[int], datetime],
    progress: Progress | None = None,
) -> tuple[list[np.ndarray], list[TelemetryRow]]:
    """Move to each (pan deg, tilt deg, zoom) stop and grab a frame at ``at(stop index)``."""
    images, telemetry = [], []
    for i, (pan, tilt, zoom) in enumerate(stops):
        ptz.move_to(pan, tilt, zoom)
        image, t = ptz.grab(at(i))
        images.append(image)
        telemetry.append(_row(t))
        if progress is not None:
            progress(i + 1, len(stops), t)
    return images, telemetry


def scan_reference(
    ptz: PTZCamera, stops: Sequence[tuple[float, float, float]], progress: Progress | None = None
) -> tuple[list[np.ndarray], list[TelemetryRow]]:
    """A reference scan: one frame (taken now) at each (pan deg, tilt deg, zoom 0..1) stop, in order."""
    return _visit(ptz, stops, lambda _: datetime.now(UTC), progress)


def capture_query(
    ptz: PTZCamera, cam: CameraConfig, at: datetime, hour_end: datetime | None = None
) -> tuple[list[np.ndarray], list[TelemetryRow]]:
    """Frames and telemetry for one hour: the camera's query stops in active mode; in passive mode one frame
    once the camera has been still ``stabilize_time`` s, waiting at most ``timeout`` s and, for a real camera,
    never past ``hour_end`` (None: no hour bound). ``at`` is the capture time on a virtual clock."""
    if cam.mode == "active":
        return _visit(ptz, cam.query_stops, lambda i: at + i * QUERY_STOP_INTERVAL)
    wait = cam.timeout
    if hour_end is not None and not ptz.virtual_clock:
        wait = min(wait, (hour_end - datetime.now(UTC)).total_seconds())
    ptz.wait_stable(cam.stabilize_time, max(0.0, wait))
    image, t = ptz.grab(at)
    return [image], [_row(t)]


def _problem(exc: ValidationError) -> str:
    """The first validation problem as ``field.path: message`` (a model-level one as ``message``), one line,
    without pydantic's URL."""
    error = exc.errors(include_url=False)[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{path}: {message}{more}" if path else f"{message}{more}"


def query_camera(
    cam: CameraConfig,
    stabilize_time: float | None = None,
    timeout: float | None = None,
    stops: Sequence[tuple[float, float, float]] | None = None,
) -> CameraConfig:
    """``cam`` with its passive-mode times (s) and/or its active stops (pan deg, tilt deg, zoom 0..1)
    replaced (None keeps devices.yaml's; stops switch to active mode), checked as devices.yaml is."""
    update: dict[str, object] = {
        k: float(v) for k, v in (("stabilize_time", stabilize_time), ("timeout", timeout)) if v is not None
    }
    if stops is not None:
        update |= {"mode": "active", "ptz_stops": [tuple(stop) for stop in stops]}
    try:
        CameraConfig.model_validate({**cam.model_dump(), **update})
    except ValidationError as exc:
        raise ValueError(f"{cam.key}: {_problem(exc)}") from None
    return cam.model_copy(update=update)


def capture_query_now(cam: CameraConfig) -> tuple[list[np.ndarray], list[TelemetryRow]]:
    """Open the camera and capture its query frames now (:func:`capture_query`, no hour bound)."""
    with closing(open_camera(cam)) as ptz:
        return capture_query(ptz, cam, datetime.now(UTC))


def _folder_storage(folder: str | Path) -> tuple[ObjectStorageResource, str]:
    """A local scan folder as (storage rooted at its parent, the folder's name as the scan prefix)."""
    path = Path(folder).resolve()
    return ObjectStorageResource(url=str(path.parent)), path.name


def write_scan_folder(
    folder: str | Path,
    camera: str,
    kind: Literal["reference", "query"],
    images: Sequence[np.ndarray],
    telemetry: Sequence[TelemetryRow],
    mode: str | None = None,
) -> Path:
    """Write a scan folder (images/, then manifest.json) at ``folder``; returns the manifest's path."""
    storage, name = _folder_storage(folder)
    scans.write_scan(storage, name, camera, kind, images, telemetry, mode)
    return Path(folder).resolve() / "manifest.json"


def read_scan_folder(folder: str | Path) -> tuple[ObjectStorageResource, str, scans.ScanManifest]:
    """(storage, prefix, manifest) of a local scan folder; FileNotFoundError without manifest.json or an
    image it names, ValueError ``<folder>/manifest.json: field: problem`` for an invalid manifest."""
    storage, name = _folder_storage(folder)
    manifest_path = Path(folder).resolve() / "manifest.json"
    try:
        manifest = scans.read_manifest(storage, name)
    except ValidationError as exc:
        raise ValueError(f"{manifest_path}: {_problem(exc)}") from None
    if manifest is None:
        raise FileNotFoundError(f"{manifest_path} not found (a scan folder needs its manifest)")
    for i, frame in enumerate(manifest.frames):
        if not storage.exists(f"{name}/{frame.image}"):
            raise FileNotFoundError(f"{manifest_path}: frames[{i}].image: {frame.image} not found")
    return storage, name, manifest


def device_key(device_id: str) -> str:
    """``<deployment>__<camera>`` or ``<deployment>/<camera>`` -> camera key ``<deployment>__<camera>``."""
    deployment, slash, camera = device_id.partition("/")
    return camera_key(deployment, camera) if slash else camera_key(*split_camera_key(device_id))


def extract_query(
    device_id: str,
    stabilize_time: float = 30,
    timeout: float | None = None,
    active_ptz_stops: Sequence[tuple[float, float, float]] | None = None,
) -> dict[str, object]:
    """The seed's query extraction for one camera of the fleet file ``$PTZ_DEVICES``.

    Passive (devices.yaml's mode, unless ``active_ptz_stops`` are given): one frame once the camera has been
    still ``stabilize_time`` s, waiting at most ``timeout`` s (None: devices.yaml's ``timeout``). Active: one
    frame at each (pan deg, tilt deg, zoom 0..1) stop (``active_ptz_stops``, else devices.yaml's).
    Returns ``camera_frames`` (PIL images), ``telemetry`` ({frame index: {pan, tilt, zoom, timestamp}} as
    reported), ``capture_positions`` ([(pan, tilt, zoom)] reported), ``temp_dir`` (a scan folder written to a
    new temporary directory) and ``manifest_path`` (its manifest.json). Raises CameraError when the capture
    fails, ValueError / KeyError for an unknown or invalid camera.
    """
    fleet = local_resources()["devices"].fleet()
    cam = query_camera(fleet.camera(device_key(device_id)), stabilize_time, timeout, active_ptz_stops)
    images, telemetry = capture_query_now(cam)
    temp_dir = Path(tempfile.mkdtemp(prefix="ptz-query-"))
    manifest_path = write_scan_folder(temp_dir, cam.key, "query", images, telemetry, cam.mode)
    return {
        "camera_frames": [Image.fromarray(image) for image in images],
        "telemetry": {
            i: {"pan": pan, "tilt": tilt, "zoom": zoom, "timestamp": ts}
            for i, (pan, tilt, zoom, ts) in enumerate(telemetry)
        },
        "capture_positions": [(pan, tilt, zoom) for pan, tilt, zoom, _ in telemetry],
        "temp_dir": str(temp_dir),
        "manifest_path": str(manifest_path),
    }
