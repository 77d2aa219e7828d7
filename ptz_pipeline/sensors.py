"""Sensors decide, runs act: devices.yaml -> camera partitions, hourly capture requests, estimation after
capture. A sensor never opens a camera or writes results; runs are grouped per site and hour
(ptz_pipeline.grouped).
"""

import inspect
from datetime import UTC, datetime

import dagster as dg

from ptz_pipeline.assets.drift import CAMERA_DRIFT
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.assets.proposal import R_ALIGN_PROPOSAL
from ptz_pipeline.assets.query import QUERY_SCAN
from ptz_pipeline.grouped import CAPTURE_QUEUES, ESTIMATE_QUEUE, VIEW_QUEUE, site_requests
from ptz_pipeline.jobs import calibration_job
from ptz_pipeline.partitions import (
    camera_hour_key,
    camera_partition_changes,
    camera_partitions,
    hour_key,
    split_camera_hour,
)
from ptz_pipeline.resources.camera import DevicesResource

AFTER_ESTIMATE = [CAMERA_DRIFT, R_ALIGN_PROPOSAL]
"""The per-camera assets refreshed after new estimates (camera partitions, one run per site)."""


def sensor(**kwargs):
    """``dg.sensor`` that starts with the daemon and shows the function's docstring in the UI. Every sensor
    names its target (``job=`` or ``asset_selection=``): the daemon drops run requests without one."""

    def decorate(fn):
        doc = inspect.cleandoc(fn.__doc__ or "")
        return dg.sensor(description=doc, default_status=dg.DefaultSensorStatus.RUNNING, **kwargs)(fn)

    return decorate


@sensor(job=calibration_job, minimum_interval_seconds=60)
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


def _hourly_capture(
    context: dg.SensorEvaluationContext, devices: DevicesResource, mode: str
) -> dg.SensorResult:
    """Once per hour: one query_scan run per site covering the current hour of its ``mode`` cameras."""
    hour = hour_key(datetime.now(UTC))
    if context.cursor == hour:
        return dg.SensorResult(skip_reason=f"hour {hour} already requested")
    keys = [str(camera_hour_key(c.key, hour)) for c in devices.fleet().cameras() if c.mode == mode]
    return dg.SensorResult(
        run_requests=site_requests(context, QUERY_SCAN, keys, f"hourly {mode}", CAPTURE_QUEUES[mode]),
        cursor=hour,
    )


@sensor(asset_selection=[QUERY_SCAN], minimum_interval_seconds=60)
def hourly_active_capture(context: dg.SensorEvaluationContext, devices: DevicesResource) -> dg.SensorResult:
    """Once per hour: capture the current hour of every active-mode camera at its PTZ stops, one run per
    site."""
    return _hourly_capture(context, devices, "active")


@sensor(asset_selection=[QUERY_SCAN], minimum_interval_seconds=60)
def passive_capture(context: dg.SensorEvaluationContext, devices: DevicesResource) -> dg.SensorResult:
    """Once per hour: one run per site that waits for each passive-mode camera to be still for its
    ``stabilize_time`` within the hour; a camera never still gets its failure row and alert from that run."""
    return _hourly_capture(context, devices, "passive")


def _new_materializations(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey
) -> tuple[list[str], str | None]:
    """(sorted partition keys of ``asset_key`` materialized since the cursor, the new cursor)."""
    after = int(context.cursor) if context.cursor else None
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after), limit=1000, ascending=True
    )
    keys = sorted({r.partition_key for r in result.records if r.partition_key})
    return keys, str(max(r.storage_id for r in result.records)) if result.records else None


@sensor(asset_selection=[ORIENTATION_OFFSETS], minimum_interval_seconds=30)
def offsets_after_capture(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Estimation follows capture: new query_scan materializations -> orientation_offsets, per site."""
    keys, cursor = _new_materializations(context, QUERY_SCAN)
    if not keys:
        return dg.SensorResult(skip_reason="no new query scans")
    return dg.SensorResult(
        run_requests=site_requests(context, ORIENTATION_OFFSETS, keys, "captured", ESTIMATE_QUEUE),
        cursor=cursor,
    )


@sensor(asset_selection=AFTER_ESTIMATE, minimum_interval_seconds=60)
def drift_after_estimate(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """The per-camera drift view and R_align proposal follow estimation: cameras with new
    orientation_offsets -> camera_drift and r_align_proposal, one run per site. A proposal is never applied
    here: a person applies it (r_align with apply_proposal)."""
    keys, cursor = _new_materializations(context, ORIENTATION_OFFSETS)
    if not keys:
        return dg.SensorResult(skip_reason="no new estimates")
    cameras = sorted({split_camera_hour(k)[0] for k in keys})
    return dg.SensorResult(
        run_requests=site_requests(context, AFTER_ESTIMATE, cameras, "estimated", VIEW_QUEUE),
        cursor=cursor,
    )
