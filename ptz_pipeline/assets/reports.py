"""offsets_report (daily): the day's calibration_results as Excel + Parquet (the seed's report files)."""

import io

import dagster as dg
import pandas as pd

from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.results import DEFAULT_THRESHOLD_DEG, REPORT_COLUMNS, within_threshold

# end_offset=1: today's (partial) report can be exported too; the schedule exports yesterday's.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


def report_frames(rows: pd.DataFrame) -> pd.DataFrame:
    """Report table: one row per camera-hour, sorted; timestamps naive UTC (Excel has no time zones)."""
    df = rows.reindex(columns=list(REPORT_COLUMNS)).sort_values(["deployment", "device_id", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)
    return df.reset_index(drop=True)


def excel_bytes(df: pd.DataFrame, sheet: str = "offsets") -> bytes:
    buf = io.BytesIO()
    df.to_excel(buf, index=False, sheet_name=sheet)
    return buf.getvalue()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


@dg.asset(
    partitions_def=daily_partitions,
    group_name="reports",
    deps=[ORIENTATION_OFFSETS],
    kinds={"excel", "parquet"},
)
def offsets_report(
    context: dg.AssetExecutionContext,
    storage: ObjectStorageResource,
    iceberg: IcebergResource,
    devices: DevicesResource,
) -> dg.MaterializeResult:
    """``reports/offsets_<day>.xlsx`` and ``.parquet`` from the Iceberg table (all cameras, one UTC day)."""
    window = context.partition_time_window
    rows = iceberg.read_rows(start=window.start, end=window.end)
    df = report_frames(rows)
    day = window.start.strftime("%Y-%m-%d")
    storage.put_bytes(f"reports/offsets_{day}.xlsx", excel_bytes(df))
    storage.put_bytes(f"reports/offsets_{day}.parquet", parquet_bytes(df))
    thresholds = {(c.deployment, c.name): c.offset_threshold_deg for c in devices.fleet().cameras()}
    over = sum(
        not within_threshold(
            r.pitch_offset,
            r.yaw_offset,
            r.roll_offset,
            True,
            thresholds.get((r.deployment, r.device_id), DEFAULT_THRESHOLD_DEG),
        )
        for r in df[df["success"].astype(bool)].itertuples()
    )
    return dg.MaterializeResult(
        metadata={
            "rows": len(df),
            "alerts": over,
            "failed_estimates": int((~df["success"].astype(bool)).sum()) if len(df) else 0,
            "excel": dg.MetadataValue.path(storage.uri(f"reports/offsets_{day}.xlsx")),
            "parquet": dg.MetadataValue.path(storage.uri(f"reports/offsets_{day}.parquet")),
        }
    )
