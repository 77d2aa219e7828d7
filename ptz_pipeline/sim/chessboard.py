"""Synthetic chessboard photographs taken by a simulated camera (exact K and distortion) for intrinsics tests
and the embedded demo's calibration step. Board frame: x along columns, y along rows, z into the board."""

from __future__ import annotations

import cv2
import numpy as np

from geometry.camera import Intrinsics
from geometry.rotations import rotvec_to_matrix


def render_chessboards(
    intr: Intrinsics,
    poses: list[tuple[np.ndarray, np.ndarray]],
    pattern: tuple[int, int] = (9, 6),
    square_m: float = 0.03,
    supersample: int = 2,
) -> list[np.ndarray]:
    """Render a board with ``pattern`` inner corners (columns, rows) at each pose (R, t) (board -> camera, m).

    Each pixel is supersampled ``supersample``² times through the camera's distortion (the rays are computed
    once for all poses); returns RGB uint8 images.
    """
    w, h = intr.image_size
    s = supersample
    offsets = (np.arange(s) + 0.5) / s - 0.5
    us = (np.arange(w)[:, None] + offsets[None, :]).ravel()
    vs = (np.arange(h)[:, None] + offsets[None, :]).ravel()
    uu, vv = np.meshgrid(us, vs)
    rays = intr.unproject(np.stack([uu.ravel(), vv.ravel()], axis=1))
    cols, rows = pattern[0] + 1, pattern[1] + 1
    images = []
    for R, t in poses:
        n = R[:, 2]
        depth = (n @ t) / (rays @ n)
        X = (rays * depth[:, None] - t) @ R  # board frame
        # inner corner (0, 0) sits at the board origin; squares extend one square beyond the outer corners
        gx = np.floor(X[:, 0] / square_m) + 1
        gy = np.floor(X[:, 1] / square_m) + 1
        on_board = (gx >= 0) & (gx < cols) & (gy >= 0) & (gy < rows) & (depth > 0)
        margin = square_m
        on_paper = (
            (X[:, 0] > -square_m - margin)
            & (X[:, 0] < (cols - 1) * square_m + margin)
            & (X[:, 1] > -square_m - margin)
            & (X[:, 1] < (rows - 1) * square_m + margin)
            & (depth > 0)
        )
        value = np.full(len(X), 90.0)  # background wall
        value[on_paper] = 235.0
        value[on_board & ((gx + gy) % 2 == 0)] = 20.0
        img = cv2.resize(value.reshape(h * s, w * s), (w, h), interpolation=cv2.INTER_AREA)
        images.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
    return images


def random_board_poses(
    n: int,
    rng: np.random.Generator,
    pattern: tuple[int, int] = (9, 6),
    square_m: float = 0.03,
    hfov_deg: float = 60.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` board poses (R, t) that keep the whole board in a camera of horizontal FOV ``hfov_deg``."""
    width_m = (pattern[0] + 1) * square_m
    distance = 1.6 * width_m / (2 * np.tan(np.radians(hfov_deg) / 2))
    poses = []
    for _ in range(n):
        R = rotvec_to_matrix(np.radians(rng.uniform(-30, 30, 3)) * np.array([1, 1, 0.3]))
        centre_board = np.array([(pattern[0] - 1) * square_m / 2, (pattern[1] - 1) * square_m / 2, 0.0])
        centre_cam = np.array(
            [rng.uniform(-0.15, 0.15) * distance, rng.uniform(-0.1, 0.1) * distance, distance]
        )
        poses.append((R, centre_cam - R @ centre_board))
    return poses
