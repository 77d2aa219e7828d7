"""deploy/: the Helm values against the schema of the keys we set, and kept equal to the kubernetes instance
profile; the Dockerfile installs what pyproject.toml pins and serves the definitions the chart loads."""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from ptz_pipeline import jobs, settings
from ptz_pipeline_tests.conftest import REPO_ROOT
from ptz_pipeline_tests.deploy import profile

DEPLOY = REPO_ROOT / "deploy"
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
SCHEMA = json.loads((DEPLOY / "helm" / "values.schema.json").read_text())
PROFILE = profile("kubernetes")
LAUNCHER = PROFILE["run_launcher"]["config"]
HELM_LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
(USER_CODE,) = VALUES["dagster-user-deployments"]["deployments"]


def _errors(values: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_helm_values_match_the_schema_of_the_keys_we_set() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert _errors(VALUES) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator", "tagConcurrencyLimit"], []),
        (["runLauncher", "config", "k8sRunLauncher", "envSecrets"], ["ptz-aws"]),
        (["dagsterDaemon", "runMonitoring", "enabled"], False),
        (["runLauncher", "config", "k8sRunLauncher", "resources", "limits", "memory"], "4 GB"),
    ],
)
def test_the_schema_rejects_misspelt_keys_and_wrong_shapes(path: list[str], value: object) -> None:
    values = copy.deepcopy(VALUES)
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _errors(values)


def test_helm_values_describe_the_kubernetes_profiles_instance() -> None:
    """The chart builds the instance from values.yaml; deploy/instance/kubernetes is the same instance."""
    queue = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = PROFILE["run_coordinator"]["config"]
    assert queue["maxConcurrentRuns"] == coordinator["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == coordinator["tag_concurrency_limits"]
    monitoring = VALUES["dagsterDaemon"]["runMonitoring"]
    assert monitoring == {_camel(k): v for k, v in PROFILE["run_monitoring"].items()}
    for daemon in ("sensors", "schedules"):
        assert VALUES["dagsterDaemon"][daemon] == {_camel(k): v for k, v in PROFILE[daemon].items()}

    assert [s["name"] for s in HELM_LAUNCHER["envSecrets"]] == LAUNCHER["env_secrets"]
    assert HELM_LAUNCHER["resources"] == LAUNCHER["resources"]
    assert (
        HELM_LAUNCHER["runK8sConfig"]["podSpecConfig"]["nodeSelector"]
        == (LAUNCHER["run_k8s_config"]["pod_spec_config"]["node_selector"])
    )
    assert HELM_LAUNCHER["failPodOnRunFailure"] == LAUNCHER["fail_pod_on_run_failure"]
    assert HELM_LAUNCHER["imagePullPolicy"] == LAUNCHER["image_pull_policy"]
    assert VALUES["global"]["dagsterHome"] == LAUNCHER["dagster_home"]
    assert VALUES["global"]["postgresqlSecretName"] == LAUNCHER["postgres_password_secret"]
    assert VALUES["postgresql"]["postgresqlScheme"] == PROFILE["storage"]["postgres"]["postgres_db"]["scheme"]
    assert PROFILE["telemetry"] == VALUES["telemetry"]


def test_user_code_deployment_serves_the_definitions_with_documented_settings_and_secrets() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert USER_CODE["dagsterApiGrpcArgs"] == ["-m", pyproject["tool"]["dagster"]["module_name"]]
    assert set(USER_CODE["env"]) <= set(settings.VARIABLES)
    assert USER_CODE["env"]["PTZ_DEPLOYMENT"] in settings.RESOURCES_BY_DEPLOYMENT
    assert USER_CODE["envSecrets"] == HELM_LAUNCHER["envSecrets"]  # the same secrets in every pod
    assert USER_CODE["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert USER_CODE["resources"] == HELM_LAUNCHER["resources"]  # they reach run pods, over the launcher's
    mounted = {m["mountPath"] for m in USER_CODE["volumeMounts"]}
    assert any(USER_CODE["env"]["PTZ_DEVICES"].startswith(path + "/") for path in mounted)
    assert USER_CODE["env"]["PTZ_CALIBRATION_EXECUTOR"] == "k8s"  # GPU pod for reference_features


def test_dockerfile_installs_the_pinned_torch_and_the_weights_and_serves_the_chart_port() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin.removeprefix('torch==')}" in dockerfile
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", dockerfile, re.M)
    assert re.search(r"^RUN python -m ptz_pipeline\.model_cache$", dockerfile, re.M)
    assert f"EXPOSE {USER_CODE['port']}" in dockerfile
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    copies = [line.split() for line in re.findall(r"^COPY (.+)$", dockerfile, re.M)]
    for source in (s for line in copies for s in line[:-1]):
        assert f"!{source}" in ignored, f"{source} is copied but not in the build context"
    executor_file = str(jobs.CALIBRATION_EXECUTOR_FILE.relative_to(REPO_ROOT))  # where jobs.py reads it
    assert [executor_file, str(Path(executor_file).parent) + "/"] in copies


def test_user_code_environment_is_production_on_the_seeds_bucket_and_region_with_athena(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Helm values' environment alone (as the code location and its run pods have it) gives the README's
    production: storage in s3://camera-calibration-monitoring, calibration_results in AWS Glue in us-east-1
    with its warehouse in that bucket, Athena's workgroup ptz; no PTZ_STORAGE_URL or pyiceberg catalog
    overrides those settings."""
    env = USER_CODE["env"]
    assert "PTZ_STORAGE_URL" not in env and not [k for k in env if k.startswith("PYICEBERG_")]
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    for name in [n for n in os.environ if n.startswith(("PTZ_", "PYICEBERG_", "AWS_", "SLACK_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resources = settings.deployment_resources()
    storage, iceberg, athena = resources["storage"], resources["iceberg"], settings.athena_resource()
    assert storage.url == "s3://camera-calibration-monitoring" and storage.s3.region_name == "us-east-1"
    assert iceberg.catalog_properties == {
        "type": "glue",
        "glue.region": "us-east-1",
        "s3.region": "us-east-1",
        "warehouse": "s3://camera-calibration-monitoring/iceberg",
    }
    assert (athena.workgroup, athena.region_name) == ("ptz", "us-east-1")


def test_readme_production_environment_is_the_helm_values() -> None:
    """README "S3, Glue and Athena" shows the environment of the code location and run pods: the values'."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("The environment of the code location and of the run pods", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    shown = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z0-9_]+=", line))
    assert shown and shown == {k: v for k, v in USER_CODE["env"].items() if k in shown}
    assert {"PTZ_DEPLOYMENT", "PTZ_AWS_REGION", "PTZ_S3_BUCKET", "PTZ_ATHENA_WORKGROUP"} <= set(shown)
