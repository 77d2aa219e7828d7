"""r_align: the mount-to-world rotation R_align (= R_WB) from control points seen in the reference scan."""

import json
from dataclasses import replace

import dagster as dg
import numpy as np

from geometry.alignment import ControlPoints, estimate_r_align, parse_control_points, parse_control_points_csv
from geometry.camera import Intrinsics, ZoomModel
from geometry.rotations import drift_angles
from ptz_pipeline import proposals, scans
from ptz_pipeline.assets.common import current_version, load_intrinsics, store_r_align, versioned_result
from ptz_pipeline.assets.intrinsics import camera_intrinsics
from ptz_pipeline.assets.reference import reference_scan
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.versions import Version


def _control_points(
    storage: ObjectStorageResource, cam: CameraConfig, reference: Version
) -> tuple[str, bytes, ControlPoints]:
    """(key, bytes, parsed) of the camera's ``control_points.json`` or ``.csv``; points that name a reference
    image take its telemetry from the reference scan version ``reference``. Errors name the file."""
    found = [
        key
        for key in (scans.control_points_key(cam.deployment, cam.name, fmt) for fmt in ("json", "csv"))
        if storage.exists(key)
    ]
    if len(found) != 1:
        raise dg.Failure(
            f"{cam.key}: {'no control points' if not found else 'two control-point files'} at "
            f"{storage.uri(scans.control_points_key(cam.deployment, cam.name))} or .csv; upload one survey "
            "(landmarks with ENU or lat/lon/alt, clicked as u, v in reference frames: see the README)"
        )
    key = found[0]
    data = storage.get_bytes(key)
    manifest = scans.read_manifest(storage, reference.prefix)
    frames = {f.image: (f.pan, f.tilt, f.zoom) for f in manifest.frames} if manifest else None
    try:
        if key.endswith(".csv"):
            return key, data, parse_control_points_csv(data.decode("utf-8-sig"), frames)
        return key, data, parse_control_points(json.loads(data), frames)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{storage.uri(key)}: {exc}") from None


def _at_frame_size(
    storage: ObjectStorageResource, reference: Version, intr: Intrinsics, zoom_model: ZoomModel
) -> tuple[Intrinsics, ZoomModel]:
    """K and the zoom -> focal table (pixels) at the size of the reference frames the points were clicked in:
    a camera's stream may differ in size from the chessboard photos it was calibrated with."""
    manifest = scans.read_manifest(storage, reference.prefix)
    if manifest is None or not manifest.frames:
        return intr, zoom_model
    height, width = scans.read_image(storage, reference.prefix, manifest.frames[0]).shape[:2]
    if (width, height) == tuple(intr.image_size):
        return intr, zoom_model
    scale = width / intr.image_size[0]
    return intr.scaled(scale), replace(zoom_model, focal_px=tuple(f * scale for f in zoom_model.focal_px))


R_ALIGN_TABLE = dg.TableSchema(
    columns=[
        dg.TableColumn("world_axis", "string", description="row: east, north or up (ENU at the camera)"),
        *(
            dg.TableColumn(f"mount_{axis}", "float", description=f"column: the mount's {axis} axis")
            for axis in "xyz"
        ),
    ]
)


def r_align_metadata(R_align: np.ndarray) -> dict[str, object]:
    """R_align (mount -> world ENU) for the UI: the mount's orientation in degrees, rounded to 0.0001° (yaw:
    the heading of pan 0, clockwise from north, in [0, 360); pitch, roll as geometry.rotations.drift_angles
    reads R_align), and the matrix as a table (rows E, N, U; columns the mount's x, y, z; 8 decimals)."""
    yaw, pitch, roll = drift_angles(R_align)
    rows = [
        dg.TableRecord(
            {
                "world_axis": name,
                **{f"mount_{a}": round(float(v), 8) for a, v in zip("xyz", row, strict=True)},
            }
        )
        for name, row in zip(("east", "north", "up"), np.asarray(R_align), strict=True)
    ]
    return {
        "mount_yaw_deg": round(yaw % 360.0, 4),
        "mount_pitch_deg": round(pitch, 4),
        "mount_roll_deg": round(roll, 4),
        "R_align": dg.MetadataValue.table(rows, schema=R_ALIGN_TABLE),
    }


class RAlignConfig(dg.Config):
    """Where the new R_align comes from: the survey (default) or the camera's latest proposal."""

    apply_proposal: bool = False
    """Apply ``r_align/proposal.json`` (r_align_proposal) instead of estimating from control points."""


def _apply_proposal(
    context: dg.AssetExecutionContext, storage: ObjectStorageResource, cam: CameraConfig
) -> dg.MaterializeResult:
    """A new R_align version = the latest proposal's matrix, if it proposes one and was made on the current
    R_align and reference versions (else dg.Failure saying why); its provenance records the correction Δ_p
    and the proposal's evidence, copied beside it as ``proposal.json``."""
    try:
        data, record = proposals.read_proposal(storage, cam.deployment, cam.name)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"{cam.key}: {exc}") from None
    where = storage.uri(proposals.proposal_key(cam.deployment, cam.name))
    if not record.proposed or record.R_align is None or record.correction is None:
        made = f"{record.created:%Y-%m-%d %H:%M} UTC"
        raise dg.Failure(f"{cam.key}: {where} proposes nothing (made {made}): {record.reason}")
    current = tuple(current_version(storage, cam, a).number for a in ("r_align", "reference"))
    if current != (record.r_align_version, record.reference_version):
        raise dg.Failure(
            f"{cam.key}: {where} corrects R_align v{record.r_align_version} measured against reference "
            f"v{record.reference_version}; the current versions are R_align v{current[0]}, reference "
            f"v{current[1]} (applied already, or calibrated since): materialize r_align_proposal again"
        )
    evidence = record.model_dump(mode="json", exclude={"R_align", "correction"})
    version = store_r_align(
        storage,
        cam,
        np.asarray(record.R_align),
        inputs={"proposal.json": data},
        run_id=context.run.run_id,
        reference_version=record.reference_version,
        correction=record.correction.model_dump(),
        proposal=evidence,
    )
    correction = record.correction
    return versioned_result(
        storage,
        version,
        metadata={
            "method": "proposal",
            "corrects_version": record.r_align_version,
            "reference_version": record.reference_version,
            "proposal": record.reason,
            "correction_yaw_deg": round(correction.yaw_deg, 5),
            "correction_pitch_deg": round(correction.pitch_deg, 5),
            "correction_roll_deg": round(correction.roll_deg, 5),
            "proposal_hours": len(record.hours_used),
            **r_align_metadata(np.asarray(record.R_align)),
        },
    )


@dg.asset(
    partitions_def=camera_partitions, group_name="calibration", deps=[camera_intrinsics, reference_scan]
)
def r_align(
    context: dg.AssetExecutionContext,
    config: RAlignConfig,
    storage: ObjectStorageResource,
    devices: DevicesResource,
) -> dg.MaterializeResult:
    """A new version of R_align.npy (3x3, mount -> world ENU) from ``r_align/control_points.json`` or
    ``control_points.csv`` (surveyed landmarks clicked in reference frames), the survey copied beside it; or,
    with ``apply_proposal``, the camera's latest R_align proposal (r_align_proposal, which reads this asset:
    no dependency is declared back), the correction and its evidence in the version's provenance."""
    cam = devices.camera(context.partition_key)
    if config.apply_proposal:
        return _apply_proposal(context, storage, cam)
    intrinsics = current_version(storage, cam, "intrinsics")
    reference = current_version(storage, cam, "reference")
    key, survey, points = _control_points(storage, cam, reference)
    intr, zoom_model = _at_frame_size(storage, reference, *load_intrinsics(storage, cam, intrinsics))
    result = estimate_r_align(points, intr, zoom_model)
    version = store_r_align(
        storage,
        cam,
        result.R_align,
        inputs={key.rsplit("/", 1)[-1]: survey},
        run_id=context.run.run_id,
        intrinsics_version=intrinsics.number,
        reference_version=reference.number,
    )
    return versioned_result(
        storage,
        version,
        metadata={
            "method": result.method,
            "rms_deg": round(float(result.rms_deg), 4),
            "max_residual_deg": round(float(max(result.residuals_deg)), 4),
            "control_points": len(result.residuals_deg),
            "survey": key.rsplit("/", 1)[-1],
            **r_align_metadata(result.R_align),
        },
    )
