"""What a calibration engineer hands the pipeline for a camera, made from a simulated camera's ground truth:
chessboard photos and surveyed control points, written where the calibration assets read them.

The demo's set-up and the tests call :func:`provide_chessboards` before ``camera_intrinsics`` and
:func:`provide_survey` after ``reference_scan`` (the survey is clicked in the stored reference frames).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from geometry.rotations import R_BC
from ptz_pipeline import scans, versions
from ptz_pipeline.assets.intrinsics import CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M
from ptz_pipeline.devices import CameraConfig, SimulatedBackend
from ptz_pipeline.sim.chessboard import random_board_poses, render_chessboards


def chessboard_photos(spec: SimulatedBackend, n_views: int = 12) -> list[np.ndarray]:
    """``n_views`` chessboard photos (RGB uint8) taken by the simulated camera at zoom 0."""
    rng = np.random.default_rng(spec.seed + 1000)
    poses = random_board_poses(n_views, rng, CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M, spec.hfov_deg)
    return render_chessboards(spec.intrinsics, poses, CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M)


def control_points(
    spec: SimulatedBackend,
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


def _spec(cam: CameraConfig) -> SimulatedBackend:
    if not isinstance(cam.backend, SimulatedBackend):
        raise TypeError(f"{cam.key}: only simulated cameras can be surveyed from ground truth")
    return cam.backend


def provide_chessboards(storage: scans.Storage, cam: CameraConfig) -> int:
    """Store the simulated camera's chessboard photos where camera_intrinsics reads them, unless some are
    there already; returns how many were written."""
    prefix = scans.chessboard_prefix(cam.deployment, cam.name)
    if storage.exists(f"{prefix}/00.png"):
        return 0
    photos = chessboard_photos(_spec(cam))
    for i, image in enumerate(photos):
        storage.put_bytes(f"{prefix}/{i:02d}.png", scans.encode_png(image))
    return len(photos)


def provide_survey(storage: scans.Storage, cam: CameraConfig) -> int:
    """Store control points clicked in the camera's stored reference scan (r_align's input); returns their
    count. FileNotFoundError when the reference scan is missing."""
    reference = versions.current(storage, cam.deployment, cam.name, "reference")
    manifest = None if reference is None else scans.read_manifest(storage, reference.prefix)
    if manifest is None:
        raise FileNotFoundError(f"{cam.key}: no reference scan to survey; materialize reference_scan first")
    doc = control_points(_spec(cam), [(f.pan, f.tilt, f.zoom, f.timestamp) for f in manifest.frames])
    storage.put_json(scans.control_points_key(cam.deployment, cam.name), doc)
    return len(doc["points"])
