"""query_scan (camera x hour): the hour's query frames with telemetry, captured live, never re-captured."""

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta

import dagster as dg

from ptz_pipeline import scans
from ptz_pipeline.assets.reference import reference_scan
from ptz_pipeline.capture import capture_query
from ptz_pipeline.devices import CameraConfig, camera_key
from ptz_pipeline.grouped import GroupedOutcome, grouped_hourly_asset, keys_by_camera
from ptz_pipeline.partitions import camera_hour_key, hour_start, is_within_hour
from ptz_pipeline.resources.camera import DevicesResource, PTZCamera, PTZCameraResource, can_capture
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.results import ResultRow

QUERY_SCAN = dg.AssetKey("query_scan")


def _capture_time(start: datetime, now: datetime) -> datetime:
    """Now for a live capture; mid-hour on the simulator's virtual clock for another hour."""
    return now if is_within_hour(start, now) else start + timedelta(minutes=30)


def _capture_camera(
    context: dg.AssetExecutionContext,
    cam: CameraConfig,
    hours: list[str],
    storage: ObjectStorageResource,
    camera: PTZCameraResource,
    now: datetime,
) -> tuple[dict[str, dict], list[ResultRow]]:
    """One camera's requested hours: (metadata by captured or kept partition key, failure rows)."""
    succeeded: dict[str, dict] = {}
    failures: list[ResultRow] = []
    with ExitStack() as opened:
        ptz: PTZCamera | None = None  # opened on the first hour that needs it, closed after the camera
        for hour in hours:
            pk = str(camera_hour_key(cam.key, hour))
            start = hour_start(hour)
            prefix = scans.query_prefix(cam.deployment, cam.name, start)
            try:  # any failure (camera, storage) costs this camera-hour only: a row + alert
                existing = scans.read_manifest(storage, prefix)
                if existing is not None:
                    succeeded[pk] = {
                        "frames": len(existing.frames),
                        "kept_existing_scan": True,
                        "location": dg.MetadataValue.path(storage.uri(prefix)),
                    }
                    continue
                if ptz is None:
                    ptz = opened.enter_context(closing(camera.open(cam)))
                if not can_capture(ptz, start, now):
                    raise RuntimeError(
                        f"hour {hour} passed without a capture (a past hour is never re-captured)"
                    )
                at = _capture_time(start, now)
                images, telemetry = capture_query(ptz, cam, at, start + timedelta(hours=1))
                manifest = scans.write_scan(storage, prefix, cam.key, "query", images, telemetry, cam.mode)
            except Exception as exc:
                reason = f"capture failed: {type(exc).__name__}: {exc}"
                context.log.warning(f"{pk}: {reason}")
                failures.append(
                    ResultRow.failure(cam, start, pk, context.run.run_id, reason, storage.uri(prefix))
                )
                continue
            context.log.info(f"{pk}: captured {len(manifest.frames)} frames ({cam.mode})")
            succeeded[pk] = {
                "frames": len(manifest.frames),
                "mode": cam.mode,
                "location": dg.MetadataValue.path(storage.uri(prefix)),
                "first_frame": dg.MetadataValue.path(storage.uri(f"{prefix}/{manifest.frames[0].image}")),
            }
    return succeeded, failures


@grouped_hourly_asset(
    QUERY_SCAN, [reference_scan], "The hour's query frames + telemetry in query_scan/{timestamp}/."
)
def query_scan(
    context: dg.AssetExecutionContext,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    camera: PTZCameraResource,
    iceberg: IcebergResource,
    slack: SlackResource,
):
    """Capture every requested camera-hour; keep scans already stored (a past hour is never re-captured).

    Cameras are captured concurrently (a passive camera may wait most of its hour for a still window).
    A failed capture (unreachable camera, no stable window, an hour that passed uncaptured) writes its own
    failure row and alert; the other cameras go on.
    """
    fleet = devices.fleet()
    now = datetime.now(UTC)
    groups = keys_by_camera(context.partition_keys)
    cams = {key: fleet.camera(key) for key in groups}
    outcome = GroupedOutcome.empty()
    failures: list[ResultRow] = []
    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        futures = [
            pool.submit(_capture_camera, context, cams[key], hours, storage, camera, now)
            for key, hours in groups.items()
        ]
        for future in futures:
            succeeded, failed = future.result()
            outcome.succeeded.update(succeeded)
            failures += failed
    for row in failures:
        outcome.failed[row.partition_key] = row.failure_logs or "capture failed"
    if failures:
        keys = [row.partition_key for row in failures]
        previous = iceberg.read_partitions(keys)  # a re-run of a failed hour alerts again only if it changed
        iceberg.replace_rows(keys, failures)
        for row in failures:
            threshold = cams[camera_key(row.deployment, row.device_id)].offset_threshold_deg
            slack.send_result(row, threshold, previous.get(row.partition_key))
    yield from outcome.report(QUERY_SCAN)
