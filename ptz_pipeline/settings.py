"""Configuration in one place: every environment variable a user may set (the README's table lists them all)
and the resources built from them, one coherent set per deployment (as dagster's project_fully_featured).

``PTZ_DEPLOYMENT`` picks the set: ``local`` (the default: a folder for storage, a SQLite Iceberg catalog,
Slack when configured, else the log) or ``production`` (object storage and pyiceberg's catalog ``ptz`` must
be configured; nothing silently falls back to a local folder). Secrets reach resources as ``dg.EnvVar`` so
they never appear in run config, logs or the UI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pyiceberg.utils.config import Config

from ptz_pipeline.datasets import REPO_ROOT
from ptz_pipeline.resources.camera import DevicesResource, PTZCameraResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import CATALOG_NAME, IcebergResource
from ptz_pipeline.resources.slack import DEFAULT_CHANNEL, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource

VARIABLES: dict[str, str] = {
    "PTZ_DEPLOYMENT": "`local` (default) or `production`: the resource set",
    "PTZ_DEVICES": "fleet file (default `devices.yaml`; validated, errors name the field)",
    "PTZ_SECRETS": "JSON file of camera connection details and credentials per `deployment/camera`; secret",
    "PTZ_DATA_DIR": "local storage and SQLite Iceberg catalog (default `.ptz_data`)",
    "PTZ_STORAGE_URL": "a folder or `s3://bucket/prefix` (`$PTZ_DATA_DIR/storage`; production: required)",
    "PTZ_MODEL_DIR": "DISK / LightGlue weights (default `.model_cache` in the repository)",
    "PTZ_BLAS_THREADS": "BLAS threads during drift estimation (default 1: 1.5x faster on 2 cores)",
    "SLACK_ACCESS_TOKEN": "Slack bot token (chat:write); secret",
    "SLACK_WEBHOOK_URL": "Slack incoming webhook, used without a token; secret",
    "SLACK_CHANNEL": f"channel for the token (default `{DEFAULT_CHANNEL}`)",
    "AWS_ENDPOINT_URL": "boto3's endpoint for S3-compatible stores (with the usual AWS_* variables)",
    "PYICEBERG_CATALOG__PTZ__*": f"pyiceberg's catalog `{CATALOG_NAME}` (or `.pyiceberg.yaml`); else SQLite",
    "DAGSTER_HOME": "Dagster's instance folder (runs, events, schedules)",
}
"""Variable -> meaning; the README's configuration table must name each (test_settings.py)."""


def _env(name: str, default: str | None = None) -> str | None:
    if name not in VARIABLES:
        raise KeyError(f"{name} is not a documented setting (add it to settings.VARIABLES and the README)")
    return os.environ.get(name) or default


def _secret(name: str) -> dg.EnvVar | None:
    """dg.EnvVar for a secret that is set, None when it is not (the resource then falls back)."""
    return dg.EnvVar(name) if _env(name) else None


def model_dir() -> Path:
    """The model cache: ``$PTZ_MODEL_DIR``, else ``.model_cache`` in the repository."""
    return Path(_env("PTZ_MODEL_DIR") or REPO_ROOT / ".model_cache")


def _estimation() -> DriftEstimationResource:
    return DriftEstimationResource(
        model_dir=str(model_dir()), blas_threads=int(_env("PTZ_BLAS_THREADS", "1"))
    )


def slack_resource() -> SlackResource:
    """Slack from SLACK_ACCESS_TOKEN / SLACK_WEBHOOK_URL / SLACK_CHANNEL (the log when neither is set)."""
    return SlackResource(
        access_token=_secret("SLACK_ACCESS_TOKEN"),
        webhook_url=_secret("SLACK_WEBHOOK_URL"),
        channel=_env("SLACK_CHANNEL", DEFAULT_CHANNEL),
    )


def local_resources(data_dir: str | None = None, devices_path: str | None = None) -> dict[str, object]:
    """The embedded default: storage in a folder (or PTZ_STORAGE_URL), SQLite Iceberg unless pyiceberg
    configures catalog ``ptz``, Slack when configured (else the log)."""
    data = Path(data_dir or _env("PTZ_DATA_DIR", ".ptz_data"))
    return {
        "storage": ObjectStorageResource(url=_env("PTZ_STORAGE_URL", str(data / "storage"))),
        "iceberg": IcebergResource(warehouse_dir=str(data / "iceberg")),
        "slack": slack_resource(),
        "devices": DevicesResource(path=devices_path or _env("PTZ_DEVICES", "devices.yaml")),
        "camera": PTZCameraResource(),
        "estimation": _estimation(),
    }


def production_resources() -> dict[str, object]:
    """Object storage from PTZ_STORAGE_URL and pyiceberg's configured catalog, both required."""
    missing = [] if _env("PTZ_STORAGE_URL") else ["PTZ_STORAGE_URL (e.g. s3://bucket/prefix)"]
    if not Config().get_catalog_config(CATALOG_NAME):
        missing.append(f"pyiceberg catalog '{CATALOG_NAME}' (PYICEBERG_CATALOG__PTZ__TYPE=glue, ...)")
    if missing:
        raise ValueError(f"PTZ_DEPLOYMENT=production needs {' and '.join(missing)}")
    return local_resources()


RESOURCES_BY_DEPLOYMENT: dict[str, Callable[[], dict[str, object]]] = {
    "local": local_resources,
    "production": production_resources,
}


def deployment_resources() -> dict[str, object]:
    """The resource set ``PTZ_DEPLOYMENT`` names (``local`` by default)."""
    name = _env("PTZ_DEPLOYMENT", "local")
    if name not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"PTZ_DEPLOYMENT={name!r}: expected one of {', '.join(RESOURCES_BY_DEPLOYMENT)}")
    return RESOURCES_BY_DEPLOYMENT[name]()
