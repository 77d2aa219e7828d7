"""The Definitions object (workspace.yaml and `dagster dev` load ``defs``).

Production is chosen by environment, not code: PTZ_STORAGE_URL (local folder or s3://bucket/prefix),
PTZ_DATA_DIR (local default for storage and the SQLite Iceberg catalog), PTZ_DEVICES (devices.yaml path),
pyiceberg's own catalog config for catalog ``ptz``, SLACK_ACCESS_TOKEN / SLACK_CHANNEL / SLACK_WEBHOOK_URL.
Secrets are passed as dg.EnvVar so they never appear in run config or the UI.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ptz_pipeline import jobs, schedules, sensors
from ptz_pipeline.assets import intrinsics, offsets, query, r_align, reference, reports
from ptz_pipeline.resources.camera import DevicesResource, PTZCameraResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource


def _secret(name: str) -> dg.EnvVar | None:
    """dg.EnvVar for a secret that is set, None when it is not (the resource then falls back)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources(data_dir: str | None = None, devices_path: str | None = None) -> dict[str, object]:
    """Resources for the embedded default (local folder, SQLite Iceberg, Slack via env or log)."""
    data = Path(data_dir or os.environ.get("PTZ_DATA_DIR", ".ptz_data"))
    return {
        "storage": ObjectStorageResource(url=os.environ.get("PTZ_STORAGE_URL", str(data / "storage"))),
        "iceberg": IcebergResource(warehouse_dir=str(data / "iceberg")),
        "slack": SlackResource(
            access_token=_secret("SLACK_ACCESS_TOKEN"),
            webhook_url=_secret("SLACK_WEBHOOK_URL"),
            channel=os.environ.get("SLACK_CHANNEL", "calibration-monitoring"),
        ),
        "devices": DevicesResource(path=devices_path or os.environ.get("PTZ_DEVICES", "devices.yaml")),
        "camera": PTZCameraResource(),
        "estimation": DriftEstimationResource(),
    }


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules([intrinsics, reference, r_align, query, offsets, reports]),
        asset_checks=dg.load_asset_checks_from_modules([intrinsics, reference, offsets]),
        jobs=[jobs.calibration_job, jobs.capture_job, jobs.estimate_job, jobs.report_job],
        schedules=[schedules.daily_report_schedule],
        sensors=[
            sensors.devices_sensor,
            sensors.hourly_active_capture,
            sensors.passive_capture,
            sensors.offsets_after_capture,
        ],
        resources=resources or default_resources(),
    )


defs = build_definitions()
