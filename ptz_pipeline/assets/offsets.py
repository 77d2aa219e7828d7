"""orientation_offsets (camera x hour): mount drift from stored query scans, idempotent Iceberg rows.

The unit of failure is the camera-hour. Each one is estimated against the calibration versions valid at its
hour (ptz_pipeline.versions) within the storage resource's ``camera_hour_deadline_s``; any error (a corrupt
file, calibration that fails to load, a storage endpoint that never answers) becomes that camera-hour's
failure row, naming the camera, the hour and the file, and the other camera-hours go on. A failed re-estimate
never replaces a successful row, and an hour's Slack report is sent again only when it changed.

Slack, per deployment (devices.yaml ``report``): ``all`` sends every camera-hour's seed report (the seed's
behaviour), ``alerts`` only failures and offsets beyond the camera's threshold. The check
``offset_within_threshold`` is evaluated for every camera-hour, its reason in words: a failed estimate fails
it (ERROR severity) with the failure's reason, because an hour without an estimate is not an hour within the
threshold (the seed's report says 🚨 for it too) and the check page then says why the hour has no number.
"""

import time
from dataclasses import dataclass, replace
from datetime import datetime

import dagster as dg

from geometry.camera import Intrinsics, ZoomModel
from geometry.drift import CalibrationUncertainty, DriftEstimate, FrameObservation, estimate_drift
from geometry.matching import Matcher
from geometry.rotations import drift_angles, drift_matrix
from ptz_pipeline import scans
from ptz_pipeline.assets.common import (
    CalibrationVersions,
    load_calibration_uncertainty,
    load_intrinsics,
    load_reference_observations,
    within_deadline,
)
from ptz_pipeline.assets.intrinsics import camera_intrinsics
from ptz_pipeline.assets.query import QUERY_SCAN
from ptz_pipeline.assets.r_align import r_align
from ptz_pipeline.assets.reference import reference_features
from ptz_pipeline.devices import CameraConfig, camera_key
from ptz_pipeline.grouped import GroupedOutcome, PartitionCheck, grouped_hourly_asset, keys_by_camera
from ptz_pipeline.partitions import camera_hour_key, camera_hour_partitions, hour_start
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.results import ANGLES, ResultRow, UsedVersions

ORIENTATION_OFFSETS = dg.AssetKey("orientation_offsets")
OFFSET_CHECK = "offset_within_threshold"


@dataclass(frozen=True)
class _Calibration:
    """One (intrinsics, reference scan) version pair, loaded: intrinsics at zoom 0, zoom model, reference
    frames with features (and grey images for photometric refinement), and the intrinsics' covariance when
    the version has one (the chessboard fit's)."""

    intrinsics: Intrinsics
    zoom_model: ZoomModel
    references: list[FrameObservation]
    uncertainty: CalibrationUncertainty | None


class _CameraCalibrations:
    """A camera's calibration for any hour of a run: version indexes read once, each version pair loaded once;
    a pair that fails to load fails every hour that uses it, with the same reason."""

    def __init__(self, storage: ObjectStorageResource, cam: CameraConfig, with_images: bool) -> None:
        self.storage, self.cam, self.with_images = storage, cam, with_images
        self._versions: CalibrationVersions | None = None
        self._loaded: dict[tuple[int, int], _Calibration | Exception] = {}

    def at(self, hour: datetime) -> tuple[_Calibration, UsedVersions]:
        """The calibration valid at the hour beginning at ``hour`` (UTC) and the versions it is made of."""
        if self._versions is None:
            self._versions = CalibrationVersions.read(self.storage, self.cam)
        intrinsics, reference, used = self._versions.at(hour)
        pair = (intrinsics.number, reference.number)
        if pair not in self._loaded:
            try:
                intr, zoom_model = load_intrinsics(self.storage, self.cam, intrinsics)
                refs = load_reference_observations(
                    self.storage, self.cam, intr, zoom_model, self.with_images, reference
                )
                uncertainty = load_calibration_uncertainty(self.storage, self.cam, intrinsics)
                self._loaded[pair] = _Calibration(intr, zoom_model, refs, uncertainty)
            except Exception as exc:  # remembered: every hour using this pair fails with it
                self._loaded[pair] = exc
        loaded = self._loaded[pair]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded, used


def relative_to_r_align(
    estimate: DriftEstimate, correction_deg: tuple[float, float, float] | None
) -> DriftEstimate:
    """The drift relative to the hour's R_align version: ``Δ_p⁻¹ · Δ`` for the drift Δ since the reference
    scan and the correction Δ_p = drift_matrix(``correction_deg``) (yaw, pitch, roll degrees) that version
    applies (ptz_pipeline.proposals); ``estimate`` itself when there is none or it failed.

    σ are kept: Δ_p is a constant, so Δ_p⁻¹ · Δ has the same rotation uncertainty as Δ; its yaw/pitch/roll σ
    differ from Δ's only by the change of the Euler angles' Jacobian, of the order of the angles in radians
    (under 1 % of σ for drifts and corrections below 0.5°).
    """
    if correction_deg is None or not estimate.success:
        return estimate
    measured = drift_matrix(estimate.yaw_deg, estimate.pitch_deg, estimate.roll_deg)
    D = drift_matrix(*correction_deg).T @ measured
    yaw, pitch, roll = drift_angles(D)
    return replace(estimate, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll, D=D)


def _estimate_hour(
    cam: CameraConfig,
    hour: str,
    run_id: str,
    storage: ObjectStorageResource,
    estimation: DriftEstimationResource,
    matcher: Matcher,
    calibrations: _CameraCalibrations,
) -> ResultRow:
    """One camera-hour's row from its stored query scan and the calibration valid at its hour, the offsets
    relative to the hour's R_align version (:func:`relative_to_r_align`). The reference scan models the
    optical centre's offset from the pan/tilt axes (parallax) and corrects the calibration; σ includes the
    calibration's remaining uncertainty (geometry.drift.estimate_drift)."""
    pk = str(camera_hour_key(cam.key, hour))
    start = hour_start(hour)
    prefix = scans.query_prefix(cam.deployment, cam.name, start)
    manifest = scans.read_manifest(storage, prefix)
    if manifest is None:
        reason = f"{cam.key} hour {hour}: no query scan at {storage.uri(prefix)}"
        return ResultRow.failure(cam, start, pk, run_id, reason, storage.uri(prefix))
    calibration, used = calibrations.at(start)
    queries = scans.scan_observations(
        storage,
        prefix,
        manifest,
        calibration.intrinsics,
        calibration.zoom_model,
        estimation.extractor(),
        with_images=estimation.photometric_refinement,
    )
    with estimation.blas_limit():
        report = estimate_drift(
            queries,
            calibration.references,
            matcher,
            estimation.drift_config(),
            calibration=calibration.uncertainty,
        )
    estimate = relative_to_r_align(report.joint, used.r_align_correction_deg)
    positions = [{"pan": f.pan, "tilt": f.tilt, "zoom": f.zoom} for f in manifest.frames]
    return ResultRow.from_estimate(cam, start, pk, run_id, estimate, positions, storage.uri(prefix), used)


def _summary(row: ResultRow) -> str:
    """One log line of a row: offsets ± σ (degrees), or why it failed."""
    if not row.success:
        return f"failed: {row.failure_logs}"
    return (
        f"yaw={row.yaw_offset:+.4f}±{row.sigma_yaw:.4f} pitch={row.pitch_offset:+.4f}±{row.sigma_pitch:.4f} "
        f"roll={row.roll_offset:+.4f}±{row.sigma_roll:.4f} inliers={row.inliers} "
        f"versions r{row.reference_version}/i{row.intrinsics_version}/a{row.r_align_version}"
    )


def _camera_rows(
    context: dg.AssetExecutionContext,
    cam: CameraConfig,
    hours: list[str],
    storage: ObjectStorageResource,
    estimation: DriftEstimationResource,
    matcher: Matcher,
) -> list[ResultRow]:
    """One row per requested hour of one camera, each within the camera-hour deadline: an error becomes
    that hour's failure row (camera, hour, the file) and the next hour goes on."""
    calibrations = _CameraCalibrations(storage, cam, estimation.photometric_refinement)
    run_id = context.run.run_id
    rows = []
    for i, hour in enumerate(hours, start=1):
        t0 = time.perf_counter()
        try:
            row = within_deadline(
                lambda hour=hour: _estimate_hour(
                    cam, hour, run_id, storage, estimation, matcher, calibrations
                ),
                storage.camera_hour_deadline_s,
            )
        except Exception as exc:  # this camera-hour only
            start = hour_start(hour)
            location = storage.uri(scans.query_prefix(cam.deployment, cam.name, start))
            reason = f"{cam.key} hour {hour}: {type(exc).__name__}: {exc}"
            row = ResultRow.failure(cam, start, str(camera_hour_key(cam.key, hour)), run_id, reason, location)
        log = context.log.info if row.success else context.log.warning
        log(f"{row.partition_key} ({i}/{len(hours)}): {_summary(row)} [{time.perf_counter() - t0:.1f} s]")
        rows.append(row)
    return rows


def _signed_degrees(value: float) -> str:
    """``+0.61°`` style: signed, at most 3 decimals, trailing zeros dropped."""
    return f"{value:+.3f}".rstrip("0").rstrip(".") + "°"


def offset_check(row: ResultRow, threshold_deg: float) -> PartitionCheck:
    """``offset_within_threshold`` for one camera-hour's row: passed when every |offset| <= ``threshold_deg``
    (degrees); the reason in words (the angles beyond it, or the largest within it), the offsets and σ in
    degrees rounded to 0.0001°. A failed estimate fails the check (ERROR) with the row's failure reason."""
    if not row.success:
        reason = f"no estimate: {row.failure_logs or 'estimate failed'}"
        meta = {"threshold_deg": threshold_deg}
        return PartitionCheck(
            OFFSET_CHECK, row.partition_key, False, reason, meta, dg.AssetCheckSeverity.ERROR
        )
    offsets = dict(zip(ANGLES, (row.yaw_offset, row.pitch_offset, row.roll_offset), strict=True))
    sigmas = dict(zip(ANGLES, (row.sigma_yaw, row.sigma_pitch, row.sigma_roll), strict=True))
    beyond = [a for a in ANGLES if abs(offsets[a]) > threshold_deg]
    if beyond:
        listed = ", ".join(f"{a} {_signed_degrees(offsets[a])}" for a in beyond)
        reason = f"{listed} beyond the {threshold_deg:g}° threshold"
    else:
        top = max(ANGLES, key=lambda a: abs(offsets[a]))
        reason = f"within the {threshold_deg:g}° threshold (largest: {top} {_signed_degrees(offsets[top])})"
    metadata = {
        **{f"{a}_deg": round(offsets[a], 4) for a in ANGLES},
        **{f"sigma_{a}_deg": round(sigmas[a], 4) for a in ANGLES if sigmas[a] is not None},
        "threshold_deg": threshold_deg,
    }
    return PartitionCheck(
        OFFSET_CHECK, row.partition_key, row.within_threshold(threshold_deg), reason, metadata
    )


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
    """Estimate every requested camera-hour from stored scans only (backfills never touch a camera), each
    against the calibration versions valid at its hour (recorded in the row and its metadata), the offsets
    relative to its R_align version (an applied proposal's correction taken out, named in the row).

    The run's rows replace earlier rows of the same partitions in one Iceberg transaction, except that a
    failed estimate never replaces a successful row: the good row stays, and the partition's metadata says
    the new attempt failed. A failed camera-hour gets a success=false row, an alert, a failed check and a
    FAILED partition; the others go on. Each camera-hour's Slack report goes out as its deployment's
    ``report`` says (all, or alerts only), and for an hour already reported only when the report changed.
    """
    fleet = devices.fleet()
    matcher = estimation.matcher()
    rows: list[ResultRow] = []
    cams = {}
    for cam_key, hours in keys_by_camera(context.partition_keys).items():
        cams[cam_key] = fleet.camera(cam_key)
        rows += _camera_rows(context, cams[cam_key], hours, storage, estimation, matcher)
    previous = iceberg.read_partitions([row.partition_key for row in rows])
    kept = {
        row.partition_key
        for row in rows
        if not row.success and row.partition_key in previous and previous[row.partition_key].success
    }
    written = [row for row in rows if row.partition_key not in kept]
    iceberg.replace_rows([row.partition_key for row in written], written)
    outcome = GroupedOutcome.empty()
    for row in rows:
        cam = cams[camera_key(row.deployment, row.device_id)]
        old = previous.get(row.partition_key)
        if row.partition_key in kept:
            context.log.warning(
                f"{row.partition_key}: the re-estimate failed ({row.failure_logs}); kept the successful row "
                f"of run {old.run_id}"
            )
            outcome.succeeded[row.partition_key] = {
                **old.metadata(),
                "kept_previous_row": True,
                "failed_attempt": row.failure_logs,
            }
            check = offset_check(old, cam.offset_threshold_deg)
            note = f"; the re-estimate failed ({row.failure_logs}), the row of run {old.run_id} is kept"
            outcome.checks.append(replace(check, description=check.description + note))
            continue
        if row.success:
            outcome.succeeded[row.partition_key] = row.metadata()
        else:
            outcome.failed[row.partition_key] = row.failure_logs or "estimate failed"
        outcome.checks.append(offset_check(row, cam.offset_threshold_deg))
        slack.send_result(row, cam.offset_threshold_deg, old, cam.report)
    yield from outcome.report(ORIENTATION_OFFSETS, context)
