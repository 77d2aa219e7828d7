"""The Kubernetes Jobs that dagster-k8s builds from deploy/instance/kubernetes: one for a run (a site-hour of
capture_queries) and one for the GPU step of calibrate_camera (reference_features under the k8s_job_executor).

No cluster: the K8sRunLauncher and the executor's step handler build their Jobs for real and hand them to the
Kubernetes batch API, which records them (ptz_pipeline_tests.deploy). The instance is the kubernetes profile
with SQLite instead of Postgres (test_instance_profiles.py runs it on a real PostgreSQL server).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml

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


def test_reference_features_step_gets_its_own_gpu_pod(
    instance: dg.DagsterInstance, location: Path, batch_api: RecordingBatchApi
) -> None:
    config = yaml.safe_load((PROFILES / "kubernetes" / "calibration_executor.yaml").read_text())
    run = launch_step(
        instance, reconstructable_job(location, "calibrate_camera"), "reference_features", config
    )

    ((namespace, k8s_job),) = batch_api.jobs
    assert namespace == LAUNCHER["job_namespace"]
    _assert_launcher_settings(k8s_job)
    step = config["per_step_k8s_config"]["reference_features"]
    resources = _container(k8s_job).resources.to_dict()
    assert {k: resources[k] for k in ("requests", "limits")} == step["container_config"]["resources"]
    spec = k8s_job.spec.template.spec
    run_nodes = LAUNCHER["run_k8s_config"]["pod_spec_config"]["node_selector"]  # amd64, kept
    assert spec.node_selector == {**run_nodes, **step["pod_spec_config"]["node_selector"]}
    assert [t.to_dict() | {"toleration_seconds": None, "value": None} for t in spec.tolerations] == [
        t | {"toleration_seconds": None, "value": None} for t in step["pod_spec_config"]["tolerations"]
    ]
    assert _container(k8s_job).args[:3] == ["dagster", "api", "execute_step"]
    assert k8s_job.metadata.labels["dagster/op"] == "reference_features"
    assert k8s_job.metadata.labels["dagster/run-id"] == run.run_id
