"""Renderer geometry against ground truth computed independently (forward camera model, direct panorama
lookups), mip anti-aliasing against a supersampled reference, nuisances and speed."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.optimize import least_squares

from geometry.camera import Intrinsics
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, Rz
from ptz_pipeline.datasets import PANORAMA


@pytest.fixture(scope="module")
def pano() -> Panorama:
    return Panorama.load(PANORAMA)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Displacement (dx, dy) in pixels that moves the content of grey image ``a`` onto ``b``, at the pixel
    (w // 2, h // 2) of ``a``: phase correlation, refined by an affine ECC fit (a translation alone is biased
    where the displacement varies across the patch, and phase correlation by up to ~0.2 px sub-pixel)."""
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    warp = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7)
    _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    centre = np.array([a.shape[1] // 2, a.shape[0] // 2], dtype=float)
    return warp[:, :2].astype(float) @ centre + warp[:, 2] - centre


def _crop(image: np.ndarray, centre: np.ndarray, half: int) -> np.ndarray:
    c = np.rint(centre).astype(int)
    return image[c[1] - half : c[1] + half, c[0] - half : c[0] + half]


def _bearing_by_forward_model(intr: Intrinsics, pixel: np.ndarray) -> np.ndarray:
    """Camera-frame bearing of a distorted pixel, found by solving the forward model ``project`` (no use of
    the renderer's or OpenCV's undistortion)."""
    x0 = np.linalg.solve(intr.K, np.array([pixel[0], pixel[1], 1.0]))[:2]
    sol = least_squares(lambda xy: intr.project(np.array([[xy[0], xy[1], 1.0]]))[0] - pixel, x0, xtol=1e-14)
    b = np.array([sol.x[0], sol.x[1], 1.0])
    return b / np.linalg.norm(b)


def test_shift_measurement_convention() -> None:
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((200, 200)).astype(np.float32), (0, 0), 1.5)
    a, b = big[50:146, 50:146], big[47:143, 45:141]  # content moves +5 px in x, +3 px in y
    np.testing.assert_allclose(_shift(a, b), [5, 3], atol=0.02)


def test_panorama_convention_pixels() -> None:
    """The centre column faces north, east lies at 3/4 of the width, the zenith at row -0.5."""
    pano = Panorama(np.zeros((64, 128, 3), np.uint8))
    dirs = np.array([[0, 1, 0], [1, 0, 0], [0, -1e-9, -1], [-1, 0, 0], [0, 0, 1]], dtype=float)
    px = pano.pixel_of_direction(dirs)
    np.testing.assert_allclose(px[:2], [[63.5, 31.5], [95.5, 31.5]], atol=1e-9)
    np.testing.assert_allclose(px[2, 1], 63.5, atol=1e-6)  # nadir: bottom edge
    np.testing.assert_allclose(px[3], [31.5, 31.5], atol=1e-9)  # west
    np.testing.assert_allclose(px[4, 1], -0.5, atol=1e-9)
    rng = np.random.default_rng(1)
    d = rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(pano.direction_of_pixel(pano.pixel_of_direction(d)), d, atol=1e-12)


def test_render_matches_direct_panorama_lookup(pano: Panorama) -> None:
    """Each pixel's colour is the panorama's at the direction R_WC K^-1 (u, v, 1), computed here directly."""
    intr = Intrinsics.from_fov(18.0, 320, 240)  # magnified: full-resolution level only
    R_WC = Rz(np.radians(-40.0)) @ R_BC(25.0, -12.0)
    image = render_view(pano, intr, R_WC)

    uu, vv = np.meshgrid(np.arange(320.0), np.arange(240.0))
    rays = np.stack([uu, vv, np.ones_like(uu)], axis=-1) @ np.linalg.inv(intr.K).T @ R_WC.T
    az = np.degrees(np.arctan2(rays[..., 0], rays[..., 1]))
    el = np.degrees(np.arctan2(rays[..., 2], np.hypot(rays[..., 0], rays[..., 1])))
    col = np.mod(pano.width * (az + 180.0) / 360.0 - 0.5, pano.width)
    row = pano.height * (90.0 - el) / 180.0 - 0.5
    expected = np.stack(
        [
            map_coordinates(pano.image[..., c].astype(float), [row, col], order=1, mode="grid-wrap")
            for c in range(3)
        ],
        axis=-1,
    )
    diff = np.abs(image.astype(float) - expected)
    # bicubic (renderer) against bilinear (here) differ by a few DN on texture; the geometry agrees to 0.03 px
    assert np.median(diff) < 4.0 and np.mean(diff) < 5.0, (np.median(diff), np.mean(diff))
    shift = _shift(_gray(expected.astype(np.uint8)), _gray(image))
    assert np.all(np.abs(shift) < 0.03), shift


@pytest.mark.parametrize("k1", [0.0, -0.25])
def test_pan_by_one_degree_shifts_the_image_as_predicted(pano: Panorama, k1: float) -> None:
    """A view at pan p + 1° equals the view at pan p moved by the shift the forward camera model predicts,
    measured off-centre where barrel distortion changes the shift by more than a pixel."""
    intr = Intrinsics.from_fov(60.0, 640, 480, dist=np.array([k1, 0.0, 0.0, 0.0, 0.0]))
    R_A, R_B = R_BC(40.0, -20.0), R_BC(41.0, -20.0)
    view_a, view_b = _gray(render_view(pano, intr, R_A)), _gray(render_view(pano, intr, R_B))

    q_a = np.array([560.0, 410.0])
    b_W = R_A @ _bearing_by_forward_model(intr, q_a)
    q_b = intr.project((R_B.T @ b_W)[None])[0]
    pinhole = Intrinsics(intr.K, None, intr.image_size)
    q_b_pinhole = pinhole.project((R_B.T @ R_A @ pinhole.unproject(q_a[None])[0])[None])[0]
    if k1 != 0.0:
        assert np.linalg.norm(q_b - q_b_pinhole) > 1.0  # the test can tell distortion from none
    measured = _shift(_crop(view_a, q_a, 48), _crop(view_b, q_a, 48))
    np.testing.assert_allclose(measured, q_b - q_a, atol=0.1)


def test_mip_levels_prevent_aliasing(pano: Panorama) -> None:
    """A 100° view rendered with mip levels is close to an 8x supersampled, area-averaged reference; the same
    view from the full-resolution level alone is not (aliasing)."""
    intr = Intrinsics.from_fov(100.0, 256, 192)
    R_WC = R_BC(120.0, -25.0)
    fine = render_view(pano, intr.scaled(8.0), R_WC)
    reference = cv2.resize(fine, (256, 192), interpolation=cv2.INTER_AREA).astype(float)
    single = Panorama.load(PANORAMA, max_levels=1)
    err_mip = np.mean(np.abs(render_view(pano, intr, R_WC) - reference))
    err_single = np.mean(np.abs(render_view(single, intr, R_WC) - reference))
    assert err_mip < 0.6 * err_single, (err_mip, err_single)


def test_nuisances_change_what_they_claim(pano: Panorama) -> None:
    intr = Intrinsics.from_fov(50.0, 320, 240)
    R_WC = R_BC(200.0, -15.0)
    clean = render_view(pano, intr, R_WC)

    occluded = render_view(pano, intr, R_WC, rng=3, nuisances=Nuisances(occluder_fraction=0.1))
    covered = np.mean(np.any(occluded != clean, axis=2))
    assert 0.08 <= covered <= 0.2, covered
    np.testing.assert_array_equal(occluded, render_view(pano, intr, R_WC, rng=3, nuisances=Nuisances(0.1)))

    darker = render_view(
        pano, intr, R_WC, nuisances=Nuisances(exposure_gain=0.5, white_balance=(1.0, 1.0, 0.5))
    )
    np.testing.assert_allclose(
        darker.mean(axis=(0, 1)) / clean.mean(axis=(0, 1)), [0.5, 0.5, 0.25], atol=0.01
    )

    noisy = render_view(pano, intr, R_WC, rng=0, nuisances=Nuisances(noise_sigma=4.0))
    interior = (clean > 20) & (clean < 235)
    assert abs(np.std((noisy.astype(float) - clean)[interior]) - 4.0) < 0.3

    typical = render_view(pano, intr, R_WC, rng=0, nuisances=Nuisances.typical())
    assert typical.shape == clean.shape and typical.dtype == np.uint8
    assert not np.array_equal(typical, clean)


@pytest.mark.parametrize(
    "kwargs",
    [{"occluder_fraction": 0.95}, {"noise_sigma": -1.0}, {"exposure_gain": 0.0}, {"jpeg_quality": 0}],
)
def test_bad_nuisances_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Nuisances(**kwargs)


def test_bad_inputs_are_rejected(pano: Panorama) -> None:
    intr = Intrinsics.from_fov(50.0, 64, 48)
    with pytest.raises(ValueError, match="rotation"):
        render_view(pano, intr, 2.0 * np.eye(3))
    with pytest.raises(ValueError, match="rotation"):
        render_view(pano, intr, np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="width = 2 x height"):
        Panorama(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(FileNotFoundError):
        Panorama.load("/nonexistent/pano.jpg")


def test_render_speed_1280x720(pano: Panorama) -> None:
    intr = Intrinsics.from_fov(60.0, 1280, 720)
    render_view(pano, intr, R_BC(0.0, -10.0))  # fills the bearing cache for these intrinsics
    times = []
    for pan in (10.0, 20.0, 30.0):
        t0 = time.perf_counter()
        render_view(pano, intr, R_BC(pan, -10.0))
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.5, times
