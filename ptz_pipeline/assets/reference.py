"""reference_scan and reference_features: the camera's grid of PTZ stops and their DISK features."""

import time
from contextlib import closing

import dagster as dg

from ptz_pipeline import scans
from ptz_pipeline.assets.common import current_version, store_reference_scan, versioned_result
from ptz_pipeline.capture import scan_reference, stop_line
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.camera import DevicesResource, PTZCameraResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.slack import ALERT_EMOJI, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource


@dg.asset(partitions_def=camera_partitions, group_name="calibration")
def reference_scan(
    context: dg.AssetExecutionContext,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    camera: PTZCameraResource,
) -> dg.MaterializeResult:
    """Grid of PTZ stops (devices.yaml ``reference``), then 2 x 2 stops per extra zoom level
    (``reference.zoom_levels``, for the self-calibrated zoom curve): image + telemetry per stop, manifest.json
    written last.

    Writes a new version (ptz_pipeline.versions); earlier ones stay for the hours they cover.
    """
    cam = devices.camera(context.partition_key)
    stops = cam.reference_stops()
    with closing(camera.open(cam)) as ptz:
        images, telemetry = scan_reference(
            ptz, stops, lambda i, n, t: context.log.info(f"{cam.key}: {stop_line(i, n, t)}")
        )
    version, manifest = store_reference_scan(storage, cam, images, telemetry, run_id=context.run.run_id)
    return versioned_result(
        storage,
        version,
        metadata={
            "frames": len(manifest.frames),
            "grid": f"{cam.reference.horizontal_stops} x {cam.reference.vertical_stops}",
            "zoom_levels": dg.MetadataValue.json([cam.reference.zoom, *cam.reference.zoom_levels]),
        },
    )


class ReferenceFeaturesConfig(dg.Config):
    min_features_per_stop: int = 200


@dg.asset(
    partitions_def=camera_partitions,
    group_name="calibration",
    deps=[reference_scan],
    check_specs=[dg.AssetCheckSpec("reference_coverage", asset="reference_features")],
)
def reference_features(
    context: dg.AssetExecutionContext,
    config: ReferenceFeaturesConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    estimation: DriftEstimationResource,
    slack: SlackResource,
) -> dg.MaterializeResult:
    """Features (DISK by default) of every frame of the current reference scan version, in its
    ``features/``."""
    cam = devices.camera(context.partition_key)
    version = current_version(storage, cam, "reference")
    prefix = version.prefix
    manifest = scans.read_manifest(storage, prefix)
    if manifest is None:
        raise dg.Failure(f"{cam.key}: no complete reference scan at {storage.uri(prefix)}")
    extractor = estimation.extractor()
    counts = []
    start = time.perf_counter()
    for i, frame in enumerate(manifest.frames, start=1):
        feats = extractor.extract(scans.read_image(storage, prefix, frame))
        scans.write_features(storage, prefix, frame, feats)
        counts.append(len(feats.keypoints))
        context.log.info(f"{cam.key}: features {i}/{len(manifest.frames)}: {counts[-1]} keypoints")
    poor = [f.image for f, n in zip(manifest.frames, counts, strict=True) if n < config.min_features_per_stop]
    verdict = (
        f"{cam.key}: {len(poor)} of {len(counts)} reference stops have fewer than "
        f"{config.min_features_per_stop} features"
        + (f" ({', '.join(poor)}): those views cannot measure the drift" if poor else "")
    )
    if poor:
        slack.send_message(f"{ALERT_EMOJI} {verdict} (reference version {version.number})")
    return versioned_result(
        storage,
        version,
        metadata={
            "frames": len(counts),
            "min_keypoints": min(counts),
            "mean_keypoints": round(sum(counts) / len(counts), 1),
            "seconds_per_frame": round((time.perf_counter() - start) / len(counts), 3),
            "extractor": estimation.extractor_kind,
        },
        check_results=[
            dg.AssetCheckResult(
                passed=not poor,
                severity=dg.AssetCheckSeverity.WARN,
                description=verdict,
                metadata={
                    "stops_below_minimum": dg.MetadataValue.json(poor),
                    "minimum": config.min_features_per_stop,
                },
            )
        ],
    )
