"""calibration_results_maintenance: the Iceberg table's upkeep (compaction, snapshot expiry), scheduled daily.

Hourly writes leave one small data file per site-hour (and two snapshots per write: delete + append); a day
of a site is one partition, so compacting a past day rewrites only that day-site's files.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.resources.iceberg import IcebergResource


class MaintenanceConfig(dg.Config):
    """Run config of calibration_results_maintenance."""

    expire_older_than_days: float = Field(
        default=7.0, gt=0, description="Snapshots older than this (days) are expired (time travel is lost)."
    )
    keep_last_snapshots: int = Field(
        default=100, ge=1, description="The newest snapshots kept whatever their age (the current always)."
    )
    compact_min_files: int = Field(
        default=2,
        ge=2,
        description="A partition (a UTC day of a site) with this many data files is rewritten.",
    )


@dg.asset(group_name="maintenance", deps=[ORIENTATION_OFFSETS], kinds={"iceberg"})
def calibration_results_maintenance(
    context: dg.AssetExecutionContext, config: MaintenanceConfig, iceberg: IcebergResource
) -> dg.MaterializeResult:
    """Compact calibration_results' small files of the days that ended (same rows, one file per day-site
    partition), then expire snapshots older than ``expire_older_than_days`` except the newest
    ``keep_last_snapshots``, deleting the files only they referenced. A partition a writer changed meanwhile
    is left for the next run."""
    now = datetime.now(UTC)
    compaction = iceberg.compact(config.compact_min_files, until=now)
    older_than = now - timedelta(days=config.expire_older_than_days)
    expiry = iceberg.expire_snapshots(older_than, config.keep_last_snapshots)
    if compaction.skipped:
        context.log.warning(f"partitions left for the next run (changed meanwhile): {compaction.skipped}")
    return dg.MaterializeResult(
        metadata={
            "data_files_before": compaction.files_before,
            "data_files_after": compaction.files_after,
            "partitions_compacted": len(compaction.compacted),
            "partitions_skipped": dg.MetadataValue.json(compaction.skipped),
            "snapshots_expired": expiry.expired,
            "snapshots_kept": expiry.kept,
            "files_deleted": expiry.files_deleted,
            "expired_before": dg.MetadataValue.timestamp(older_than),
        }
    )
