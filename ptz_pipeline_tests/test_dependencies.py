"""Every package the project declares resolves to a version that imports (a broken resolution fails here)."""

from __future__ import annotations

import importlib
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from ptz_pipeline_tests.conftest import REPO_ROOT

IMPORT_NAMES = {
    "dagster-webserver": "dagster_webserver",
    "dagster-aws": "dagster_aws",
    "dagster-k8s": "dagster_k8s",
    "dagster-postgres": "dagster_postgres",
    "opencv-python-headless": "cv2",
    "onvif-zeep": "onvif",
    "paho-mqtt": "paho.mqtt.client",
    "slack-sdk": "slack_sdk",
    "pyyaml": "yaml",
    "moto": "moto.server",
    "psycopg2-binary": "psycopg2",
    "pillow": "PIL",
}
"""Distribution name -> module, where they differ."""


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(d) for d in deps]


@pytest.mark.parametrize("requirement", [*_requirements(), *_requirements("dev")], ids=lambda r: r.name)
def test_declared_package_is_installed_in_its_range_and_imports(requirement: Requirement) -> None:
    version = metadata.version(requirement.name)
    assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    importlib.import_module(IMPORT_NAMES.get(requirement.name.lower(), requirement.name.replace("-", "_")))


def test_dagster_integrations_match_the_dagster_release() -> None:
    """dagster 1.13.N goes with the 0.29.N integrations (each pins dagster==1.13.N)."""
    patch = metadata.version("dagster").split(".")[2]
    for name in ("dagster-aws", "dagster-k8s", "dagster-postgres"):
        assert metadata.version(name) == f"0.29.{patch}", name
    assert metadata.version("dagster-webserver") == metadata.version("dagster")
