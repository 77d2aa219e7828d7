"""The frame conventions of ARCHITECTURE.md, pinned with worked examples computed by hand.

Expected vectors and matrices are written out from the definitions (compass bearings, sines and cosines of
the angles), never taken from geometry.rotations itself. Mount frame B: x east, y north, z up when level;
camera frame C: OpenCV (x image right, y image down, z optical axis).
"""

from __future__ import annotations

import numpy as np
import pytest

from geometry.rotations import (
    R_BC,
    Rx,
    Ry,
    Rz,
    drift_angles,
    drift_matrix,
    mean_rotation,
    pan_tilt_of_direction,
    rotation_angle_deg,
)

E_X, E_Y, E_Z = np.eye(3)
"""Camera axes: image right, image down, optical axis."""
ATOL = 1e-12


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random rotation from a unit quaternion (w, x, y, z), written out (Shoemake)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _bearing(pan_deg: float, tilt_deg: float) -> np.ndarray:
    """Mount-frame unit vector at compass bearing ``pan_deg`` (clockwise from north = +y) and elevation
    ``tilt_deg``: (sin pan cos tilt, cos pan cos tilt, sin tilt)."""
    p, t = np.radians(pan_deg), np.radians(tilt_deg)
    return np.array([np.sin(p) * np.cos(t), np.cos(p) * np.cos(t), np.sin(t)])


# --- R_BC(pan, tilt) -----------------------------------------------------------------------------------


def test_R_BC_at_home_position() -> None:
    R = R_BC(0.0, 0.0)
    np.testing.assert_allclose(R @ E_Z, [0, 1, 0], atol=ATOL)  # optical axis -> mount +y (north)
    np.testing.assert_allclose(R @ E_X, [1, 0, 0], atol=ATOL)  # image right -> mount +x (east)
    np.testing.assert_allclose(R @ E_Y, [0, 0, -1], atol=ATOL)  # image down -> mount -z
    np.testing.assert_allclose(R, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=ATOL)


@pytest.mark.parametrize(
    ("pan", "axis", "right"),
    [
        (90.0, [1, 0, 0], [0, -1, 0]),  # east; right-hand side is south
        (180.0, [0, -1, 0], [-1, 0, 0]),  # south; right is west
        (-90.0, [-1, 0, 0], [0, 1, 0]),  # west; right is north
        (270.0, [-1, 0, 0], [0, 1, 0]),
    ],
)
def test_pan_is_clockwise_seen_from_above(pan: float, axis: list[float], right: list[float]) -> None:
    R = R_BC(pan, 0.0)
    np.testing.assert_allclose(R @ E_Z, axis, atol=ATOL)
    np.testing.assert_allclose(R @ E_X, right, atol=ATOL)
    np.testing.assert_allclose(R @ E_Y, [0, 0, -1], atol=ATOL)  # a level camera's image down is down


def test_tilt_positive_looks_up() -> None:
    s, c = np.sin(np.radians(10.0)), np.cos(np.radians(10.0))
    R = R_BC(0.0, 10.0)
    np.testing.assert_allclose(R @ E_Z, [0, c, s], atol=ATOL)  # 10 degrees above the horizon, north
    np.testing.assert_allclose(R @ E_Y, [0, s, -c], atol=ATOL)  # image down leans forward
    np.testing.assert_allclose(R @ E_X, [1, 0, 0], atol=ATOL)  # tilting keeps image right horizontal
    np.testing.assert_allclose(R_BC(0.0, -10.0) @ E_Z, [0, c, -s], atol=ATOL)


def test_R_BC_points_at_compass_bearing_and_elevation() -> None:
    # pan 30, tilt 20: (sin 30 cos 20, cos 30 cos 20, sin 20) = (0.46985, 0.81380, 0.34202)
    np.testing.assert_allclose(R_BC(30.0, 20.0) @ E_Z, [0.4698463104, 0.8137976813, 0.3420201433], atol=1e-9)
    for pan, tilt in [(-135.0, 45.0), (200.0, -30.0), (10.0, 89.0)]:
        R = R_BC(pan, tilt)
        np.testing.assert_allclose(R @ E_Z, _bearing(pan, tilt), atol=ATOL)
        np.testing.assert_allclose(R @ E_X, _bearing(pan + 90.0, 0.0), atol=ATOL)  # right stays horizontal
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=ATOL)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=ATOL)


def test_world_orientation_is_R_align_times_R_BC() -> None:
    # A mount turned 90 degrees anticlockwise (seen from above): its "north" +y_B points west in the world.
    R_align = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: x_B, y_B, z_B in W
    np.testing.assert_allclose(R_align, Rz(np.radians(90.0)), atol=ATOL)
    R_WC = R_align @ R_BC(0.0, 0.0)
    np.testing.assert_allclose(R_WC @ E_Z, [-1, 0, 0], atol=ATOL)  # looks west
    np.testing.assert_allclose(R_WC @ E_X, [0, 1, 0], atol=ATOL)  # image right is north
    # pan 90 (clockwise) from there looks north in the world
    np.testing.assert_allclose(R_align @ R_BC(90.0, 0.0) @ E_Z, [0, 1, 0], atol=ATOL)


def test_elementary_rotations_are_right_handed() -> None:
    a = np.radians(90.0)
    np.testing.assert_allclose(Rz(a) @ E_X, E_Y, atol=ATOL)  # x -> y about z
    np.testing.assert_allclose(Rx(a) @ E_Y, E_Z, atol=ATOL)  # y -> z about x
    np.testing.assert_allclose(Ry(a) @ E_Z, E_X, atol=ATOL)  # z -> x about y


# --- drift --------------------------------------------------------------------------------------------


def test_drift_matrix_composition_order() -> None:
    # Rz(-90) = [[0,1,0],[-1,0,0],[0,0,1]], Rx(90) = [[1,0,0],[0,0,-1],[0,1,0]],
    # Ry(90) = [[0,0,1],[0,1,0],[-1,0,0]]
    np.testing.assert_allclose(drift_matrix(90, 0, 0), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=ATOL)
    np.testing.assert_allclose(drift_matrix(0, 90, 0), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=ATOL)
    np.testing.assert_allclose(drift_matrix(0, 0, 90), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=ATOL)
    # products multiplied out by hand; the reverse orders give the matrices in the comments
    # Rz(-90) Rx(90); Rx(90) Rz(-90) = [[0,1,0],[0,0,-1],[-1,0,0]]
    np.testing.assert_allclose(drift_matrix(90, 90, 0), [[0, 0, -1], [-1, 0, 0], [0, 1, 0]], atol=ATOL)
    # Rz(-90) Ry(90); Ry(90) Rz(-90) = [[0,0,1],[-1,0,0],[0,-1,0]]
    np.testing.assert_allclose(drift_matrix(90, 0, 90), [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], atol=ATOL)
    # Rx(90) Ry(90); Ry(90) Rx(90) = [[0,1,0],[0,0,-1],[-1,0,0]]
    np.testing.assert_allclose(drift_matrix(0, 90, 90), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=ATOL)


@pytest.mark.parametrize(("pan", "tilt"), [(0.0, 0.0), (37.0, 12.0), (-120.0, -25.0), (179.5, 60.0)])
def test_positive_yaw_is_like_pan(pan: float, tilt: float) -> None:
    """A pure yaw of +1 degree makes a frame taken at pan p look like the reference frame at pan p + 1."""
    R_align = _random_rotation(np.random.default_rng(3))
    drifted = R_align @ drift_matrix(1.0, 0.0, 0.0) @ R_BC(pan, tilt)
    np.testing.assert_allclose(drifted, R_align @ R_BC(pan + 1.0, tilt), atol=ATOL)


def test_positive_pitch_is_like_tilt() -> None:
    # at pan 0 the pitch axis (mount x) is the tilt axis: the optical axis rises by the pitch
    np.testing.assert_allclose(drift_matrix(0.0, 3.0, 0.0) @ R_BC(0.0, 10.0), R_BC(0.0, 13.0), atol=ATOL)
    s, c = np.sin(np.radians(3.0)), np.cos(np.radians(3.0))
    np.testing.assert_allclose(drift_matrix(0.0, 3.0, 0.0) @ _bearing(0.0, 0.0), [0, c, s], atol=ATOL)


def test_positive_roll_turns_the_image_right_side_down() -> None:
    s, c = np.sin(np.radians(5.0)), np.cos(np.radians(5.0))
    D = drift_matrix(0.0, 0.0, 5.0)
    R = D @ R_BC(0.0, 0.0)
    np.testing.assert_allclose(R @ E_X, [c, 0, -s], atol=ATOL)  # image right edge direction goes down (-z)
    np.testing.assert_allclose(R @ E_Z, [0, 1, 0], atol=ATOL)  # roll keeps the optical axis at pan 0
    assert (drift_matrix(0.0, 0.0, -5.0) @ R_BC(0.0, 0.0) @ E_X)[2] == pytest.approx(s, abs=ATOL)


def test_drift_angles_inverts_drift_matrix() -> None:
    rng = np.random.default_rng(11)
    for yaw, pitch, roll in zip(
        rng.uniform(-180, 180, 200), rng.uniform(-89.9, 89.9, 200), rng.uniform(-180, 180, 200), strict=True
    ):
        got = drift_angles(drift_matrix(yaw, pitch, roll))
        np.testing.assert_allclose(got, (yaw, pitch, roll), atol=1e-9)
    # small drifts, the usual case, and exact hand values
    np.testing.assert_allclose(drift_angles(drift_matrix(0.3, -0.2, 0.05)), (0.3, -0.2, 0.05), atol=1e-12)
    np.testing.assert_allclose(drift_angles(Rz(np.radians(-25.0))), (25.0, 0.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(drift_angles(Ry(np.radians(7.0))), (0.0, 0.0, 7.0), atol=1e-12)


# --- angle between rotations, averaging, pointing -----------------------------------------------------------


def test_rotation_angle_of_known_rotations() -> None:
    assert rotation_angle_deg(np.eye(3), Rz(np.radians(30.0))) == pytest.approx(30.0, abs=1e-10)
    # the cyclic permutation x -> y -> z -> x is 120 degrees about (1, 1, 1)
    cyclic = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert rotation_angle_deg(np.eye(3), cyclic) == pytest.approx(120.0, abs=1e-10)
    assert rotation_angle_deg(np.eye(3), np.diag([1.0, -1.0, -1.0])) == pytest.approx(180.0, abs=1e-10)
    R = _random_rotation(np.random.default_rng(5))
    assert rotation_angle_deg(R, R @ Rx(np.radians(12.0))) == pytest.approx(12.0, abs=1e-10)
    assert rotation_angle_deg(R @ Rx(np.radians(12.0)), R) == pytest.approx(12.0, abs=1e-10)
    assert rotation_angle_deg(R, R) == pytest.approx(0.0, abs=1e-6)
    # a 1 degree yaw drift is a 1 degree rotation
    assert rotation_angle_deg(np.eye(3), drift_matrix(1.0, 0.0, 0.0)) == pytest.approx(1.0, abs=1e-10)


def test_mean_of_rotations_symmetric_around_a_known_one() -> None:
    R = _random_rotation(np.random.default_rng(8))
    a = np.radians(4.0)
    around = [R @ E(s * a) for E in (Rx, Ry, Rz) for s in (-1.0, 1.0)]
    np.testing.assert_allclose(mean_rotation(np.array(around)), R, atol=1e-12)
    # left multiplication (perturbations in the world frame) is symmetric too
    around_left = [E(s * a) @ R for E in (Rx, Ry, Rz) for s in (-1.0, 1.0)]
    np.testing.assert_allclose(mean_rotation(around_left), R, atol=1e-12)


def test_mean_rotation_respects_weights() -> None:
    # For rotations about one axis the chordal mean angle is atan2(sum w sin(a), sum w cos(a)).
    angles, weights = np.radians([0.0, 40.0]), np.array([3.0, 1.0])
    expected = np.arctan2(weights @ np.sin(angles), weights @ np.cos(angles))
    Rs = np.array([Rz(a) for a in angles])
    np.testing.assert_allclose(mean_rotation(Rs, weights), Rz(expected), atol=1e-12)
    np.testing.assert_allclose(mean_rotation(Rs), Rz(np.radians(20.0)), atol=1e-12)
    np.testing.assert_allclose(mean_rotation(Rs, [0.0, 2.0]), Rs[1], atol=1e-12)
    np.testing.assert_allclose(mean_rotation(Rs[0]), Rs[0], atol=1e-12)  # a single 3x3 rotation


@pytest.mark.parametrize(
    ("Rs", "weights"),
    [
        (np.zeros((0, 3, 3)), None),
        (np.array([np.eye(3), np.eye(3)]), [1.0, -1.0]),
        (np.array([np.eye(3), np.eye(3)]), [0.0, 0.0]),
        (np.array([np.eye(3), np.eye(3)]), [1.0, 1.0, 1.0]),
        (np.array([np.eye(3), np.eye(3)]), [1.0, np.nan]),
        (np.array([np.eye(3), np.eye(3)]), [1.0, np.inf]),
    ],
)
def test_mean_rotation_rejects_bad_input(Rs: np.ndarray, weights: list[float] | None) -> None:
    with pytest.raises(ValueError, match="at least one rotation|weights"):
        mean_rotation(Rs, weights)


def test_pan_tilt_of_direction() -> None:
    assert pan_tilt_of_direction(np.array([1.0, 0.0, 0.0])) == pytest.approx((90.0, 0.0))
    assert pan_tilt_of_direction(np.array([-2.0, 0.0, 0.0])) == pytest.approx((-90.0, 0.0))  # unnormalised
    assert pan_tilt_of_direction(np.array([0.0, 1.0, 1.0])) == pytest.approx((0.0, 45.0))
    assert abs(pan_tilt_of_direction(np.array([0.0, -1.0, 0.0]))[0]) == pytest.approx(180.0)
    rng = np.random.default_rng(2)
    for pan, tilt in zip(rng.uniform(-179.9, 179.9, 100), rng.uniform(-89.0, 89.0, 100), strict=True):
        assert pan_tilt_of_direction(R_BC(pan, tilt) @ E_Z) == pytest.approx((pan, tilt), abs=1e-9)
        assert pan_tilt_of_direction(_bearing(pan, tilt)) == pytest.approx((pan, tilt), abs=1e-9)


@pytest.mark.parametrize("direction", [[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [1.0, 0.0]])
def test_pan_tilt_of_degenerate_direction_raises(direction: list[float]) -> None:
    with pytest.raises(ValueError, match="finite non-zero 3-vector"):
        pan_tilt_of_direction(np.array(direction))
