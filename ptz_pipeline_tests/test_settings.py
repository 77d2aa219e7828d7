"""Configuration in one place: every variable is documented in the README, deployments are coherent sets."""

from __future__ import annotations

import os
import re

import dagster as dg
import pytest

from ptz_pipeline import settings
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline_tests.conftest import REPO_ROOT


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_*]+)` \|", readme, flags=re.MULTILINE))
    assert set(settings.VARIABLES) <= documented


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


def test_production_deployment_refuses_to_fall_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    monkeypatch.setenv("PTZ_DEPLOYMENT", "production")
    monkeypatch.delenv("PTZ_STORAGE_URL", raising=False)
    for name in [n for n in os.environ if n.startswith("PYICEBERG_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="PTZ_STORAGE_URL .* and pyiceberg catalog 'ptz'"):
        settings.deployment_resources()
    monkeypatch.setenv("PTZ_DEPLOYMENT", "staging")
    with pytest.raises(ValueError, match="expected one of local, production"):
        settings.deployment_resources()
