"""`make demo` says when it fails: a camera-hour without an estimate makes it exit non-zero. Its runs are the
instance's as `make ui` lists them per job, and its capture sensors start stopped."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorStatus
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from ptz_pipeline import demo

pytestmark = pytest.mark.integration

WORKSPACE_LABEL = "__repository__@ptz_pipeline.definitions"
"""The repository label of workspace.yaml's code location (a python_module entry is named by its module)."""


def test_demo_exits_non_zero_when_a_camera_hour_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DAGSTER_HOME", "PTZ_DATA_DIR", "PTZ_DEVICES", "PTZ_DEPLOYMENT"):  # the demo sets them
        monkeypatch.setenv(name, "")
    camera = {
        "name": "cam-1",
        "mode": "active",
        "ptz_stops": [[0, -15, 0.0]],
        "reference": {
            "horizontal_stops": 2,
            "vertical_stops": 1,
            "pan_max": 60,
            "tilt_min": -15,
            "tilt_max": -15,
        },
        "backend": {"kind": "simulated", "image_width": 320, "image_height": 240, "fail": "unreachable"},
    }
    devices = tmp_path / "devices.yaml"
    devices.write_text(json.dumps([{"name": "site", "cameras": [camera]}]))
    argv = ["--hours", "1", "--home", str(tmp_path / "demo"), "--devices", str(devices)]
    assert demo.main(argv) == 1
    out = capsys.readouterr().out
    assert "1 of 1 camera-hours have no estimate" in out and "runs failed" in out
    assert "dagster dev -w workspace.yaml" in out  # the UI command
    assert 'SELECT * FROM "ptz"."calibration_results"\nWHERE deployment = \'site\'' in out  # production query

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "demo" / "dagster_home"))
    with dg.DagsterInstance.get() as instance:
        for job in ("calibrate_camera", "capture_queries", "estimate_offsets", "drift_view", "daily_report"):
            runs = instance.get_runs(
                dg.RunsFilter(job_name=job, tags={REPOSITORY_LABEL_TAG: WORKSPACE_LABEL})
            )
            assert runs and all(run.job_snapshot_id and run.execution_plan_snapshot_id for run in runs), job
        states = {state.name: state for state in instance.all_instigator_state()}
        assert {name: s.status for name, s in states.items()} == dict.fromkeys(
            demo.CAPTURE_SENSORS, InstigatorStatus.STOPPED
        )
        # a sensor started in the UI stays started when the demo runs again
        started = states[demo.CAPTURE_SENSORS[0]].with_status(InstigatorStatus.RUNNING)
        instance.update_instigator_state(started)
    assert demo.main(argv) == 1
    with dg.DagsterInstance.get() as instance:
        statuses = {state.name: state.status for state in instance.all_instigator_state()}
    assert statuses == {
        demo.CAPTURE_SENSORS[0]: InstigatorStatus.RUNNING,
        demo.CAPTURE_SENSORS[1]: InstigatorStatus.STOPPED,
    }
