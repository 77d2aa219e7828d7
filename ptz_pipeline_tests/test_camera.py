"""geometry.camera: projection against OpenCV's implementation, field of view, resizing, calibration.npz I/O
and the zoom -> focal-length model."""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from geometry.camera import Intrinsics, ZoomModel, load_calibration, read_calibration, save_calibration

K = np.array([[812.5, 0.0, 655.25], [0.0, 808.0, 362.75], [0.0, 0.0, 1.0]])
SIZE = (1280, 720)
DIST_5 = np.array([-0.21, 0.085, 0.0009, -0.0006, -0.015])
"""(k1, k2, p1, p2, k3): a typical wide-angle barrel distortion."""
DIST_8 = np.array([-0.21, 0.085, 0.0009, -0.0006, -0.015, 0.05, 0.01, 0.002])
"""(k1, k2, p1, p2, k3, k4, k5, k6): OpenCV's rational model."""


def _image_pixels(size: tuple[int, int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Random pixels over the whole image, corners included (pixel centres at integers)."""
    w, h = size
    corners = np.array([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    return np.vstack([corners, rng.uniform([0.0, 0.0], [w - 1.0, h - 1.0], (n, 2))])


@pytest.mark.parametrize(
    "dist", [DIST_5, DIST_8, np.zeros(5)], ids=["5 coefficients", "8 coefficients", "none"]
)
def test_project_matches_opencv(dist: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    # points in front of the camera within about 45 degrees of the axis, at 0.5..50 m
    P = np.column_stack([rng.uniform(-0.8, 0.8, (500, 2)), np.ones(500)]) * rng.uniform(0.5, 50.0, (500, 1))
    ours = Intrinsics(K, dist, SIZE).project(P)
    reference, _ = cv2.projectPoints(P, np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(ours, reference.reshape(-1, 2), rtol=0, atol=1e-9)


@pytest.mark.parametrize("dist", [DIST_5, DIST_8], ids=["5 coefficients", "8 coefficients"])
def test_unproject_round_trip(dist: np.ndarray) -> None:
    intr = Intrinsics(K, dist, SIZE)
    uv = _image_pixels(SIZE, 500, np.random.default_rng(2))
    rays = intr.unproject(uv)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0, atol=1e-12)
    assert np.all(rays[:, 2] > 0)
    # back through OpenCV's projection: the rays hit the pixels they came from
    reference, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(reference.reshape(-1, 2), uv, rtol=0, atol=1e-9)
    np.testing.assert_allclose(intr.project(rays), uv, rtol=0, atol=1e-9)


def test_unproject_without_distortion_is_the_inverse_of_K() -> None:
    intr = Intrinsics(K, None, SIZE)
    ray = intr.unproject(np.array([[K[0, 2] + K[0, 0], K[1, 2]]]))[0]  # one focal length right of centre
    np.testing.assert_allclose(ray, [np.sqrt(0.5), 0.0, np.sqrt(0.5)], atol=1e-15)


def test_from_fov() -> None:
    intr = Intrinsics.from_fov(90.0, 640, 480)  # tan(45 deg) = 1: f = w / 2
    np.testing.assert_allclose(
        intr.K, [[320.0, 0.0, 319.5], [0.0, 320.0, 239.5], [0.0, 0.0, 1.0]], atol=1e-12
    )
    assert intr.image_size == (640, 480)
    # 60 degrees: f = (w / 2) / tan(30 deg) = (w / 2) * sqrt(3)
    assert Intrinsics.from_fov(60.0, 1000, 500).fx == pytest.approx(500.0 * np.sqrt(3.0), rel=1e-12)
    # the left and right image edges (u = -0.5 and w - 0.5) are 45 degrees off the axis
    edges = intr.unproject(np.array([[-0.5, 239.5], [639.5, 239.5]]))
    np.testing.assert_allclose(np.degrees(np.arctan2(edges[:, 0], edges[:, 2])), [-45.0, 45.0], atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0, 1.5])
def test_scaled_keeps_the_rays(scale: float) -> None:
    intr = Intrinsics(K, DIST_5, SIZE)
    small = intr.scaled(scale)
    assert small.image_size == (round(SIZE[0] * scale), round(SIZE[1] * scale))
    uv = _image_pixels(SIZE, 200, np.random.default_rng(3))
    # pixel centres at integers: pixel edges map to pixel edges, u' + 0.5 = scale * (u + 0.5)
    uv_scaled = scale * (uv + 0.5) - 0.5
    np.testing.assert_allclose(small.unproject(uv_scaled), intr.unproject(uv), atol=1e-12)
    rays = intr.unproject(uv)
    np.testing.assert_allclose(small.project(rays), uv_scaled, atol=1e-9)
    # the image's top-left corner (-0.5, -0.5) stays the corner
    corner_ray = intr.unproject(np.array([[-0.5, -0.5]]))
    np.testing.assert_allclose(small.project(corner_ray), [[-0.5, -0.5]], atol=1e-9)


def test_scaled_centred_camera_stays_centred() -> None:
    half = Intrinsics.from_fov(60.0, 640, 480).scaled(0.5)
    np.testing.assert_allclose(half.K[:2, 2], [159.5, 119.5], atol=1e-12)  # (320 - 1) / 2, (240 - 1) / 2
    np.testing.assert_allclose(half.K, Intrinsics.from_fov(60.0, 320, 240).K, atol=1e-12)


# --- calibration.npz --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", [DIST_5, DIST_8], ids=["5 coefficients", "8 coefficients"])
def test_calibration_file_round_trip(tmp_path: Path, dist: np.ndarray) -> None:
    intr = Intrinsics(K, dist, SIZE)
    path = tmp_path / "calibration.npz"
    save_calibration(path, intr, 0.1955)
    with np.load(path) as z:  # the seed's keys and shapes, as cv2.calibrateCamera returns them
        assert set(z.files) == {"camera_matrix", "dist_coeffs", "image_size", "rms"}
        assert z["camera_matrix"].shape == (3, 3)
        assert z["dist_coeffs"].shape == (1, len(dist))
        np.testing.assert_array_equal(z["image_size"], SIZE)
    loaded, rms = load_calibration(path)
    np.testing.assert_array_equal(loaded.K, K)
    np.testing.assert_array_equal(loaded.dist[: len(dist)], dist)
    np.testing.assert_array_equal(loaded.dist[len(dist) :], 0.0)
    assert loaded.image_size == SIZE
    assert rms == 0.1955
    buffer = io.BytesIO()  # file objects, e.g. object-storage bodies
    save_calibration(buffer, intr, 0.5)
    buffer.seek(0)
    from_buffer, rms_buffer = load_calibration(buffer)
    np.testing.assert_array_equal(from_buffer.K, K)
    assert rms_buffer == 0.5


def test_calibration_file_keeps_the_covariance(tmp_path: Path) -> None:
    intr = Intrinsics(K, DIST_5, SIZE)
    covariance = np.diag(np.arange(1.0, 10.0))
    save_calibration(tmp_path / "with.npz", intr, 0.2, covariance)
    np.testing.assert_array_equal(read_calibration(tmp_path / "with.npz").covariance, covariance)
    assert load_calibration(tmp_path / "with.npz")[1] == 0.2  # the seed's reader is unchanged
    save_calibration(tmp_path / "unknown.npz", intr, 0.2, np.full((9, 9), np.nan))  # not estimated: left out
    assert read_calibration(tmp_path / "unknown.npz").covariance is None
    np.savez(tmp_path / "bad.npz", camera_matrix=K, dist_coeffs=DIST_5[None], covariance=np.eye(3))
    with pytest.raises(ValueError, match=r"bad.npz.*covariance has shape \(3, 3\)"):
        read_calibration(tmp_path / "bad.npz")


def test_loads_the_seed_file(tmp_path: Path) -> None:
    """A file written the seed's way from cv2.calibrateCamera's outputs."""
    path = tmp_path / "calibration.npz"
    dist_coeffs = DIST_5.reshape(1, 5)
    np.savez(path, camera_matrix=K, dist_coeffs=dist_coeffs, image_size=(640, 480), rms=0.2)
    intr, rms = load_calibration(path)
    np.testing.assert_array_equal(intr.K, K)
    np.testing.assert_array_equal(intr.dist, [*DIST_5, 0.0, 0.0, 0.0])
    assert intr.image_size == (640, 480)
    assert rms == 0.2


def test_calibration_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="calibration file not found"):
        load_calibration(tmp_path / "absent.npz")
    for missing in ("camera_matrix", "dist_coeffs"):
        path = tmp_path / f"no_{missing}.npz"
        keys = {"camera_matrix": K, "dist_coeffs": DIST_5.reshape(1, 5), "image_size": SIZE, "rms": 0.2}
        del keys[missing]
        np.savez(path, **keys)
        with pytest.raises(ValueError, match=missing):
            load_calibration(path)
    bad = tmp_path / "bad_dist.npz"
    np.savez(bad, camera_matrix=K, dist_coeffs=np.zeros((1, 6)))
    with pytest.raises(ValueError, match="4, 5 or 8 coefficients"):
        load_calibration(bad)


# --- zoom -> focal length ---------------------------------------------------------------------------------

ZOOM = (0.0, 0.25, 0.5, 0.75, 1.0)
FOCAL = (800.0, 820.0, 1400.0, 4000.0, 4100.0)
"""A step-like table on which an interpolating cubic spline overshoots (non-monotone)."""


def test_zoom_model_goes_through_its_table() -> None:
    model = ZoomModel(ZOOM, FOCAL)
    for z, f in zip(ZOOM, FOCAL, strict=True):
        assert model.focal(z) == pytest.approx(f, rel=1e-12)


def test_zoom_model_is_monotone_between_samples() -> None:
    model = ZoomModel(ZOOM, FOCAL)
    zooms = np.linspace(0.0, 1.0, 2001)
    assert np.any(np.diff(CubicSpline(ZOOM, FOCAL)(zooms)) < 0.0)  # the table needs a monotone method
    focal = np.array([model.focal(z) for z in zooms])
    assert np.all(np.diff(focal) >= 0.0)
    for (z0, z1), (f0, f1) in zip(pairwise(ZOOM), pairwise(FOCAL), strict=True):
        inside = focal[(zooms >= z0) & (zooms <= z1)]
        assert np.all((inside >= f0 - 1e-9) & (inside <= f1 + 1e-9))
    # PCHIP is exact on straight lines and stays flat on flat segments
    linear = ZoomModel((0.0, 0.3, 0.5, 1.0), (1000.0, 1600.0, 2000.0, 3000.0))
    assert linear.focal(0.4) == pytest.approx(1800.0, rel=1e-12)
    assert linear.focal(0.8) == pytest.approx(2600.0, rel=1e-12)
    flat = ZoomModel((0.0, 0.2, 0.4, 1.0), (900.0, 900.0, 900.0, 2000.0))
    assert flat.focal(0.1) == 900.0 and flat.focal(0.3) == 900.0


def test_zoom_model_clamps_outside_its_table() -> None:
    model = ZoomModel((0.1, 0.5, 0.9), (900.0, 1500.0, 3000.0))
    assert model.focal(0.0) == 900.0
    assert model.focal(-1.0) == 900.0
    assert model.focal(1.0) == 3000.0
    assert ZoomModel.constant(1234.0).focal(0.7) == 1234.0
    assert ZoomModel((0.0, 1.0), (1000.0, 3000.0)).focal(0.25) == pytest.approx(1500.0)


def test_zoom_model_intrinsics_keep_principal_point_and_aspect() -> None:
    base = Intrinsics(K, DIST_5, SIZE)
    zoomed = ZoomModel(ZOOM, FOCAL).intrinsics_at(base, 0.5)
    assert zoomed.fx == pytest.approx(1400.0)
    assert zoomed.fy == pytest.approx(1400.0 * K[1, 1] / K[0, 0])
    np.testing.assert_array_equal(zoomed.K[:2, 2], K[:2, 2])
    np.testing.assert_array_equal(zoomed.dist, base.dist)


@pytest.mark.parametrize(
    ("zoom", "focal"),
    [
        ((0.0, 0.5, 1.0), (800.0, 1200.0, 1100.0)),  # focal decreasing
        ((0.0, 0.5, 0.5), (800.0, 1200.0, 1300.0)),  # zoom not strictly increasing
        ((0.5, 0.0, 1.0), (800.0, 1200.0, 1300.0)),
        ((0.0, 0.5, 1.5), (800.0, 1200.0, 1300.0)),  # zoom outside ONVIF 0..1
        ((0.0, 1.0), (0.0, 1000.0)),  # non-positive focal length
        ((0.0, 1.0), (800.0,)),  # lengths differ
        ((), ()),
    ],
)
def test_zoom_model_rejects_bad_tables(zoom: tuple[float, ...], focal: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        ZoomModel(zoom, focal)


def test_intrinsics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="positive focal"):
        Intrinsics(np.diag([-800.0, 800.0, 1.0]))
    with pytest.raises(ValueError, match="3x3"):
        Intrinsics(np.eye(2))
    with pytest.raises(ValueError, match="4, 5 or 8"):
        Intrinsics(K, np.zeros(3))
