"""calibration_results rows for tests that need a camera's history without estimating it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ptz_pipeline.partitions import camera_hour_key, hour_key
from ptz_pipeline.results import ResultRow


def estimate_row(
    camera: str, t: datetime, angles_deg: Sequence[float], sigma_deg: float = 0.002, **columns: Any
) -> ResultRow:
    """A successful passive-mode row of camera ``<deployment>__<camera>`` at hour ``t`` (UTC) with offsets
    ``angles_deg`` (yaw, pitch, roll) ± ``sigma_deg`` each, degrees; ``columns``: any other columns."""
    deployment, device_id = camera.split("__")
    return ResultRow(
        deployment=deployment,
        device_id=device_id,
        timestamp=t,
        mode="passive",
        partition_key=str(camera_hour_key(camera, hour_key(t))),
        success=True,
        yaw_offset=angles_deg[0],
        pitch_offset=angles_deg[1],
        roll_offset=angles_deg[2],
        sigma_yaw=sigma_deg,
        sigma_pitch=sigma_deg,
        sigma_roll=sigma_deg,
        **columns,
    )
