"""Asset jobs: calibration per camera, capture and estimation per camera-hour, the per-camera drift view
and R_align proposal, the daily report, the Iceberg table's maintenance."""

from __future__ import annotations

import dagster as dg

calibration_job = dg.define_asset_job(
    "calibrate_camera",
    selection=dg.AssetSelection.groups("calibration"),
    description="Intrinsics -> reference scan -> reference features -> R_align for one camera.",
)
capture_job = dg.define_asset_job("capture_queries", selection=dg.AssetSelection.assets("query_scan"))
estimate_job = dg.define_asset_job(
    "estimate_offsets", selection=dg.AssetSelection.assets("orientation_offsets")
)
drift_view_job = dg.define_asset_job(
    "drift_view",
    selection=dg.AssetSelection.assets("camera_drift", "r_align_proposal"),
    description="Per-camera drift views and R_align proposals.",
)
report_job = dg.define_asset_job(
    "daily_report",
    selection=dg.AssetSelection.assets("offsets_report", "slack_digest"),
    description="The day's Excel/Parquet report and the Slack digest per deployment.",
)
maintenance_job = dg.define_asset_job(
    "iceberg_maintenance",
    selection=dg.AssetSelection.assets("calibration_results_maintenance"),
    description="Compact calibration_results' small files and expire its old snapshots.",
)
