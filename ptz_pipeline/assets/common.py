"""Helpers shared by the asset families and the command line's ``import``: per-camera calibration artefacts
written to and read from storage, one version per write (ptz_pipeline.versions: nothing is overwritten)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import dagster as dg
import numpy as np

from geometry.alignment import load_r_align, save_r_align
from geometry.camera import CalibrationFile, Intrinsics, ZoomModel, read_calibration, save_calibration
from geometry.drift import CalibrationUncertainty, FrameObservation
from ptz_pipeline import proposals, scans, versions
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.resources.storage import ObjectStorageResource, in_flight
from ptz_pipeline.results import UsedVersions
from ptz_pipeline.versions import Artefact, Version

T = TypeVar("T")


def within_deadline(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, run in a daemon thread; TimeoutError when it is not done within ``seconds``, naming the
    storage call it is blocked in, if any.

    A call blocked on an endpoint that accepts but never answers cannot be interrupted: its thread is left to
    end when that call gives up (boto3's own timeouts) while the caller moves on.
    """
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)

    thread = threading.Thread(target=run, name="camera-hour", daemon=True)
    thread.start()
    thread.join(seconds)
    if not future.done():
        blocked = in_flight(thread.ident)
        raise TimeoutError(
            f"not done within the {seconds:g} s deadline" + (f"; no answer to {blocked}" if blocked else "")
        )
    return future.result()


def _commit(
    storage: ObjectStorageResource, camera: CameraConfig, artefact: Artefact, new: Version, **provenance: Any
) -> Version:
    """Make ``new`` (its files written) the camera's current ``artefact`` version; retention per storage."""
    return versions.commit_version(
        storage,
        camera.deployment,
        camera.name,
        artefact,
        new,
        keep=storage.calibration_versions_kept,
        **provenance,
    )


def store_intrinsics(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    intrinsics: Intrinsics,
    rms: float,
    covariance: np.ndarray | None = None,
    zoom_model: ZoomModel | None = None,
    **provenance: Any,
) -> Version:
    """Write a new camera_intrinsics version: ``calibration.npz`` (K and distortion at zoom 0, RMS px, and the
    calibration's ``covariance`` when known) and the zoom -> focal model ``zoom_model`` (e.g. self-calibrated
    through several zoom levels; None: devices.yaml ``zoom_focal_ratio`` x the calibrated fx, pixels);
    returns it."""
    new = versions.begin_version(storage, camera.deployment, camera.name, "intrinsics")
    buf = io.BytesIO()
    save_calibration(buf, intrinsics, rms, covariance)
    storage.put_bytes(scans.calibration_key(camera.deployment, camera.name, new.number), buf.getvalue())
    if zoom_model is None:
        zoom, ratio = zip(*camera.zoom_focal_ratio, strict=True)
        zoom_model = ZoomModel(tuple(zoom), tuple(intrinsics.fx * r for r in ratio))
    storage.put_json(scans.zoom_model_key(camera.deployment, camera.name, new.number), zoom_model.to_dict())
    return _commit(storage, camera, "intrinsics", new, **provenance)


def store_r_align(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    R_align: np.ndarray,
    inputs: Mapping[str, bytes] | None = None,
    **provenance: Any,
) -> Version:
    """Write a new R_align version: ``R_align.npy`` (3x3 rotation, mount -> world ENU at the camera) and
    ``inputs`` (file name -> bytes, e.g. the control points it was estimated from) beside it; returns it."""
    new = versions.begin_version(storage, camera.deployment, camera.name, "r_align")
    for name, data in (inputs or {}).items():
        storage.put_bytes(f"{new.prefix}/{name}", data)
    buf = io.BytesIO()
    save_r_align(buf, R_align)
    storage.put_bytes(scans.r_align_key(camera.deployment, camera.name, new.number), buf.getvalue())
    return _commit(storage, camera, "r_align", new, **provenance)


def store_reference_scan(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    images: Sequence[np.ndarray],
    telemetry: Sequence[tuple[float, float, float, datetime]],
    **provenance: Any,
) -> tuple[Version, scans.ScanManifest]:
    """Write a new reference scan version from these RGB frames and their reported (pan deg, tilt deg,
    zoom 0..1, timestamp): images, then manifest.json, then the version index; returns both."""
    new = versions.begin_version(storage, camera.deployment, camera.name, "reference")
    manifest = scans.write_scan(storage, new.prefix, camera.key, "reference", images, telemetry)
    return _commit(storage, camera, "reference", new, **provenance), manifest


def versioned_result(
    storage: ObjectStorageResource, version: Version, metadata: Mapping[str, Any], **kwargs: Any
) -> dg.MaterializeResult:
    """A calibration asset's result for the version it wrote or read: the version number as the Dagster
    data version, and as metadata with its valid-from time (UTC) and folder. ``kwargs`` go to the result."""
    valid_from = version.valid_from.isoformat() if version.valid_from else "always (the seed's files)"
    return dg.MaterializeResult(
        data_version=dg.DataVersion(f"v{version.number}"),
        metadata={
            **metadata,
            "version": version.number,
            "valid_from": valid_from,
            "location": dg.MetadataValue.path(storage.uri(version.prefix)),
        },
        **kwargs,
    )


def current_version(storage: ObjectStorageResource, camera: CameraConfig, artefact: Artefact) -> Version:
    """The camera's newest ``artefact`` version; FileNotFoundError naming the folder when there is none."""
    version = versions.current(storage, camera.deployment, camera.name, artefact)
    if version is None:
        folder = storage.uri(versions.artefact_prefix(camera.deployment, camera.name, artefact))
        raise FileNotFoundError(f"{camera.key}: no {artefact} version at {folder}; materialize it first")
    return version


def load_intrinsics(
    storage: ObjectStorageResource, camera: CameraConfig, version: Version | None = None
) -> tuple[Intrinsics, ZoomModel]:
    """The camera_intrinsics artefacts of ``version`` (default: the current one): intrinsics at zoom 0 and
    the zoom -> focal model. Errors name the file."""
    number = (version or current_version(storage, camera, "intrinsics")).number
    intr = _calibration_file(storage, camera, number).intrinsics
    zoom_key = scans.zoom_model_key(camera.deployment, camera.name, number)
    try:
        return intr, ZoomModel.from_dict(storage.get_json(zoom_key))
    except ValueError as exc:
        raise ValueError(f"{storage.uri(zoom_key)}: {exc}") from None


def _calibration_file(storage: ObjectStorageResource, camera: CameraConfig, number: int) -> CalibrationFile:
    """The ``calibration.npz`` of intrinsics version ``number``; errors name the file."""
    key = scans.calibration_key(camera.deployment, camera.name, number)
    with io.BytesIO(storage.get_bytes(key)) as buf:
        return read_calibration(buf, storage.uri(key))


def load_calibration_uncertainty(
    storage: ObjectStorageResource, camera: CameraConfig, version: Version
) -> CalibrationUncertainty | None:
    """The intrinsics of ``version`` with their covariance (the chessboard fit's), which the drift estimate
    corrects with the reference scan and carries into σ; None when the version has no covariance (a seed
    calibration.npz, an imported one)."""
    calibration = _calibration_file(storage, camera, version.number)
    if calibration.covariance is None:
        return None
    return CalibrationUncertainty(calibration.intrinsics, calibration.covariance)


def read_r_align(storage: ObjectStorageResource, camera: CameraConfig, version: Version) -> np.ndarray:
    """The R_align (3x3 rotation, mount -> world ENU) of ``version``; errors name the file."""
    key = scans.r_align_key(camera.deployment, camera.name, version.number)
    with io.BytesIO(storage.get_bytes(key)) as buf:
        try:
            return load_r_align(buf)
        except ValueError as exc:
            raise ValueError(f"{storage.uri(key)}: {exc}") from None


def load_reference_observations(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    base: Intrinsics,
    zoom_model: ZoomModel,
    with_images: bool = False,
    version: Version | None = None,
) -> list[FrameObservation]:
    """Reference frames of ``version`` (default: the current one) with their stored features and telemetry
    (and grey images with ``with_images``)."""
    prefix = (version or current_version(storage, camera, "reference")).prefix
    manifest = scans.read_manifest(storage, prefix)
    if manifest is None:
        raise FileNotFoundError(f"{camera.key}: no reference scan at {storage.uri(prefix)}")
    return scans.scan_observations(storage, prefix, manifest, base, zoom_model, with_images=with_images)


@dataclass(frozen=True)
class CalibrationVersions:
    """Every version of one camera's intrinsics, reference scan and R_align (oldest first)."""

    camera: CameraConfig
    root: str
    """URI of the camera's storage folder (for messages)."""
    intrinsics: list[Version]
    reference: list[Version]
    r_align: list[Version]

    @classmethod
    def read(cls, storage: ObjectStorageResource, camera: CameraConfig) -> CalibrationVersions:
        """The camera's version indexes (and the seed's version 0 files), read once."""
        listed = {
            artefact: versions.list_versions(storage, camera.deployment, camera.name, artefact)
            for artefact in ("intrinsics", "reference", "r_align")
        }
        return cls(camera, storage.uri(scans.camera_root(camera.deployment, camera.name)), **listed)

    def at(self, hour: datetime) -> tuple[Version, Version, UsedVersions]:
        """(intrinsics, reference scan, the versions used) for the hour beginning at ``hour`` (UTC), per
        :func:`ptz_pipeline.versions.valid_at`. R_align is not needed by the drift estimate: the versions
        used record its number and the correction Δ_p it carries for this reference scan, if any
        (:func:`ptz_pipeline.proposals.correction_of`), which the reported offsets take out.
        FileNotFoundError when the camera has no intrinsics or no reference scan."""
        chosen: dict[str, Version] = {}
        after: list[str] = []
        for artefact, listed in (
            ("intrinsics", self.intrinsics),
            ("reference", self.reference),
            ("r_align", self.r_align),
        ):
            if not listed:
                if artefact != "r_align":
                    folder = f"{self.root}/{versions.FOLDERS[artefact]}"
                    raise FileNotFoundError(f"{self.camera.key}: no {artefact} version at {folder}")
                continue
            chosen[artefact], late = versions.valid_at(listed, hour)
            if late:
                after.append(f"{artefact} v{chosen[artefact].number}")
        note = f"{', '.join(after)} became valid after the hour began (no earlier version)" if after else None
        r_align, reference = chosen.get("r_align"), chosen["reference"]
        correction = None if r_align is None else proposals.correction_of(r_align, reference.number)
        used = UsedVersions(
            reference=reference.number,
            intrinsics=chosen["intrinsics"].number,
            r_align=None if r_align is None else r_align.number,
            note=note,
            r_align_correction_deg=None if correction is None else correction.angles_deg,
        )
        return chosen["intrinsics"], chosen["reference"], used
