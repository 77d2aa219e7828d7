"""camera_intrinsics: K and distortion from chessboard photos in storage (per camera)."""

import dagster as dg

from geometry.intrinsics import calibrate_chessboard, parse_pattern
from ptz_pipeline import scans
from ptz_pipeline.assets.common import store_intrinsics, versioned_result
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.slack import ALERT_EMOJI, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource

CHESSBOARD_PATTERN = (9, 6)
CHESSBOARD_SQUARE_M = 0.03
"""The default chessboard: 9x6 inner corners (columns x rows), 3 cm squares."""


class IntrinsicsConfig(dg.Config):
    """Chessboard geometry: inner corners (columns x rows) and square size in metres."""

    pattern: str = f"{CHESSBOARD_PATTERN[0]}x{CHESSBOARD_PATTERN[1]}"
    square_m: float = CHESSBOARD_SQUARE_M
    max_rms_px: float = 1.0


@dg.asset(
    partitions_def=camera_partitions,
    group_name="calibration",
    check_specs=[dg.AssetCheckSpec("intrinsics_rms_below_1px", asset="camera_intrinsics")],
)
def camera_intrinsics(
    context: dg.AssetExecutionContext,
    config: IntrinsicsConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    slack: SlackResource,
) -> dg.MaterializeResult:
    """Intrinsics (K, distortion; pixels) from chessboard photos in ``{camera}/intrinsics/chessboard/``.

    Writes a new version (ptz_pipeline.versions) of the seed's ``calibration.npz`` (with the fit's covariance,
    which orientation_offsets carries into σ) and the zoom -> focal
    table (devices.yaml ``zoom_focal_ratio`` x calibrated fx); earlier versions stay for the hours they cover.
    """
    cam = devices.camera(context.partition_key)
    prefix = scans.chessboard_prefix(cam.deployment, cam.name)
    keys = [k for k in storage.list_keys(prefix) if k.lower().endswith((".png", ".jpg", ".jpeg"))]
    if not keys:
        raise dg.Failure(
            f"{cam.key}: no chessboard photos (.png/.jpg) under {storage.uri(prefix)}; upload photos of a "
            f"{config.pattern} chessboard with {config.square_m * 1000:g} mm squares first"
        )
    images = [scans.decode_image(storage.get_bytes(k), k) for k in keys]
    context.log.info(f"{cam.key}: calibrating from {len(images)} chessboard photos")
    calib = calibrate_chessboard(images, pattern=parse_pattern(config.pattern), square_size_m=config.square_m)
    version = store_intrinsics(
        storage,
        cam,
        calib.intrinsics,
        calib.rms,
        calib.covariance,
        run_id=context.run.run_id,
        chessboard_photos=keys,
    )
    K = calib.intrinsics.K
    passed = bool(calib.rms < config.max_rms_px)
    verdict = (
        f"{cam.key}: chessboard calibration RMS {calib.rms:.3f} px "
        f"{'<' if passed else '>='} {config.max_rms_px:g} px over {len(calib.used_views)} views"
    )
    if not passed:
        slack.send_message(f"{ALERT_EMOJI} {verdict} (intrinsics version {version.number}): re-take photos")
    return versioned_result(
        storage,
        version,
        metadata={
            "rms_px": round(float(calib.rms), 4),
            "fx_px": round(float(K[0, 0]), 2),
            "fy_px": round(float(K[1, 1]), 2),
            "cx_px": round(float(K[0, 2]), 2),
            "cy_px": round(float(K[1, 2]), 2),
            "views_used": len(calib.used_views),
            "views_rejected": dg.MetadataValue.json([keys[int(v.split()[-1])] for v in calib.rejected_views]),
        },
        check_results=[
            dg.AssetCheckResult(
                passed=passed,
                description=verdict,
                metadata={"rms_px": round(float(calib.rms), 4), "max_rms_px": config.max_rms_px},
            )
        ],
    )
