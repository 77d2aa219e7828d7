"""Faults cost one camera-hour, never more, and never a good result. Each test injects one fault: a truncated
image or calibration file, a failed re-estimate of a good hour, a re-run of reported hours, a storage endpoint
that accepts and never answers, two Iceberg writers committing at once, a run killed and left STARTED."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
import pytest
import yaml
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema

from ptz_pipeline import versions
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import REPO_ROOT, calibrate_simulated, prepare_dagster_home
from ptz_pipeline.partitions import hour_key, hour_start
from ptz_pipeline.resources.iceberg import CALIBRATION_SCHEMA, TABLE_NAME, IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.results import ResultRow
from ptz_pipeline.scans import calibration_key, query_prefix, read_manifest
from ptz_pipeline_tests.test_iceberg import HOUR, no_configured_catalog, row  # noqa: F401 (fixture)
from ptz_pipeline_tests.test_pipeline import Pipeline, _camera, _write_devices

if TYPE_CHECKING:
    from ptz_pipeline_tests.servers import SlackServer

pytest_plugins = ["ptz_pipeline_tests.servers"]

CAMERA = "site-a__cam-1"
HOURS = [hour_key(datetime.now(UTC) - timedelta(hours=n)) for n in (4, 3, 2, 1)]
"""The first two are estimated by the fixture (good rows); the last two only captured."""


def posted(slack: SlackServer) -> list[str]:
    return [r.body["text"] for r in slack.requests if r.path == "/api/chat.postMessage"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory, slack_module_server: SlackServer) -> Pipeline:
    """One active simulated camera, calibrated; four hours captured, the first two estimated. Its threshold is
    tiny, so every estimate alerts."""
    tmp = tmp_path_factory.mktemp("faults")
    cam = _camera("cam-1", 4) | {"offset_threshold_deg": 0.001}
    slack = SlackResource(access_token=slack_module_server.token, base_url=slack_module_server.base_url)
    p = Pipeline(tmp, _write_devices(tmp / "devices.yaml", {"site-a": [cam]}), slack)
    assert calibrate_simulated(p.run, p.resources["storage"], p.fleet.camera(CAMERA))
    assert p.run_range("capture_queries", HOURS).success
    assert p.run_range("estimate_offsets", HOURS[:2]).success
    return p


class Truncated:
    """Truncate a stored file for the duration of a ``with`` block, then restore it."""

    def __init__(self, storage: ObjectStorageResource, key: str) -> None:
        self.storage, self.key = storage, key

    def __enter__(self) -> str:
        self.original = self.storage.get_bytes(self.key)
        self.storage.put_bytes(self.key, self.original[:100])
        return self.storage.uri(self.key)

    def __exit__(self, *exc: object) -> None:
        self.storage.put_bytes(self.key, self.original)


def first_image(p: Pipeline, hour: str) -> str:
    prefix = query_prefix("site-a", "cam-1", hour_start(hour))
    return f"{prefix}/{read_manifest(p.resources['storage'], prefix).frames[0].image}"


def rows_by_key(p: Pipeline) -> pd.DataFrame:
    return p.rows().set_index("partition_key")


@pytest.mark.integration
def test_a_truncated_image_fails_only_its_camera_hour(calibrated: Pipeline) -> None:
    storage = calibrated.resources["storage"]
    with Truncated(storage, first_image(calibrated, HOURS[2])) as uri:
        result = calibrated.run_range("estimate_offsets", HOURS[1:3])
    assert not result.success
    rows = rows_by_key(calibrated)
    bad = rows.loc[f"{CAMERA}|{HOURS[2]}"]
    assert not bad["success"]
    assert bad["failure_logs"].startswith(f"{CAMERA} hour {HOURS[2]}: ValueError: cannot decode image")
    assert uri in bad["failure_logs"]
    assert rows.loc[f"{CAMERA}|{HOURS[1]}"]["success"]
    materialized = {e.partition for e in result.get_asset_materialization_events()}
    assert materialized == {f"{CAMERA}|{HOURS[1]}"}  # only the bad camera-hour shows FAILED


@pytest.mark.integration
def test_a_truncated_calibration_fails_each_hour_naming_the_file(calibrated: Pipeline) -> None:
    storage = calibrated.resources["storage"]
    intrinsics = versions.current(storage, "site-a", "cam-1", "intrinsics").number
    with Truncated(storage, calibration_key("site-a", "cam-1", intrinsics)) as uri:
        assert not calibrated.run_range("estimate_offsets", HOURS[2:]).success
    rows = rows_by_key(calibrated)
    for hour in HOURS[2:]:
        logs = rows.loc[f"{CAMERA}|{hour}"]["failure_logs"]
        assert logs.startswith(f"{CAMERA} hour {hour}: ValueError: {uri}: not a readable calibration .npz")


@pytest.mark.integration
def test_a_failed_reestimate_keeps_the_good_row(
    calibrated: Pipeline, slack_module_server: SlackServer
) -> None:
    storage = calibrated.resources["storage"]
    key = f"{CAMERA}|{HOURS[0]}"
    good = rows_by_key(calibrated).loc[key]
    sent = len(posted(slack_module_server))
    with Truncated(storage, first_image(calibrated, HOURS[0])) as uri:
        assert calibrated.run_range("estimate_offsets", HOURS[:1]).success
    kept = rows_by_key(calibrated).loc[key]
    assert kept["success"] and kept["run_id"] == good["run_id"] and kept["yaw_offset"] == good["yaw_offset"]
    record = calibrated.instance.fetch_materializations(dg.AssetKey("orientation_offsets"), limit=1).records[
        0
    ]
    meta = record.asset_materialization.metadata
    assert record.partition_key == key and meta["kept_previous_row"].value is True
    assert uri in meta["failed_attempt"].value
    assert len(posted(slack_module_server)) == sent  # nothing changed: no alert


@pytest.mark.integration
def test_rerun_alerts_only_for_changed_hours(calibrated: Pipeline, slack_module_server: SlackServer) -> None:
    """Every estimate of this camera alerts (tiny threshold); a re-run of reported hours sends nothing."""
    before = rows_by_key(calibrated)
    sent = len(posted(slack_module_server))
    assert calibrated.run_range("estimate_offsets", HOURS[:2]).success
    after = rows_by_key(calibrated)
    assert (after.loc[before.index[:2], "run_id"] != before.loc[before.index[:2], "run_id"]).all()
    assert len(posted(slack_module_server)) == sent


def test_a_changed_report_is_sent_again(slack_server: SlackServer) -> None:
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    first = ResultRow.parse(row(CAMERA, HOUR, yaw=0.9))
    assert slack.send_result(first, 0.5, None) == "slack"
    assert slack.send_result(first.model_copy(update={"run_id": "run-2"}), 0.5, first) == "unchanged"
    assert slack.send_result(first.model_copy(update={"yaw_offset": 1.2}), 0.5, first) == "slack"
    failed = ResultRow.parse(row(CAMERA, HOUR, yaw=None))
    assert slack.send_result(failed, 0.5, first) == "slack"
    assert len(posted(slack_server)) == 3


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: a TCP server that accepts every connection and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


@pytest.mark.integration
def test_a_silent_storage_endpoint_costs_each_camera_hour_its_deadline(
    tmp_path: Path, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the deadline each read waits boto3's 60 s read timeout, 3 times: minutes per camera-hour."""
    for name, value in {
        "AWS_ENDPOINT_URL": silent_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    p = Pipeline(
        tmp_path,
        _write_devices(tmp_path / "devices.yaml", {"site-a": [_camera("cam-1", 1)]}),
        SlackResource(),
    )
    deadline_s = 1.0
    storage = ObjectStorageResource(url="s3://silent/ptz", camera_hour_deadline_s=deadline_s)
    p.resources["storage"] = storage
    p.defs = build_definitions(p.resources)
    start = time.perf_counter()
    assert not p.run_range("estimate_offsets", HOURS[:2]).success
    elapsed = time.perf_counter() - start
    assert elapsed < 2 * deadline_s + 20, elapsed  # Dagster's own overhead included
    rows = rows_by_key(p)
    for hour in HOURS[:2]:
        logs = rows.loc[f"{CAMERA}|{hour}"]["failure_logs"]
        manifest = f"{query_prefix('site-a', 'cam-1', hour_start(hour))}/manifest.json"
        assert logs.startswith(f"{CAMERA} hour {hour}: TimeoutError: not done within the 1 s deadline")
        assert f"no answer to exists {manifest!r} in storage s3://silent/ptz" in logs


def test_two_concurrent_committers_both_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two cameras of one site, one hour (one day x deployment partition), replace their rows at the same
    moment: in each of three rounds both plan on the same table state and commit together; the catalog
    rejects one (CommitFailedException) and pyiceberg retries it on the new state. In the first round both
    rewrite the one data file holding both rows, so the retry fails validation (the file is gone) and
    replace_rows re-plans. Both land every round, no row is lost."""
    warehouse = str(tmp_path / "wh")
    cameras = ["site-a__cam-1", "site-a__cam-2"]
    shared = [row(camera, HOUR) for camera in cameras]
    setup = IcebergResource(warehouse_dir=warehouse)
    setup.replace_rows([r["partition_key"] for r in shared], shared)
    assert len(list(setup.ensure_table().scan().plan_files())) == 1  # both cameras' rows in one data file

    rounds = 3
    planned, committed = threading.Barrier(2), threading.Barrier(2)
    gate = threading.local()  # a thread's first commit of a round waits for the other's
    rejected: list[str] = []
    commit_table = SqlCatalog.commit_table

    def commit_together(catalog: SqlCatalog, *args: object, **kwargs: object) -> object:
        if getattr(gate, "first_commit", False):
            gate.first_commit = False
            committed.wait()
        try:
            return commit_table(catalog, *args, **kwargs)
        except CommitFailedException:
            rejected.append(threading.current_thread().name)
            raise

    monkeypatch.setattr(SqlCatalog, "commit_table", commit_together)
    errors: list[BaseException] = []

    def camera(index: int) -> None:
        resource = IcebergResource(warehouse_dir=warehouse)
        try:
            for i in range(rounds):
                mine = row(cameras[index], HOUR, yaw=0.1 * i, run_id=f"cam-{index + 1}.{i}")
                resource.ensure_table()
                planned.wait()
                gate.first_commit = True
                resource.replace_rows([mine["partition_key"]], [mine])
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
            planned.abort()
            committed.abort()

    threads = [threading.Thread(target=camera, args=(i,), name=f"cam-{i + 1}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(rejected) >= rounds  # each round one of the two simultaneous commits was refused, then retried
    replans = [r.getMessage() for r in caplog.records if "conflicted with another writer" in r.getMessage()]
    assert any("ValidationException" in message for message in replans), replans  # the shared file
    frame = IcebergResource(warehouse_dir=warehouse).read_rows()
    assert sorted(frame["run_id"]) == ["cam-1.2", "cam-2.2"]
    assert sorted(frame["device_id"]) == ["cam-1", "cam-2"]


def test_ensure_table_leaves_no_orphan_metadata(tmp_path: Path) -> None:
    iceberg = IcebergResource(warehouse_dir=str(tmp_path / "wh"))
    for _ in range(3):
        iceberg.ensure_table()
    written = row(CAMERA, HOUR)
    iceberg.replace_rows([written["partition_key"]], [written])
    table = iceberg.ensure_table()
    files = sorted((tmp_path / "wh").rglob("*.metadata.json"))
    assert len(files) == len(table.metadata.metadata_log) + 1  # one per commit, plus the current


def test_a_table_without_the_version_columns_gains_them_keeping_field_ids(tmp_path: Path) -> None:
    iceberg = IcebergResource(warehouse_dir=str(tmp_path / "wh"))
    added = ("reference_version", "intrinsics_version", "r_align_version", "version_note")
    iceberg.catalog.create_namespace("ptz")
    before = Schema(*(f for f in CALIBRATION_SCHEMA.fields if f.name not in added))
    ids = {
        f.name: f.field_id for f in iceberg.catalog.create_table(("ptz", TABLE_NAME), before).schema().fields
    }
    new = row(CAMERA, HOUR, reference_version=3, intrinsics_version=1, r_align_version=2)
    iceberg.replace_rows([new["partition_key"]], [new])
    evolved = {f.name: f.field_id for f in iceberg.ensure_table().schema().fields}
    assert {name: evolved[name] for name in ids} == ids
    assert [name for name in evolved if name not in ids] == list(added)
    assert iceberg.read_rows()[list(added[:3])].iloc[0].tolist() == [3, 1, 2]


def test_the_instance_and_the_demo_monitor_runs(tmp_path: Path) -> None:
    """dagster.yaml turns run monitoring on (a run killed with kill -9 does not stay STARTED); the demo's
    instance folder gets it when it has none and keeps its own otherwise."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["run_monitoring"]["enabled"] is True and config["run_monitoring"]["max_runtime_seconds"] > 0
    home = prepare_dagster_home(tmp_path / "dagster_home")
    assert (home / "dagster.yaml").read_text() == (REPO_ROOT / "dagster.yaml").read_text()
    with dg.instance_for_test(temp_dir=str(home), overrides=config) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == config["run_monitoring"]["max_runtime_seconds"]
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prepare_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
