"""Configuration in one place: every variable is documented in the README, deployments are coherent sets."""

from __future__ import annotations

import os
import re

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from ptz_pipeline import settings
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline_tests.conftest import REPO_ROOT


def test_the_readme_configuration_table_is_the_settings() -> None:
    """README's "Configuration" table lists exactly settings.VARIABLES, in order, with the same meanings."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z0-9_*]+)` \| (.*) \|$", section, flags=re.MULTILINE)
    assert documented == list(settings.VARIABLES.items())


def test_no_module_reads_an_undocumented_variable() -> None:
    """Only settings.py reads the environment in the pipeline (camera credentials excepted: their variable
    names are given by the user in devices.yaml), and geometry never does."""
    readers = set()
    for path in [*REPO_ROOT.glob("ptz_pipeline/**/*.py"), *REPO_ROOT.glob("geometry/**/*.py")]:
        if re.search(r"os\.environ|getenv", path.read_text()):
            readers.add(str(path.relative_to(REPO_ROOT)))
    allowed = {"ptz_pipeline/settings.py", "ptz_pipeline/devices.py", "ptz_pipeline/demo.py"}
    backends = ("ptz_pipeline/sim/", "ptz_pipeline/onvif/")  # simulator flags, camera credentials
    assert not {r for r in readers - allowed if not r.startswith(backends)}


def test_local_deployment_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PTZ_STORAGE_URL", str(tmp_path / "store"))
    monkeypatch.setenv("SLACK_ACCESS_TOKEN", "xoxb-secret")
    monkeypatch.setenv("PTZ_BLAS_THREADS", "2")
    monkeypatch.delenv("PTZ_DEPLOYMENT", raising=False)
    resources = settings.deployment_resources()
    assert resources["storage"].url == str(tmp_path / "store")
    slack = resources["slack"]
    assert isinstance(slack, SlackResource) and isinstance(slack.access_token, dg.EnvVar)
    assert resources["estimation"].blas_threads == 2
    build_definitions(resources)  # a coherent set: every asset's resources are there


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    """PTZ_DEPLOYMENT=production with no storage url, no pyiceberg configuration, no AWS settings."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    monkeypatch.setenv("PTZ_DEPLOYMENT", "production")
    for name in [
        n for n in os.environ if n.startswith(("PYICEBERG_", "PTZ_S3", "PTZ_AWS", "AWS_", "PTZ_ST"))
    ]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_production_defaults_are_the_seeds_bucket_and_region_on_glue(production: pytest.MonkeyPatch) -> None:
    """Nothing set: S3 bucket camera-calibration-monitoring and Glue in us-east-1 (the seed's defaults)."""
    resources = settings.deployment_resources()
    storage, iceberg = resources["storage"], resources["iceberg"]
    assert storage.url == "s3://camera-calibration-monitoring"
    assert isinstance(storage.s3, S3Resource) and storage.s3.region_name == "us-east-1"
    assert iceberg.catalog_properties == {
        "type": "glue",
        "glue.region": "us-east-1",
        "s3.region": "us-east-1",
        "warehouse": "s3://camera-calibration-monitoring/iceberg",
    }
    assert settings.athena_resource().workgroup == "primary"
    assert settings.athena_resource().region_name == "us-east-1"


def test_production_region_bucket_endpoint_and_workgroup_are_settable(production: pytest.MonkeyPatch) -> None:
    production.setenv("PTZ_AWS_REGION", "eu-central-1")
    production.setenv("PTZ_S3_BUCKET", "fleet-7")
    production.setenv("PTZ_ATHENA_WORKGROUP", "ptz")
    production.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    production.setenv("AWS_PROFILE", "ptz-prod")
    resources = settings.deployment_resources()
    s3 = resources["storage"].s3
    assert resources["storage"].url == "s3://fleet-7"
    assert (s3.region_name, s3.endpoint_url, s3.profile_name) == (
        "eu-central-1",
        "http://127.0.0.1:9000",
        "ptz-prod",
    )
    assert resources["iceberg"].catalog_properties == {
        "type": "glue",
        "glue.region": "eu-central-1",
        "s3.region": "eu-central-1",
        "warehouse": "s3://fleet-7/iceberg",
        "glue.endpoint": "http://127.0.0.1:9000",
        "s3.endpoint": "http://127.0.0.1:9000",
    }
    athena = settings.athena_resource()
    assert (athena.workgroup, athena.region_name, athena.endpoint_url) == (
        "ptz",
        "eu-central-1",
        "http://127.0.0.1:9000",
    )
    production.setenv("PTZ_STORAGE_URL", "s3://other/prefix")
    assert settings.deployment_resources()["storage"].url == "s3://other/prefix"


def test_production_honours_a_configured_pyiceberg_catalog(production: pytest.MonkeyPatch, tmp_path) -> None:
    production.setenv("PYICEBERG_CATALOG__PTZ__TYPE", "sql")
    production.setenv("PYICEBERG_CATALOG__PTZ__URI", f"sqlite:///{tmp_path / 'c.db'}")
    iceberg = settings.deployment_resources()["iceberg"]
    assert iceberg.catalog_properties == {}
    assert type(iceberg.catalog).__name__ == "SqlCatalog"


def test_unknown_deployment_is_refused(production: pytest.MonkeyPatch) -> None:
    production.setenv("PTZ_DEPLOYMENT", "staging")
    with pytest.raises(ValueError, match="expected one of local, production"):
        settings.deployment_resources()


def test_the_readme_production_environment_is_the_settings() -> None:
    """README's "S3, Glue and Athena" environment names documented settings, with their defaults."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n### S3, Glue and Athena", 1)[1].split("\n## ", 1)[0]
    environment = section.split("```bash\n", 1)[1].split("```", 1)[0]
    assigned = dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", environment, flags=re.MULTILINE))
    assert set(assigned) <= set(settings.VARIABLES)
    assert (assigned["PTZ_AWS_REGION"], assigned["PTZ_S3_BUCKET"]) == (
        settings.DEFAULT_REGION,
        settings.DEFAULT_BUCKET,
    )
    assert f"s3://<bucket>/{settings.ICEBERG_PREFIX}/ptz.db/calibration_results/" in section


def test_calibration_executor_is_in_process_unless_k8s_and_rejects_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PTZ_CALIBRATION_EXECUTOR", raising=False)
    assert settings.calibration_executor() == "in_process"
    monkeypatch.setenv("PTZ_CALIBRATION_EXECUTOR", "k8s")
    assert settings.calibration_executor() == "k8s"
    monkeypatch.setenv("PTZ_CALIBRATION_EXECUTOR", "gpu")
    with pytest.raises(ValueError, match="PTZ_CALIBRATION_EXECUTOR='gpu': expected one of in_process, k8s"):
        settings.calibration_executor()
