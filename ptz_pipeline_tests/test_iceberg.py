"""IcebergResource: idempotent replace of camera-hour rows, filtered reads, schema and partition evolution,
configured catalogs (SQLite, and Glue + S3 on moto's server)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from ptz_pipeline.resources import iceberg as iceberg_module
from ptz_pipeline.resources.iceberg import CALIBRATION_SCHEMA, TABLE_NAME, IcebergResource
from ptz_pipeline.results import COLUMNS, ResultRow
from ptz_pipeline_tests.iceberg_catalogs import isolate_from_pyiceberg_config

pytest_plugins = ["ptz_pipeline_tests.servers", "ptz_pipeline_tests.iceberg_catalogs"]

HOUR = datetime(2026, 11, 23, 1, tzinfo=UTC)
DAY = (HOUR.date() - date(1970, 1, 1)).days
"""HOUR's day as Iceberg's day transform writes it (days since 1970-01-01)."""


@pytest.fixture(autouse=True)
def no_configured_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a developer's ~/.pyiceberg.yaml or PYICEBERG_* environment out of the tests."""
    isolate_from_pyiceberg_config(monkeypatch, tmp_path)


@pytest.fixture
def iceberg(tmp_path: Path) -> IcebergResource:
    return IcebergResource(warehouse_dir=str(tmp_path / "warehouse"))


def row(camera: str, hour: datetime, yaw: float | None = 0.3, **overrides: Any) -> dict[str, Any]:
    """A result row for camera ``<deployment>__<camera>`` at ``hour``; partition key as Dagster writes it."""
    deployment, device_id = camera.split("__")
    values = {
        "deployment": deployment,
        "device_id": device_id,
        "timestamp": hour,
        "pitch_offset": None if yaw is None else 0.2,
        "yaw_offset": yaw,
        "roll_offset": None if yaw is None else 0.1,
        "mode": "active",
        "capture_positions": [(0.0, -10.0, 0.0), {"pan": 40.0, "tilt": -15.0, "zoom": 0.5}],
        "files_location": f"s3://bucket/{deployment}/{device_id}/query_scan/{hour:%Y-%m-%dT%H:%M:%SZ}/",
        "success": yaw is not None,
        "failure_logs": None if yaw is not None else "camera unreachable",
        "sigma_yaw": 0.01,
        "sigma_pitch": 0.02,
        "sigma_roll": 0.03,
        "inliers": 120,
        "n_frames": 2,
        "partition_key": f"{camera}|{hour:%Y-%m-%d-%H:%M}",
        "run_id": "run-1",
    }
    return values | overrides


def test_write_twice_replaces_instead_of_duplicating(iceberg: IcebergResource) -> None:
    rows = [row("site-a__cam-1", HOUR), row("site-a__cam-2", HOUR)]
    keys = [r["partition_key"] for r in rows]
    iceberg.replace_rows(keys, rows)
    commits_before = len(iceberg.ensure_table().metadata.metadata_log)
    iceberg.replace_rows(keys, [row("site-a__cam-1", HOUR, yaw=1.5, run_id="run-2"), rows[1]])
    assert (
        len(iceberg.ensure_table().metadata.metadata_log) == commits_before + 1
    )  # delete + append: one commit
    frame = iceberg.read_rows()
    assert len(frame) == 2
    cam1 = frame[frame.device_id == "cam-1"].iloc[0]
    assert cam1.yaw_offset == 1.5
    assert cam1.run_id == "run-2"


def test_replaces_only_the_given_partitions(iceberg: IcebergResource) -> None:
    hours = [HOUR + timedelta(hours=h) for h in range(3)]
    rows = [row(cam, h) for cam in ("site-a__cam-1", "site-b__cam-1") for h in hours]
    iceberg.replace_rows([r["partition_key"] for r in rows], rows)
    target = row("site-a__cam-1", hours[1], yaw=None)  # this camera-hour failed on the re-run
    iceberg.replace_rows([target["partition_key"]], [target])
    frame = iceberg.read_rows()
    assert len(frame) == 6
    changed = frame[frame.partition_key == target["partition_key"]]
    assert len(changed) == 1
    assert not changed.iloc[0].success
    assert changed.iloc[0].failure_logs == "camera unreachable"
    assert changed[["yaw_offset", "pitch_offset", "roll_offset"]].isna().all(axis=None)
    assert frame[frame.partition_key != target["partition_key"]].success.all()


def test_empty_rows_delete_the_given_partitions(iceberg: IcebergResource) -> None:
    rows = [row("site-a__cam-1", HOUR), row("site-a__cam-2", HOUR)]
    iceberg.replace_rows([r["partition_key"] for r in rows], rows)
    iceberg.replace_rows([rows[0]["partition_key"]], [])
    assert iceberg.read_rows().device_id.tolist() == ["cam-2"]


def test_concurrent_site_runs_lose_no_rows(tmp_path: Path) -> None:
    """Three sites write camera-hours at once (own resources, one SQLite catalog): each row lands once."""
    IcebergResource(warehouse_dir=str(tmp_path / "wh")).ensure_table()
    errors: list[BaseException] = []

    def site_run(site: str) -> None:
        resource = IcebergResource(warehouse_dir=str(tmp_path / "wh"))
        try:
            for hour in range(4):
                rows = [row(f"{site}__cam-{i}", HOUR + timedelta(hours=hour)) for i in range(3)]
                resource.replace_rows([r["partition_key"] for r in rows], rows)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=site_run, args=(f"site-{c}",)) for c in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    frame = IcebergResource(warehouse_dir=str(tmp_path / "wh")).read_rows()
    assert len(frame) == 3 * 4 * 3
    assert frame.partition_key.is_unique


def test_read_rows_filters(iceberg: IcebergResource) -> None:
    hours = [HOUR + timedelta(hours=h) for h in range(4)]
    cameras = ("site-a__cam-1", "site-a__cam-2", "site-b__cam-1")
    rows = [row(cam, h) for cam in cameras for h in hours]
    iceberg.replace_rows([r["partition_key"] for r in rows], rows)
    assert len(iceberg.read_rows(deployment="site-a")) == 8
    assert len(iceberg.read_rows(device_id="cam-1")) == 8
    one = iceberg.read_rows(deployment="site-b", device_id="cam-1", start=hours[1], end=hours[3])
    assert one.timestamp.tolist() == [pd.Timestamp(hours[1]), pd.Timestamp(hours[2])]  # end is exclusive
    four_utc_in_israel = datetime(2026, 11, 23, 6, tzinfo=ZoneInfo("Asia/Jerusalem"))  # UTC+2 in November
    assert iceberg.read_rows(start=four_utc_in_israel).timestamp.tolist() == [pd.Timestamp(hours[3])] * 3
    assert len(iceberg.read_rows(end=hours[1])) == 3
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        iceberg.read_rows(start=datetime(2026, 11, 23, 1))


def test_read_before_any_write_is_empty_with_columns(iceberg: IcebergResource) -> None:
    frame = iceberg.read_rows(deployment="site-a")
    assert frame.empty
    assert tuple(frame.columns) == COLUMNS


def test_schema_and_values_round_trip(iceberg: IcebergResource) -> None:
    written = row("site-a__cam-1", HOUR)
    iceberg.replace_rows([written["partition_key"]], [written])
    schema = iceberg.ensure_table().schema().as_arrow()
    assert schema.names == list(COLUMNS)
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("written_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("capture_positions").type.value_type.names == ["pan", "tilt", "zoom"]
    for name in ("pitch_offset", "yaw_offset", "roll_offset", "sigma_yaw", "sigma_pitch", "sigma_roll"):
        assert schema.field(name).type == pa.float64()
    assert schema.field("inliers").type == pa.int32()
    assert schema.field("success").type == pa.bool_()
    got = iceberg.read_rows().iloc[0].to_dict()
    assert got["capture_positions"].tolist() == [
        {"pan": 0.0, "tilt": -10.0, "zoom": 0.0},
        {"pan": 40.0, "tilt": -15.0, "zoom": 0.5},
    ]
    assert got["timestamp"] == pd.Timestamp(HOUR)
    assert abs(got["written_at"] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=1)
    for name in (
        "deployment",
        "device_id",
        "yaw_offset",
        "mode",
        "files_location",
        "partition_key",
        "inliers",
    ):
        assert got[name] == written[name]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "mode"}, r"row 0 \(partition_key='site-a__cam-1\|2026-11-23-01:00'\): mode: Field requi"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
        ({"timestamp": datetime(2026, 11, 23, 1)}, "timestamp: Input should have timezone info"),
        ({"deployment": None}, "deployment: Input should be a valid string"),
        ({"mode": "sometimes"}, "mode: Input should be 'active' or 'passive'"),
        ({"partition_key": "site-z__cam-9|2026-11-23-01:00"}, "not among the keys replaced"),
        ({"capture_positions": [(1.0, 2.0)]}, "capture_positions.0: Input should be a valid dictionary"),
        ({"inliers": "many"}, "inliers: Input should be a valid integer"),
    ],
)
def test_invalid_rows_are_rejected_before_writing(
    iceberg: IcebergResource, change: dict[str, Any], message: str
) -> None:
    good = row("site-a__cam-1", HOUR)
    bad = {k: v for k, v in good.items() if k != change.get("drop")} | {
        k: v for k, v in change.items() if k != "drop"
    }
    with pytest.raises(ValueError, match=message):
        iceberg.replace_rows([good["partition_key"]], [bad])
    assert iceberg.read_rows().empty


def test_older_table_gains_the_new_columns(iceberg: IcebergResource, tmp_path: Path) -> None:
    """A table with only the seed's columns (Athena era) is evolved, and old rows read back with nulls."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType, TimestamptzType

    iceberg.catalog.create_namespace("ptz")
    seed = iceberg.catalog.create_table(
        ("ptz", TABLE_NAME),
        Schema(
            NestedField(1, "deployment", StringType()),
            NestedField(2, "device_id", StringType()),
            NestedField(3, "timestamp", TimestamptzType()),
        ),
    )
    seed.append(pa.table({"deployment": ["old"], "device_id": ["cam"], "timestamp": [HOUR]}))
    new = row("site-a__cam-1", HOUR)
    iceberg.replace_rows([new["partition_key"]], [new])
    frame = iceberg.read_rows()
    assert set(COLUMNS) <= set(frame.columns)
    assert frame.deployment.tolist() == ["old", "site-a"]
    assert frame.partition_key.isna().tolist() == [True, False]


def test_default_catalog_is_sqlite_under_warehouse_dir(iceberg: IcebergResource, tmp_path: Path) -> None:
    written = row("site-a__cam-1", HOUR)
    iceberg.replace_rows([written["partition_key"]], [written])
    db = tmp_path / "warehouse" / "catalog.db"
    with sqlite3.connect(db) as connection:
        tables = connection.execute("select table_namespace, table_name from iceberg_tables").fetchall()
    assert tables == [("ptz", TABLE_NAME)]


@pytest.mark.parametrize("source", ["environment", "pyiceberg.yaml"])
def test_configured_catalog_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> None:
    """pyiceberg's own configuration of catalog 'ptz' wins over the SQLite default under warehouse_dir."""
    other = tmp_path / "configured"
    other.mkdir()
    uri, warehouse = f"sqlite:///{other / 'other.db'}", other.as_uri()
    if source == "environment":
        monkeypatch.setenv("PYICEBERG_CATALOG__PTZ__TYPE", "sql")
        monkeypatch.setenv("PYICEBERG_CATALOG__PTZ__URI", uri)
        monkeypatch.setenv("PYICEBERG_CATALOG__PTZ__WAREHOUSE", warehouse)
    else:
        (other / ".pyiceberg.yaml").write_text(
            f"catalog:\n  ptz:\n    type: sql\n    uri: {uri}\n    warehouse: {warehouse}\n"
        )
        monkeypatch.setenv("PYICEBERG_HOME", str(other))
    iceberg = IcebergResource(warehouse_dir=str(tmp_path / "unused"))
    written = row("site-a__cam-1", HOUR)
    iceberg.replace_rows([written["partition_key"]], [written])
    assert not (tmp_path / "unused").exists()
    direct = SqlCatalog("ptz", uri=uri, warehouse=warehouse)
    assert direct.load_table(("ptz", TABLE_NAME)).scan().to_arrow().num_rows == 1


def test_resource_in_an_asset(tmp_path: Path) -> None:
    @dg.asset
    def results(iceberg: IcebergResource) -> None:
        written = row("site-a__cam-1", HOUR)
        iceberg.replace_rows([written["partition_key"]], [written])

    resource = IcebergResource(warehouse_dir=str(tmp_path / "wh"))
    assert dg.materialize([results], resources={"iceberg": resource}).success
    assert len(IcebergResource(warehouse_dir=str(tmp_path / "wh")).read_rows()) == 1


def data_files(table: Table) -> list[tuple[int, str]]:
    """(partition spec id, path) of each data file of the table's current snapshot, sorted."""
    return sorted((task.file.spec_id, task.file.file_path) for task in table.scan().plan_files())


def create_old_table(iceberg: IcebergResource, schema: Schema, rows: list[dict[str, Any]]) -> Table:
    """The table as an older version made it: unpartitioned, ``schema``, ``rows`` appended."""
    iceberg.catalog.create_namespace_if_not_exists(iceberg.namespace)
    table = iceberg.catalog.create_table(iceberg.identifier, schema=schema)
    records = [
        {k: v for k, v in ResultRow.parse(r).record().items() if k in schema.column_names} for r in rows
    ]
    table.append(pa.Table.from_pylist(records, schema=table.schema().as_arrow()))
    return table


def test_new_table_is_partitioned_by_day_and_deployment(iceberg_any: IcebergResource) -> None:
    cameras = ("site-a__cam-1", "site-a__cam-2", "site-b__cam-1")
    rows = [row(cam, HOUR + timedelta(hours=h)) for cam in cameras for h in (0, 1, 24)]
    iceberg_any.replace_rows([r["partition_key"] for r in rows], rows)
    table = iceberg_any.ensure_table()
    spec = [
        (f.name, str(f.transform), table.schema().find_column_name(f.source_id)) for f in table.spec().fields
    ]
    assert spec == [("timestamp_day", "day", "timestamp"), ("deployment", "identity", "deployment")]
    partitions = {(task.file.partition[0], task.file.partition[1]) for task in table.scan().plan_files()}
    assert partitions == {(DAY, "site-a"), (DAY, "site-b"), (DAY + 1, "site-a"), (DAY + 1, "site-b")}
    site_b_day = table.scan(row_filter="deployment = 'site-b' and timestamp < '2026-11-24T00:00:00+00:00'")
    assert [task.file.partition[1] for task in site_b_day.plan_files()] == ["site-b"]  # files pruned
    assert len(iceberg_any.read_rows()) == 9


def test_unpartitioned_table_gets_the_spec_on_open_and_keeps_its_files(iceberg_any: IcebergResource) -> None:
    """A table an older version made (no partition spec) is evolved on open without rewriting a file; its
    rows still read, and re-running one of its partitions replaces that row (no duplicate)."""
    old = [
        row("site-a__cam-1", HOUR),
        row("site-a__cam-1", HOUR + timedelta(hours=1)),
        row("site-b__cam-1", HOUR),
    ]
    files_before = data_files(create_old_table(iceberg_any, CALIBRATION_SCHEMA, old))
    assert [spec_id for spec_id, _ in files_before] == [0]
    table = iceberg_any.ensure_table()
    assert [f.name for f in table.spec().fields] == ["timestamp_day", "deployment"]
    assert table.spec().spec_id == 1
    assert data_files(table) == files_before  # metadata only: the old file is not rewritten
    commits = len(table.metadata.metadata_log)
    assert len(iceberg_any.ensure_table().metadata.metadata_log) == commits  # evolved once
    assert sorted(iceberg_any.read_rows().partition_key) == sorted(r["partition_key"] for r in old)

    rerun = row("site-a__cam-1", HOUR, yaw=1.5, run_id="run-2")
    new = row("site-a__cam-1", HOUR + timedelta(hours=2))
    iceberg_any.replace_rows([rerun["partition_key"], new["partition_key"]], [rerun, new])
    frame = iceberg_any.read_rows()
    assert frame.partition_key.is_unique
    assert sorted(frame.partition_key) == sorted(r["partition_key"] for r in [*old, new])
    assert frame.set_index("partition_key").loc[rerun["partition_key"], "yaw_offset"] == 1.5
    assert frame.set_index("partition_key").loc[old[2]["partition_key"], "yaw_offset"] == 0.3
    assert {spec_id for spec_id, _ in data_files(iceberg_any.ensure_table())} == {
        1
    }  # rewritten under the spec
    iceberg_any.replace_rows([rerun["partition_key"]], [rerun])  # again: still one row per partition
    assert len(iceberg_any.read_rows()) == 4


def test_a_column_added_later_reads_null_in_old_rows(iceberg_any: IcebergResource) -> None:
    """A table made by a version without the newest column gains it (union_by_name); its old rows read back
    unchanged, the new column null, and every existing column keeps its field id."""
    newest = list(ResultRow.model_fields)[-1]
    older = Schema(*(f for f in CALIBRATION_SCHEMA.fields if f.name != newest))
    old_rows = [row("site-a__cam-1", HOUR), row("site-b__cam-1", HOUR, yaw=None)]
    ids_before = {f.name: f.field_id for f in create_old_table(iceberg_any, older, old_rows).schema().fields}
    new = row("site-a__cam-2", HOUR, **{newest: "yaw +0.1000 pitch +0.0000 roll +0.0000"})
    iceberg_any.replace_rows([new["partition_key"]], [new])
    schema = iceberg_any.ensure_table().schema()
    assert {name: schema.find_field(name).field_id for name in ids_before} == ids_before
    assert schema.column_names[-1] == newest and not schema.find_field(newest).required
    frame = iceberg_any.read_rows().set_index("partition_key")
    for old in old_rows:
        got = frame.loc[old["partition_key"]]
        assert pd.isna(got[newest])
        for name in ("success", "failure_logs", "yaw_offset", "sigma_roll", "inliers", "files_location"):
            assert got[name] == old[name] or (old[name] is None and pd.isna(got[name])), name
    assert frame.loc[new["partition_key"], newest] == new[newest]


def test_old_metadata_files_are_deleted_beyond_the_kept_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit writes a metadata file; beyond the kept versions the oldest are deleted, so the warehouse
    does not grow by one file per camera-hour commit forever. An older table gains the properties on open."""
    warehouse = tmp_path / "warehouse"
    iceberg = IcebergResource(warehouse_dir=str(warehouse))
    iceberg.catalog.create_namespace("ptz")
    iceberg.catalog.create_table(("ptz", TABLE_NAME), CALIBRATION_SCHEMA)  # as before the properties
    monkeypatch.setitem(iceberg_module.TABLE_PROPERTIES, "write.metadata.previous-versions-max", "2")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for h in range(6):
        written = row("site-a__cam-1", start + timedelta(hours=h))
        iceberg.replace_rows([written["partition_key"]], [written])
    table = iceberg.ensure_table()
    assert table.properties["write.metadata.delete-after-commit.enabled"] == "true"
    assert len(list(warehouse.rglob("*.metadata.json"))) == 3  # the current one and the 2 previous
    assert len(iceberg.read_rows()) == 6
