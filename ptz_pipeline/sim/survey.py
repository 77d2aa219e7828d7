"""What a calibration engineer would hand the pipeline for a simulated camera: chessboard photos and
surveyed control points, generated from the simulator's ground truth."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from geometry.rotations import R_BC
from ptz_pipeline.sim.camera import SimulatedCameraSpec
from ptz_pipeline.sim.chessboard import random_board_poses, render_chessboards

CHESSBOARD_PATTERN = (9, 6)
CHESSBOARD_SQUARE_M = 0.03


def chessboard_photos(spec: SimulatedCameraSpec, n_views: int = 12) -> list[np.ndarray]:
    """``n_views`` chessboard photos (RGB uint8) taken by the simulated camera at zoom 0."""
    rng = np.random.default_rng(spec.seed + 1000)
    poses = random_board_poses(n_views, rng, CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M, spec.hfov_deg)
    return render_chessboards(spec.intrinsics, poses, CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M)


def control_points(
    spec: SimulatedCameraSpec,
    frames: list[tuple[float, float, float, datetime]],
    per_frame: int = 2,
    click_noise_px: float = 0.3,
) -> dict:
    """Landmarks surveyed in local ENU (camera at the origin, 150-600 m away) and clicked in reference frames.

    ``frames`` are the reference frames' telemetry (pan, tilt, zoom, timestamp). Returns the control-points
    document read by geometry.alignment.load_control_points (camera position known: bearings method).
    """
    rng = np.random.default_rng(spec.seed + 2000)
    points = []
    for i, (pan, tilt, zoom, ts) in enumerate(frames):
        intr = spec.zoom_model.intrinsics_at(spec.intrinsics, zoom)
        w, h = intr.image_size
        R_WC = spec.R_WB(ts) @ R_BC(pan, tilt)
        for j in range(per_frame):
            uv = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
            bearing_W = R_WC @ intr.unproject(uv[None])[0]
            enu = bearing_W * rng.uniform(150.0, 600.0)
            clicked = uv + rng.normal(0.0, click_noise_px, 2)
            points.append(
                {
                    "name": f"landmark-{i:02d}-{j}",
                    "pan": pan,
                    "tilt": tilt,
                    "zoom": zoom,
                    "u": float(clicked[0]),
                    "v": float(clicked[1]),
                    "enu": [float(x) for x in enu],
                }
            )
    return {"camera_position": {"enu": [0.0, 0.0, 0.0]}, "points": points}
