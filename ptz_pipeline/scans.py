"""Scan folders (reference and query) in object storage: layout, manifest.json, images and features.

Layout (same keys on a local directory or S3), see ARCHITECTURE.md:
``{deployment}/{camera}/reference_scan/v{NNNN}/{manifest.json,images/,features/}`` (one folder per reference
version, ptz_pipeline.versions; the seed's unversioned ``reference_scan/`` is version 0) and
``{deployment}/{camera}/query_scan/{YYYYMMDDTHHMMSSZ}/{manifest.json,images/,features/}``.
manifest.json is written last, so a scan without it is incomplete and never read. Bad files raise errors of
one line naming the file: FileNotFoundError (a missing image) or ValueError (``FILE: key: problem``).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, Field, ValidationError

from geometry.camera import Intrinsics, ZoomModel
from geometry.drift import FrameObservation
from geometry.features import FeatureExtractor, Features
from geometry.refine import grey
from ptz_pipeline import versions


class Storage(Protocol):
    """What scans need from object storage (ObjectStorageResource satisfies it)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def uri(self, key: str) -> str: ...
    def put_json(self, key: str, value: object) -> None: ...


class ScanFrame(BaseModel):
    """One frame of a scan: image key relative to the scan folder, telemetry (degrees, ONVIF zoom 0..1)."""

    image: str
    pan: float
    tilt: float
    zoom: float = Field(ge=0.0, le=1.0)
    timestamp: datetime


class ScanManifest(BaseModel):
    """The scan folder's manifest.json (format in ARCHITECTURE.md, "Storage layout"); ``created`` is
    informative only, so a manifest without it is accepted."""

    camera: str
    kind: Literal["reference", "query"]
    created: datetime | None = None
    frames: list[ScanFrame]
    mode: str | None = None


def camera_root(deployment: str, camera: str) -> str:
    """Storage prefix of one camera."""
    return f"{deployment}/{camera}"


def reference_prefix(deployment: str, camera: str, version: int = 0) -> str:
    """Folder of reference scan ``version`` (0: the seed's unversioned folder)."""
    return versions.version_prefix(deployment, camera, "reference", version)


def hour_stamp(t: datetime) -> str:
    """Compact ISO 8601 basic UTC stamp used as the query folder name, e.g. 20261123T100000Z."""
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def query_prefix(deployment: str, camera: str, hour: datetime) -> str:
    return f"{camera_root(deployment, camera)}/query_scan/{hour_stamp(hour)}"


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_image(data: bytes, key: str = "") -> np.ndarray:
    """Decode an encoded image (JPEG/PNG) to RGB uint8."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {key!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_scan(
    storage: Storage,
    prefix: str,
    camera: str,
    kind: Literal["reference", "query"],
    images: Sequence[np.ndarray],
    telemetry: Sequence[tuple[float, float, float, datetime]],
    mode: str | None = None,
) -> ScanManifest:
    """Write images then manifest.json (last) under ``prefix``; telemetry is (pan, tilt, zoom, timestamp)."""
    frames = []
    for i, (image, (pan, tilt, zoom, ts)) in enumerate(zip(images, telemetry, strict=True)):
        name = f"images/{i:03d}.jpg"
        storage.put_bytes(f"{prefix}/{name}", encode_jpeg(image))
        frames.append(ScanFrame(image=name, pan=pan, tilt=tilt, zoom=zoom, timestamp=ts))
    manifest = ScanManifest(camera=camera, kind=kind, created=datetime.now(UTC), frames=frames, mode=mode)
    storage.put_bytes(f"{prefix}/manifest.json", manifest.model_dump_json(indent=2).encode())
    return manifest


class ManifestError(ValueError):
    """An invalid manifest.json; the message is one line, ``FILE: key: problem[; key: problem]``."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Pydantic error location -> ``frames[0].tilt``."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return path.lstrip(".") or "(top level)"


def read_manifest(storage: Storage, prefix: str) -> ScanManifest | None:
    """The scan's manifest, or None when the scan is absent or incomplete (no manifest.json).

    ManifestError (one line, ``FILE: key: problem; key: problem``) when it is not a valid manifest.
    """
    key = f"{prefix}/manifest.json"
    if not storage.exists(key):
        return None
    try:
        return ScanManifest.model_validate_json(storage.get_bytes(key))
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"{storage.uri(key)}: {problems}") from None


def read_image(storage: Storage, prefix: str, frame: ScanFrame) -> np.ndarray:
    """One frame's image (RGB uint8); FileNotFoundError naming the manifest and the frame when the image
    it names is missing, ValueError naming the image when it does not decode."""
    key = f"{prefix}/{frame.image}"
    try:
        data = storage.get_bytes(key)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{storage.uri(f'{prefix}/manifest.json')}: frame {frame.image!r}: no image at {storage.uri(key)}"
        ) from None
    return decode_image(data, storage.uri(key))


def read_images(storage: Storage, prefix: str, manifest: ScanManifest) -> list[np.ndarray]:
    """Decode every frame of the scan (RGB uint8)."""
    return [read_image(storage, prefix, f) for f in manifest.frames]


def features_key(prefix: str, frame: ScanFrame) -> str:
    """Key of a frame's features: features/<image stem>.npz beside images/."""
    stem = frame.image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{prefix}/features/{stem}.npz"


def write_features(storage: Storage, prefix: str, frame: ScanFrame, feats: Features) -> str:
    """Store one frame's features (our fast npz format); returns the key."""
    buf = io.BytesIO()
    feats.save_npz(buf)
    key = features_key(prefix, frame)
    storage.put_bytes(key, buf.getvalue())
    return key


def read_features(storage: Storage, prefix: str, frame: ScanFrame) -> Features:
    """Load one frame's features written by :func:`write_features`; ValueError naming the file when it is
    not a readable features npz (e.g. truncated)."""
    key = features_key(prefix, frame)
    try:
        return Features.load_npz(io.BytesIO(storage.get_bytes(key)))
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{storage.uri(key)}: not a readable features file ({exc})") from None


def chessboard_prefix(deployment: str, camera: str) -> str:
    """Folder of the chessboard photos an engineer uploads for intrinsics calibration."""
    return f"{camera_root(deployment, camera)}/intrinsics/chessboard"


def calibration_key(deployment: str, camera: str, version: int = 0) -> str:
    """The seed's calibration.npz (camera_matrix, dist_coeffs, image_size, rms) of intrinsics ``version``
    (0: the seed's unversioned file)."""
    return f"{versions.version_prefix(deployment, camera, 'intrinsics', version)}/calibration.npz"


def zoom_model_key(deployment: str, camera: str, version: int = 0) -> str:
    """zoom -> focal-length table (JSON: {"zoom": [...], "focal_px": [...]}) of intrinsics ``version``."""
    return f"{versions.version_prefix(deployment, camera, 'intrinsics', version)}/zoom_model.json"


def control_points_key(deployment: str, camera: str, fmt: Literal["json", "csv"] = "json") -> str:
    """Surveyed control points for R_align, as JSON or CSV (formats: geometry.alignment)."""
    return f"{camera_root(deployment, camera)}/r_align/control_points.{fmt}"


def r_align_key(deployment: str, camera: str, version: int = 0) -> str:
    """R_align.npy (3x3 float64, mount -> world) of R_align ``version`` (0: the seed's unversioned file)."""
    return f"{versions.version_prefix(deployment, camera, 'r_align', version)}/R_align.npy"


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def scan_observations(
    storage: Storage,
    prefix: str,
    manifest: ScanManifest,
    base: Intrinsics,
    zoom_model: ZoomModel,
    extractor: FeatureExtractor | None = None,
    with_images: bool = False,
) -> list[FrameObservation]:
    """Frames of a scan with features and telemetry, intrinsics at each frame's zoom (K scaled to the frame's
    size when it differs from the calibrated one), and with ``with_images`` their grey images (for the
    estimator's photometric refinement).

    Stored features (``features/``) are read when they are of the extractor's kind; missing ones (or ones of
    another kind) are extracted with ``extractor`` and stored. Without an extractor, stored features of any
    kind are used and missing ones raise FileNotFoundError.
    """
    out = []
    for frame in manifest.frames:
        image = read_image(storage, prefix, frame) if with_images else None
        has_stored = storage.exists(features_key(prefix, frame))
        stored = read_features(storage, prefix, frame) if has_stored else None
        if stored is not None and (extractor is None or stored.kind == extractor.kind):
            feats = stored
        elif extractor is None:
            raise FileNotFoundError(
                f"no features at {storage.uri(features_key(prefix, frame))}; extract them first"
            )
        else:
            feats = extractor.extract(image if image is not None else read_image(storage, prefix, frame))
            write_features(storage, prefix, frame, feats)
        intrinsics = zoom_model.intrinsics_at(base, frame.zoom)  # at the calibrated image size
        if base.image_size[0] > 0 and feats.image_size != base.image_size:  # e.g. a stream of another size
            intrinsics = intrinsics.scaled(feats.image_size[0] / base.image_size[0])
        out.append(
            FrameObservation(
                features=feats,
                pan_deg=frame.pan,
                tilt_deg=frame.tilt,
                zoom=frame.zoom,
                intrinsics=intrinsics,
                name=f"{manifest.kind}/{frame.image}",
                image=None if image is None else grey(image),
            )
        )
    return out
