"""orientation_offsets (camera x hour): mount drift from stored query scans, idempotent Iceberg rows."""

import time

import dagster as dg

from geometry.drift import estimate_drift
from ptz_pipeline import scans
from ptz_pipeline.assets.common import load_intrinsics, load_reference_observations
from ptz_pipeline.assets.intrinsics import camera_intrinsics
from ptz_pipeline.assets.query import QUERY_SCAN
from ptz_pipeline.assets.r_align import r_align
from ptz_pipeline.assets.reference import reference_features
from ptz_pipeline.devices import CameraConfig, camera_key
from ptz_pipeline.grouped import GroupedOutcome, grouped_hourly_asset, keys_by_camera
from ptz_pipeline.partitions import camera_hour_key, camera_hour_partitions, hour_start
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.results import ResultRow

ORIENTATION_OFFSETS = dg.AssetKey("orientation_offsets")
OFFSET_CHECK = "offset_within_threshold"


def _camera_rows(
    context: dg.AssetExecutionContext,
    cam: CameraConfig,
    hours: list[str],
    storage: ObjectStorageResource,
    estimation: DriftEstimationResource,
) -> list[ResultRow]:
    """One result row per requested hour of one camera; reference features are loaded once."""
    intr, zoom_model = load_intrinsics(storage, cam)
    refine = estimation.photometric_refinement
    references = load_reference_observations(storage, cam, intr, zoom_model, with_images=refine)
    matcher = estimation.matcher()
    rows = []
    for i, hour in enumerate(hours, start=1):
        pk = str(camera_hour_key(cam.key, hour))
        start = hour_start(hour)
        prefix = scans.query_prefix(cam.deployment, cam.name, start)
        manifest = scans.read_manifest(storage, prefix)
        if manifest is None:
            rows.append(
                ResultRow.failure(
                    cam, start, pk, context.run.run_id, "no query scan for this hour", storage.uri(prefix)
                )
            )
            continue
        t0 = time.perf_counter()
        queries = scans.scan_observations(
            storage, prefix, manifest, intr, zoom_model, estimation.extractor(), with_images=refine
        )
        with estimation.blas_limit():
            report = estimate_drift(queries, references, matcher, estimation.drift_config())
        positions = [{"pan": f.pan, "tilt": f.tilt, "zoom": f.zoom} for f in manifest.frames]
        rows.append(
            ResultRow.from_estimate(
                cam, start, pk, context.run.run_id, report.joint, positions, storage.uri(prefix)
            )
        )
        j = report.joint
        context.log.info(
            f"{pk} ({i}/{len(hours)}): "
            + (
                f"yaw={j.yaw_deg:+.4f}±{j.sigma_yaw_deg:.4f} "
                f"pitch={j.pitch_deg:+.4f}±{j.sigma_pitch_deg:.4f} "
                f"roll={j.roll_deg:+.4f}±{j.sigma_roll_deg:.4f} inliers={j.inliers}"
                if j.success
                else f"insufficient evidence: {j.reason}"
            )
            + f" [{time.perf_counter() - t0:.1f} s]"
        )
    return rows


@grouped_hourly_asset(
    ORIENTATION_OFFSETS,
    [QUERY_SCAN, reference_features, camera_intrinsics, r_align],
    "Mount drift (yaw/pitch/roll ± σ, degrees) per camera-hour (Iceberg rows).",
    check_specs=[
        dg.AssetCheckSpec(
            OFFSET_CHECK,
            asset=ORIENTATION_OFFSETS,
            partitions_def=camera_hour_partitions,
            description="|yaw|, |pitch|, |roll| within the camera's offset_threshold_deg (0.5° default).",
        )
    ],
)
def orientation_offsets(
    context: dg.AssetExecutionContext,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    estimation: DriftEstimationResource,
    iceberg: IcebergResource,
    slack: SlackResource,
):
    """Estimate every requested camera-hour from stored scans only (backfills never touch a camera).

    All rows of the run replace earlier rows of the same partitions in one Iceberg transaction. A camera
    whose estimate fails gets a success=false row, an alert and a FAILED partition; the others go on.
    """
    fleet = devices.fleet()
    rows: list[ResultRow] = []
    cams = {}
    for cam_key, hours in keys_by_camera(context.partition_keys).items():
        cam = cams[cam_key] = fleet.camera(cam_key)
        try:
            rows += _camera_rows(context, cam, hours, storage, estimation)
        except Exception as exc:  # missing calibration etc.: every hour of this camera fails, others go on
            reason = f"{type(exc).__name__}: {exc}"
            context.log.warning(f"{cam_key}: {reason}")
            rows += [
                ResultRow.failure(
                    cam, hour_start(h), str(camera_hour_key(cam_key, h)), context.run.run_id, reason
                )
                for h in hours
            ]
    iceberg.replace_rows([r.partition_key for r in rows], rows)
    outcome = GroupedOutcome.empty()
    for row in rows:
        cam = cams[camera_key(row.deployment, row.device_id)]
        if not row.success:
            outcome.failed[row.partition_key] = row.failure_logs or "estimate failed"
            slack.send_result(row, cam.offset_threshold_deg)
            continue
        outcome.succeeded[row.partition_key] = row.metadata()
        passed = row.within_threshold(cam.offset_threshold_deg)
        context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=ORIENTATION_OFFSETS,
                check_name=OFFSET_CHECK,
                passed=passed,
                partition=row.partition_key,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={**row.metadata(), "threshold_deg": cam.offset_threshold_deg},
            )
        )
        if not passed:
            slack.send_result(row, cam.offset_threshold_deg)
    yield from outcome.report(ORIENTATION_OFFSETS)
