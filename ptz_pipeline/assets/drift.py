"""camera_drift (camera): one camera's drift over the last days, the per-camera view users read, and its trend
(stable, step, creep, oscillation; geometry.trend)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from geometry.trend import OffsetHistory, TrendResult, classify_trend
from ptz_pipeline import scans
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.grouped import GroupedOutcome, grouped_asset
from ptz_pipeline.partitions import CAMERA_DIM, camera_partitions
from ptz_pipeline.plots import drift_plot_png
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.storage import ObjectStorageResource

CAMERA_DRIFT = dg.AssetKey("camera_drift")
_ANGLES = ("yaw", "pitch", "roll")


class CameraDriftConfig(dg.Config):
    """How much history the view shows and the trend is judged on (days)."""

    days: float = 7.0


def offset_history(rows: pd.DataFrame) -> tuple[list[datetime], OffsetHistory]:
    """(UTC hours, OffsetHistory in hours since the Unix epoch) of one camera's calibration_results rows;
    failed hours are NaN rows, so a camera that stops answering never looks settled."""
    rows = rows.sort_values("timestamp")
    hours = [t.to_pydatetime().astimezone(UTC) for t in pd.to_datetime(rows["timestamp"], utc=True)]
    ok = rows["success"].astype(bool).to_numpy()[:, None]
    angles = rows[[f"{a}_offset" for a in _ANGLES]].to_numpy(dtype=float)
    sigma = rows[[f"sigma_{a}" for a in _ANGLES]].to_numpy(dtype=float)
    t = np.array([h.timestamp() / 3600.0 for h in hours])
    return hours, OffsetHistory(t, np.where(ok, angles, np.nan), np.where(ok, sigma, np.nan))


def _table(hours: list[datetime], history: OffsetHistory, last: int = 24) -> str:
    """Markdown table of the last ``last`` hours (degrees, 4 decimals)."""
    lines = ["| hour (UTC) | yaw ° | pitch ° | roll ° |", "|---|---|---|---|"]
    for t, a, s in list(zip(hours, history.angles_deg, history.sigma_deg, strict=True))[-last:][::-1]:
        cells = [f"{v:+.4f} ± {e:.4f}" if np.isfinite(v) else "failed" for v, e in zip(a, s, strict=True)]
        lines.append(f"| {t:%Y-%m-%d %H:%M} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _camera_view(
    cam: CameraConfig, days: float, storage: ObjectStorageResource, iceberg: IcebergResource, now: datetime
) -> tuple[dict[str, object], TrendResult]:
    """The plot (stored), table and trend of one camera's last ``days``; returns (metadata, trend)."""
    rows = iceberg.read_rows(cam.deployment, cam.name, now - timedelta(days=days), now + timedelta(hours=1))
    hours, history = offset_history(rows)
    trend = classify_trend(history)
    key = f"{scans.camera_root(cam.deployment, cam.name)}/drift/drift.png"
    title = f"{cam.key}: drift (deg) over {days:g} days, trend {trend.trend}"
    plot = drift_plot_png(hours, history.angles_deg, history.sigma_deg, title, cam.offset_threshold_deg)
    storage.put_bytes(key, plot)
    valid = np.flatnonzero(history.valid.all(axis=1))
    latest = {
        f"latest_{a}_deg": round(float(history.angles_deg[valid[-1], k]), 4) if valid.size else None
        for k, a in enumerate(_ANGLES)
    }
    metadata = {
        "trend": trend.trend,
        "trend_confidence": round(float(trend.confidence), 3),
        "trend_reason": trend.reason,
        **latest,
        "hours": len(hours),
        "failed_hours": int(len(hours) - valid.size),
        "plot": dg.MetadataValue.path(storage.uri(key)),
        "last_24_hours": dg.MetadataValue.md(_table(hours, history)),
    }
    return metadata, trend


@grouped_asset(
    CAMERA_DRIFT,
    camera_partitions,
    [
        dg.AssetDep(
            ORIENTATION_OFFSETS,
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=CAMERA_DIM),
        )
    ],
    "One camera's yaw/pitch/roll ± σ (degrees) over the last days as a plot and a table, and its trend.",
    group_name="reports",
    kinds={"iceberg", "python"},
)
def camera_drift(
    context: dg.AssetExecutionContext,
    config: CameraDriftConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    iceberg: IcebergResource,
):
    """The per-camera drift view, refreshed after each hour's estimates (sensor drift_after_estimate)."""
    fleet = devices.fleet()
    now = datetime.now(UTC)
    outcome = GroupedOutcome.empty()
    for key in context.partition_keys:
        try:
            metadata, trend = _camera_view(fleet.camera(key), config.days, storage, iceberg, now)
        except Exception as exc:  # one camera's view failing never hides the others'
            outcome.failed[key] = f"{type(exc).__name__}: {exc}"
            continue
        context.log.info(f"{key}: {metadata['hours']} hours, trend {trend.trend} ({trend.reason})")
        outcome.succeeded[key] = metadata
    yield from outcome.report(CAMERA_DRIFT)
