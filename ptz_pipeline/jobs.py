"""Asset jobs: calibration per camera, capture and estimation per camera-hour, the per-camera drift view
and R_align proposal, the daily report, the Iceberg table's maintenance."""

from __future__ import annotations

import dagster as dg
import yaml

from ptz_pipeline import settings
from ptz_pipeline.datasets import REPO_ROOT

CALIBRATION_EXECUTOR_FILE = REPO_ROOT / "deploy" / "instance" / "kubernetes" / "calibration_executor.yaml"
"""dagster-k8s ``k8s_job_executor`` config of calibrate_camera on Kubernetes: a pod per step, the GPU node
and resources for reference_features (the image copies it to the same path)."""


def k8s_calibration_executor() -> dg.ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor`` configured with :data:`CALIBRATION_EXECUTOR_FILE`."""
    from dagster_k8s import k8s_job_executor  # only a Kubernetes code location needs dagster-k8s loaded

    if not CALIBRATION_EXECUTOR_FILE.is_file():
        raise FileNotFoundError(f"PTZ_CALIBRATION_EXECUTOR=k8s: {CALIBRATION_EXECUTOR_FILE} is missing")
    config = yaml.safe_load(CALIBRATION_EXECUTOR_FILE.read_text())
    return k8s_job_executor.configured(config, name="k8s_calibration_executor")


def calibration_job_def(executor: str) -> dg.UnresolvedAssetJobDefinition:
    """calibrate_camera with ``executor`` (a PTZ_CALIBRATION_EXECUTOR value): ``in_process``, the code
    location's default, or ``k8s`` (:func:`k8s_calibration_executor`)."""
    return dg.define_asset_job(
        "calibrate_camera",
        selection=dg.AssetSelection.groups("calibration"),
        description=(
            "Reference scan -> reference features -> intrinsics (chessboard or self-calibrated) -> R_align "
            "for one camera."
        ),
        executor_def=k8s_calibration_executor() if executor == "k8s" else None,
    )


calibration_job = calibration_job_def(settings.calibration_executor())
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
