"""IcebergResource: idempotent replace of camera-hour rows, filtered reads, schema, configured catalogs."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from ptz_pipeline.resources.iceberg import TABLE_NAME, IcebergResource
from ptz_pipeline.results import COLUMNS

HOUR = datetime(2026, 11, 23, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_configured_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a developer's ~/.pyiceberg.yaml or PYICEBERG_* environment out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYICEBERG_HOME", raising=False)
    for name in [n for n in os.environ if n.upper().startswith("PYICEBERG_")]:
        monkeypatch.delenv(name)


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
