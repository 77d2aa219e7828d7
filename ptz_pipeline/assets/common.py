"""Helpers shared by the asset families: per-camera calibration artefacts read from storage."""

from __future__ import annotations

import io

from geometry.camera import Intrinsics, ZoomModel, load_calibration
from geometry.drift import FrameObservation
from ptz_pipeline import scans
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.resources.storage import ObjectStorageResource


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
