"""Iceberg catalogs for tests: the local SQLite default and AWS Glue + S3 on moto's server (real sockets).

``iceberg_any`` runs a test once per catalog kind. A test module uses it with
``pytest_plugins = ["ptz_pipeline_tests.servers", "ptz_pipeline_tests.iceberg_catalogs"]`` (a plugin's
fixtures are session-wide, so none here is autouse: test_iceberg's ``no_configured_catalog`` is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.settings import glue_catalog_properties

if TYPE_CHECKING:
    from ptz_pipeline_tests.servers import MotoS3


def isolate_from_pyiceberg_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a developer's ~/.pyiceberg.yaml or PYICEBERG_* environment out of a test (cwd: ``tmp_path``)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYICEBERG_HOME", raising=False)
    for name in [n for n in os.environ if n.upper().startswith("PYICEBERG_")]:
        monkeypatch.delenv(name)


def glue_iceberg(moto_s3: MotoS3, bucket: str) -> IcebergResource:
    """The production catalog (settings.glue_catalog_properties) on moto's Glue and S3, warehouse in
    ``bucket`` (created here) and a Glue database of the same name (moto's server outlives a test); moto's
    fake credentials given as catalog properties."""
    moto_s3.create_bucket(bucket)
    properties = glue_catalog_properties("us-east-1", bucket, endpoint_url=moto_s3.endpoint_url)
    for service in ("glue", "s3"):
        properties[f"{service}.access-key-id"] = "testing"
        properties[f"{service}.secret-access-key"] = "testing"
    return IcebergResource(
        warehouse_dir="unused", namespace=bucket.replace("-", "_"), catalog_properties=properties
    )


@pytest.fixture(params=["sqlite", "glue"])
def iceberg_any(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> IcebergResource:
    """A fresh IcebergResource on the SQLite default, then on Glue + S3 (moto)."""
    isolate_from_pyiceberg_config(monkeypatch, tmp_path)
    if request.param == "sqlite":
        return IcebergResource(warehouse_dir=str(tmp_path / "warehouse"))
    bucket = f"ptz-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    return glue_iceberg(request.getfixturevalue("moto_s3"), bucket)
