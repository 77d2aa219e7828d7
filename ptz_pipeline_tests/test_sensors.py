"""Sensors and schedules on a persistent temporary instance, plus a failing camera inside a grouped run."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ptz_pipeline import grouped, sensors
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.partitions import camera_hour_range_tags, camera_partitions, hour_key, recent_hours
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.schedules import daily_report_schedule
from ptz_pipeline.settings import local_resources

pytest_plugins = ["ptz_pipeline_tests.servers"]
pytestmark = pytest.mark.integration


def _cam(name: str, mode: str = "active", **backend: object) -> dict:
    cam = {
        "name": name,
        "mode": mode,
        "backend": {
            "kind": "simulated",
            "image_width": 320,
            "image_height": 240,
            "nuisances": False,
            **backend,
        },
    }
    if mode == "active":
        cam["ptz_stops"] = [[0, -15, 0.0]]
    return cam


FLEET = {
    "site-a": [_cam("cam-1"), _cam("cam-2", "passive")],
    "site-b": [
        _cam("cam-3"),
        _cam("cam-4", "passive", fail="never_stable"),
        _cam("cam-5", fail="unreachable"),
    ],
}


@pytest.fixture
def env(tmp_path: Path, slack_server):
    """Definitions, resources and a persistent instance for a five-camera, two-site fleet."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump([{"name": site, "cameras": cams} for site, cams in FLEET.items()]))
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    resources = {**local_resources(str(tmp_path / "data"), str(devices)), "slack": slack}
    defs = build_definitions(resources)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield defs, resources, instance, slack_server


def _context(defs, resources, instance, cursor=None):
    """A sensor context with ``devices``, the one resource a sensor uses (the whole set would need a ``with``
    block: storage's nested S3Resource is set up as a context manager)."""
    devices = {"devices": resources["devices"]}
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources=devices, definitions=defs)


def _all_keys() -> list[str]:
    return [f"{site}__{c['name']}" for site, cams in FLEET.items() for c in cams]


def test_devices_sensor_adds_new_and_removes_deleted_cameras(env) -> None:
    defs, resources, instance, _ = env
    instance.add_dynamic_partitions(camera_partitions.name, ["old-site__gone", "site-a__cam-1"])
    result = sensors.devices_sensor(_context(defs, resources, instance))
    adds = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    deletes = [
        r for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)
    ]
    assert sorted(adds[0].partition_keys) == sorted(set(_all_keys()) - {"site-a__cam-1"})
    assert list(deletes[0].partition_keys) == ["old-site__gone"]
    # new cameras get their calibration run, the known one does not
    assert sorted(r.partition_key for r in result.run_requests) == sorted(adds[0].partition_keys)
    assert {r.job_name for r in result.run_requests} == {"calibrate_camera"}
    # once applied, the next tick changes nothing
    instance.delete_dynamic_partition(camera_partitions.name, "old-site__gone")
    instance.add_dynamic_partitions(camera_partitions.name, list(adds[0].partition_keys))
    again = sensors.devices_sensor(_context(defs, resources, instance))
    assert not again.dynamic_partitions_requests and not again.run_requests


def test_hourly_active_capture_requests_one_run_per_site(env) -> None:
    defs, resources, instance, _ = env
    instance.add_dynamic_partitions(camera_partitions.name, _all_keys())
    result = sensors.hourly_active_capture(_context(defs, resources, instance))
    hour = hour_key(datetime.now(UTC))
    by_site = {r.tags[grouped.SITE_TAG]: grouped.requested_keys(r) for r in result.run_requests}
    assert by_site == {
        "site-a": [f"site-a__cam-1|{hour}"],
        "site-b": [f"site-b__cam-3|{hour}", f"site-b__cam-5|{hour}"],
    }
    assert [r.tags for r in result.run_requests] == [  # the active capture lane of the run queue, per site
        {"ptz/deployment": s, "ptz/capture-active": s, "ptz/reason": "hourly active"} for s in by_site
    ]
    assert result.cursor == hour
    skipped = sensors.hourly_active_capture(_context(defs, resources, instance, cursor=hour))
    assert not skipped.run_requests


def test_passive_capture_requests_a_run_per_site_which_records_a_missed_window(env) -> None:
    """The sensor only requests; the capture run waits for stillness and writes the miss (row + alert)."""
    defs, resources, instance, slack_server = env
    instance.add_dynamic_partitions(camera_partitions.name, _all_keys())
    result = sensors.passive_capture(_context(defs, resources, instance))
    hour = hour_key(datetime.now(UTC))
    assert {r.tags[grouped.SITE_TAG]: grouped.requested_keys(r) for r in result.run_requests} == {
        "site-a": [f"site-a__cam-2|{hour}"],
        "site-b": [f"site-b__cam-4|{hour}"],
    }
    assert [r.tags for r in result.run_requests] == [  # the passive lane: never holds back the active one
        {"ptz/deployment": s, "ptz/capture-passive": s, "ptz/reason": "hourly passive"}
        for s in ("site-a", "site-b")
    ]
    assert resources["iceberg"].read_rows().empty and not slack_server.requests  # a sensor writes nothing
    assert not sensors.passive_capture(_context(defs, resources, instance, cursor=hour)).run_requests

    # the site-b run: cam-4 never stands still -> its camera-hour fails with a row and an alert
    tags = camera_hour_range_tags(["site-b__cam-4"], [hour])
    run = defs.resolve_job_def("capture_queries").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    assert not run.success
    rows = resources["iceberg"].read_rows()
    assert list(rows["partition_key"]) == [f"site-b__cam-4|{hour}"]
    assert not rows["success"].iloc[0] and "no stable window" in rows["failure_logs"].iloc[0]
    texts = [r.body["text"] for r in slack_server.requests]
    assert len(texts) == 1 and "Device: cam-4" in texts[0] and "Success: No" in texts[0]


def test_failing_camera_gets_a_failure_row_while_others_succeed_and_estimation_follows(env) -> None:
    defs, resources, instance, slack_server = env
    keys = ["site-b__cam-3", "site-b__cam-5"]  # cam-5 is unreachable
    instance.add_dynamic_partitions(camera_partitions.name, keys)
    hour = recent_hours(datetime.now(UTC), 1)[0]
    tags = camera_hour_range_tags(keys, [hour])
    result = defs.resolve_job_def("capture_queries").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )
    assert not result.success
    assert instance.get_materialized_partitions(dg.AssetKey("query_scan")) == {f"site-b__cam-3|{hour}"}
    rows = resources["iceberg"].read_rows()
    assert list(rows["partition_key"]) == [f"site-b__cam-5|{hour}"]
    assert (
        not rows["success"].iloc[0]
        and "unreachable" in rows["failure_logs"].iloc[0].lower()
        or ("connection refused" in rows["failure_logs"].iloc[0])
    )
    assert any("Device: cam-5" in r.body["text"] and "🚨" in r.body["text"] for r in slack_server.requests)

    # estimation follows the successful capture only, in one run for the site
    follow = sensors.offsets_after_capture(_context(defs, resources, instance))
    assert [grouped.requested_keys(r) for r in follow.run_requests] == [[f"site-b__cam-3|{hour}"]]
    assert [r.tags for r in follow.run_requests] == [
        {"ptz/deployment": "site-b", "ptz/estimate": "site-b", "ptz/reason": "captured"}
    ]
    assert not sensors.offsets_after_capture(
        _context(defs, resources, instance, cursor=follow.cursor)
    ).run_requests


def test_daily_report_schedule_exports_yesterday(env) -> None:
    defs, resources, instance, _ = env
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2026, 11, 23, 0, 30, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = list(daily_report_schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["2026-11-22"]
