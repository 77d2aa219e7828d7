"""R_align from control points against synthetic ground truth.

A camera with distortion and a zoom lens sits on a mount with a known R_align (37 deg yaw plus a few
degrees of pitch and roll). Landmark pixels are generated through the conventions (R_BC + Intrinsics.project)
with Gaussian noise sigma_px. Tolerances: a pixel error sigma_px is an angular error sigma_theta =
sigma_px / f (f at the widest zoom used, the worst case); a least-squares rotation from N bearings (two
constraints each) has a per-axis variance of about sigma_theta^2 * 3 / (2N), so the rotation error angle
has an RMS of about sigma_theta * sqrt(9 / (2N)). Known-position alignment must be within 4x that; the
methods that also estimate the position (which couples with rotation) within 6x. Noise-free data must be
recovered to numerical precision (this pins the frame conventions and the geodetic frame handling).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
import yaml
from pyproj import Transformer

from geometry.alignment import (
    ControlPoint,
    ControlPoints,
    align_by_resection,
    align_from_bearings,
    align_from_ground_plane,
    enu_to_lla,
    estimate_r_align,
    lla_to_enu,
    load_control_points,
    load_r_align,
    mount_bearings,
    save_r_align,
)
from geometry.camera import Intrinsics, ZoomModel
from geometry.rotations import R_BC, drift_matrix, pan_tilt_of_direction, rotation_angle_deg

INTR = Intrinsics.from_fov(60.0, 1920, 1080, dist=[-0.25, 0.08, 0.001, -0.0005, 0.0])
ZOOM = ZoomModel((0.0, 0.5, 1.0), (INTR.fx, 2.5 * INTR.fx, 6.0 * INTR.fx))
R_TRUE = drift_matrix(37.0, 3.0, -2.0)  # mount -> ENU
CAMERA_LLA = (47.4979, 19.0402, 130.0)
SIGMA_PX = 0.5
SIGMA_THETA_DEG = float(np.degrees(SIGMA_PX / INTR.fx))  # zoom 0 is the widest, worst case


def _tolerance_deg(n: int, factor: float) -> float:
    return factor * SIGMA_THETA_DEG * np.sqrt(9.0 / (2.0 * n))


def _landmarks(rng: np.random.Generator, n: int, ground_height: float | None = None) -> np.ndarray:
    """ENU points (m) relative to the camera within +-60 deg azimuth of 37 deg, 40-400 m away; on the
    ground plane ``ground_height`` below the camera, or at heights -12..+40 m when None."""
    az = np.radians(37.0 + rng.uniform(-60.0, 60.0, n))
    r = rng.uniform(40.0, 400.0, n)
    z = np.full(n, -ground_height) if ground_height is not None else rng.uniform(-12.0, 40.0, n)
    return np.column_stack([r * np.sin(az), r * np.cos(az), z])


def _observe(rng: np.random.Generator, rel_enu: np.ndarray, sigma_px: float) -> list[dict]:
    """Telemetry and noisy pixels of landmarks at ENU offsets from the camera: each is seen off-centre
    in a frame pointed near it, at a random zoom."""
    obs = []
    for i, d_W in enumerate(rel_enu):
        d_B = R_TRUE.T @ d_W
        pan, tilt = pan_tilt_of_direction(d_B)
        zoom = rng.uniform(0.0, 0.6)
        intr = ZOOM.intrinsics_at(INTR, zoom)
        half_fov = np.degrees(np.arctan(960.0 / intr.fx))
        pan += rng.uniform(-0.6, 0.6) * half_fov
        tilt += rng.uniform(-0.3, 0.3) * half_fov
        uv = intr.project((R_BC(pan, tilt).T @ d_B)[None])[0] + rng.normal(0.0, sigma_px, 2)
        assert 0 <= uv[0] < 1920 and 0 <= uv[1] < 1080
        obs.append(dict(name=f"lm{i:02d}", pan=pan, tilt=tilt, zoom=zoom, u=uv[0], v=uv[1]))
    return obs


def _points(obs: list[dict], **coords: np.ndarray) -> tuple[ControlPoint, ...]:
    (key, values), = coords.items()  # fmt: skip
    return tuple(ControlPoint(**o, **{key: tuple(map(float, c))}) for o, c in zip(obs, values, strict=True))


def _topocentric(origin_lla: tuple[float, float, float]) -> Transformer:
    """ENU <-> WGS-84 by PROJ's own topocentric pipeline (independent of the module's conversion)."""
    lat, lon, alt = origin_lla
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=axisswap +order=2,1 +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=cart +ellps=WGS84 +step +proj=topocentric +ellps=WGS84 +lat_0={lat} +lon_0={lon} "
        f"+h_0={alt}"
    )


def _enu_to_lla_ref(enu: np.ndarray, origin_lla: tuple[float, float, float]) -> np.ndarray:
    lat, lon, alt = _topocentric(origin_lla).transform(enu[:, 0], enu[:, 1], enu[:, 2], direction="INVERSE")
    return np.column_stack([lat, lon, alt])


# --- geodesy -----------------------------------------------------------------------------------------


def test_lla_enu_conversions_match_proj_topocentric() -> None:
    enu = np.array([[1000.0, -2000.0, 50.0], [3000.0, 4000.0, -20.0], [0.0, 0.0, 0.0]])
    lla = _enu_to_lla_ref(enu, CAMERA_LLA)
    np.testing.assert_allclose(lla_to_enu(lla, CAMERA_LLA), enu, atol=1e-6)
    np.testing.assert_allclose(enu_to_lla(enu, CAMERA_LLA), lla, rtol=0, atol=1e-9)


# --- method (a): bearings with known position --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bearings_known_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    P = _landmarks(rng, n)
    obs = _observe(rng, P, SIGMA_PX)
    res = align_from_bearings(mount_bearings(_points(obs, enu=P), INTR, ZOOM), P, np.zeros(3))
    err = rotation_angle_deg(res.R_align, R_TRUE)
    print(f"bearings: error {err:.4f} deg, rms residual {res.rms_deg:.4f} deg")
    assert err < _tolerance_deg(n, 4.0)
    assert res.method == "bearings" and res.camera_position_enu is None
    assert res.R_align.dtype == np.float64 and res.R_align.shape == (3, 3)
    # each residual has two components of std <= sigma_theta
    assert res.rms_deg < 3.0 * np.sqrt(2.0) * SIGMA_THETA_DEG
    assert res.rms_deg == pytest.approx(np.sqrt(np.mean(res.residuals_deg**2)))


def test_bearings_gross_outlier_does_not_spoil() -> None:
    rng = np.random.default_rng(3)
    n = 10
    P = _landmarks(rng, n)
    obs = _observe(rng, P, SIGMA_PX)
    bad = 4
    clean_uv = np.array([[obs[bad]["u"], obs[bad]["v"]]])
    obs[bad]["u"] += 150.0
    obs[bad]["v"] -= 100.0
    intr = ZOOM.intrinsics_at(INTR, obs[bad]["zoom"])
    b_clean, b_bad = intr.unproject(np.vstack([clean_uv, [obs[bad]["u"], obs[bad]["v"]]]))
    injected_deg = np.degrees(np.arccos(b_clean @ b_bad))
    b = mount_bearings(_points(obs, enu=P), INTR, ZOOM)
    res = align_from_bearings(b, P, np.zeros(3))
    err = rotation_angle_deg(res.R_align, R_TRUE)
    print(f"outlier {injected_deg:.2f} deg: error {err:.4f} deg, residuals {np.round(res.residuals_deg, 4)}")
    assert err < _tolerance_deg(n - 1, 4.0)
    # the outlier moves the estimate by less than the noise-level uncertainty of the fit without it
    keep = np.arange(n) != bad
    without = align_from_bearings(b[keep], P[keep], np.zeros(3)).R_align
    assert rotation_angle_deg(res.R_align, without) < _tolerance_deg(n - 1, 1.0)
    assert int(np.argmax(res.residuals_deg)) == bad
    assert res.residuals_deg[bad] == pytest.approx(injected_deg, rel=0.02)
    # a plain least-squares fit (huge loss scale) is pulled far off by the same outlier
    plain = align_from_bearings(b, P, np.zeros(3), robust_scale_deg=1e3)
    assert rotation_angle_deg(plain.R_align, R_TRUE) > 0.1


def test_bearings_geodetic_with_camera_lla_and_offset_origin() -> None:
    rng = np.random.default_rng(4)
    P = _landmarks(rng, 10) * 10.0  # 0.4 - 4 km: the ENU frames at camera and origin differ measurably
    obs = _observe(rng, P, 0.0)
    lla = _enu_to_lla_ref(P, CAMERA_LLA)
    cp = ControlPoints(points=_points(obs, lla=lla), camera_lla=CAMERA_LLA)
    res = estimate_r_align(cp, INTR, ZOOM)
    assert res.method == "bearings" and res.camera_lla is None
    assert rotation_angle_deg(res.R_align, R_TRUE) < 1e-6
    # ENU coordinates relative to an origin 3 km away: R_align must still be ENU at the camera
    origin = tuple(_enu_to_lla_ref(np.array([[-2500.0, 1500.0, -30.0]]), CAMERA_LLA)[0])
    to_origin = _topocentric(origin)
    cam_o = np.array(to_origin.transform(*CAMERA_LLA))
    P_o = np.column_stack(to_origin.transform(lla[:, 0], lla[:, 1], lla[:, 2]))
    cp_o = ControlPoints(points=_points(obs, enu=P_o), camera_enu=tuple(cam_o), enu_origin_lla=origin)
    assert rotation_angle_deg(estimate_r_align(cp_o, INTR, ZOOM).R_align, R_TRUE) < 1e-6
    # ignoring the origin (treating the origin's ENU as the camera's) is measurably wrong
    naive = align_from_bearings(mount_bearings(cp_o.points, INTR, ZOOM), P_o, cam_o).R_align
    assert rotation_angle_deg(naive, R_TRUE) > 0.01


# --- method (b): resection with unknown position -----------------------------------------------------


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_resection_unknown_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    c_true = np.array([15.0, -8.0, 6.0])  # camera in the ENU frame of the landmarks
    rel = _landmarks(rng, n)
    P = rel + c_true
    obs = _observe(rng, rel, SIGMA_PX)
    res = estimate_r_align(ControlPoints(points=_points(obs, enu=P)), INTR, ZOOM)
    err = rotation_angle_deg(res.R_align, R_TRUE)
    pos_err = np.linalg.norm(res.camera_position_enu - c_true)
    # position: the same angular error over the mean range to the landmarks
    pos_tol = np.radians(_tolerance_deg(n, 6.0)) * np.mean(np.linalg.norm(rel, axis=1))
    print(f"resection: error {err:.4f} deg, position {pos_err:.3f} m (tol {pos_tol:.3f} m)")
    assert res.method == "resection"
    assert err < _tolerance_deg(n, 6.0)
    assert pos_err < pos_tol
    assert res.rms_deg < 3.0 * np.sqrt(2.0) * SIGMA_THETA_DEG


def test_resection_geodetic_noise_free_reports_camera_lla() -> None:
    rng = np.random.default_rng(8)
    rel = _landmarks(rng, 8) * 10.0  # km scale, origin (mean of the points) far from the camera
    obs = _observe(rng, rel, 0.0)
    cp = ControlPoints(points=_points(obs, lla=_enu_to_lla_ref(rel, CAMERA_LLA)))
    res = estimate_r_align(cp, INTR, ZOOM)
    assert res.method == "resection"
    assert rotation_angle_deg(res.R_align, R_TRUE) < 1e-6
    cam_enu = np.array(_topocentric(CAMERA_LLA).transform(*res.camera_lla))
    assert np.linalg.norm(cam_enu) < 1e-4
    assert np.max(res.residuals_deg) < 1e-6


# --- method (c): ground plane ------------------------------------------------------------------------


@pytest.mark.parametrize("height_known", [False, True])
def test_ground_plane(height_known: bool) -> None:
    rng = np.random.default_rng(9)
    n, h = 10, 12.0
    c_xy = np.array([35.0, -20.0])  # camera position on the map
    rel = _landmarks(rng, n, ground_height=h)
    obs = _observe(rng, rel, SIGMA_PX)
    map_xy = rel[:, :2] + c_xy
    cp = ControlPoints(points=_points(obs, map_xy=map_xy), camera_height_m=h if height_known else None)
    res = estimate_r_align(cp, INTR, ZOOM)
    err = rotation_angle_deg(res.R_align, R_TRUE)
    pos_err = res.camera_position_enu - np.array([*c_xy, h])
    pos_tol = np.radians(_tolerance_deg(n, 6.0)) * np.mean(np.linalg.norm(rel, axis=1))
    print(f"ground plane (h known {height_known}): error {err:.4f} deg, position error {pos_err} m")
    assert res.method == "ground_plane"
    assert err < _tolerance_deg(n, 6.0)
    assert np.linalg.norm(pos_err) < pos_tol
    if height_known:
        assert res.camera_position_enu[2] == h


def test_ground_plane_noise_free_exact_and_four_points() -> None:
    rng = np.random.default_rng(10)
    rel = _landmarks(rng, 4, ground_height=8.0)
    obs = _observe(rng, rel, 0.0)
    res = align_from_ground_plane(mount_bearings(_points(obs, map_xy=rel[:, :2]), INTR, ZOOM), rel[:, :2])
    assert rotation_angle_deg(res.R_align, R_TRUE) < 1e-6
    np.testing.assert_allclose(res.camera_position_enu, [0.0, 0.0, 8.0], atol=1e-5)


# --- degenerate input --------------------------------------------------------------------------------


def test_degenerate_inputs_raise() -> None:
    rng = np.random.default_rng(11)
    rel = _landmarks(rng, 8)
    obs = _observe(rng, rel, 0.0)
    b = mount_bearings(_points(obs, enu=rel), INTR, ZOOM)
    with pytest.raises(ValueError, match="at least 6"):
        align_by_resection(b[:5], rel[:5])
    ground = _landmarks(rng, 8, ground_height=10.0)
    b_ground = mount_bearings(_points(_observe(rng, ground, 0.0), enu=ground), INTR, ZOOM)
    with pytest.raises(ValueError, match="coplanar"):
        align_by_resection(b_ground, ground)
    with pytest.raises(ValueError, match="below the ground plane"):
        align_from_ground_plane(b_ground, ground[:, 1::-1])  # map axes swapped (north, east): mirrored
    with pytest.raises(ValueError, match="behind the camera"):
        align_by_resection(b, rel[:, [1, 0, 2]])  # east and north swapped: mirrored world
    wide = np.vstack([rel[:6], -rel[:2]])  # two landmarks behind the camera
    b_wide = mount_bearings(_points(_observe(rng, wide, 0.0), enu=wide), INTR, ZOOM)
    with pytest.raises(ValueError, match="span more than"):
        align_by_resection(b_wide, wide)
    with pytest.raises(ValueError, match="parallel"):
        align_from_bearings(np.tile(b[:1], (3, 1)), rel[:1] * [[1.0], [2.0], [3.0]], np.zeros(3))
    with pytest.raises(ValueError, match="coincides with the camera"):
        align_from_bearings(b, np.vstack([np.zeros((1, 3)), rel[1:]]), np.zeros(3))
    with pytest.raises(ValueError, match="exactly one"):
        ControlPoint("x", 0.0, 0.0, 0.0, 1.0, 1.0, enu=(1.0, 2.0, 3.0), map_xy=(1.0, 2.0))
    with pytest.raises(ValueError, match="finite"):
        ControlPoint("x", float("nan"), 0.0, 0.0, 1.0, 1.0, enu=(1.0, 2.0, 3.0))
    pts = list(_points(obs, enu=rel))
    pts[0] = replace(pts[0], enu=None, map_xy=(1.0, 2.0))
    with pytest.raises(ValueError, match="cannot be mixed"):
        estimate_r_align(ControlPoints(points=tuple(pts)), INTR, ZOOM)
    geodetic = _points(obs, lla=_enu_to_lla_ref(rel, CAMERA_LLA))
    with pytest.raises(ValueError, match="need enu_origin"):
        estimate_r_align(ControlPoints(points=geodetic, camera_enu=(1.0, 2.0, 3.0)), INTR, ZOOM)


# --- files -------------------------------------------------------------------------------------------


def _file_dict(obs: list[dict], lla: np.ndarray) -> dict:
    return {
        "camera_position": {"lat": CAMERA_LLA[0], "lon": CAMERA_LLA[1], "alt": CAMERA_LLA[2]},
        "points": [
            {**{k: float(v) if k != "name" else v for k, v in o.items()}, "lat": a, "lon": b, "alt": c}
            for o, (a, b, c) in zip(obs, lla.tolist(), strict=True)
        ],
    }


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_control_points_file_round_trip(tmp_path, suffix: str) -> None:
    rng = np.random.default_rng(12)
    rel = _landmarks(rng, 8)
    obs = _observe(rng, rel, SIGMA_PX)
    lla = _enu_to_lla_ref(rel, CAMERA_LLA)
    path = tmp_path / f"control_points{suffix}"
    data = _file_dict(obs, lla)
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    cp = load_control_points(path)
    expected = ControlPoints(points=_points(obs, lla=lla), camera_lla=CAMERA_LLA)
    assert cp == expected
    from_file = estimate_r_align(path, INTR, ZOOM)
    assert from_file.names == tuple(o["name"] for o in obs)
    np.testing.assert_array_equal(from_file.R_align, estimate_r_align(expected, INTR, ZOOM).R_align)
    assert rotation_angle_deg(from_file.R_align, R_TRUE) < _tolerance_deg(8, 4.0)


def test_control_points_file_errors(tmp_path) -> None:
    bad = tmp_path / "cp.json"
    bad.write_text(
        json.dumps({"points": [{"name": "a", "pan": 1, "tilt": 2, "u": 3, "v": 4, "enu": [1, 2, 3]}]})
    )
    with pytest.raises(ValueError, match="needs numeric pan, tilt, zoom"):
        load_control_points(bad)
    bad.write_text(json.dumps({"points": [{"name": "a", "pan": 1, "tilt": 2, "zoom": 0, "u": 3, "v": 4}]}))
    with pytest.raises(ValueError, match="exactly one"):
        load_control_points(bad)
    bad.write_text(json.dumps({"camera_position": {"lat": 1.0}, "points": []}))
    with pytest.raises(ValueError, match="camera_position: needs numeric lat, lon and alt"):
        load_control_points(bad)
    bad.write_text(json.dumps({"camera": {"enu": [0, 0, 0]}, "points": []}))
    with pytest.raises(ValueError, match=r"unknown keys \['camera'\]"):
        load_control_points(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cp.json"):
        load_control_points(bad)
    (tmp_path / "cp.txt").write_text("{}")
    with pytest.raises(ValueError, match=r"\.json, \.yaml, \.yml or \.csv"):
        load_control_points(tmp_path / "cp.txt")
    with pytest.raises(FileNotFoundError):
        load_control_points(tmp_path / "missing.yaml")


def test_r_align_npy_round_trip(tmp_path) -> None:
    path = tmp_path / "R_align.npy"
    save_r_align(path, R_TRUE)
    R = load_r_align(path)
    assert R.dtype == np.float64 and R.shape == (3, 3)
    np.testing.assert_array_equal(R, R_TRUE)
    assert np.load(path).dtype == np.float64
    buf = io.BytesIO()
    save_r_align(buf, R_TRUE)
    buf.seek(0)
    np.testing.assert_array_equal(load_r_align(buf), R_TRUE)
    with pytest.raises(ValueError, match="not a rotation"):
        save_r_align(path, np.diag([1.0, 1.0, -1.0]))
    np.save(path, 1.01 * R_TRUE)
    with pytest.raises(ValueError, match="not a rotation"):
        load_r_align(path)
    np.save(path, np.eye(4))
    with pytest.raises(ValueError, match="3x3"):
        load_r_align(path)
    with pytest.raises(FileNotFoundError):
        load_r_align(tmp_path / "nope.npy")
