"""R_align proposals in the asset graph: r_align_proposal proposes a corrected R_align after a step drift,
r_align with ``apply_proposal`` applies it as a new version, and the next hours read ≈ 0 (offsets relative to
the R_align version of their hour); the sensor refreshes proposals beside the drift view.

The integration test runs a tiny simulated camera (320x240, one row of 6 reference stops, 2 query stops, no
drift but the step) on the simulator's virtual clock, with ground truth. The renderer's nuisances stay on:
its noise is seeded by the hour, so each hour is a different image and the residuals after applying are the
estimator's real hour-to-hour scatter (with them off every hour renders identically and reads exactly the
proposal). To stay lean it asks for a proposal with SMALLER windows than production's defaults (N = 6 hours,
a trend over 72 h of which 48 h must be history, 12 valid hours per angle): N = 3 hours, no minimum history
span and a trend judged on 4 valid hours, the fewest geometry.trend accepts. The production windows are
exercised on simulated histories in test_trend.py and bench/trend.py, and through these assets by
bench/proposals.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from geometry.drift import DriftEstimate
from geometry.rotations import drift_angles, drift_matrix
from ptz_pipeline import grouped, proposals, sensors
from ptz_pipeline.assets.common import read_r_align
from ptz_pipeline.assets.drift import CAMERA_DRIFT
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS, relative_to_r_align
from ptz_pipeline.assets.proposal import R_ALIGN_PROPOSAL, rows_of_versions
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.partitions import camera_hour_key, camera_partitions, hour_key, hour_start
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.settings import local_resources
from ptz_pipeline.versions import Version, current
from ptz_pipeline_tests.test_pipeline import Pipeline, _camera, _write_devices
from ptz_pipeline_tests.test_versions import Clock

pytest_plugins = ["ptz_pipeline_tests.servers"]

STEP_DEG = (0.4, 0.0, 0.0)
"""The mount's step (yaw, pitch, roll degrees) after calibration."""
TOLERANCE_DEG = 0.02
LEAN = {"hours": 3, "min_history_hours": 0.0, "min_valid_hours": 4}
"""r_align_proposal's run config in the test (see the module docstring)."""


def _version(number: int, hour: int | None, **provenance: object) -> Version:
    valid_from = None if hour is None else datetime(2026, 11, 23, hour, tzinfo=UTC)
    return Version(number=number, valid_from=valid_from, prefix=f"v{number}", provenance=provenance)


def test_offsets_are_read_against_the_corrected_r_align_with_the_same_sigma() -> None:
    """Δ_p⁻¹ · Δ: a drift equal to the correction reads zero, σ and failures pass unchanged."""
    correction = (0.4, -0.1, 0.05)
    measured = DriftEstimate(0.45, -0.1, 0.05, 0.003, 0.002, 0.004, 90, 120, 2, True)
    out = relative_to_r_align(measured, correction)
    expected = drift_angles(drift_matrix(*correction).T @ drift_matrix(0.45, -0.1, 0.05))
    assert (out.yaw_deg, out.pitch_deg, out.roll_deg) == pytest.approx(expected, abs=1e-12)
    assert abs(out.yaw_deg - 0.05) < 1e-3 and max(abs(out.pitch_deg), abs(out.roll_deg)) < 1e-3
    assert (out.sigma_yaw_deg, out.sigma_pitch_deg, out.sigma_roll_deg) == (0.003, 0.002, 0.004)
    assert np.allclose(out.D, drift_matrix(*expected))
    assert relative_to_r_align(measured, None) is measured
    failed = DriftEstimate.failure("too few matches", 3, 2)
    assert relative_to_r_align(failed, correction) is failed


def test_a_correction_applies_to_its_reference_scan_only_and_accumulates() -> None:
    c1 = proposals.Correction(reference_version=2, yaw_deg=0.3, pitch_deg=0.0, roll_deg=0.0)
    surveyed, applied = _version(1, 8), _version(2, 9, correction=c1.model_dump())
    assert proposals.correction_of(surveyed, 2) is None
    assert proposals.correction_of(applied, 2) == c1
    assert proposals.correction_of(applied, 3) is None  # re-scanned since: the new scan holds the mount
    c2 = c1.then(drift_matrix(0.1, 0.02, 0.0))
    assert np.allclose(drift_matrix(*c2.angles_deg), drift_matrix(0.3, 0, 0) @ drift_matrix(0.1, 0.02, 0))


def test_a_proposal_reads_the_rows_of_the_current_versions_and_later_failures() -> None:
    rows = pd.DataFrame(
        {
            "timestamp": pd.to_datetime([f"2026-11-23 {h:02d}:00" for h in (8, 9, 10, 11, 12)], utc=True),
            "success": [True, True, False, True, False],
            "r_align_version": [1, 2, None, 2, None],
            "reference_version": [1, 1, None, 2, None],
        }
    )
    kept = rows_of_versions(rows, _version(2, 9), _version(1, None))
    assert kept["timestamp"].dt.hour.tolist() == [9, 10, 12]  # not v1's hour, nor reference 2's


def test_drift_after_estimate_refreshes_view_and_proposal_in_one_run_per_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fleet = [{"name": "site-a", "cameras": [{"name": "cam-1", "backend": {"kind": "simulated"}}]}]
    (tmp_path / "devices.yaml").write_text(json.dumps(fleet))
    resources = local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(camera_partitions.name, ["site-a__cam-1"])
        key = str(camera_hour_key("site-a__cam-1", hour_key(datetime.now(UTC))))
        instance.report_runless_asset_event(dg.AssetMaterialization(ORIENTATION_OFFSETS, partition=key))
        context = dg.build_sensor_context(instance=instance, definitions=build_definitions(resources))
        [request] = sensors.drift_after_estimate(context).run_requests
    assert grouped.requested_keys(request) == ["site-a__cam-1"]
    assert grouped.requested_assets(request) == sorted([CAMERA_DRIFT, R_ALIGN_PROPOSAL])


def _offsets(rows: pd.DataFrame, key: str) -> tuple[float, float, float]:
    row = rows.loc[key]
    assert row["success"], row["failure_logs"]
    return float(row["yaw_offset"]), float(row["pitch_offset"]), float(row["roll_offset"])


@pytest.mark.integration
def test_a_step_is_proposed_applied_and_reads_zero_afterwards(
    tmp_path: Path, slack_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated at drift 0, the mount steps by STEP_DEG; 4 hours estimated -> a proposal of Δ ≈ the step;
    applied at hour 5 -> R_align v2; a backfill of all 6 hours reproduces hours 1-4 (R_align v1) and reads
    hours 5-6 (v2) as ≈ 0."""
    now = datetime.now(UTC)
    h = [hour_key(now - timedelta(hours=n)) for n in range(7, 1, -1)]
    clock = Clock(monkeypatch, hour_start(h[0]) - timedelta(hours=1))
    tiny = {"image_width": 320, "image_height": 240, "nuisances": True, "drift_amplitude_deg": [0, 0, 0]}
    before = _write_devices(tmp_path / "before.yaml", {"site-a": [_camera("cam-1", 1, **tiny)]})
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    p = Pipeline(tmp_path, before, slack)
    storage = p.resources["storage"]
    cam = p.fleet.camera("site-a__cam-1")
    assert calibrate_simulated(p.run, storage, cam)
    apply = {"ops": {"r_align": {"config": {"apply_proposal": True}}}}
    r_align = {"partition_key": cam.key, "asset_selection": [dg.AssetKey("r_align")], "run_config": apply}
    unproposed = p.run("calibrate_camera", **r_align)
    [failure] = unproposed.get_step_failure_events()
    assert "no R_align proposal at " in failure.step_failure_data.error.to_string()

    stepped = p.with_devices(
        _write_devices(
            tmp_path / "after.yaml",
            {"site-a": [_camera("cam-1", 1, **tiny, drift_offset_deg=list(STEP_DEG))]},
        )
    )
    assert stepped.run_range("capture_queries", h).success
    assert stepped.run_range("estimate_offsets", h[:4]).success
    at_the_time = stepped.rows().set_index("partition_key")

    propose = {"ops": {"r_align_proposal": {"config": LEAN}}}
    proposal_job = {"partition_key": cam.key, "asset_selection": [R_ALIGN_PROPOSAL], "run_config": propose}
    assert stepped.run("drift_view", **proposal_job).success
    _, record = proposals.read_proposal(storage, cam.deployment, cam.name)
    assert record.proposed, record.reason
    assert (record.r_align_version, record.reference_version, len(record.hours_used)) == (1, 1, 3)
    truth = drift_angles(cam.backend.R_WB(now).T @ stepped.fleet.camera(cam.key).backend.R_WB(now))
    assert truth == pytest.approx(STEP_DEG, abs=1e-9)  # the mount at any hour after vs at calibration
    assert np.max(np.abs(np.subtract(record.delta_deg, truth))) < TOLERANCE_DEG, (record.delta_deg, truth)
    meta = stepped.instance.get_latest_materialization_event(R_ALIGN_PROPOSAL).asset_materialization.metadata
    assert meta["proposed"].value is True and abs(meta["delta_yaw_deg"].value - STEP_DEG[0]) < TOLERANCE_DEG

    clock.now = hour_start(h[4]) - timedelta(minutes=30)  # applied between the 4th and the 5th hour
    assert stepped.run("calibrate_camera", **r_align).success
    applied = current(storage, cam.deployment, cam.name, "r_align")
    assert applied.number == 2 and applied.provenance["proposal"]["hours_used"]
    assert proposals.correction_of(applied, 1).angles_deg == pytest.approx(record.delta_deg, abs=1e-9)
    assert np.allclose(read_r_align(storage, cam, applied), record.R_align)
    [stale] = stepped.run("calibrate_camera", **r_align).get_step_failure_events()
    assert "corrects R_align v1 measured against reference v1; the current versions are R_align v2" in (
        stale.step_failure_data.error.to_string()
    )

    assert stepped.run_range("estimate_offsets", h).success  # a backfill across the new version
    rows = stepped.rows().set_index("partition_key")
    for hour in h[:4]:  # before: as at the time, against R_align v1
        key = f"{cam.key}|{hour}"
        assert _offsets(rows, key) == pytest.approx(_offsets(at_the_time, key), abs=1e-9)
        assert rows.loc[key, "r_align_version"] == 1 and pd.isna(rows.loc[key, "r_align_correction"])
    residuals = [_offsets(rows, f"{cam.key}|{hour}") for hour in h[4:]]
    assert np.max(np.abs(residuals)) < TOLERANCE_DEG, residuals
    assert (rows.loc[f"{cam.key}|{h[5]}", ["r_align_version", "reference_version"]] == [2, 1]).all()
    expected = "yaw {:+.4f} pitch {:+.4f} roll {:+.4f}".format(*record.delta_deg)
    assert rows.loc[f"{cam.key}|{h[5]}", "r_align_correction"] == expected

    assert stepped.run("drift_view", **proposal_job).success  # v2 has 2 hours: nothing to propose yet
    _, again = proposals.read_proposal(storage, cam.deployment, cam.name)
    assert not again.proposed and again.r_align_version == 2 and "insufficient" in again.reason
    print(
        f"\nproposal {np.round(record.delta_deg, 4)} ± {np.round(record.delta_sigma_deg, 4)} (truth "
        f"{np.round(truth, 4)}); residuals after applying {np.round(residuals, 4).tolist()}"
    )
