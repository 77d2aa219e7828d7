"""camera_intrinsics: K and distortion per camera, from chessboard photos in storage or self-calibrated from
the camera's reference scan (devices.yaml ``intrinsics: chessboard | self``)."""

from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np

from geometry.camera import Intrinsics, ZoomModel
from geometry.intrinsics import CALIBRATION_PARAMETERS, calibrate_chessboard, parse_pattern
from geometry.selfcal import ScanFrame, SelfCalibration, SelfCalibrationError, self_calibrate
from ptz_pipeline import scans
from ptz_pipeline.assets.common import current_version, store_intrinsics, versioned_result
from ptz_pipeline.assets.reference import reference_features
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.slack import ALERT_EMOJI, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource

CHESSBOARD_PATTERN = (9, 6)
CHESSBOARD_SQUARE_M = 0.03
"""The default chessboard: 9x6 inner corners (columns x rows), 3 cm squares."""


class IntrinsicsConfig(dg.Config):
    """Chessboard geometry: inner corners (columns x rows) and square size in metres; the largest RMS
    residual (pixels) the check accepts (chessboard corners, or the self-calibration's matched keypoints)."""

    pattern: str = f"{CHESSBOARD_PATTERN[0]}x{CHESSBOARD_PATTERN[1]}"
    square_m: float = CHESSBOARD_SQUARE_M
    max_rms_px: float = 1.0


@dataclass(frozen=True)
class _Calibration:
    """One calibration's outcome, whichever the method: intrinsics at zoom 0, RMS residual (pixels), the
    parameters' covariance (None when not known), the zoom -> focal model (None: devices.yaml's ratio table x
    fx), what it was made from (provenance), UI metadata, and what to redo when the RMS check fails."""

    method: str
    intrinsics: Intrinsics
    rms: float
    covariance: np.ndarray | None
    zoom_model: ZoomModel | None
    provenance: dict[str, Any]
    metadata: dict[str, Any]
    summary: str
    remedy: str


def _chessboard(
    cam: CameraConfig, config: IntrinsicsConfig, storage: ObjectStorageResource, log
) -> _Calibration:
    """Calibration from the chessboard photos in ``{camera}/intrinsics/chessboard/``."""
    prefix = scans.chessboard_prefix(cam.deployment, cam.name)
    keys = [k for k in storage.list_keys(prefix) if k.lower().endswith((".png", ".jpg", ".jpeg"))]
    if not keys:
        raise dg.Failure(
            f"{cam.key}: no chessboard photos (.png/.jpg) under {storage.uri(prefix)}; upload photos of a "
            f"{config.pattern} chessboard with {config.square_m * 1000:g} mm squares first"
        )
    images = [scans.decode_image(storage.get_bytes(k), k) for k in keys]
    log.info(f"{cam.key}: calibrating from {len(images)} chessboard photos")
    calib = calibrate_chessboard(images, pattern=parse_pattern(config.pattern), square_size_m=config.square_m)
    return _Calibration(
        method="chessboard",
        intrinsics=calib.intrinsics,
        rms=float(calib.rms),
        covariance=calib.covariance,
        zoom_model=None,
        provenance={"chessboard_photos": keys},
        metadata={
            "views_used": len(calib.used_views),
            "views_rejected": dg.MetadataValue.json([keys[int(v.split()[-1])] for v in calib.rejected_views]),
        },
        summary=f"chessboard calibration RMS {calib.rms:.3f} px over {len(calib.used_views)} views",
        remedy="re-take photos",
    )


def _scan_frames(
    cam: CameraConfig, storage: ObjectStorageResource, estimation: DriftEstimationResource
) -> tuple[int, list[ScanFrame], int]:
    """(reference version, the current reference scan's frames with features and telemetry, how many frames
    had no stored features and were extracted now)."""
    version = current_version(storage, cam, "reference")
    manifest = scans.read_manifest(storage, version.prefix)
    if manifest is None:
        raise dg.Failure(f"{cam.key}: no complete reference scan at {storage.uri(version.prefix)}")
    extractor, fresh, frames = None, 0, []
    for frame in manifest.frames:
        if storage.exists(scans.features_key(version.prefix, frame)):
            feats = scans.read_features(storage, version.prefix, frame)
        else:
            extractor = extractor or estimation.extractor()
            feats = extractor.extract(scans.read_image(storage, version.prefix, frame))
            fresh += 1
        frames.append(ScanFrame(feats, frame.pan, frame.tilt, frame.zoom, frame.image))
    return version.number, frames, fresh


def _zoom_model(cam: CameraConfig, result: SelfCalibration) -> tuple[ZoomModel, str]:
    """The zoom -> focal model of a self-calibration and where it comes from: the levels' monotone fit
    (geometry.selfcal.fit_zoom_model, distortion per zoom) when the scan has several zoom levels, else the
    devices.yaml ratio table scaled to the one calibrated level."""
    if len(result.levels) > 1:
        return result.zoom_model(), f"self-calibrated at zooms {[round(lv.zoom, 4) for lv in result.levels]}"
    level = result.levels[0]
    ratio = cam.nominal_zoom_model
    scale = level.intrinsics.fx / ratio.focal(level.zoom)
    table = ZoomModel(ratio.zoom, tuple(scale * r for r in ratio.focal_px))
    return table, f"devices.yaml zoom_focal_ratio scaled to the focal length at zoom {level.zoom:g}"


ZOOM_LEVEL_TOLERANCE = 0.01
"""A configured zoom level (ONVIF 0..1) counts as calibrated when a calibrated level lies this close (the
camera's reported zoom may differ a little from the commanded one)."""
MAX_LEVEL_FOCAL_RATIO = 1.8
"""Adjacent zoom levels whose focal lengths differ by more than this factor rarely share enough matches
(the features' scale range) to be linked by the self-calibration."""


def unlinked_zoom_levels(cam: CameraConfig, result: SelfCalibration) -> str | None:
    """Why the self-calibration ``result`` leaves out zoom levels of devices.yaml ``reference.zoom`` and
    ``reference.zoom_levels`` (each naming the levels and what to change), or None when it has them all:
    without them the zoom curve would silently be extrapolated or come from the nominal table."""
    configured = [cam.reference.zoom, *cam.reference.zoom_levels]
    calibrated = np.array([lv.zoom for lv in result.levels])
    missing = [z for z in configured if not np.any(np.abs(calibrated - z) <= ZOOM_LEVEL_TOLERANCE)]
    if not missing:
        return None
    nominal = cam.nominal_zoom_model
    far = [
        f"{a:g} -> {b:g} ({nominal.focal(b) / nominal.focal(a):.2g}x)"
        for a, b in zip(configured, configured[1:], strict=False)
        if nominal.focal(b) / nominal.focal(a) > MAX_LEVEL_FOCAL_RATIO
    ]
    gaps = f"; nominal focal ratios over {MAX_LEVEL_FOCAL_RATIO:g}x: {', '.join(far)}" if far else ""
    dropped = list(result.frames_dropped)
    unlinked = ", ".join(dropped[:4]) + (", ..." if len(dropped) > 4 else "")
    return (
        f"zoom levels {[round(z, 4) for z in missing]} of devices.yaml reference.zoom_levels could not be "
        f"linked to the scan (calibrated: {[round(float(z), 4) for z in calibrated]}; {len(dropped)} frames "
        f"match no frame linked to the others: {unlinked or 'none'}){gaps}. Configure levels "
        f"whose focal lengths are at most ~{MAX_LEVEL_FOCAL_RATIO:g}x apart (add levels in between), then "
        "re-scan the reference"
    )


def _self_calibrated(
    cam: CameraConfig,
    storage: ObjectStorageResource,
    estimation: DriftEstimationResource,
    slack: SlackResource,
    log,
) -> _Calibration:
    """Self-calibration (geometry.selfcal) from the current reference scan's frames and telemetry. Fails
    (alerting on Slack) when a configured zoom level is not in the fit."""
    reference, frames, fresh = _scan_frames(cam, storage, estimation)
    log.info(f"{cam.key}: self-calibrating from {len(frames)} frames of reference scan v{reference}")
    try:
        with estimation.blas_limit():
            result = self_calibrate(frames, estimation.matcher())
    except SelfCalibrationError as exc:
        raise dg.Failure(
            f"{cam.key}: self-calibration from reference scan v{reference} failed: {exc}"
        ) from None
    unlinked = unlinked_zoom_levels(cam, result)
    if unlinked:
        message = f"{cam.key}: self-calibration from reference scan v{reference}: {unlinked}"
        slack.send_message(f"{ALERT_EMOJI} {message}")
        raise dg.Failure(message)
    zoom_model, zoom_source = _zoom_model(cam, result)
    level = result.levels[0]
    intrinsics = level.intrinsics.with_focal(zoom_model.focal(0.0))  # K and distortion at zoom 0
    scale = np.diag([intrinsics.fx / level.intrinsics.fx] * 2 + [1.0] * 7)  # fx, fy σ in proportion
    covariance = scale @ result.covariance @ scale
    sigma = {k: round(float(v), 6) for k, v in result.sigma.items()}
    # σ from the stored covariance: fixed p1, p2, k3 and the bias they could cause included
    stored = np.sqrt(np.diag(covariance))
    stored_sigma = {name: float(f"{v:.3g}") for name, v in zip(CALIBRATION_PARAMETERS, stored, strict=True)}
    levels = [
        {
            "zoom": lv.zoom,
            "f_px": round(float(lv.intrinsics.fx), 3),
            "sigma_f_px": round(float(lv.sigma_focal_px), 4),
            "k1": round(float(lv.intrinsics.dist[0]), 5),
            "k2": round(float(lv.intrinsics.dist[1]), 5),
            "frames": len(lv.frames),
            "started_by": lv.initialisation,
        }
        for lv in result.levels
    ]
    return _Calibration(
        method="self",
        intrinsics=intrinsics,
        rms=float(result.rms_px),
        covariance=covariance,
        zoom_model=zoom_model,
        provenance={
            "reference_version": reference,
            "rms_px": float(result.rms_px),
            "sigma": sigma,
            "covariance_sigma": stored_sigma,
            "zoom_levels": levels,
            "zoom_curve": zoom_source,
            "frames_used": len(result.frames_used),
            "frames_dropped": list(result.frames_dropped),
        },
        metadata={
            "reference_version": reference,
            "sigma_f_px": sigma["f"],
            "sigma_cx_px": sigma["cx"],
            "sigma_cy_px": sigma["cy"],
            "covariance_sigma": dg.MetadataValue.json(stored_sigma),
            "k1": round(float(level.intrinsics.dist[0]), 5),
            "k2": round(float(level.intrinsics.dist[1]), 5),
            "zoom_levels": dg.MetadataValue.json(levels),
            "zoom_model": zoom_source,
            "frames_used": len(result.frames_used),
            "frames_dropped": dg.MetadataValue.json(list(result.frames_dropped)),
            "pairs": len(result.pairs),
            "observations": result.observations,
            "features_extracted_now": fresh,
            "max_telemetry_correction_deg": round(float(result.max_telemetry_correction_deg), 4),
        },
        summary=(
            f"self-calibration RMS {result.rms_px:.3f} px over {len(result.frames_used)} frames of reference "
            f"scan v{reference} ({len(result.pairs)} overlapping pairs)"
        ),
        remedy="re-scan the reference (reference_scan) with more overlap",
    )


@dg.asset(
    partitions_def=camera_partitions,
    group_name="calibration",
    deps=[reference_features],
    check_specs=[dg.AssetCheckSpec("intrinsics_rms_below_1px", asset="camera_intrinsics")],
)
def camera_intrinsics(
    context: dg.AssetExecutionContext,
    config: IntrinsicsConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
    estimation: DriftEstimationResource,
    slack: SlackResource,
) -> dg.MaterializeResult:
    """Intrinsics (K, distortion; pixels) by the camera's devices.yaml ``intrinsics`` method.

    ``chessboard`` (default): from the photos in ``{camera}/intrinsics/chessboard/``, with the fit's
    covariance (orientation_offsets corrects the calibration with the reference scan and carries what
    remains into σ) and the zoom -> focal table devices.yaml ``zoom_focal_ratio`` x the calibrated fx.
    ``self``: self-calibration (geometry.selfcal: bundle adjustment of K, k1, k2 and every frame's rotation,
    telemetry as prior) of the CURRENT reference scan (its stored features; frames without any are extracted
    now), K and distortion of its lowest zoom level with the adjustment's covariance (tied fy and fixed p1,
    p2, k3 included, :attr:`geometry.selfcal.SelfCalibration.covariance`), used as the chessboard's;
    with ``reference.zoom_levels`` the zoom -> focal (and distortion) model is the monotone fit through the
    scanned levels (a configured level missing from the fit fails the asset, with a Slack alert, naming
    it and what to change), else the ratio table scaled to the calibrated level. Either way a new version
    (ptz_pipeline.versions) of the seed's ``calibration.npz`` and ``zoom_model.json``, the method and the
    fit's RMS in its provenance; earlier versions stay for the hours they cover.

    The dependency on reference_features is static, for every camera (a Dagster dependency cannot depend on
    devices.yaml): a calibration run scans and extracts the reference before the intrinsics, which the
    chessboard method does not need but does not mind. A self-calibrated camera's intrinsics follow its
    reference scan: re-scanning means re-materialising camera_intrinsics (the calibrate_camera job does).
    """
    cam = devices.camera(context.partition_key)
    if cam.intrinsics == "self":
        calibration = _self_calibrated(cam, storage, estimation, slack, context.log)
    else:
        calibration = _chessboard(cam, config, storage, context.log)
    version = store_intrinsics(
        storage,
        cam,
        calibration.intrinsics,
        calibration.rms,
        calibration.covariance,
        zoom_model=calibration.zoom_model,
        run_id=context.run.run_id,
        method=calibration.method,
        **calibration.provenance,
    )
    K = calibration.intrinsics.K
    passed = bool(calibration.rms < config.max_rms_px)
    verdict = f"{cam.key}: {calibration.summary}, {'<' if passed else '>='} {config.max_rms_px:g} px"
    if not passed:
        slack.send_message(
            f"{ALERT_EMOJI} {verdict} (intrinsics version {version.number}): {calibration.remedy}"
        )
    return versioned_result(
        storage,
        version,
        metadata={
            "method": calibration.method,
            "rms_px": round(calibration.rms, 4),
            "fx_px": round(float(K[0, 0]), 2),
            "fy_px": round(float(K[1, 1]), 2),
            "cx_px": round(float(K[0, 2]), 2),
            "cy_px": round(float(K[1, 2]), 2),
            **calibration.metadata,
        },
        check_results=[
            dg.AssetCheckResult(
                passed=passed,
                description=verdict,
                metadata={"rms_px": round(calibration.rms, 4), "max_rms_px": config.max_rms_px},
            )
        ],
    )
