"""The Definitions object (workspace.yaml and `dagster dev` load ``defs``); resources come from the
environment through ptz_pipeline.settings (one set per PTZ_DEPLOYMENT)."""

from __future__ import annotations

import dagster as dg

from ptz_pipeline import jobs, schedules, sensors
from ptz_pipeline.assets import (
    digest,
    drift,
    intrinsics,
    maintenance,
    offsets,
    proposal,
    query,
    r_align,
    reference,
    reports,
)
from ptz_pipeline.settings import deployment_resources

OWNER = "team:georegistration"
KINDS: dict[dg.AssetKey, set[str]] = {
    dg.AssetKey("camera_intrinsics"): {"opencv", "numpy"},
    dg.AssetKey("reference_scan"): {"onvif", "s3"},
    dg.AssetKey("reference_features"): {"pytorch", "s3"},
    dg.AssetKey("r_align"): {"numpy", "s3"},
    dg.AssetKey("query_scan"): {"onvif", "s3"},
    dg.AssetKey("orientation_offsets"): {"pytorch", "iceberg", "slack"},
}
"""What each asset runs on, as the UI shows it (kinds declared on an asset itself are kept)."""


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The code location's definitions with ``resources`` (default: PTZ_DEPLOYMENT's set).

    The fleet file the ``devices`` resource points at is validated here, so a broken devices.yaml fails
    loading (and ``dagster definitions validate``) with its one-line error instead of every later run.
    """
    resources = resources or deployment_resources()
    resources["devices"].fleet()
    assets = dg.load_assets_from_modules(
        [intrinsics, reference, r_align, query, offsets, reports, drift, proposal, digest, maintenance]
    )
    return dg.Definitions(
        assets=dg.with_source_code_references(
            dg.map_asset_specs(
                lambda spec: spec.merge_attributes(owners=[OWNER], kinds=KINDS.get(spec.key, set())), assets
            )
        ),
        jobs=[
            jobs.calibration_job,
            jobs.capture_job,
            jobs.estimate_job,
            jobs.drift_view_job,
            jobs.report_job,
            jobs.maintenance_job,
        ],
        schedules=[schedules.daily_report_schedule, schedules.iceberg_maintenance_schedule],
        sensors=[
            sensors.devices_sensor,
            sensors.hourly_active_capture,
            sensors.passive_capture,
            sensors.offsets_after_capture,
            sensors.drift_after_estimate,
        ],
        resources=resources,
        executor=dg.in_process_executor,  # a run (a site-hour, a camera's calibration) is one process
    )


defs = build_definitions()
