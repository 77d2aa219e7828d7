"""Parallax of a PTZ head whose optical centre is offset from its pan/tilt axes: the renderer's finite-depth
world (ground plane), the simulated camera's offset, and the drift estimator that models it (the offset's
direction from the reference scan, each match's depth marginalised) against ground truth."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from geometry.camera import Intrinsics
from geometry.drift import DriftConfig, FrameObservation, estimate_drift, estimate_optical_centre_offset
from geometry.features import Features, SiftExtractor
from geometry.matching import make_matcher
from geometry.refine import grey
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, drift_matrix
from ptz_pipeline.datasets import PANORAMA
from ptz_pipeline.devices import SimulatedBackend
from ptz_pipeline.sim.camera import render_frame
from ptz_pipeline_tests.test_drift import R_ALIGN, IdMatcher, angles, sigmas
from ptz_pipeline_tests.test_render import _crop, _gray, _shift

DRIFT = (0.5, -0.3, 0.2)
OFFSET_M = np.array([0.0, 0.0, 0.06])
"""Optical centre 6 cm in front of the rotation centre (camera frame)."""
GROUND_M = 6.0
REF_STOPS = [(float(pan), tilt) for tilt in (-10.0, -25.0) for pan in range(0, 360, 45)]


@pytest.fixture(scope="module")
def pano() -> Panorama:
    return Panorama.load(PANORAMA)


# --- the renderer's finite-depth world ---------------------------------------------------------------------


def test_ground_plane_seen_from_the_rotation_centre_is_the_infinite_world(pano: Panorama) -> None:
    intr = Intrinsics.from_fov(60.0, 320, 240, dist=np.array([-0.1, 0.0, 0.0, 0.0]))
    R_WC = R_ALIGN @ R_BC(30.0, -20.0)
    infinite = render_view(pano, intr, R_WC).astype(int)
    ground = render_view(pano, intr, R_WC, ground_depth_m=GROUND_M).astype(int)
    assert np.max(np.abs(ground - infinite)) <= 1


def test_offset_camera_sees_the_ground_with_the_predicted_parallax(pano: Panorama) -> None:
    """A camera moved 0.5 m sideways sees a ground point where the forward model puts it (a shift of tens of
    pixels), and the sky above the horizon where it was."""
    intr = Intrinsics.from_fov(60.0, 640, 480)
    R_WC = R_BC(40.0, -10.0)
    centre = R_WC @ np.array([0.5, 0.0, 0.0])
    view_a = _gray(render_view(pano, intr, R_WC, ground_depth_m=GROUND_M))
    view_b = _gray(render_view(pano, intr, R_WC, ground_depth_m=GROUND_M, camera_centre_W=centre))
    q_a = np.array([400.0, 400.0])
    ray = R_WC @ intr.unproject(q_a[None])[0]
    point = ray * (-GROUND_M / ray[2])
    q_b = intr.project((R_WC.T @ (point - centre))[None])[0]
    assert np.linalg.norm(q_b - q_a) > 20
    np.testing.assert_allclose(_shift(_crop(view_a, q_a, 32), _crop(view_b, q_a, 32)), q_b - q_a, atol=0.15)
    sky = np.array([320.0, 60.0])
    assert (R_WC @ intr.unproject(sky[None])[0])[2] > 0
    assert np.all(np.abs(_shift(_crop(view_a, sky, 32), _crop(view_b, sky, 32))) < 0.05)


def test_ground_plane_inputs_are_checked(pano: Panorama) -> None:
    intr = Intrinsics.from_fov(60.0, 64, 48)
    with pytest.raises(ValueError, match="needs ground_depth_m"):
        render_view(pano, intr, np.eye(3), camera_centre_W=np.zeros(3))
    with pytest.raises(ValueError, match="above the ground"):
        render_view(pano, intr, np.eye(3), ground_depth_m=1.0, camera_centre_W=np.array([0.0, 0.0, -2.0]))


def test_simulated_camera_renders_its_offset_over_the_ground() -> None:
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    plain = SimulatedBackend(kind="simulated", image_width=160, image_height=120, nuisances=False)
    assert plain.optical_centre_offset_m == (0.0, 0.0, 0.0) and plain.ground_depth_m is None
    near = plain.model_copy(update={"optical_centre_offset_m": (0.0, 0.0, 0.06), "ground_depth_m": 2.0})
    ground_only = plain.model_copy(update={"ground_depth_m": 2.0})
    frames = [
        render_frame(spec, "c", 30.0, -40.0, 0.0, at).astype(int) for spec in (plain, ground_only, near)
    ]
    assert np.max(np.abs(frames[1] - frames[0])) <= 1  # no offset: no parallax
    assert np.mean(np.abs(frames[2] - frames[0])) > 2.0  # 6 cm over ground 2 m below: visible parallax
    with pytest.raises(ValueError, match="greater than 0"):
        SimulatedBackend(kind="simulated", ground_depth_m=0.0)


# --- the estimator on synthetic matches (scene points at finite depth) -------------------------------------


def world_points(rng: np.random.Generator, n_ground: int = 20000, n_far: int = 4000) -> np.ndarray:
    """Scene points (world, metres from the rotation centre): ground 6 m below, 8-80 m away, and points 1e9 m
    away (at infinity for any offset) around and above the horizon."""
    distance = 8.0 * 10 ** rng.uniform(0, 1, n_ground)
    azimuth = rng.uniform(0, 2 * np.pi, n_ground)
    ground = np.stack(
        [distance * np.sin(azimuth), distance * np.cos(azimuth), np.full(n_ground, -GROUND_M)], 1
    )
    far = rng.normal(size=(n_far, 3))
    far[:, 2] = np.abs(far[:, 2]) * 0.3
    return np.vstack([ground, 1e9 * far / np.linalg.norm(far, axis=1, keepdims=True)])


def point_frame(
    points_W: np.ndarray,
    R_WC: np.ndarray,
    offset_m: np.ndarray,
    intr: Intrinsics,
    pan_tilt: tuple[float, float],
    rng: np.random.Generator,
    noise_px: float,
    name: str,
) -> FrameObservation:
    """The scene points a camera with optical centre ``R_WC · offset_m`` sees, as keypoints (Gaussian noise,
    pixels) whose descriptor is the point's id."""
    b = (points_W - R_WC @ offset_m) @ R_WC
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    ids = np.flatnonzero(b[:, 2] > 0.2)
    uv = intr.project(b[ids])
    w, h = intr.image_size
    inside = (uv[:, 0] > 0) & (uv[:, 0] < w - 1) & (uv[:, 1] > 0) & (uv[:, 1] < h - 1)
    ids, uv = ids[inside], uv[inside] + rng.normal(0.0, noise_px, (inside.sum(), 2))
    feats = Features(uv, ids[:, None].astype(np.float32), np.ones(len(uv)), intr.image_size, "synthetic")
    return FrameObservation(feats, pan_tilt[0], pan_tilt[1], 0.0, intr, name)


def point_hour(
    offset_m: np.ndarray,
    query_stops: list[tuple[float, float]],
    rng: np.random.Generator,
    noise_px: float = 0.1,
) -> tuple[list[FrameObservation], list[FrameObservation]]:
    """Query frames (drift :data:`DRIFT`) and an 8 x 2 reference scan of :func:`world_points`."""
    points = world_points(rng)
    intr = Intrinsics.from_fov(60.0, 640, 360, dist=np.array([-0.05, 0.01, 0.0, 0.0]))
    refs = [
        point_frame(points, R_ALIGN @ R_BC(*pt), offset_m, intr, pt, rng, noise_px, f"r{i}")
        for i, pt in enumerate(REF_STOPS)
    ]
    D = drift_matrix(*DRIFT)
    queries = [
        point_frame(points, R_ALIGN @ D @ R_BC(*pt), offset_m, intr, pt, rng, noise_px, f"q{i}")
        for i, pt in enumerate(query_stops)
    ]
    return queries, refs


def test_offset_direction_is_found_and_the_drift_accounts_for_parallax() -> None:
    rng = np.random.default_rng(30)
    queries, refs = point_hour(OFFSET_M, [(14.0, -14.0), (75.0, -21.0), (130.0, -28.0)], rng)
    offset = estimate_optical_centre_offset(refs, IdMatcher())
    assert offset.used and offset.parallax_px > 0.3, offset
    direction = offset.offset_m / np.linalg.norm(offset.offset_m)
    assert np.degrees(np.arccos(direction @ OFFSET_M / 0.06)) < 2.0, offset.offset_m  # in front, as true
    assert np.linalg.norm(offset.offset_m) == pytest.approx(DriftConfig().offset_length_m)

    report = estimate_drift(queries, refs, IdMatcher(), offset=offset)
    assert report.offset is offset
    for name, est in [*report.per_frame, ("joint", report.joint)]:
        assert est.success, (name, est.reason)
        err = np.abs(angles(est) - DRIFT)
        assert np.all(err < (0.001 if name == "joint" else 0.005)), (name, err)
        assert np.all(err < 3 * sigmas(est)), (name, err, sigmas(est))
    # as rotations about the optical centre, the same matches give a drift far off its σ
    naive = estimate_drift(queries, refs, IdMatcher(), DriftConfig(parallax=False)).joint
    assert naive.success
    naive_err = np.abs(angles(naive) - DRIFT)
    assert np.max(naive_err / sigmas(naive)) > 5
    assert np.max(naive_err) > 10 * np.max(np.abs(angles(report.joint) - DRIFT))


def test_no_parallax_no_offset() -> None:
    """Optical centre on the axes: the scan shows no parallax, the estimate is the rotation-only one."""
    rng = np.random.default_rng(31)
    queries, refs = point_hour(np.zeros(3), [(14.0, -14.0)], rng)
    report = estimate_drift(queries, refs, IdMatcher())
    assert report.offset is not None and not report.offset.used and "no parallax" in report.offset.reason
    rotation_only = estimate_drift(queries, refs, IdMatcher(), DriftConfig(parallax=False))
    np.testing.assert_array_equal(angles(report.joint), angles(rotation_only.joint))
    assert np.all(np.abs(angles(report.joint) - DRIFT) < 3 * sigmas(report.joint))


# --- rendered: the simulator's ground plane and offset through the whole estimator --------------------------


def test_rendered_parallax_scene(pano: Panorama) -> None:
    """6 cm offset, ground 6 m below, SIFT on rendered frames with nuisances: off-grid queries to 0.003°."""
    rng = np.random.default_rng(32)
    base = Intrinsics.from_fov(60.0, 640, 360)
    sift = SiftExtractor(max_keypoints=2048)

    def frame(R_WB: np.ndarray, pan: float, tilt: float, name: str) -> FrameObservation:
        R_WC = R_WB @ R_BC(pan, tilt)
        image = render_view(
            pano,
            base,
            R_WC,
            rng,
            Nuisances.typical(),
            ground_depth_m=GROUND_M,
            camera_centre_W=R_WC @ OFFSET_M,
        )
        return FrameObservation(sift.extract(image), pan, tilt, 0.0, base, name, image=grey(image))

    refs = [
        frame(R_ALIGN, pan, tilt, f"r{i}") for i, (pan, tilt) in enumerate(REF_STOPS[:3] + REF_STOPS[8:11])
    ]
    D = drift_matrix(*DRIFT)
    queries = [
        frame(R_ALIGN @ D, pan, tilt, f"q{i}") for i, (pan, tilt) in enumerate([(12.0, -16.0), (108, -20)])
    ]
    matcher = make_matcher("mnn", device="cpu")
    report = estimate_drift(queries, refs, matcher)
    assert report.offset.used, report.offset.reason
    naive = estimate_drift(queries, refs, matcher, DriftConfig(parallax=False)).joint
    err, naive_err = np.abs(angles(report.joint) - DRIFT), np.abs(angles(naive) - DRIFT)
    assert np.all(err < 0.003) and np.all(err < 3 * sigmas(report.joint)), (err, sigmas(report.joint))
    assert np.max(naive_err) > 3 * np.max(err), (naive_err, err)
