"""Frame conventions and rotation utilities.

Frames (see ARCHITECTURE.md):
- World W: local ENU at the camera (x east, y north, z up).
- Camera C: OpenCV (x right, y down, z forward).
- Mount B: z up; at pan = 0, tilt = 0 the camera looks along +y_B and image right is +x_B.

``R_BC(pan, tilt) = Rz(-pan) @ Rx(tilt) @ R0`` maps camera-frame vectors to mount-frame vectors; pan is
clockwise seen from above, tilt positive up. ``R_align = R_WB``; a frame's world orientation is
``R_WC = R_align @ R_BC(pan, tilt)``. The mount drift since the reference is ``D`` with true
``R_WB = R_align @ D`` and ``D = Rz(-yaw) @ Rx(pitch) @ Ry(roll)``. Interfaces take degrees; maths is radians.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

R0 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Camera-to-mount rotation at pan = 0, tilt = 0 (camera z -> +y_B, camera x -> +x_B, camera y -> -z_B)."""


def Rx(angle_rad: float) -> np.ndarray:
    """Right-handed rotation about x by ``angle_rad`` radians."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def Ry(angle_rad: float) -> np.ndarray:
    """Right-handed rotation about y by ``angle_rad`` radians."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def Rz(angle_rad: float) -> np.ndarray:
    """Right-handed rotation about z by ``angle_rad`` radians."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def R_BC(pan_deg: float, tilt_deg: float) -> np.ndarray:
    """Camera-to-mount rotation for PTZ telemetry (pan clockwise from above, tilt up; degrees)."""
    return Rz(-np.radians(pan_deg)) @ Rx(np.radians(tilt_deg)) @ R0


def pan_tilt_of_direction(d_B: np.ndarray) -> tuple[float, float]:
    """Pan and tilt (degrees) that point the optical axis along the mount-frame direction ``d_B``."""
    d = np.asarray(d_B, dtype=float)
    norm = np.linalg.norm(d) if d.shape == (3,) else 0.0
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"direction must be a finite non-zero 3-vector, got {d_B!r}")
    d = d / norm
    pan = np.degrees(np.arctan2(d[0], d[1]))
    tilt = np.degrees(np.arcsin(np.clip(d[2], -1.0, 1.0)))
    return float(pan), float(tilt)


def drift_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Mount drift D = Rz(-yaw) Rx(pitch) Ry(roll) from degrees (yaw like pan, pitch like tilt,
    positive roll turns the image's right side down)."""
    return Rz(-np.radians(yaw_deg)) @ Rx(np.radians(pitch_deg)) @ Ry(np.radians(roll_deg))


def drift_angles(D: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`drift_matrix`: (yaw, pitch, roll) in degrees, pitch in [-90, 90]."""
    D = np.asarray(D, dtype=float)
    pitch = np.arcsin(np.clip(D[2, 1], -1.0, 1.0))
    roll = np.arctan2(-D[2, 0], D[2, 2])
    yaw = -np.arctan2(-D[0, 1], D[1, 1])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def project_to_so3(M: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to a 3x3 matrix, via SVD with det = +1."""
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=float))
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ S @ Vt


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    """Geodesic angle (degrees) between two rotations, i.e. the angle of R1^T R2."""
    R = np.asarray(R1, dtype=float).T @ np.asarray(R2, dtype=float)
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(project_to_so3(R)).as_rotvec())))


def mean_rotation(Rs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Chordal L2 mean of rotations: the rotation nearest (Frobenius) to the weighted sum of ``Rs``."""
    Rs = np.asarray(Rs, dtype=float).reshape(-1, 3, 3)
    if len(Rs) == 0:
        raise ValueError("mean_rotation needs at least one rotation")
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(Rs),) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights must be finite, non-negative, one per rotation, not all zero")
    return project_to_so3(np.einsum("i,ijk->jk", w, Rs))


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix from an axis-angle vector (radians)."""
    return Rotation.from_rotvec(np.asarray(rotvec, dtype=float)).as_matrix()


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (radians) of a rotation matrix."""
    return Rotation.from_matrix(project_to_so3(R)).as_rotvec()
