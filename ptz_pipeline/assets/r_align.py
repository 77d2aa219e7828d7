"""r_align: the mount-to-world rotation R_align (= R_WB) from control points seen in the reference scan."""

import io

import dagster as dg

from geometry.alignment import estimate_r_align, parse_control_points, save_r_align
from ptz_pipeline import scans
from ptz_pipeline.assets.common import load_intrinsics
from ptz_pipeline.assets.intrinsics import camera_intrinsics
from ptz_pipeline.assets.reference import reference_scan
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.camera import DevicesResource
from ptz_pipeline.resources.storage import ObjectStorageResource


@dg.asset(
    partitions_def=camera_partitions, group_name="calibration", deps=[camera_intrinsics, reference_scan]
)
def r_align(
    context: dg.AssetExecutionContext,
    storage: ObjectStorageResource,
    devices: DevicesResource,
) -> dg.MaterializeResult:
    """R_align.npy (3x3, mount -> world ENU) from ``r_align/control_points.json`` (surveyed landmarks clicked
    in reference frames)."""
    cam = devices.camera(context.partition_key)
    key = scans.control_points_key(cam.deployment, cam.name)
    if not storage.exists(key):
        raise dg.Failure(
            f"{cam.key}: no control points at {storage.uri(key)}; upload the survey first (landmarks with "
            "ENU or lat/lon/alt, clicked as u, v in reference frames: see the README's R_align section)"
        )
    intr, zoom_model = load_intrinsics(storage, cam)
    result = estimate_r_align(parse_control_points(storage.get_json(key)), intr, zoom_model)
    buf = io.BytesIO()
    save_r_align(buf, result.R_align)
    storage.put_bytes(scans.r_align_key(cam.deployment, cam.name), buf.getvalue())
    return dg.MaterializeResult(
        metadata={
            "method": result.method,
            "rms_deg": float(result.rms_deg),
            "max_residual_deg": float(max(result.residuals_deg)),
            "control_points": len(result.residuals_deg),
            "R_align": dg.MetadataValue.json(result.R_align.round(8).tolist()),
        }
    )
