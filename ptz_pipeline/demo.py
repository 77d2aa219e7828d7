"""`make demo`: the whole pipeline on the embedded simulated fleet, then a table against ground truth.

Keeps a persistent Dagster instance under .demo/dagster_home (the repository's dagster.yaml) and data under
.demo/data so that `make ui` (dagster dev) shows the same runs, partitions, metadata and checks afterwards:
the runs are created through the instance with the code location's job snapshots and origin
(:class:`InstanceRuns`), so the Runs page, the Jobs pages and the Overview timeline list them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE_DEG = 0.02
"""The demo fails when an estimate misses the simulator's truth by more than this (degrees) on any angle."""
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
CODE_LOCATION = "ptz_pipeline.definitions"
"""workspace.yaml's code location: a ``python_module`` entry is named after its module."""
CAPTURE_SENSORS = ("hourly_active_capture", "passive_capture")
"""Sensors the demo instance starts with stopped: `make ui` shows the demo's history, not live captures."""


BEFORE_SURVEY = ("camera_intrinsics", "reference_scan", "reference_features")


def calibrate_simulated(run_job, storage, cam) -> bool:
    """A calibration engineer's session with a simulated camera: chessboard photos are uploaded, intrinsics,
    reference scan and features are materialised, the survey is clicked in the stored reference, then R_align.

    ``run_job(job_name, **execute_in_process_kwargs)`` returns the run's result; True when both runs succeed.
    """
    import dagster as dg

    from ptz_pipeline.sim.survey import provide_chessboards, provide_survey

    provide_chessboards(storage, cam)
    selection = [dg.AssetKey(k) for k in BEFORE_SURVEY]
    if not run_job("calibrate_camera", partition_key=cam.key, asset_selection=selection).success:
        return False
    provide_survey(storage, cam)
    return run_job(
        "calibrate_camera", partition_key=cam.key, asset_selection=[dg.AssetKey("r_align")]
    ).success


def demo_table(resources: dict, fleet, hours: list[str]):
    """Estimated drift per camera-hour from the Iceberg table beside the simulator's ground truth."""
    import pandas as pd

    from ptz_pipeline.partitions import hour_start
    from ptz_pipeline.results import within_threshold
    from ptz_pipeline.sim.truth import true_drift

    storage = resources["storage"]
    end = hour_start(hours[-1]) + timedelta(hours=1)  # read_rows' end is exclusive
    rows = resources["iceberg"].read_rows(start=hour_start(hours[0]), end=end)
    out = []
    for cam in fleet.cameras():
        for hour in hours:
            match = rows[
                (rows["deployment"] == cam.deployment)
                & (rows["device_id"] == cam.name)
                & (pd.to_datetime(rows["timestamp"], utc=True) == hour_start(hour))
            ]
            row = match.iloc[0] if len(match) else None
            truth = true_drift(storage, cam, hour_start(hour))
            est = (
                None
                if row is None or not row["success"]
                else (row["yaw_offset"], row["pitch_offset"], row["roll_offset"])
            )
            sig = None if est is None else (row["sigma_yaw"], row["sigma_pitch"], row["sigma_roll"])
            out.append(
                {
                    "camera": cam.key,
                    "hour": hour,
                    "yaw_deg": "-" if est is None else f"{est[0]:+.4f}±{sig[0]:.4f}",
                    "pitch_deg": "-" if est is None else f"{est[1]:+.4f}±{sig[1]:.4f}",
                    "roll_deg": "-" if est is None else f"{est[2]:+.4f}±{sig[2]:.4f}",
                    "true_ypr_deg": "-" if truth is None else "/".join(f"{v:+.3f}" for v in truth),
                    "|error|_deg": None
                    if est is None or truth is None
                    else float(np.max(np.abs(np.subtract(est, truth)))),
                    "alert": "FAILED: " + str(row["failure_logs"])
                    if row is not None and not row["success"]
                    else (
                        "no row"
                        if row is None
                        else (
                            "ok"
                            if within_threshold(
                                row["pitch_offset"],
                                row["yaw_offset"],
                                row["roll_offset"],
                                True,
                                cam.offset_threshold_deg,
                            )
                            else "ALERT"
                        )
                    ),
                }
            )
    return pd.DataFrame(out)


def prepare_dagster_home(path: Path) -> Path:
    """Create the demo instance folder with the repository's dagster.yaml (run monitoring, the run queue)
    unless it has one already; returns the folder."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", path / "dagster.yaml")
    return path


def code_location_origin():
    """workspace.yaml's code location (``ptz_pipeline.definitions``) loaded in this process, as the webserver
    and the UI's launchpad see it (Dagster has no public API for it)."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    return InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable, module_name=CODE_LOCATION, working_directory=str(REPO_ROOT)
        ),
        location_name=CODE_LOCATION,
    )


class InstanceRuns:
    """Runs created through the Dagster instance as the UI's launchpad creates them (the code location's job
    snapshot, execution plan and origin, hence the repository label the Runs page, the Jobs pages and the
    Overview timeline filter by), then executed synchronously in this process by Dagster's run worker code
    (``execute_run``, the in-process executor of the definitions). The instance's run queue is bypassed: it is
    drained by the daemon only, which the demo does not run.
    """

    def __init__(self, instance) -> None:
        if CODE_LOCATION in sys.modules:  # its defs read the environment at import: the demo's, not earlier
            importlib.reload(sys.modules[CODE_LOCATION])
        self.instance = instance
        self.location = code_location_origin().create_location(instance)
        [self.repository] = self.location.get_repositories().values()

    def run(
        self,
        job_name: str,
        run_config: Mapping | None = None,
        tags: Mapping[str, str] | None = None,
        partition_key: str | None = None,
        asset_selection: Iterable | None = None,
    ):
        """Create and execute one run of ``job_name`` (optionally one partition, a subset of its assets);
        the run's JobExecutionResult (``success``, ``run_id``). Failures are recorded, not raised."""
        from dagster._core.definitions.selector import JobSubsetSelector
        from dagster._core.execution.api import execute_run
        from dagster._core.storage.tags import PARTITION_NAME_TAG
        from dagster._utils.hosted_user_process import recon_job_from_origin

        assets = frozenset(asset_selection) if asset_selection else None
        selector = JobSubsetSelector(
            location_name=CODE_LOCATION,
            repository_name=self.repository.name,
            job_name=job_name,
            op_selection=None,
            asset_selection=assets,
        )
        job = self.location.get_job(selector)
        plan = self.location.get_execution_plan(
            job, dict(run_config or {}), step_keys_to_execute=None, known_state=None, instance=self.instance
        ).execution_plan_snapshot
        partition = {PARTITION_NAME_TAG: partition_key} if partition_key else {}
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=dict(run_config or {}),
            resolved_op_selection=job.resolved_op_selection,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **(tags or {}), **partition},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=assets,
            asset_check_selection=None,
            asset_graph=self.repository.asset_graph,
        )
        return execute_run(recon_job_from_origin(run.job_code_origin), run, self.instance)

    def stop_by_default(self, sensor_names: Iterable[str]) -> list[str]:
        """Store the named sensors as stopped where the instance has no state for them yet (a sensor started
        or stopped in the UI keeps its state); the names stopped now."""
        stopped = []
        for name in sensor_names:
            sensor = self.repository.get_sensor(name)
            origin_id = sensor.get_remote_origin_id()
            if self.instance.get_instigator_state(origin_id, sensor.selector_id) is None:
                self.instance.stop_sensor(origin_id, sensor.selector_id, sensor)
                stopped.append(name)
        return stopped

    def close(self) -> None:
        self.location.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=int, default=6, help="hourly partitions to capture and estimate")
    parser.add_argument("--home", default=str(REPO_ROOT / ".demo"), help="folder for the instance and data")
    parser.add_argument("--devices", default=str(REPO_ROOT / "devices.yaml"))
    args = parser.parse_args(argv)

    home = Path(args.home).resolve()
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(home / "dagster_home"))
    os.environ["PTZ_DATA_DIR"] = str(home / "data")
    os.environ["PTZ_DEVICES"] = args.devices
    os.environ["PTZ_DEPLOYMENT"] = "local"  # the runs load ptz_pipeline.definitions: its local resource set

    import dagster as dg

    from ptz_pipeline.devices import load_devices
    from ptz_pipeline.partitions import (
        camera_hour_range_tags,
        camera_partition_changes,
        camera_partitions,
        camera_range_tags,
        hour_start,
        recent_hours,
    )
    from ptz_pipeline.queries import ResultsQuery
    from ptz_pipeline.settings import local_resources

    t_start = time.perf_counter()
    resources = local_resources()
    instance = dg.DagsterInstance.get()
    fleet = load_devices(args.devices)
    keys = [c.key for c in fleet.cameras()]
    added, removed = camera_partition_changes(
        set(instance.get_dynamic_partitions(camera_partitions.name)), keys
    )
    for stale in removed:
        instance.delete_dynamic_partition(camera_partitions.name, stale)
    instance.add_dynamic_partitions(camera_partitions.name, added)
    print(f"devices.yaml: {len(keys)} cameras in {len(fleet.deployments)} deployments: {', '.join(keys)}")
    failed_runs = []

    runs = InstanceRuns(instance)
    stopped = runs.stop_by_default(CAPTURE_SENSORS)
    if stopped:
        print(f"capture sensors stopped in the demo instance (start them in the UI's Automation): {stopped}")

    def run_job(job_name: str, **kwargs):
        result = runs.run(job_name, run_config=QUIET, **kwargs)
        if not result.success:
            failed_runs.append(result.run_id)
        return result

    def step(title: str, action) -> None:
        t0 = time.perf_counter()
        print(f"\n== {title}", flush=True)
        ok = action()
        status = "ok" if ok else "FAILED (see the run in the UI; other partitions went on)"
        print(f"   {status} in {time.perf_counter() - t0:.1f} s", flush=True)

    for cam in fleet.cameras():
        step(
            f"calibrate {cam.key}: intrinsics -> reference scan -> DISK features -> survey -> R_align",
            lambda cam=cam: calibrate_simulated(run_job, resources["storage"], cam),
        )
    hours = recent_hours(datetime.now(UTC), args.hours)
    tags = camera_hour_range_tags(keys, hours)
    step(
        f"capture query scans: {len(keys)} cameras x {len(hours)} hours in one run",
        lambda: run_job("capture_queries", tags=tags).success,
    )
    step(
        f"estimate orientation offsets: {len(keys)} cameras x {len(hours)} hours in one run",
        lambda: run_job("estimate_offsets", tags=tags).success,
    )
    step(
        f"per-camera drift views (plot, last hours, trend): {len(keys)} cameras in one run",
        lambda: run_job("drift_view", tags=camera_range_tags(keys)).success,
    )
    step(
        "daily Excel + Parquet report", lambda: run_job("daily_report", partition_key=hours[-1][:10]).success
    )

    table = demo_table(resources, fleet, hours)
    print("\n" + table.to_string(index=False))
    errors = table["|error|_deg"].dropna().to_numpy(dtype=float)
    if errors.size:
        print(f"\nmax |error| over {errors.size} estimates: {np.max(errors):.4f} deg")
    problems = [
        f"{len(table) - errors.size} of {len(table)} camera-hours have no estimate"
        if errors.size < len(table)
        else "",
        f"{int((errors > TOLERANCE_DEG).sum())} estimates miss the truth by more than {TOLERANCE_DEG} deg"
        if (errors > TOLERANCE_DEG).any()
        else "",
        f"{len(failed_runs)} runs failed" if failed_runs else "",
    ]
    problems = [p for p in problems if p]
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s: " + ("; ".join(problems) or "all ok"))
    print(
        "\nOpen the UI (asset graph, partitions, metadata plots, checks, sensors):\n"
        f"  DAGSTER_HOME={home / 'dagster_home'} PTZ_DATA_DIR={home / 'data'} "
        ".venv/bin/dagster dev -w workspace.yaml\n  (or: make ui) then browse http://127.0.0.1:3000"
    )
    first = fleet.deployments[0].name
    query = ResultsQuery(deployment=first, since=hour_start(hours[0]), success_only=True)
    print(
        "\nThe same rows in production (S3 + Glue) as Athena SQL (in Python: ptz_pipeline.queries."
        f"query_calibration_results(deployment={first!r}, since=..., success_only=True)):\n"
        + query.athena_sql()
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
