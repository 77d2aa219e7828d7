"""Integration: the whole asset graph on a real temporary Dagster instance with simulated cameras.

Two sites, two cameras, three hours; estimates are compared with the simulator's ground truth. Slack goes
to a local HTTP imitation over a real socket; storage and Iceberg are real (local folder, SQLite catalog).
"""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from geometry.rotations import drift_angles, rotation_angle_deg
from ptz_pipeline.assets.common import load_intrinsics
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.devices import load_devices
from ptz_pipeline.partitions import (
    camera_hour_range_tags,
    camera_partitions,
    hour_key,
    hour_start,
    recent_hours,
)
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.scans import query_prefix, r_align_key, read_manifest
from ptz_pipeline.settings import local_resources
from ptz_pipeline.sim.truth import true_drift
from ptz_pipeline.versions import current

pytest_plugins = ["ptz_pipeline_tests.servers"]
pytestmark = pytest.mark.integration

TOLERANCE_DEG = 0.05
HOURS = recent_hours(datetime.now(UTC), 3)


def _camera(name: str, seed: int, mode: str = "active", **backend: object) -> dict:
    cam = {
        "name": name,
        "mode": mode,
        "reference": {
            "horizontal_stops": 6, "vertical_stops": 1, "pan_min": 0, "pan_max": 300,
            "tilt_min": -18, "tilt_max": -18, "zoom": 0.0,
        },
        "backend": {
            "kind": "simulated", "image_width": 480, "image_height": 360, "hfov_deg": 60.0,
            "mount_ypr_deg": [30.0 * seed, 1.0, -0.5], "drift_amplitude_deg": [0.6, 0.3, 0.2],
            "drift_period_hours": 5.0, "seed": seed, **backend,
        },
    }  # fmt: skip
    if mode == "active":
        cam["ptz_stops"] = [[0, -18, 0.0], [120, -18, 0.0]]
    else:
        cam["backend"]["home"] = [240.0, -18.0, 0.0]
    return cam


def _write_devices(
    path: Path, cameras_by_site: dict[str, list[dict]], reports: dict[str, str] | None = None
) -> Path:
    """devices.yaml of ``cameras_by_site``; ``reports``: a site's Slack ``report`` where not all."""
    sites = [{"name": s, "cameras": c} for s, c in cameras_by_site.items()]
    path.write_text(
        yaml.safe_dump([site | {"report": (reports or {}).get(site["name"], "all")} for site in sites])
    )
    return path


REPORTS = {"site-b": "alerts"}
"""site-a reports every camera-hour on Slack (the seed's default), site-b alerts only."""


class Pipeline:
    """Definitions + a temporary instance + helpers to run jobs over camera x hour ranges."""

    def __init__(
        self, tmp: Path, devices: Path, slack: SlackResource, instance: dg.DagsterInstance | None = None
    ) -> None:
        self.tmp, self.slack = tmp, slack
        self.resources = {**local_resources(str(tmp / "data"), str(devices)), "slack": slack}
        self.defs = build_definitions(self.resources)
        self.instance = instance or dg.DagsterInstance.ephemeral(tempdir=str(tmp / "home"))
        self.fleet = load_devices(devices)
        self.keys = [c.key for c in self.fleet.cameras()]
        self.instance.add_dynamic_partitions(camera_partitions.name, self.keys)
        self.calibrated_at: dict[str, datetime] = {}
        self.estimate_run_id: str | None = None

    def run(self, job: str, **kwargs: object) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, **kwargs
        )

    def run_range(self, job: str, hours: list[str]) -> dg.ExecuteInProcessResult:
        return self.run(job, tags=camera_hour_range_tags(self.keys, hours))

    def with_devices(self, devices: Path) -> "Pipeline":
        """The same instance, storage and Iceberg catalog with another devices.yaml."""
        return Pipeline(self.tmp, devices, self.slack, self.instance)

    def rows(self):
        return self.resources["iceberg"].read_rows()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, slack_module_server) -> Pipeline:
    tmp = tmp_path_factory.mktemp("pipeline")
    devices = _write_devices(
        tmp / "devices.yaml",
        {"site-a": [_camera("cam-1", 1)], "site-b": [_camera("cam-2", 2, mode="passive")]},
        REPORTS,
    )
    slack = SlackResource(access_token=slack_module_server.token, base_url=slack_module_server.base_url)
    p = Pipeline(tmp, devices, slack)
    for cam in p.fleet.cameras():
        assert calibrate_simulated(p.run, p.resources["storage"], cam)
        p.calibrated_at[cam.key] = datetime.now(UTC)
    assert p.run_range("capture_queries", HOURS).success
    estimated = p.run_range("estimate_offsets", HOURS)
    assert estimated.success
    p.estimate_run_id = estimated.run_id
    return p


def test_calibration_recovers_the_simulated_cameras(pipeline: Pipeline) -> None:

    storage = pipeline.resources["storage"]
    for cam in pipeline.fleet.cameras():
        spec = cam.backend
        intr, _ = load_intrinsics(storage, cam)
        assert abs(intr.fx / spec.intrinsics.fx - 1) < 0.005
        assert abs(intr.K[0, 2] - spec.intrinsics.K[0, 2]) < 2.0
        version = current(storage, cam.deployment, cam.name, "r_align").number
        R_align = np.load(io.BytesIO(storage.get_bytes(r_align_key(cam.deployment, cam.name, version))))
        # the mount when the camera's calibration ended (it moves < 0.015° a minute; a loaded machine is slow)
        assert rotation_angle_deg(R_align, spec.R_WB(pipeline.calibrated_at[cam.key])) < 0.05


def test_r_align_metadata_reads_as_angles_and_a_table(pipeline: Pipeline) -> None:
    """r_align's materialisation shows the mount's yaw/pitch/roll in degrees (the simulator's mount when the
    calibration ended) and R_align as a table of rows east/north/up, not a JSON blob."""
    for cam in pipeline.fleet.cameras():
        [record] = pipeline.instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("r_align"), asset_partitions=[cam.key]), limit=1
        ).records
        meta = record.asset_materialization.metadata
        yaw, pitch, roll = drift_angles(cam.backend.R_WB(pipeline.calibrated_at[cam.key]))
        assert abs((meta["mount_yaw_deg"].value - yaw + 180) % 360 - 180) < 0.05
        assert abs(meta["mount_pitch_deg"].value - pitch) < 0.05
        assert abs(meta["mount_roll_deg"].value - roll) < 0.05
        assert meta["rms_deg"].value == round(meta["rms_deg"].value, 4)
        table = meta["R_align"]
        assert isinstance(table, dg.TableMetadataValue)
        assert [r.data["world_axis"] for r in table.records] == ["east", "north", "up"]
        matrix = np.array([[r.data[f"mount_{a}"] for a in "xyz"] for r in table.records])
        assert rotation_angle_deg(matrix, cam.backend.R_WB(pipeline.calibrated_at[cam.key])) < 0.05


def test_offsets_match_ground_truth(pipeline: Pipeline) -> None:
    rows = pipeline.rows()
    assert len(rows) == len(pipeline.keys) * len(HOURS)
    for _, row in rows.iterrows():
        cam = pipeline.fleet.camera(f"{row['deployment']}__{row['device_id']}")
        truth = true_drift(pipeline.resources["storage"], cam, row["timestamp"])
        assert row["success"], row["failure_logs"]
        est = (row["yaw_offset"], row["pitch_offset"], row["roll_offset"])
        for e, t in zip(est, truth, strict=True):
            assert abs(e - t) < TOLERANCE_DEG, (row["partition_key"], est, truth)
        assert max(abs(v) for v in truth) > 0.05  # the drift is real, not zero
        assert row["timestamp"] == hour_start(row["partition_key"].split("|")[1])


def test_partitions_materialized_with_metadata_and_checks(pipeline: Pipeline) -> None:
    key = dg.AssetKey("orientation_offsets")
    materialized = pipeline.instance.get_materialized_partitions(key)
    assert materialized == {f"{c}|{h}" for c in pipeline.keys for h in HOURS}
    records = pipeline.instance.fetch_materializations(key, limit=100).records
    meta = records[0].asset_materialization.metadata
    assert {"yaw_deg", "pitch_deg", "roll_deg", "sigma_yaw_deg", "inliers"} <= set(meta)
    check = dg.AssetCheckKey(key, "offset_within_threshold")
    history = pipeline.instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
    assert {h.partition for h in history} >= materialized


def test_rerun_replaces_rows_and_backfill_never_recaptures(pipeline: Pipeline, tmp_path: Path) -> None:
    """Re-running estimation replaces rows; re-running capture over stored hours touches no camera."""
    storage = pipeline.resources["storage"]
    cam = next(pipeline.fleet.cameras())
    start = hour_start(HOURS[0])
    created = read_manifest(storage, query_prefix(cam.deployment, cam.name, start)).created
    before = pipeline.rows()
    # make every camera unreachable: a capture attempt would now fail, estimation must not care
    broken = _write_devices(
        tmp_path / "devices.yaml",
        {
            "site-a": [_camera("cam-1", 1, fail="unreachable")],
            "site-b": [_camera("cam-2", 2, "passive", fail="unreachable")],
        },
        REPORTS,
    )
    p2 = pipeline.with_devices(broken)
    assert p2.run_range("capture_queries", HOURS).success
    assert p2.run_range("estimate_offsets", HOURS).success
    after = pipeline.rows()
    assert len(after) == len(before)
    assert read_manifest(storage, query_prefix(cam.deployment, cam.name, start)).created == created
    merged = before.merge(after, on="partition_key", suffixes=("_before", "_after"))
    assert (merged["run_id_before"] != merged["run_id_after"]).all()
    assert (abs(merged["yaw_offset_before"] - merged["yaw_offset_after"]) < 1e-9).all()


def test_check_over_threshold_sends_the_seed_report(pipeline: Pipeline, slack_module_server) -> None:
    """Every camera-hour whose |offset| exceeds 0.5° fails its check and posts a 🚨 report."""
    key = dg.AssetCheckKey(dg.AssetKey("orientation_offsets"), "offset_within_threshold")
    history = pipeline.instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    rows = pipeline.rows().set_index("partition_key")
    posted = [r.body["text"] for r in slack_module_server.requests if r.path == "/api/chat.postMessage"]
    over = {
        pk
        for pk, r in rows.iterrows()
        if max(abs(r["yaw_offset"]), abs(r["pitch_offset"]), abs(r["roll_offset"])) > 0.5
    }
    assert over, "the simulated drifts are chosen to cross the 0.5° threshold in some hours"
    failed_checks = {
        h.partition for h in history if h.event and not h.event.dagster_event.event_specific_data.passed
    }
    assert failed_checks == over
    for pk in over:
        device = pk.split("|")[0].split("__")[1]
        stamp = hour_start(pk.split("|")[1]).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert any(f"Device: {device}" in t and f"Timestamp: {stamp}" in t and "🚨" in t for t in posted), pk


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    """camera|hour -> the run's offset_within_threshold evaluation of it."""
    return {
        event.dagster_event.event_specific_data.partition: event.dagster_event.event_specific_data
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    }


def _seed_reports(slack_server, device: str, hour: str) -> list[str]:
    """The seed reports posted for one device's hour."""
    stamp = hour_start(hour).strftime("%Y-%m-%dT%H:%M:%SZ")
    posted = [r.body["text"] for r in slack_server.requests if r.path == "/api/chat.postMessage"]
    return [t for t in posted if f"\nDevice: {device}\n" in t and f"\nTimestamp: {stamp}\n" in t]


def test_checks_are_yielded_with_their_reason_and_linked(pipeline: Pipeline) -> None:
    """The estimate run's event log holds each camera-hour's offset_within_threshold evaluation, the reason in
    words (the angles beyond the 0.5° threshold, or the largest within it), the offsets rounded in degrees,
    linked to the hour's materialisation of that run; no "did not yield or return expected outputs"."""
    run_id = pipeline.estimate_run_id
    messages = [event.message or "" for event in pipeline.instance.all_logs(run_id)]
    assert not [m for m in messages if "did not yield" in m]
    evaluations = _check_evaluations(pipeline.instance, run_id)
    rows = pipeline.rows().set_index("partition_key")
    assert set(evaluations) == set(rows.index)
    for pk, e in evaluations.items():
        offsets = {a: rows.loc[pk, f"{a}_offset"] for a in ("yaw", "pitch", "roll")}
        beyond = [a for a, v in offsets.items() if abs(v) > 0.5]
        assert e.passed == (not beyond), (pk, e.description)
        if beyond:
            assert e.description.endswith("beyond the 0.5° threshold"), e.description
            assert all(e.description.count(f"{a} ") == 1 for a in beyond), e.description
        else:
            assert e.description.startswith("within the 0.5° threshold (largest: "), e.description
        for a, v in offsets.items():
            assert e.metadata[f"{a}_deg"].value == round(v, 4)
        assert e.metadata["threshold_deg"].value == 0.5
        assert e.target_materialization_data.run_id == run_id


def test_slack_reports_follow_each_deployments_report_setting(
    pipeline: Pipeline, slack_module_server
) -> None:
    """site-a (report: all) posted every camera-hour's seed report once, ✅ or 🚨, a re-run adding none;
    site-b (report: alerts) exactly its hours beyond the threshold."""
    assert pipeline.run_range("estimate_offsets", HOURS[:1]).success  # unchanged reports: nothing re-sent
    for pk, row in pipeline.rows().set_index("partition_key").iterrows():
        sent = _seed_reports(slack_module_server, row["device_id"], pk.split("|")[1])
        over = max(abs(row["yaw_offset"]), abs(row["pitch_offset"]), abs(row["roll_offset"])) > 0.5
        if row["deployment"] == "site-a":
            assert [t[0] for t in sent] == ["🚨" if over else "✅"], (pk, sent)
        else:
            assert [t[0] for t in sent] == (["🚨"] if over else []), (pk, sent)


def test_daily_report_exports_the_days_rows(pipeline: Pipeline) -> None:
    import pandas as pd

    storage = pipeline.resources["storage"]
    for day in sorted({h[:10] for h in HOURS}):
        assert pipeline.run("daily_report", partition_key=day).success
        table = pd.read_parquet(io.BytesIO(storage.get_bytes(f"reports/offsets_{day}.parquet")))
        sheet = pd.read_excel(io.BytesIO(storage.get_bytes(f"reports/offsets_{day}.xlsx")))
        expected = {f"{c}|{h}" for c in pipeline.keys for h in HOURS if h.startswith(day)}
        assert set(table["partition_key"]) == expected == set(sheet["partition_key"])
        assert table["success"].all()


def test_sigma_covers_the_error_against_ground_truth(pipeline: Pipeline) -> None:
    """σ includes the chessboard calibration's uncertainty (stored with the intrinsics version): |error|/σ
    against the simulator's truth is about 1 (median within 0.3-2, none beyond 5), where σ of the matches
    alone was 10-20x too small (the calibration's error biased the drift by 0.002-0.005°, bench/sigma.py)."""
    storage = pipeline.resources["storage"]
    ratios = []
    for _, row in pipeline.rows().iterrows():
        cam = pipeline.fleet.camera(f"{row['deployment']}__{row['device_id']}")
        truth = true_drift(storage, cam, row["timestamp"])
        for angle, t in zip(("yaw", "pitch", "roll"), truth, strict=True):
            ratios.append(abs(row[f"{angle}_offset"] - t) / row[f"sigma_{angle}"])
            assert ratios[-1] < 5, (row["partition_key"], angle, ratios[-1])
    assert len(ratios) == 3 * len(pipeline.keys) * len(HOURS)
    assert 0.3 < float(np.median(ratios)) < 2.0, sorted(ratios)


def test_a_failed_camera_hour_fails_its_check_with_the_reason(
    pipeline: Pipeline, slack_module_server
) -> None:
    """An hour never captured: each camera's estimate fails, its check fails (ERROR) saying why, and both
    deployments post the 🚨 failure report (a failure is an alert). Last in this module: it adds failure rows.
    """
    hour = hour_key(hour_start(HOURS[0]) - timedelta(hours=2))
    result = pipeline.run_range("estimate_offsets", [hour])
    assert not result.success
    evaluations = _check_evaluations(pipeline.instance, result.run_id)
    assert set(evaluations) == {f"{key}|{hour}" for key in pipeline.keys}
    for cam in pipeline.fleet.cameras():
        e = evaluations[f"{cam.key}|{hour}"]
        assert not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        assert e.description.startswith(f"no estimate: {cam.key} hour {hour}: no query scan at "), (
            e.description
        )
        assert e.target_materialization_data is None
        [report] = _seed_reports(slack_module_server, cam.name, hour)
        assert report.startswith("🚨") and "\nSuccess: No\n" in report
