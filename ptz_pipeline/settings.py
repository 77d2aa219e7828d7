"""Configuration in one place: every environment variable a user may set (the README's table lists them all)
and the resources built from them, one coherent set per deployment (as dagster's project_fully_featured).

``PTZ_DEPLOYMENT`` picks the set: ``local`` (the default: a folder for storage, a SQLite Iceberg catalog,
Slack when configured, else the log) or ``production`` (S3 and AWS Glue: the bucket ``PTZ_S3_BUCKET`` in
``PTZ_AWS_REGION``, the seed's ``--s3-bucket`` / ``--aws-region``, unless PTZ_STORAGE_URL or pyiceberg's own
catalog ``ptz`` say otherwise; nothing falls back to a local folder). Secrets reach resources as
``dg.EnvVar`` so they never appear in run config, logs or the UI; AWS credentials come from boto3's chain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pyiceberg.utils.config import Config

from ptz_pipeline.datasets import REPO_ROOT
from ptz_pipeline.queries import AthenaResource
from ptz_pipeline.resources.camera import DevicesResource, PTZCameraResource
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import CATALOG_NAME, IcebergResource
from ptz_pipeline.resources.slack import DEFAULT_CHANNEL, SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource

DEFAULT_REGION = "us-east-1"
"""The seed's ``--aws-region`` default."""
DEFAULT_BUCKET = "camera-calibration-monitoring"
"""The seed's ``--s3-bucket`` default: scans at ``s3://<bucket>/<deployment>/<camera>/...``."""
ICEBERG_PREFIX = "iceberg"
"""Production's Iceberg warehouse: ``s3://<bucket>/iceberg/`` (Glue database ``ptz``: ``ptz.db/...``)."""
S3_MAX_ATTEMPTS = 3
"""boto3 attempts per S3 call (standard retry mode) before storage reports the error."""

VARIABLES: dict[str, str] = {
    "PTZ_DEPLOYMENT": "`local` (default) or `production`: the resource set",
    "PTZ_DEVICES": "fleet file (default `devices.yaml`; validated, errors name the field)",
    "PTZ_SECRETS": "JSON file of camera connection details and credentials per `deployment/camera`; secret",
    "PTZ_DATA_DIR": "local storage and SQLite Iceberg catalog (default `.ptz_data`)",
    "PTZ_STORAGE_URL": "a folder or `s3://bucket/prefix` (default `$PTZ_DATA_DIR/storage`; production: "
    "`s3://$PTZ_S3_BUCKET`)",
    "PTZ_MODEL_DIR": "DISK / LightGlue weights (default `.model_cache` in the repository)",
    "PTZ_BLAS_THREADS": "BLAS threads during drift estimation (default 1: 1.5x faster on 2 cores)",
    "SLACK_ACCESS_TOKEN": "Slack bot token (chat:write); secret",
    "SLACK_WEBHOOK_URL": "Slack incoming webhook, used without a token; secret",
    "SLACK_CHANNEL": f"channel for the token (default `{DEFAULT_CHANNEL}`)",
    "PTZ_AWS_REGION": f"AWS region of S3, Glue and Athena (default `{DEFAULT_REGION}`, the seed's "
    "`--aws-region`)",
    "PTZ_S3_BUCKET": f"production's bucket (default `{DEFAULT_BUCKET}`): storage `s3://<bucket>`, "
    f"Iceberg warehouse `s3://<bucket>/{ICEBERG_PREFIX}`",
    "PTZ_ATHENA_WORKGROUP": "Athena workgroup of `run_athena` (default `primary`); results go to its output "
    "location",
    "AWS_ENDPOINT_URL": "endpoint of S3-compatible stores (and Glue), e.g. MinIO; credentials: boto3's chain",
    "AWS_PROFILE": "named AWS profile (boto3's; else the usual AWS_* variables or the instance's role)",
    "PYICEBERG_CATALOG__PTZ__*": f"pyiceberg's catalog `{CATALOG_NAME}` (or `.pyiceberg.yaml`); else SQLite "
    "(production: Glue)",
    "PTZ_CALIBRATION_EXECUTOR": "`in_process` (default) or `k8s`: `calibrate_camera`'s executor; `k8s` runs "
    "each step in its own pod, `reference_features` on a GPU node (`deploy/instance/kubernetes/"
    "calibration_executor.yaml`; needs the kubernetes instance profile)",
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


CALIBRATION_EXECUTORS = ("in_process", "k8s")
"""The values of PTZ_CALIBRATION_EXECUTOR (ptz_pipeline.jobs builds calibrate_camera with that executor)."""


def calibration_executor() -> str:
    """``$PTZ_CALIBRATION_EXECUTOR`` (``in_process`` by default), checked against CALIBRATION_EXECUTORS."""
    name = _env("PTZ_CALIBRATION_EXECUTOR", "in_process")
    if name not in CALIBRATION_EXECUTORS:
        raise ValueError(
            f"PTZ_CALIBRATION_EXECUTOR={name!r}: expected one of {', '.join(CALIBRATION_EXECUTORS)}"
        )
    return name


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


def aws_region() -> str:
    """``$PTZ_AWS_REGION``, else the seed's ``us-east-1``."""
    return _env("PTZ_AWS_REGION", DEFAULT_REGION)


def s3_resource() -> S3Resource:
    """dagster-aws's S3 resource: region, endpoint and profile from the environment, standard retries."""
    return S3Resource(
        region_name=aws_region(),
        endpoint_url=_env("AWS_ENDPOINT_URL"),
        profile_name=_env("AWS_PROFILE"),
        max_attempts=S3_MAX_ATTEMPTS,
    )


def glue_catalog_properties(region: str, bucket: str, endpoint_url: str | None = None) -> dict[str, str]:
    """pyiceberg properties of an AWS Glue catalog in ``region`` with its warehouse in ``bucket``
    (``endpoint_url``: Glue's and S3's endpoint when not AWS's own)."""
    properties = {
        "type": "glue",
        "glue.region": region,
        "s3.region": region,
        "warehouse": f"s3://{bucket}/{ICEBERG_PREFIX}",
    }
    if endpoint_url:
        properties |= {"glue.endpoint": endpoint_url, "s3.endpoint": endpoint_url}
    return properties


def athena_resource() -> AthenaResource:
    """dagster-aws's Athena client for ``run_athena``: PTZ_ATHENA_WORKGROUP in PTZ_AWS_REGION."""
    return AthenaResource(
        workgroup=_env("PTZ_ATHENA_WORKGROUP", "primary"),
        region_name=aws_region(),
        endpoint_url=_env("AWS_ENDPOINT_URL"),
    )


def local_resources(
    data_dir: str | None = None,
    devices_path: str | None = None,
    iceberg_properties: dict[str, str] | None = None,
) -> dict[str, object]:
    """The embedded default: storage in a folder (or PTZ_STORAGE_URL), SQLite Iceberg unless pyiceberg
    configures catalog ``ptz`` (or ``iceberg_properties`` are given), Slack when configured (else the log)."""
    data = Path(data_dir or _env("PTZ_DATA_DIR", ".ptz_data"))
    return {
        "storage": ObjectStorageResource(
            url=_env("PTZ_STORAGE_URL", str(data / "storage")), s3=s3_resource()
        ),
        "iceberg": IcebergResource(
            warehouse_dir=str(data / "iceberg"), catalog_properties=iceberg_properties or {}
        ),
        "slack": slack_resource(),
        "devices": DevicesResource(path=devices_path or _env("PTZ_DEVICES", "devices.yaml")),
        "camera": PTZCameraResource(),
        "estimation": _estimation(),
    }


def production_resources() -> dict[str, object]:
    """S3 and Glue: storage at PTZ_STORAGE_URL, else ``s3://<PTZ_S3_BUCKET>``; Iceberg in pyiceberg's
    configured catalog ``ptz``, else AWS Glue in PTZ_AWS_REGION with its warehouse in the bucket."""
    bucket = _env("PTZ_S3_BUCKET", DEFAULT_BUCKET)
    glue = None
    if not Config().get_catalog_config(CATALOG_NAME):
        glue = glue_catalog_properties(aws_region(), bucket, _env("AWS_ENDPOINT_URL"))
    resources = local_resources(iceberg_properties=glue)
    resources["storage"] = ObjectStorageResource(
        url=_env("PTZ_STORAGE_URL", f"s3://{bucket}"), s3=s3_resource()
    )
    return resources


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
