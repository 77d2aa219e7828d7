"""query_scan (camera x hour): the hour's query frames with telemetry, captured live, never re-captured."""

from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta

import dagster as dg

from ptz_pipeline import scans
from ptz_pipeline.assets.common import GroupedOutcome, grouped_hourly_asset, keys_by_camera
from ptz_pipeline.assets.reference import reference_scan
from ptz_pipeline.assets.results import failure_row, notify
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.partitions import camera_hour_key, hour_start, is_within_hour
from ptz_pipeline.resources.camera import DevicesResource, PTZCamera, PTZCameraResource, can_capture
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource

QUERY_SCAN = dg.AssetKey("query_scan")


def _capture_time(start: datetime, now: datetime) -> datetime:
    """Now for a live capture; mid-hour on the simulator's virtual clock for another hour."""
    return now if is_within_hour(start, now) else start + timedelta(minutes=30)


def capture_query(ptz: PTZCamera, cam: CameraConfig, at: datetime):
    """Frames and telemetry (pan, tilt, zoom, timestamp) for one hour: the configured stops in active
    mode, one frame once the camera has been still for ``stabilize_time`` seconds in passive mode."""
    if cam.mode == "active":
        shots = []
        for i, (pan, tilt, zoom) in enumerate(cam.ptz_stops):
            ptz.move_to(pan, tilt, zoom)
            shots.append(ptz.grab(at + timedelta(seconds=10 * i)))
    else:
        ptz.wait_stable(cam.stabilize_time, cam.timeout)
        shots = [ptz.grab(at)]
    return [image for image, _ in shots], [(t.pan, t.tilt, t.zoom, t.timestamp) for _, t in shots]


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

    A failed capture (unreachable camera, no stable window, an hour that passed uncaptured) writes its own
    failure row and alert; the other cameras go on.
    """
    fleet = devices.fleet()
    now = datetime.now(UTC)
    outcome = GroupedOutcome.empty()
    failures: list[tuple[CameraConfig, dict]] = []
    for cam_key, hours in keys_by_camera(context.partition_keys).items():
        cam = fleet.camera(cam_key)
        with ExitStack() as opened:
            ptz: PTZCamera | None = None  # opened on the first hour that needs it, closed after the camera
            for hour in hours:
                pk = str(camera_hour_key(cam_key, hour))
                start = hour_start(hour)
                prefix = scans.query_prefix(cam.deployment, cam.name, start)
                try:  # any failure (camera, storage) costs this camera-hour only: a row + alert
                    existing = scans.read_manifest(storage, prefix)
                    if existing is not None:
                        outcome.succeeded[pk] = {"frames": len(existing.frames), "kept_existing_scan": True}
                        continue
                    if ptz is None:
                        ptz = opened.enter_context(closing(camera.open(cam)))
                    if not can_capture(ptz, start, now):
                        raise RuntimeError(
                            f"hour {hour} passed without a capture (a past hour is never re-captured)"
                        )
                    images, telemetry = capture_query(ptz, cam, _capture_time(start, now))
                    manifest = scans.write_scan(
                        storage, prefix, cam.key, "query", images, telemetry, cam.mode
                    )
                except Exception as exc:
                    reason = f"capture failed: {type(exc).__name__}: {exc}"
                    context.log.warning(f"{pk}: {reason}")
                    outcome.failed[pk] = reason
                    row = failure_row(cam, start, pk, context.run.run_id, reason, storage.uri(prefix))
                    failures.append((cam, row))
                    continue
                context.log.info(f"{pk}: captured {len(manifest.frames)} frames ({cam.mode})")
                outcome.succeeded[pk] = {"frames": len(manifest.frames), "mode": cam.mode}
    if failures:
        iceberg.replace_rows([row["partition_key"] for _, row in failures], [row for _, row in failures])
        for cam, row in failures:
            notify(slack, row, cam.offset_threshold_deg)
    yield from outcome.report(QUERY_SCAN)
