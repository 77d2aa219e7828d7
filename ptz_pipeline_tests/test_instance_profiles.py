"""The instance profiles in deploy/instance: what each turns on, and the postgres and kubernetes profiles on
a real PostgreSQL server (a grouped camera x hour run, the run queue's per-site lanes, sensor ticks and
backfills)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ptz_pipeline.grouped import CAPTURE_QUEUES, ESTIMATE_QUEUE, QUEUES, SITE_TAG, VIEW_QUEUE, site_tags
from ptz_pipeline.partitions import camera_hour_range_tags, camera_partitions, recent_hours
from ptz_pipeline_tests.deploy import (
    PROFILES,
    RecordingBatchApi,
    code_location_file,
    dequeue,
    kubernetes_home,
    profile,
    reconstructable_job,
    record_batch_api,
    run_backfills,
    submit,
    tick_sensors,
    workspace,
)
from ptz_pipeline_tests.postgres import PostgresServer

pytest_plugins = ["ptz_pipeline_tests.postgres"]

SITE_LIMITS = [{"key": q, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} for q in QUEUES]
"""One run per site in each run-queue lane (the lanes: capture active, capture passive, estimate, view)."""


def _camera(name: str, mode: str) -> dict:
    cam = {
        "name": name,
        "mode": mode,
        "backend": {"kind": "simulated", "image_width": 320, "image_height": 240},
    }
    if mode == "active":
        cam["ptz_stops"] = [[0, -15, 0.0]]
    return cam


def _devices(path: Path, fleet: dict[str, list[dict]]) -> Path:
    path.write_text(yaml.safe_dump([{"name": site, "cameras": cams} for site, cams in fleet.items()]))
    return path


def _home(tmp: Path, name: str) -> Path:
    """A DAGSTER_HOME with the profile ``name`` copied in (the profile folder itself works the same)."""
    home = tmp / "home"
    home.mkdir()
    shutil.copy(PROFILES / name / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.parametrize("name", ["local", "postgres", "kubernetes"])
def test_every_profile_monitors_runs_and_queues_with_the_site_and_camera_limits(name: str) -> None:
    """Per-value limits: one run per site in each lane, nothing else (the informational site and reason tags
    limit nothing); totals: capture runs only, below the run maximum so estimation always finds a slot."""
    config = profile(name)
    assert config["run_monitoring"]["enabled"] is True
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["tag_concurrency_limits"]
    assert [limit for limit in limits if "value" in limit] == SITE_LIMITS
    capture = {limit["key"]: limit["limit"] for limit in limits if "value" not in limit}
    assert set(capture) == set(CAPTURE_QUEUES.values()) and all(n >= 1 for n in capture.values())
    assert sum(capture.values()) < coordinator["config"]["max_concurrent_runs"]


def test_local_profile_is_the_demos_sqlite_instance_with_monitoring_and_queue(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(_home(tmp_path, "local"))) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled


@pytest.fixture
def batch_api(monkeypatch: pytest.MonkeyPatch) -> RecordingBatchApi:
    return record_batch_api(monkeypatch)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A code location on a two-site fleet: site-a has an active and a passive camera, site-b one active."""
    devices = _devices(
        tmp_path / "devices.yaml",
        {
            "site-a": [_camera("cam-1", "active"), _camera("cam-2", "passive")],
            "site-b": [_camera("cam-3", "active")],
        },
    )
    return code_location_file(tmp_path / "location.py", devices, tmp_path / "data")


@pytest.fixture
def k8s_instance(
    tmp_path: Path, postgres_env: PostgresServer, batch_api: RecordingBatchApi
) -> Iterator[dg.DagsterInstance]:
    """The kubernetes profile on the test's Postgres database; Jobs go to ``batch_api``."""
    with dg.DagsterInstance.from_config(str(kubernetes_home(tmp_path / "k8s_home"))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        yield instance


@pytest.mark.integration
def test_postgres_profile_stores_a_grouped_camera_hour_run(
    tmp_path: Path, postgres_env: PostgresServer
) -> None:
    """query_scan of 2 cameras x 2 hours in one run; runs, events and partition status live in Postgres."""
    devices = _devices(
        tmp_path / "devices.yaml", {"site-a": [_camera("cam-1", "active"), _camera("cam-2", "active")]}
    )
    job = reconstructable_job(
        code_location_file(tmp_path / "location.py", devices, tmp_path / "data"), "capture_queries"
    )
    keys, hours = ["site-a__cam-1", "site-a__cam-2"], recent_hours(datetime.now(UTC), 2)
    with dg.DagsterInstance.from_config(str(_home(tmp_path, "postgres"))) as instance:
        assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage)} == {
            "PostgresRunStorage",
            "PostgresEventLogStorage",
        }
        instance.add_dynamic_partitions(camera_partitions.name, keys)
        result = job.get_definition().execute_in_process(
            instance=instance, tags=camera_hour_range_tags(keys, hours)
        )
        assert result.success
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as reopened:  # what the webserver reads
        assert reopened.get_materialized_partitions(dg.AssetKey("query_scan")) == {
            f"{k}|{h}" for k in keys for h in hours
        }
        (record,) = reopened.get_run_records()
        assert record.dagster_run.run_id == result.run_id and record.dagster_run.is_success


def _routing(tags: dict[str, str]) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    """(site, reason, run-queue lane tags) of a run's or backfill's ``tags``."""
    lanes = tuple(sorted((k, v) for k, v in tags.items() if k in QUEUES))
    return tags.get(SITE_TAG), tags.get("ptz/reason"), lanes


@pytest.mark.integration
def test_run_queue_on_postgres_keeps_each_sites_lanes_independent(
    k8s_instance: dg.DagsterInstance, fleet: Path, batch_api: RecordingBatchApi
) -> None:
    """With site-a's passive capture in progress (it waits its hour for still cameras), site-a's active
    capture, estimation and drift view start, and so does site-b's passive capture; a second passive
    capture of site-a waits until the first ends."""
    capture, estimate, view = (
        reconstructable_job(fleet, name) for name in ("capture_queries", "estimate_offsets", "drift_view")
    )
    passive = CAPTURE_QUEUES["passive"]

    def queue(job: object, site: str, reason: str, lane: str) -> str:
        return submit(k8s_instance, job, site_tags(site, reason, lane)).run_id

    def launched() -> set[str]:
        return {j.metadata.labels["dagster/run-id"] for _, j in batch_api.jobs}

    first_passive = queue(capture, "site-a", "hourly passive", passive)
    dequeue(k8s_instance)
    assert launched() == {first_passive}

    second_passive = queue(capture, "site-a", "hourly passive", passive)
    independent = {
        queue(capture, "site-a", "hourly active", CAPTURE_QUEUES["active"]),
        queue(estimate, "site-a", "captured", ESTIMATE_QUEUE),
        queue(view, "site-a", "estimated", VIEW_QUEUE),
        queue(capture, "site-b", "hourly passive", passive),
    }
    dequeue(k8s_instance)
    assert launched() == {first_passive, *independent}
    (waiting,) = k8s_instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    assert waiting.run_id == second_passive
    dequeue(k8s_instance)
    assert second_passive not in launched()  # nothing ended: it still waits

    k8s_instance.report_run_failed(k8s_instance.get_run_by_id(first_passive))  # its pod ended
    dequeue(k8s_instance)
    assert launched() == {first_passive, second_passive, *independent}


@pytest.mark.integration
def test_sensor_ticks_and_backfills_are_recorded_on_postgres(
    k8s_instance: dg.DagsterInstance, fleet: Path
) -> None:
    """One iteration of the sensor daemon, then of the backfill daemon: ticks, one backfill per site and
    mode with the site tag, their runs queued."""
    with workspace(k8s_instance, fleet) as context:
        tick_sensors(context)
        ticks = {
            state.name: [
                t.status.value for t in k8s_instance.get_ticks(state.instigator_origin_id, state.selector_id)
            ]
            for state in k8s_instance.all_instigator_state()
        }
        for sensor in ("devices_sensor", "hourly_active_capture", "passive_capture"):
            assert ticks[sensor] == ["SUCCESS"], (sensor, ticks[sensor])
        backfills = Counter(_routing(b.tags) for b in k8s_instance.get_backfills())
        assert backfills == {
            ("site-a", "hourly active", (("ptz/capture-active", "site-a"),)): 1,
            ("site-a", "hourly passive", (("ptz/capture-passive", "site-a"),)): 1,
            ("site-b", "hourly active", (("ptz/capture-active", "site-b"),)): 1,
        }
        run_backfills(context)
    queued = k8s_instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    assert Counter(_routing(r.tags) for r in queued) == {
        **backfills,
        (None, None, ()): 3,  # calibrate_camera for the three new cameras
    }
