"""slack_digest (day): one Slack message per deployment summing up a UTC day: cameras OK / alerting / failing,
the worst offsets, and each camera's drift over the last week (the series camera_drift plots, as one
sparkline per angle) with its trend."""

from datetime import datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from geometry.trend import OffsetHistory, classify_trend
from ptz_pipeline.assets.drift import offset_history
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.assets.reports import daily_partitions
from ptz_pipeline.devices import CameraConfig, Deployment
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.results import ANGLES, within_threshold

TREND_DAYS = 7
SERIES_BUCKET_HOURS = 6
"""The digest's sparklines: one character per this many hours of the last TREND_DAYS days (their mean)."""
_LEVELS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray) -> str:
    """One character per value, scaled from the finite values' minimum (▁) to maximum (█); · where NaN."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "·" * len(values)
    low, span = finite.min(), finite.max() - finite.min()
    return "".join(
        "·" if not np.isfinite(v) else _LEVELS[round((v - low) / span * (len(_LEVELS) - 1)) if span else 3]
        for v in values
    )


def series_line(hours: list[datetime], history: OffsetHistory, end: datetime) -> str:
    """The camera's last TREND_DAYS days before ``end`` (UTC) as a sparkline per angle (means over
    SERIES_BUCKET_HOURS hours; degrees, relative to the latest R_align version, as camera_drift plots them)
    with each angle's range."""
    n = TREND_DAYS * 24 // SERIES_BUCKET_HOURS
    start = end - timedelta(days=TREND_DAYS)
    buckets = np.full((n, 3), np.nan)
    if hours:
        age = np.array([(t - start).total_seconds() / 3600 for t in hours]) // SERIES_BUCKET_HOURS
        for b in range(n):
            inside = history.angles_deg[age == b]
            count = np.isfinite(inside).sum(axis=0)
            buckets[b] = np.where(count > 0, np.nansum(inside, axis=0) / np.maximum(count, 1), np.nan)
    parts = []
    for i, name in enumerate(ANGLES):
        column = buckets[:, i]
        span = (
            f"{np.nanmin(column):+.3f}..{np.nanmax(column):+.3f}°" if np.isfinite(column).any() else "no data"
        )
        parts.append(f"{name} {sparkline(column)} {span}")
    return f"    {TREND_DAYS} days ({SERIES_BUCKET_HOURS} h means): " + " | ".join(parts)


def camera_line(cam: CameraConfig, day_rows: pd.DataFrame, trend: str) -> tuple[str, str]:
    """(status OK | ALERT | FAILING | NO DATA, one digest line) for one camera's rows of the day."""
    ok = day_rows[day_rows["success"].astype(bool)]
    failed = len(day_rows) - len(ok)
    if ok.empty:
        reason = day_rows["failure_logs"].dropna().iloc[-1] if failed else "no rows"
        status = "FAILING" if failed else "NO DATA"
        return (
            status,
            f"- {cam.name}: {status} ({failed}/{len(day_rows)} hours failed: {reason}), trend {trend}",
        )
    angles = ok[["yaw_offset", "pitch_offset", "roll_offset"]].to_numpy(dtype=float)
    worst = np.unravel_index(np.argmax(np.abs(angles)), angles.shape)
    over = sum(
        not within_threshold(r.pitch_offset, r.yaw_offset, r.roll_offset, True, cam.offset_threshold_deg)
        for r in ok.itertuples()
    )
    status = "ALERT" if over else "OK"
    name = ANGLES[worst[1]]
    hour = pd.Timestamp(ok["timestamp"].iloc[worst[0]]).tz_convert("UTC")
    line = (
        f"- {cam.name}: {status}{f' in {over} hours' if over else ''}, {len(ok)}/{len(day_rows)} hours "
        f"estimated, worst {name}={angles[worst]:+.3f}° at {hour:%H:%M} "
        f"(threshold {cam.offset_threshold_deg}°), trend {trend}"
    )
    return status, line


def digest_text(deployment: Deployment, day: datetime, lines: list[tuple[str, str]]) -> str:
    """The deployment's digest message for ``day`` (UTC) from (status, line) per camera."""
    counts = {s: sum(1 for status, _ in lines if status == s) for s in ("OK", "ALERT", "FAILING", "NO DATA")}
    head = f"\N{CLIPBOARD} Daily calibration digest: {deployment.name}, {day:%Y-%m-%d} (UTC)"
    summary = f"Cameras: {counts['OK']} OK, {counts['ALERT']} alerting, {counts['FAILING']} failing" + (
        f", {counts['NO DATA']} without data" if counts["NO DATA"] else ""
    )
    return "\n".join([head, summary, *(line for _, line in lines)])


@dg.asset(
    partitions_def=daily_partitions,
    group_name="reports",
    deps=[ORIENTATION_OFFSETS],
    kinds={"slack"},
)
def slack_digest(
    context: dg.AssetExecutionContext,
    devices: DevicesResource,
    iceberg: IcebergResource,
    slack: SlackResource,
) -> dg.MaterializeResult:
    """Per deployment, one message: the day's cameras OK / alerting / failing, the worst offset (degrees) per
    camera, and its last week as sparklines per angle with the trend (geometry.trend)."""
    window = context.partition_time_window
    rows = iceberg.read_rows(start=window.start - timedelta(days=TREND_DAYS - 1), end=window.end)
    stamps = pd.to_datetime(rows["timestamp"], utc=True)
    deliveries = {}
    for deployment in devices.fleet().deployments:
        lines = []
        for cam in deployment.cameras:
            mine = rows[(rows["deployment"] == deployment.name) & (rows["device_id"] == cam.name)]
            hours, history = offset_history(mine)
            status, line = camera_line(
                cam, mine[stamps[mine.index] >= pd.Timestamp(window.start)], classify_trend(history).trend
            )
            lines.append((status, f"{line}\n{series_line(hours, history, window.end)}"))
        deliveries[deployment.name] = slack.send_message(digest_text(deployment, window.start, lines))
    return dg.MaterializeResult(metadata={"deployments": dg.MetadataValue.json(deliveries)})
