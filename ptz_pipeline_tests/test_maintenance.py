"""calibration_results maintenance: compaction keeps every row and merges files, a concurrent writer is never
overwritten, snapshot expiry keeps the newest and deletes what only expired snapshots used; on SQLite and on
Glue + S3 (moto's server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
from pyiceberg.table import Table

from ptz_pipeline.assets.maintenance import calibration_results_maintenance
from ptz_pipeline.resources.iceberg import CALIBRATION_SCHEMA, IcebergResource, SitePartition
from ptz_pipeline_tests.test_iceberg import DAY, HOUR, create_old_table, data_files, row

pytest_plugins = ["ptz_pipeline_tests.servers", "ptz_pipeline_tests.iceberg_catalogs"]

SITE_A = ("site-a__cam-1", "site-a__cam-2")
SITE_B = ("site-b__cam-1",)


def hourly_runs(iceberg: IcebergResource, cameras: tuple[str, ...], hours: range, day: int = 0) -> list[dict]:
    """One replace_rows per site-hour, as the hourly runs write; returns the rows written."""
    written = []
    for h in hours:
        rows = [row(cam, HOUR + timedelta(days=day, hours=h), yaw=0.01 * h) for cam in cameras]
        iceberg.replace_rows([r["partition_key"] for r in rows], rows)
        written += rows
    return written


def stored(iceberg: IcebergResource) -> pd.DataFrame:
    """Every stored row, by partition key (all columns, written_at included)."""
    return iceberg.read_rows().sort_values("partition_key", ignore_index=True)


def files_by_partition(table: Table) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for task in table.scan().plan_files():
        key = (task.file.partition[0], task.file.partition[1])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_compaction_merges_each_closed_day_of_a_site_and_keeps_every_row(
    iceberg_any: IcebergResource,
) -> None:
    written = hourly_runs(iceberg_any, SITE_A, range(6)) + hourly_runs(iceberg_any, SITE_B, range(4))
    written += hourly_runs(iceberg_any, SITE_A, range(2), day=1)  # the next day, still being written
    rerun = row(SITE_A[0], HOUR + timedelta(hours=2), yaw=-0.7, run_id="rerun")
    iceberg_any.replace_rows([rerun["partition_key"]], [rerun])
    before = stored(iceberg_any)
    assert len(before) == 6 * 2 + 4 + 2 * 2 and before.partition_key.is_unique
    assert before.set_index("partition_key").loc[rerun["partition_key"], "yaw_offset"] == -0.7
    assert files_by_partition(iceberg_any.ensure_table()) == {
        (DAY, "site-a"): 7,  # 6 hours + the re-run's rewrite (one hour's file replaced by two)
        (DAY, "site-b"): 4,
        (DAY + 1, "site-a"): 2,
    }

    result = iceberg_any.compact(min_files=2, until=HOUR + timedelta(days=1))  # day DAY + 1 not yet ended
    assert (result.files_before, result.files_after) == (13, 4)
    assert result.compacted == ["2026-11-23/site-a", "2026-11-23/site-b"] and result.skipped == []
    assert files_by_partition(iceberg_any.ensure_table()) == {
        (DAY, "site-a"): 1,
        (DAY, "site-b"): 1,
        (DAY + 1, "site-a"): 2,
    }
    pd.testing.assert_frame_equal(stored(iceberg_any), before)

    again = iceberg_any.compact(min_files=2)  # every day now: only the second day is left to merge
    assert (again.files_before, again.files_after, again.compacted) == (4, 3, ["2026-11-24/site-a"])
    assert iceberg_any.compact(min_files=2).compacted == []  # nothing left: idempotent
    pd.testing.assert_frame_equal(stored(iceberg_any), before)


def test_compaction_moves_rows_of_an_older_spec_into_the_partitions(iceberg_any: IcebergResource) -> None:
    """Rows in a file written before the table was partitioned are rewritten into day/site files."""
    old = [row(cam, HOUR + timedelta(days=d)) for cam in (*SITE_A, *SITE_B) for d in (0, 1)]
    create_old_table(iceberg_any, CALIBRATION_SCHEMA, old)
    hourly_runs(iceberg_any, SITE_B, range(3, 5))
    before = stored(iceberg_any)
    assert sorted({spec for spec, _ in data_files(iceberg_any.ensure_table())}) == [0, 1]
    result = iceberg_any.compact(min_files=2)
    # (DAY, site-a) first: its rewrite also moves the old file's other rows into their partitions' files,
    # so (DAY, site-b) then has 3 files to merge and the next day's partitions one each
    assert result.compacted == ["2026-11-23/site-a", "2026-11-23/site-b"] and result.skipped == []
    assert (result.files_before, result.files_after) == (3, 4)
    table = iceberg_any.ensure_table()
    assert {spec for spec, _ in data_files(table)} == {1}
    assert files_by_partition(table) == {k: 1 for k in [(DAY, "site-a"), (DAY, "site-b"), (DAY + 1, "site-a"),
                                                       (DAY + 1, "site-b")]}  # fmt: skip
    pd.testing.assert_frame_equal(stored(iceberg_any), before)


@pytest.mark.parametrize("writer", ["adds an hour", "re-runs an hour"])
def test_a_writer_between_plan_and_commit_wins(iceberg_any: IcebergResource, writer: str) -> None:
    """Compaction planned on a table state a writer then changed commits nothing (the writer's row is
    neither lost nor doubled, no stale value comes back); the next run compacts."""
    hourly_runs(iceberg_any, SITE_A, range(3))
    stale = iceberg_any.ensure_table()
    if writer == "adds an hour":
        hourly_runs(iceberg_any, SITE_A, range(3, 4))
    else:
        rerun = [row(cam, HOUR + timedelta(hours=1), yaw=-0.5, run_id="rerun") for cam in SITE_A]
        iceberg_any.replace_rows([r["partition_key"] for r in rerun], rerun)
    expected = stored(iceberg_any)
    assert iceberg_any.compact_partition(SitePartition(DAY, "site-a"), table=stale) == "conflict"
    pd.testing.assert_frame_equal(stored(iceberg_any), expected)
    assert iceberg_any.compact_partition(SitePartition(DAY, "site-a")) == "compacted"
    pd.testing.assert_frame_equal(stored(iceberg_any), expected)
    assert files_by_partition(iceberg_any.ensure_table()) == {(DAY, "site-a"): 1}


def test_expiry_keeps_the_newest_and_deletes_what_only_expired_snapshots_read(
    iceberg_any: IcebergResource,
) -> None:
    hourly_runs(iceberg_any, SITE_A, range(4))
    replaced = {path for _, path in data_files(iceberg_any.ensure_table())}
    iceberg_any.compact(min_files=2)  # the 4 hourly files are now read by old snapshots only
    table = iceberg_any.ensure_table()
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    current = {path for _, path in data_files(table)}
    assert not current & replaced
    rows = stored(iceberg_any)

    nothing = iceberg_any.expire_snapshots(datetime.fromtimestamp(snapshots[0].timestamp_ms / 1000, UTC), 1)
    assert (nothing.expired, nothing.kept, nothing.files_deleted) == (0, len(snapshots), 0)

    result = iceberg_any.expire_snapshots(datetime.now(UTC) + timedelta(seconds=1), keep_last=2)
    table = iceberg_any.ensure_table()
    assert result.expired == len(snapshots) - 2
    assert [s.snapshot_id for s in table.metadata.snapshots] == [s.snapshot_id for s in snapshots[-2:]]
    assert all(not table.io.new_input(path).exists() for path in replaced)
    assert all(table.io.new_input(path).exists() for path in current)
    assert result.files_deleted >= len(replaced) + len(snapshots) - 2  # data files + manifest lists
    pd.testing.assert_frame_equal(stored(iceberg_any), rows)
    with pytest.raises(ValueError, match="keep_last must be at least 1"):
        iceberg_any.expire_snapshots(datetime.now(UTC), keep_last=0)


def test_the_maintenance_asset_reports_what_it_did(iceberg_any: IcebergResource) -> None:
    hourly_runs(iceberg_any, SITE_A, range(3))
    hourly_runs(iceberg_any, SITE_B, range(2))
    rows = stored(iceberg_any)
    snapshots = len(iceberg_any.ensure_table().metadata.snapshots)
    config = {"expire_older_than_days": 1e-9, "keep_last_snapshots": 1, "compact_min_files": 2}
    result = dg.materialize(
        [calibration_results_maintenance],
        resources={"iceberg": iceberg_any},
        run_config={"ops": {"calibration_results_maintenance": {"config": config}}},
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("calibration_results_maintenance")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["data_files_before"], metadata["data_files_after"]) == (5, 2)
    assert metadata["partitions_compacted"] == 2 and metadata["partitions_skipped"] == []
    # every snapshot from before the run expired; the compaction's 2 commits of 2 snapshots each (delete +
    # append) are newer than the cutoff (the run's start less 1e-9 days), so they stay
    assert (metadata["snapshots_expired"], metadata["snapshots_kept"]) == (snapshots, 4)
    assert metadata["files_deleted"] > 5
    pd.testing.assert_frame_equal(stored(iceberg_any), rows)


def test_the_maintenance_runs_daily_on_its_own_job() -> None:
    from ptz_pipeline.definitions import defs

    schedule = defs.get_schedule_def("iceberg_maintenance_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(schedule.job_name)
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("calibration_results_maintenance")}
