"""The Kubernetes Jobs that dagster-k8s builds from deploy/instance/kubernetes: one for a run (a site-hour of
capture_queries) and one per step of calibrate_camera under the k8s_job_executor that
PTZ_CALIBRATION_EXECUTOR=k8s selects (reference_features on a GPU node, the other steps without a GPU).

No cluster: the K8sRunLauncher and the executor's step handler build their Jobs for real and hand them to the
Kubernetes batch API, which records them (ptz_pipeline_tests.deploy). The instance is the kubernetes profile
with SQLite instead of Postgres (test_instance_profiles.py runs it on a real PostgreSQL server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository

from ptz_pipeline.grouped import CAPTURE_QUEUES, site_tags
from ptz_pipeline.partitions import camera_hour_range_tags, camera_partitions, recent_hours
from ptz_pipeline_tests.conftest import REPO_ROOT
from ptz_pipeline_tests.deploy import (
    IMAGE,
    PROFILES,
    RecordingBatchApi,
    code_location_file,
    kubernetes_home,
    launch_step,
    profile,
    reconstructable_job,
    record_batch_api,
)

LAUNCHER = profile("kubernetes")["run_launcher"]["config"]


@pytest.fixture
def batch_api(monkeypatch: pytest.MonkeyPatch) -> RecordingBatchApi:
    return record_batch_api(monkeypatch)


@pytest.fixture
def instance(tmp_path: Path, batch_api: RecordingBatchApi) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(kubernetes_home(tmp_path / "home", storage="sqlite"))) as inst:
        yield inst


@pytest.fixture
def location(tmp_path: Path) -> Path:
    return code_location_file(tmp_path / "location.py", REPO_ROOT / "devices.yaml", tmp_path / "data")


def _container(job: kubernetes.client.V1Job) -> kubernetes.client.V1Container:
    (container,) = job.spec.template.spec.containers
    return container


def _env_from(container: kubernetes.client.V1Container) -> tuple[set[str], set[str]]:
    """(secret names, ConfigMap names) the container takes its environment from."""
    sources = container.env_from or []
    return (
        {s.secret_ref.name for s in sources if s.secret_ref},
        {s.config_map_ref.name for s in sources if s.config_map_ref},
    )


def _assert_launcher_settings(job: kubernetes.client.V1Job) -> None:
    """What every pod inherits from the profile's launcher: image, secrets, Postgres password, account."""
    container = _container(job)
    assert container.image == IMAGE and container.image_pull_policy == LAUNCHER["image_pull_policy"]
    assert _env_from(container) == (set(LAUNCHER["env_secrets"]), set(LAUNCHER["env_config_maps"]))
    env = {e.name: e for e in container.env}
    assert env["DAGSTER_HOME"].value == LAUNCHER["dagster_home"]
    secret = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert (secret.name, secret.key) == (LAUNCHER["postgres_password_secret"], "postgresql-password")
    assert job.spec.template.spec.service_account_name == LAUNCHER["service_account_name"]


def test_a_site_hour_run_is_one_pod_with_the_profiles_image_secrets_resources_and_nodes(
    instance: dg.DagsterInstance, location: Path, batch_api: RecordingBatchApi
) -> None:
    hours = recent_hours(datetime.now(UTC), 1)
    tags = {
        **site_tags("site-a", "hourly active", CAPTURE_QUEUES["active"]),
        **camera_hour_range_tags(["site-a__cam-1"], hours),
    }
    instance.add_dynamic_partitions(camera_partitions.name, ["site-a__cam-1"])
    job = reconstructable_job(location, "capture_queries")
    run = instance.create_run_for_job(
        job.get_definition(), job_code_origin=job.get_python_origin(), tags=tags
    )
    instance.launch_run(run.run_id, workspace=None)

    ((namespace, k8s_job),) = batch_api.jobs
    assert namespace == LAUNCHER["job_namespace"]
    _assert_launcher_settings(k8s_job)
    container = _container(k8s_job)
    assert container.resources.to_dict() | {"claims": None} == {**LAUNCHER["resources"], "claims": None}
    assert k8s_job.spec.template.spec.node_selector == {"kubernetes.io/arch": "amd64"}  # the image's
    assert container.args[:3] == ["dagster", "api", "execute_run"]  # the whole run, in-process, in the pod
    assert k8s_job.metadata.labels["dagster/run-id"] == run.run_id
    assert instance.get_run_by_id(run.run_id).tags["dagster/image"] == IMAGE


HELM_VALUES = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "values.yaml").read_text())
(HELM_USER_CODE,) = HELM_VALUES["dagster-user-deployments"]["deployments"]
HELM_USER_ENV = f"ptz-dagster-user-deployments-{HELM_USER_CODE['name']}-user-env"
"""The ConfigMap the chart fills with the user deployment's ``env`` (release ptz)."""


def _helm_container_context(deployment: dict) -> dict:
    """The container context the chart gives a code location with includeConfigInLaunchedRuns (dagster 1.13's
    dagster-user-deployments template ``dagsterUserDeployments.k8sContainerContext``): run pods get it."""
    return {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [HELM_USER_ENV, *(m["name"] for m in deployment.get("envConfigMaps", []))],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "resources": deployment["resources"],
            "namespace": "ptz",
            "service_account_name": "ptz-dagster-user-deployments-user-deployments",
        }
    }


def test_a_run_pod_under_the_helm_chart_gets_the_user_code_environment_and_the_run_resources(
    instance: dg.DagsterInstance, location: Path, batch_api: RecordingBatchApi
) -> None:
    """A run launched from the chart's code location: environment from the user-env ConfigMap (the values'
    env: PTZ_S3_BUCKET, PTZ_AWS_REGION, PTZ_ATHENA_WORKGROUP, ...) and the secrets, devices.yaml mounted where
    PTZ_DEVICES points, and the resources of a run (1 CPU, 2-4 GiB), not less."""
    assert {"PTZ_S3_BUCKET", "PTZ_AWS_REGION", "PTZ_ATHENA_WORKGROUP"} <= set(HELM_USER_CODE["env"])
    repository = ReconstructableRepository.for_file(
        str(location), "defs", str(REPO_ROOT), container_image=IMAGE,
        container_context=_helm_container_context(HELM_USER_CODE),
    )  # fmt: skip
    job = repository.get_reconstructable_job("capture_queries")
    run = instance.create_run_for_job(job.get_definition(), job_code_origin=job.get_python_origin())
    instance.launch_run(run.run_id, workspace=None)

    ((_, k8s_job),) = batch_api.jobs
    container = _container(k8s_job)
    secrets, config_maps = _env_from(container)
    assert HELM_USER_ENV in config_maps and {"ptz-aws", "ptz-slack", "ptz-cameras"} <= secrets
    assert not {e.name for e in container.env} & {"PTZ_STORAGE_URL", "PYICEBERG_CATALOG__PTZ__TYPE"}
    mounts = {m.mount_path for m in container.volume_mounts}
    assert str(Path(HELM_USER_CODE["env"]["PTZ_DEVICES"]).parent) in mounts
    resources = container.resources.to_dict()
    assert {k: resources[k] for k in ("requests", "limits")} == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "4Gi"},
    }


CALIBRATION_JOB_SCRIPT = """
import json, dagster_k8s
from dagster._core.system_config.objects import ResolvedRunConfig
from ptz_pipeline.definitions import defs
job = defs.resolve_job_def("calibrate_camera")
k8s = job.executor_def.executor_creation_fn is dagster_k8s.k8s_job_executor.executor_creation_fn
config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
print(json.dumps({"executor": job.executor_def.name, "k8s_job_executor": k8s, "config": config}))
"""


def _calibration_job_as_deployed(executor: str, data_dir: Path) -> dict:
    """calibrate_camera as the code location ``ptz_pipeline.definitions`` builds it in a fresh interpreter
    with PTZ_CALIBRATION_EXECUTOR=``executor``: its executor's name, whether that is dagster-k8s's
    k8s_job_executor, and the executor config a run of it resolves (no run config given)."""
    env = {**os.environ, "PTZ_CALIBRATION_EXECUTOR": executor, "PTZ_DEPLOYMENT": "local"}
    env |= {"PTZ_DATA_DIR": str(data_dir), "PTZ_DEVICES": str(REPO_ROOT / "devices.yaml")}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CALIBRATION_JOB_SCRIPT],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_calibration_executor_k8s_gives_reference_features_its_own_gpu_pod(
    tmp_path: Path, instance: dg.DagsterInstance, location: Path, batch_api: RecordingBatchApi
) -> None:
    """PTZ_CALIBRATION_EXECUTOR=k8s: calibrate_camera runs under dagster-k8s's k8s_job_executor with
    calibration_executor.yaml; the step Jobs it would create: reference_features on a GPU node with one GPU,
    camera_intrinsics with the run launcher's resources and nodes, no GPU."""
    built = _calibration_job_as_deployed("k8s", tmp_path / "data")
    assert built["k8s_job_executor"] and built["executor"] == "k8s_calibration_executor"
    config = built["config"]
    file_config = yaml.safe_load((PROFILES / "kubernetes" / "calibration_executor.yaml").read_text())
    assert config["max_concurrent"] == file_config["max_concurrent"] == 1
    job = reconstructable_job(location, "calibrate_camera")
    run = launch_step(instance, job, "reference_features", config)
    launch_step(instance, job, "camera_intrinsics", config)

    (namespace, gpu_job), (_, cpu_job) = batch_api.jobs
    assert namespace == LAUNCHER["job_namespace"]
    for k8s_job in (gpu_job, cpu_job):
        _assert_launcher_settings(k8s_job)
        assert _container(k8s_job).args[:3] == ["dagster", "api", "execute_step"]
    step = file_config["per_step_k8s_config"]["reference_features"]
    resources = _container(gpu_job).resources.to_dict()
    assert {k: resources[k] for k in ("requests", "limits")} == step["container_config"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    spec = gpu_job.spec.template.spec
    run_nodes = LAUNCHER["run_k8s_config"]["pod_spec_config"]["node_selector"]  # amd64, kept
    assert spec.node_selector == {**run_nodes, "nvidia.com/gpu.present": "true"}
    assert [t.to_dict() | {"toleration_seconds": None, "value": None} for t in spec.tolerations] == [
        t | {"toleration_seconds": None, "value": None} for t in step["pod_spec_config"]["tolerations"]
    ]
    assert gpu_job.metadata.labels["dagster/op"] == "reference_features"
    assert gpu_job.metadata.labels["dagster/run-id"] == run.run_id

    cpu = _container(cpu_job).resources.to_dict()
    assert cpu["requests"] == LAUNCHER["resources"]["requests"] and "nvidia.com/gpu" not in cpu["limits"]
    cpu_spec = cpu_job.spec.template.spec
    assert cpu_spec.node_selector == run_nodes and not cpu_spec.tolerations
    assert cpu_job.metadata.labels["dagster/op"] == "camera_intrinsics"


def test_calibration_executor_default_is_the_locations_in_process_executor(tmp_path: Path) -> None:
    assert _calibration_job_as_deployed("in_process", tmp_path / "data")["executor"] == "in_process"
