"""Test helpers for deploy/: the instance profiles, a Dagster workspace on the real definitions, one
iteration of each daemon, and the Kubernetes API that dagster-k8s talks to, recorded instead of sent.

No cluster is reached: the K8sRunLauncher and the k8s executor build their Job objects as they would in a
cluster and hand them to ``kubernetes.client.BatchV1Api.create_namespaced_job``, which
:class:`RecordingBatchApi` replaces. The daemons are Dagster's own (sensor, backfill, run queue), run for one
iteration; that needs Dagster internals (``dagster._daemon``, ``dagster._core.workspace``), kept here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml

from ptz_pipeline_tests.conftest import REPO_ROOT

PROFILES = REPO_ROOT / "deploy" / "instance"
IMAGE = "registry.example.com/ptz-pipeline:test"
LOCATION = "ptz_pipeline"
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "none", "user": {"token": "unused"}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    "current-context": "none",
}
"""A kubeconfig that names no reachable cluster: the launcher loads it and never calls it."""


def profile(name: str) -> dict:
    """The instance profile ``deploy/instance/<name>/dagster.yaml`` as a dict."""
    return yaml.safe_load((PROFILES / name / "dagster.yaml").read_text())


@dataclass
class RecordingBatchApi:
    """Stands in for ``kubernetes.client.BatchV1Api``: keeps every Job that dagster-k8s creates."""

    api_client: object = None
    jobs: list[tuple[str, kubernetes.client.V1Job]] = field(default_factory=list)

    def create_namespaced_job(self, namespace: str, body: kubernetes.client.V1Job, **_: object) -> None:
        self.jobs.append((namespace, body))


def record_batch_api(monkeypatch: pytest.MonkeyPatch) -> RecordingBatchApi:
    """The Kubernetes batch API every dagster-k8s client built from now on in the test writes to."""
    recorder = RecordingBatchApi()
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda api_client=None: recorder)
    return recorder


def kubernetes_home(home: Path, storage: str = "postgres") -> Path:
    """A DAGSTER_HOME holding the kubernetes profile as the cluster has it, except that the launcher loads a
    local kubeconfig instead of the in-cluster service account; ``storage="sqlite"`` drops the Postgres
    storage (SQLite under ``home``) for tests without a server."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "kubeconfig").write_text(yaml.safe_dump(KUBECONFIG))
    config = profile("kubernetes")
    config["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=str(home / "kubeconfig")
    )
    if storage == "sqlite":
        del config["storage"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def code_location_file(path: Path, devices: Path, data_dir: Path) -> Path:
    """A code location module: the project's definitions on ``devices`` with local data in ``data_dir``."""
    path.write_text(
        "from ptz_pipeline.definitions import build_definitions\n"
        "from ptz_pipeline.settings import local_resources\n\n"
        f"defs = build_definitions(local_resources({str(data_dir)!r}, {str(devices)!r}))\n"
    )
    return path


def reconstructable_job(location_file: Path, job_name: str) -> object:
    """``job_name`` of ``location_file`` as a ReconstructableJob whose origin carries :data:`IMAGE`."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_file(
        str(location_file), "defs", str(REPO_ROOT), container_image=IMAGE
    )
    return repository.get_reconstructable_job(job_name)


def submit(instance: dg.DagsterInstance, job: object, tags: dict[str, str]) -> dg.DagsterRun:
    """Create a run of ``job`` from the code location ``ptz_pipeline`` with ``tags`` and submit it to the
    instance's run coordinator, as the webserver does (a queued coordinator only enqueues it)."""
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin

    origin = job.get_python_origin()
    remote = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            _location_origin(origin.repository_origin.code_pointer.python_file), "__repository__"
        ),
        origin.job_name,
    )
    run = instance.create_run_for_job(
        job.get_definition(), job_code_origin=origin, remote_job_origin=remote, tags=tags
    )
    return instance.submit_run(run.run_id, workspace=None)


def _location_origin(location_file: str) -> object:
    """The in-process origin of the code location ``ptz_pipeline`` loaded from ``location_file``."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    return InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=location_file, working_directory=str(REPO_ROOT)),
        container_image=IMAGE,
        location_name=LOCATION,
    )


@contextmanager
def workspace(instance: dg.DagsterInstance, location_file: Path) -> Iterator[object]:
    """A WorkspaceProcessContext with ``location_file`` loaded in this process as the code location
    ``ptz_pipeline``, whose image is :data:`IMAGE` (as ``DAGSTER_CURRENT_IMAGE`` sets it in a cluster)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    target = InProcessWorkspaceLoadTarget(_location_origin(str(location_file)))
    with WorkspaceProcessContext(instance, target) as context:
        yield context


def tick_sensors(context: object) -> None:
    """One iteration of the sensor daemon: every running sensor ticks once, its requests are submitted."""
    from dagster._daemon.sensor import execute_sensor_iteration

    list(execute_sensor_iteration(context, logging.getLogger("sensors"), None, None))


def run_backfills(context: object) -> None:
    """One iteration of the backfill daemon: requested backfills submit their runs."""
    from dagster._daemon.backfill import execute_backfill_iteration

    list(execute_backfill_iteration(context, logging.getLogger("backfills")))


def dequeue(instance: dg.DagsterInstance) -> None:
    """One iteration of the run queue daemon (QueuedRunCoordinator): launches what the limits allow."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
            list(daemon.run_iteration(context))


def launch_step(
    instance: dg.DagsterInstance, job: object, step_key: str, executor_config: dict
) -> dg.DagsterRun:
    """Launch ``step_key`` of a run of ``job`` the way the k8s_job_executor does inside a run pod, with
    ``executor_config`` (validated against the executor's schema): the step's Job goes to the batch API."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, k8s_job_executor

    processed = process_config(resolve_to_config_type(_K8S_EXECUTOR_CONFIG_SCHEMA), executor_config)
    assert processed.success, processed.errors
    executor = k8s_job_executor.executor_creation_fn(
        InitExecutorContext(
            job=job, executor_def=k8s_job_executor, executor_config=processed.value, instance=instance
        )
    )
    plan = create_execution_plan(job)
    run = instance.create_run_for_job(
        job.get_definition(), execution_plan=plan, job_code_origin=job.get_python_origin()
    )
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    context = StepHandlerContext(
        instance=instance,
        plan_context=plan_context,
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(job.get_python_origin(), run.run_id, [step_key]),
        dagster_run=run,
    )
    list(executor._step_handler.launch_step(context))  # noqa: SLF001 - what the executor calls per step
    return run
