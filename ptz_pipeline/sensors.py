"""Sensors: devices.yaml -> camera partitions, hourly/passive capture, estimation after capture.

Runs are grouped per site (deployment) and hour: one request per site covering its cameras, given as explicit
camera|hour keys (``RunRequest.for_asset_graph_subset`` launches a one-run backfill because the assets use
``BackfillPolicy.single_run()``); explicit keys never pull in another site's cameras.
"""

import json
from collections import defaultdict
from contextlib import closing
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.assets.query import QUERY_SCAN
from ptz_pipeline.assets.results import failure_row, notify
from ptz_pipeline.camera import NoStableWindowError
from ptz_pipeline.devices import split_camera_key
from ptz_pipeline.jobs import calibration_job
from ptz_pipeline.partitions import (
    camera_hour_key,
    camera_partition_changes,
    camera_partitions,
    hour_key,
    hour_start,
    split_camera_hour,
)
from ptz_pipeline.resources.camera import DevicesResource, PTZCameraResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource

SITE_TAG = "ptz/deployment"


def site_requests(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey, partition_keys: list[str], reason: str
) -> list[dg.RunRequest]:
    """One RunRequest per deployment covering exactly ``partition_keys`` (camera|hour) of ``asset_key``."""
    by_site: dict[str, set[str]] = defaultdict(set)
    for key in partition_keys:
        camera, _ = split_camera_hour(key)
        by_site[split_camera_key(camera)[0]].add(key)
    graph = context.repository_def.asset_graph
    requests = []
    for site, keys in sorted(by_site.items()):
        subset = AssetGraphSubset.from_asset_partition_set(
            {AssetKeyPartitionKey(asset_key, k) for k in keys}, graph
        )
        requests.append(
            dg.RunRequest.for_asset_graph_subset(subset, tags={SITE_TAG: site, "ptz/reason": reason})
        )
    return requests


def requested_keys(request: dg.RunRequest) -> list[str]:
    """The camera|hour keys a request built by :func:`site_requests` covers (for tests and logs)."""
    return sorted(str(ap.partition_key) for ap in request.asset_graph_subset.iterate_asset_partitions())


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def devices_sensor(context: dg.SensorEvaluationContext, devices: DevicesResource) -> dg.SensorResult:
    """Keep the camera partitions equal to devices.yaml (add new, remove deleted); calibrate new cameras."""
    added, removed = camera_partition_changes(
        set(context.instance.get_dynamic_partitions(camera_partitions.name)),
        [c.key for c in devices.fleet().cameras()],
    )
    requests = []
    if added:
        requests.append(camera_partitions.build_add_request(added))
    if removed:
        requests.append(camera_partitions.build_delete_request(removed))
    if added or removed:
        context.log.info(f"cameras added: {added or '-'}; removed: {removed or '-'}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"calibrate-{k}", partition_key=k, job_name=calibration_job.name)
            for k in added
        ],
        dynamic_partitions_requests=requests,
    )


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def hourly_active_capture(context: dg.SensorEvaluationContext, devices: DevicesResource) -> dg.SensorResult:
    """Once per hour: capture the current hour of every active-mode camera, one run per site."""
    now = datetime.now(UTC)
    hour = hour_key(now)
    if context.cursor == hour:
        return dg.SensorResult(skip_reason=f"hour {hour} already requested")
    keys = [str(camera_hour_key(c.key, hour)) for c in devices.fleet().cameras() if c.mode == "active"]
    return dg.SensorResult(run_requests=site_requests(context, QUERY_SCAN, keys, "hourly"), cursor=hour)


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def passive_capture(
    context: dg.SensorEvaluationContext,
    devices: DevicesResource,
    camera: PTZCameraResource,
    iceberg: IcebergResource,
    slack: SlackResource,
) -> dg.SensorResult:
    """Passive-mode cameras: request the hour's query_scan once the camera has been still for
    ``stabilize_time`` seconds; when an hour ends without a still window, record a failure row and alert.

    Cursor: ``{"hour": <hour key>, "done": [camera keys captured or failed this hour]}``.
    """
    now = datetime.now(UTC)
    hour = hour_key(now)
    state = json.loads(context.cursor) if context.cursor else {"hour": hour, "done": []}
    passive = [c for c in devices.fleet().cameras() if c.mode == "passive"]
    if state["hour"] != hour:  # the previous hour ended: cameras never still get a failure row
        previous = hour_start(state["hour"])
        missed = [c for c in passive if c.key not in state["done"]]
        rows = [
            failure_row(
                c,
                previous,
                str(camera_hour_key(c.key, state["hour"])),
                "sensor:passive_capture",
                f"no stable window of {c.stabilize_time:.0f} s during the hour",
                "",
            )
            for c in missed
        ]
        if rows:
            iceberg.replace_rows([r["partition_key"] for r in rows], rows)
            for cam, row in zip(missed, rows, strict=True):
                notify(slack, row, cam.offset_threshold_deg)
        state = {"hour": hour, "done": []}
    ready = []
    for cam in passive:
        if cam.key in state["done"]:
            continue
        try:
            with closing(camera.open(cam)) as ptz:
                ptz.wait_stable(cam.stabilize_time, timeout=0)
        except NoStableWindowError:
            continue
        except Exception as exc:  # an unreachable camera: let the capture run record it
            context.log.warning(f"{cam.key}: {exc}")
        ready.append(cam.key)
    state["done"] = sorted(set(state["done"]) | set(ready))
    keys = [str(camera_hour_key(k, hour)) for k in ready]
    return dg.SensorResult(
        run_requests=site_requests(context, QUERY_SCAN, keys, "passive"), cursor=json.dumps(state)
    )


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def offsets_after_capture(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Estimation follows capture: new query_scan materializations -> orientation_offsets, per site."""
    after = int(context.cursor) if context.cursor else None
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=QUERY_SCAN, after_storage_id=after), limit=1000, ascending=True
    )
    if not result.records:
        return dg.SensorResult(skip_reason="no new query scans")
    keys = sorted({r.partition_key for r in result.records if r.partition_key})
    cursor = str(max(r.storage_id for r in result.records))
    return dg.SensorResult(
        run_requests=site_requests(context, ORIENTATION_OFFSETS, keys, "captured"), cursor=cursor
    )
