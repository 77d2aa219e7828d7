"""camera_drift (camera): one camera's drift over the last days, the per-camera view users read, and its trend
(stable, step, creep, oscillation; geometry.trend).

Each row's offsets are relative to the R_align version in use at its hour (ptz_pipeline.proposals): applying a
proposal makes them fall back to ≈ 0 although the mount did not move. The plot and the trend therefore read
the series re-expressed relative to ONE version, the latest (:class:`DriftSeries`), with every R_align and
reference scan version change marked; the table shows the offsets as reported, with their versions."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from geometry.rotations import drift_angles, drift_matrix
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
from ptz_pipeline.results import ANGLES, parse_r_align_correction

CAMERA_DRIFT = dg.AssetKey("camera_drift")
_VERSION_COLUMNS = ("r_align_version", "reference_version", "r_align_correction")


class CameraDriftConfig(dg.Config):
    """How much history the view shows and the trend is judged on (days)."""

    days: float = 7.0


def _version(value: object) -> int | None:
    """A row's version column as an int (None for a null / NaN cell)."""
    return None if value is None or pd.isna(value) else int(value)


@dataclass(frozen=True)
class DriftSeries:
    """One camera's rows as a drift series (degrees, UTC hours), by time.

    ``reported``: the offsets as written, each relative to the R_align version in use at its hour
    (``r_align_versions``). ``history``: the same hours re-expressed relative to ONE R_align version,
    ``r_align_version`` (the latest successful row's), as that version would have reported them: the drift
    since the reference scan is ``Δ = C_row · O_row`` (O_row the reported offsets, C_row the correction the
    row's R_align version applies for its reference scan, identity when none); relative to the latest version
    it is ``C_latest(ref)⁻¹ · Δ``, with ``C_latest(ref)`` that version's correction for the row's reference
    scan (known from the rows of that version; identity when it applies none). Applying a proposal therefore
    shows no step in ``history``, while a real movement of the mount does. The corrections come from the rows'
    ``r_align_correction`` text (4 decimals: at most 0.0001° off); σ are kept (a constant rotation).
    Failed hours are NaN rows, so a camera that stops answering never looks settled.
    """

    hours: list[datetime]
    history: OffsetHistory
    reported: OffsetHistory
    r_align_versions: list[int | None]
    reference_versions: list[int | None]
    r_align_version: int | None

    def version_changes(self) -> list[tuple[datetime, str]]:
        """(first hour, label) of each R_align or reference scan version after the first one in the series."""
        changes = []
        for i in range(1, len(self.hours)):
            for name, column in (("R_align", self.r_align_versions), ("reference", self.reference_versions)):
                previous = next((v for v in column[i - 1 :: -1] if v is not None), None)
                if column[i] is not None and previous is not None and column[i] != previous:
                    changes.append((self.hours[i], f"{name} v{column[i]}"))
        return changes


def drift_series(rows: pd.DataFrame) -> DriftSeries:
    """The :class:`DriftSeries` of one camera's calibration_results rows (any order)."""
    rows = rows.sort_values("timestamp")
    hours = [t.to_pydatetime().astimezone(UTC) for t in pd.to_datetime(rows["timestamp"], utc=True)]
    n = len(rows)
    ok = rows["success"].astype(bool).to_numpy()
    angles = np.where(ok[:, None], rows[[f"{a}_offset" for a in ANGLES]].to_numpy(dtype=float), np.nan)
    sigma = np.where(ok[:, None], rows[[f"sigma_{a}" for a in ANGLES]].to_numpy(dtype=float), np.nan)
    column = {name: rows[name].tolist() if name in rows else [None] * n for name in _VERSION_COLUMNS}
    r_align = [_version(v) for v in column["r_align_version"]]
    reference = [_version(v) for v in column["reference_version"]]
    corrections = [parse_r_align_correction(c) for c in column["r_align_correction"]]
    estimated = np.flatnonzero(ok & np.isfinite(angles).all(axis=1))
    target = r_align[estimated[-1]] if estimated.size else None
    latest: dict[int | None, np.ndarray] = {
        reference[i]: drift_matrix(*corrections[i])
        for i in range(n)
        if r_align[i] == target and corrections[i] is not None
    }
    relative = angles.copy()
    for i in estimated:
        if corrections[i] is None and reference[i] not in latest:
            continue
        D = (drift_matrix(*corrections[i]) if corrections[i] else np.eye(3)) @ drift_matrix(*angles[i])
        relative[i] = drift_angles(latest.get(reference[i], np.eye(3)).T @ D)
    t = np.array([h.timestamp() / 3600.0 for h in hours])
    return DriftSeries(
        hours=hours,
        history=OffsetHistory(t, relative, sigma),
        reported=OffsetHistory(t, angles, sigma),
        r_align_versions=r_align,
        reference_versions=reference,
        r_align_version=target,
    )


def offset_history(rows: pd.DataFrame) -> tuple[list[datetime], OffsetHistory]:
    """(UTC hours, OffsetHistory in hours since the Unix epoch) of one camera's calibration_results rows,
    relative to the latest R_align version (:class:`DriftSeries` ``history``)."""
    series = drift_series(rows)
    return series.hours, series.history


def _table(series: DriftSeries, last: int = 24) -> str:
    """Markdown table of the last ``last`` hours as reported (degrees, 4 decimals, relative to the R_align
    version of the hour) with that version and its correction."""
    lines = [
        "| hour (UTC) | yaw ° | pitch ° | roll ° | R_align | reference |",
        "|---|---|---|---|---|---|",
    ]
    reported = series.reported
    rows = zip(
        series.hours,
        reported.angles_deg,
        reported.sigma_deg,
        series.r_align_versions,
        series.reference_versions,
        strict=True,
    )
    for t, a, s, r_align, reference in list(rows)[-last:][::-1]:
        cells = [f"{v:+.4f} ± {e:.4f}" if np.isfinite(v) else "failed" for v, e in zip(a, s, strict=True)]
        cells += ["" if r_align is None else f"v{r_align}", "" if reference is None else f"v{reference}"]
        lines.append(f"| {t:%Y-%m-%d %H:%M} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _camera_view(
    cam: CameraConfig, days: float, storage: ObjectStorageResource, iceberg: IcebergResource, now: datetime
) -> tuple[dict[str, object], TrendResult]:
    """The plot (stored), table and trend of one camera's last ``days``; returns (metadata, trend)."""
    rows = iceberg.read_rows(cam.deployment, cam.name, now - timedelta(days=days), now + timedelta(hours=1))
    series = drift_series(rows)
    history = series.history
    trend = classify_trend(history)
    key = f"{scans.camera_root(cam.deployment, cam.name)}/drift/drift.png"
    relative = "" if series.r_align_version is None else f" relative to R_align v{series.r_align_version}"
    title = f"{cam.key}: drift (deg){relative} over {days:g} days, trend {trend.trend}"
    changes = series.version_changes()
    plot = drift_plot_png(
        series.hours, history.angles_deg, history.sigma_deg, title, cam.offset_threshold_deg, marks=changes
    )
    storage.put_bytes(key, plot)
    valid = np.flatnonzero(series.reported.valid.all(axis=1))
    latest = {
        f"latest_{a}_deg": round(float(series.reported.angles_deg[valid[-1], k]), 4) if valid.size else None
        for k, a in enumerate(ANGLES)
    }
    metadata = {
        "trend": trend.trend,
        "trend_confidence": round(float(trend.confidence), 3),
        "trend_reason": trend.reason,
        **latest,
        "relative_to_r_align_version": series.r_align_version,
        "version_changes": dg.MetadataValue.json([{"hour": t.isoformat(), "version": v} for t, v in changes]),
        "hours": len(series.hours),
        "failed_hours": int(len(series.hours) - valid.size),
        "plot": dg.MetadataValue.path(storage.uri(key)),
        "last_24_hours": dg.MetadataValue.md(_table(series)),
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
