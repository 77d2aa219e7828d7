"""Rows of the Iceberg table calibration_results and the Slack report that goes with them."""

import math
from datetime import UTC, datetime

from geometry.offsets import DriftEstimate
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.resources.slack import SlackResource, offsets_within_threshold


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def result_row(
    cam: CameraConfig,
    hour: datetime,
    partition_key: str,
    run_id: str,
    estimate: DriftEstimate,
    capture_positions: list[dict],
    files_location: str,
) -> dict:
    """One calibration_results row for a camera-hour (angles in degrees; null when the estimate failed)."""
    return {
        "deployment": cam.deployment,
        "device_id": cam.name,
        "timestamp": hour,
        "yaw_offset": _num(estimate.yaw_deg),
        "pitch_offset": _num(estimate.pitch_deg),
        "roll_offset": _num(estimate.roll_deg),
        "sigma_yaw": _num(estimate.sigma_yaw_deg),
        "sigma_pitch": _num(estimate.sigma_pitch_deg),
        "sigma_roll": _num(estimate.sigma_roll_deg),
        "inliers": int(estimate.inliers),
        "n_frames": int(estimate.n_query_frames),
        "mode": cam.mode,
        "capture_positions": capture_positions,
        "files_location": files_location,
        "success": bool(estimate.success),
        "failure_logs": estimate.reason or None,
        "partition_key": partition_key,
        "run_id": run_id,
        "written_at": datetime.now(UTC),
    }


def failure_row(
    cam: CameraConfig, hour: datetime, partition_key: str, run_id: str, reason: str, files_location: str = ""
) -> dict:
    """A success=false row: no offsets, the reason in failure_logs."""
    return result_row(
        cam, hour, partition_key, run_id, DriftEstimate.failure(reason, 0, 0), [], files_location
    )


def within_threshold(row: dict, threshold_deg: float) -> bool:
    """True when the row succeeded and every |offset| is at most ``threshold_deg`` (degrees)."""
    return offsets_within_threshold(
        row["pitch_offset"], row["yaw_offset"], row["roll_offset"], row["success"], threshold_deg
    )


def notify(slack: SlackResource, row: dict, threshold_deg: float) -> str:
    """Send the seed's calibration report for one row (Slack, or the log when Slack is not configured);
    returns how it was delivered ("slack", "webhook", "log" or "failed")."""
    return slack.send_calibration_report(
        deployment=row["deployment"],
        device_id=row["device_id"],
        timestamp=row["timestamp"],
        pitch=row["pitch_offset"],
        yaw=row["yaw_offset"],
        roll=row["roll_offset"],
        mode=row["mode"],
        success=row["success"],
        failure_logs=[row["failure_logs"]] if row["failure_logs"] else None,
        threshold_deg=threshold_deg,
    )
