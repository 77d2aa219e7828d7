"""Helpers shared by the asset families and the command line's ``import``: per-camera calibration artefacts
written to and read from storage."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from geometry.alignment import save_r_align
from geometry.camera import Intrinsics, ZoomModel, load_calibration, save_calibration
from geometry.drift import FrameObservation
from ptz_pipeline import scans
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.resources.storage import ObjectStorageResource


def store_intrinsics(
    storage: ObjectStorageResource, camera: CameraConfig, intrinsics: Intrinsics, rms: float
) -> None:
    """Write the camera_intrinsics artefacts: ``calibration.npz`` (K and distortion at zoom 0, RMS px) and the
    zoom -> focal table (devices.yaml ``zoom_focal_ratio`` x the calibrated fx, pixels)."""
    buf = io.BytesIO()
    save_calibration(buf, intrinsics, rms)
    storage.put_bytes(scans.calibration_key(camera.deployment, camera.name), buf.getvalue())
    zoom, ratio = zip(*camera.zoom_focal_ratio, strict=True)
    zoom_model = ZoomModel(tuple(zoom), tuple(intrinsics.fx * r for r in ratio))
    storage.put_json(scans.zoom_model_key(camera.deployment, camera.name), zoom_model.to_dict())


def store_r_align(storage: ObjectStorageResource, camera: CameraConfig, R_align: np.ndarray) -> None:
    """Write ``R_align.npy`` (3x3 rotation, mount -> world ENU at the camera)."""
    buf = io.BytesIO()
    save_r_align(buf, R_align)
    storage.put_bytes(scans.r_align_key(camera.deployment, camera.name), buf.getvalue())


def store_reference_scan(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    images: Sequence[np.ndarray],
    telemetry: Sequence[tuple[float, float, float, datetime]],
) -> scans.ScanManifest:
    """Replace the camera's reference scan (old images and features go) with these RGB frames and their
    reported (pan deg, tilt deg, zoom 0..1, timestamp); manifest.json is written last."""
    prefix = scans.reference_prefix(camera.deployment, camera.name)
    storage.delete_prefix(prefix)
    return scans.write_scan(storage, prefix, camera.key, "reference", images, telemetry)


def load_intrinsics(storage: ObjectStorageResource, camera: CameraConfig) -> tuple[Intrinsics, ZoomModel]:
    """The camera_intrinsics artefacts: intrinsics at zoom 0 and the zoom -> focal model."""
    key = scans.calibration_key(camera.deployment, camera.name)
    if not storage.exists(key):
        raise FileNotFoundError(
            f"{camera.key}: no intrinsics at {storage.uri(key)}; materialize camera_intrinsics"
        )
    with io.BytesIO(storage.get_bytes(key)) as buf:
        intr, _ = load_calibration(buf)
    return intr, ZoomModel.from_dict(storage.get_json(scans.zoom_model_key(camera.deployment, camera.name)))


def load_reference_observations(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    base: Intrinsics,
    zoom_model: ZoomModel,
    with_images: bool = False,
) -> list[FrameObservation]:
    """Reference frames with their stored features and telemetry (and grey images with ``with_images``),
    loaded once per camera per run."""
    prefix = scans.reference_prefix(camera.deployment, camera.name)
    manifest = scans.read_manifest(storage, prefix)
    if manifest is None:
        raise FileNotFoundError(f"{camera.key}: no reference scan at {storage.uri(prefix)}")
    return scans.scan_observations(storage, prefix, manifest, base, zoom_model, with_images=with_images)
