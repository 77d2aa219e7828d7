"""The per-camera drift view: camera_drift (plot, table, trend) from Iceberg rows, and its sensor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import dagster as dg
import numpy as np
import pytest

from geometry.rotations import drift_angles, drift_matrix
from geometry.trend import classify_trend
from ptz_pipeline import grouped, sensors
from ptz_pipeline.assets.drift import CAMERA_DRIFT, camera_drift, drift_series
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.partitions import camera_hour_key, camera_partitions, hour_key
from ptz_pipeline.plots import MARK_BGR, drift_plot_png
from ptz_pipeline.results import ResultRow
from ptz_pipeline.settings import local_resources
from ptz_pipeline_tests.rows import estimate_row

CAMERAS = {"site-a": ["cam-1", "cam-2"], "site-b": ["cam-3"]}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    fleet = [
        {"name": site, "cameras": [{"name": c, "backend": {"kind": "simulated"}} for c in cams]}
        for site, cams in CAMERAS.items()
    ]
    (tmp_path / "devices.yaml").write_text(json.dumps(fleet))
    resources = local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml"))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions(
            camera_partitions.name, ["site-a__cam-1", "site-a__cam-2", "site-b__cam-3"]
        )
        yield resources, instance


def _history(resources: dict, step_at: int = 30, hours: int = 48) -> None:
    """cam-1: 48 hours with a 0.2° yaw step at hour 30 and one failed hour; σ 0.002°."""
    rng = np.random.default_rng(0)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    rows = []
    for h in range(hours):
        t = start + timedelta(hours=h)
        pk = str(camera_hour_key("site-a__cam-1", hour_key(t)))
        common = {
            "deployment": "site-a",
            "device_id": "cam-1",
            "timestamp": t,
            "mode": "passive",
            "partition_key": pk,
        }
        if h == 10:
            rows.append(ResultRow(**common, success=False, failure_logs="camera unreachable"))
            continue
        angles = np.add((0.2 if h >= step_at else 0.0, 0.05, -0.02), rng.normal(0, 0.002, 3))
        rows.append(estimate_row("site-a__cam-1", t, angles))
    resources["iceberg"].replace_rows([r.partition_key for r in rows], rows)


def test_camera_drift_shows_the_series_its_plot_and_the_step(env) -> None:
    resources, instance = env
    _history(resources)
    result = dg.materialize(
        [camera_drift], instance=instance, resources=resources, partition_key="site-a__cam-1"
    )
    assert result.success
    meta = instance.fetch_materializations(CAMERA_DRIFT, limit=1).records[0].asset_materialization.metadata
    assert meta["trend"].value == "step"
    assert (meta["hours"].value, meta["failed_hours"].value) == (48, 1)
    assert abs(meta["latest_yaw_deg"].value - 0.2) < 0.01
    table = meta["last_24_hours"].value
    assert table.count("\n") == 25 and "+0.2" in table
    plot = Path(urlsplit(meta["plot"].value).path)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drift_after_estimate_requests_one_view_run_per_site(env) -> None:
    resources, instance = env
    hour = hour_key(datetime.now(UTC))
    for camera in ("site-a__cam-1", "site-a__cam-2", "site-b__cam-3"):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(ORIENTATION_OFFSETS, partition=str(camera_hour_key(camera, hour)))
        )
    defs = build_definitions(resources)
    # resources set up as in the daemon (storage's S3Resource is a context manager)
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=resources) as context:
        result = sensors.drift_after_estimate(context)
    assert {r.tags[grouped.SITE_TAG]: grouped.requested_keys(r) for r in result.run_requests} == {
        "site-a": ["site-a__cam-1", "site-a__cam-2"],
        "site-b": ["site-b__cam-3"],
    }
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=resources, cursor=result.cursor
    ) as again:
        assert not sensors.drift_after_estimate(again).run_requests


APPLIED_HOUR = 30
"""The version-aware tests apply a proposal (R_align v2) at hour 30 of 48."""


def _applied_history(resources: dict, step_deg: tuple[float, float, float], step_hour: int) -> list[datetime]:
    """cam-1: 48 hours of a mount at drift 0 that moves by ``step_deg`` (yaw, pitch, roll) at ``step_hour``
    (the truth); R_align v1 (surveyed) until APPLIED_HOUR, then v2 applying a proposal a little off the truth
    (as estimated), so those hours report C⁻¹ · Δ (ptz_pipeline.proposals). σ 0.002°. Returns the hours."""
    rng = np.random.default_rng(1)
    proposal = np.add(step_deg, (0.0012, -0.0008, 0.0005))
    correction = "yaw {:+.4f} pitch {:+.4f} roll {:+.4f}".format(*proposal)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=48)
    hours, rows = [start + timedelta(hours=h) for h in range(48)], []
    for h, t in enumerate(hours):
        truth = drift_matrix(*(step_deg if h >= step_hour else (0.0, 0.0, 0.0)))
        applied = h >= APPLIED_HOUR
        reported = np.add(
            drift_angles(drift_matrix(*proposal).T @ truth if applied else truth), rng.normal(0, 0.002, 3)
        )
        rows.append(
            estimate_row(
                "site-a__cam-1",
                t,
                reported,
                reference_version=1,
                intrinsics_version=1,
                r_align_version=2 if applied else 1,
                r_align_correction=correction if applied else None,
            )
        )
    resources["iceberg"].replace_rows([r.partition_key for r in rows], rows)
    return hours


def _view(resources: dict, instance: dg.DagsterInstance) -> dict:
    result = dg.materialize(
        [camera_drift], instance=instance, resources=resources, partition_key="site-a__cam-1"
    )
    assert result.success
    meta = instance.fetch_materializations(CAMERA_DRIFT, limit=1).records[0].asset_materialization.metadata
    return {k: v.value for k, v in meta.items()}


def _hour(t: datetime) -> float:
    """``t`` on the trend's axis (hours since the Unix epoch)."""
    return t.timestamp() / 3600.0


def test_an_applied_proposal_is_no_step_in_camera_drift_but_the_mount_step_is(env) -> None:
    """Truth: one step of the mount at hour 12. The rows fall back to ≈ 0 at APPLIED_HOUR (new R_align
    version), which the reported series reads as a second step; the view re-expresses every hour relative to
    v2 and finds the mount's step, at its hour and of its size, and marks the version change."""
    resources, instance = env
    step = (0.3, -0.05, 0.02)
    hours = _applied_history(resources, step, step_hour=12)
    meta = _view(resources, instance)
    assert meta["trend"] == "step", meta["trend_reason"]
    assert f"step at hour {_hour(hours[12]):g}" in meta["trend_reason"]
    series = drift_series(resources["iceberg"].read_rows("site-a", "cam-1"))
    trend = classify_trend(series.history)
    assert trend.step_hour == _hour(hours[12])
    assert [e.step_deg for e in trend.angles] == pytest.approx(step, abs=0.003)
    assert series.r_align_version == meta["relative_to_r_align_version"] == 2
    assert meta["version_changes"] == [{"hour": hours[APPLIED_HOUR].isoformat(), "version": "R_align v2"}]
    assert max(abs(meta[f"latest_{a}_deg"]) for a in ("yaw", "pitch", "roll")) < 0.01  # as reported: ≈ 0
    assert "| v2 | v1 |" in meta["last_24_hours"] and "| v1 | v1 |" in meta["last_24_hours"]


def test_a_mount_settled_before_the_window_reads_stable_across_the_applied_proposal(env) -> None:
    """The mount stepped before the rows begin: v1 reads the step in every hour, v2 ≈ 0: one level relative
    to v2, so stable, while the reported rows read a step at the version change."""
    resources, instance = env
    _applied_history(resources, (0.4, 0.0, 0.0), step_hour=0)
    meta = _view(resources, instance)
    assert meta["trend"] == "stable", meta["trend_reason"]
    series = drift_series(resources["iceberg"].read_rows("site-a", "cam-1"))
    assert np.nanmax(np.abs(series.history.angles_deg)) < 0.01
    assert classify_trend(series.reported).trend == "step"


def test_the_plot_marks_version_changes() -> None:
    hours = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(10)]
    angles, sigma = np.zeros((10, 3)), np.full((10, 3), 0.002)

    def plot(marks: list[tuple[datetime, str]]) -> np.ndarray:
        png = drift_plot_png(hours, angles, sigma, "t", threshold_deg=0.5, marks=marks)
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    plain, marked = plot([]), plot([(hours[5] + timedelta(minutes=30), "R_align v2")])
    grey = np.all(marked == MARK_BGR, axis=2) & ~np.all(plain == MARK_BGR, axis=2)
    columns = np.flatnonzero(grey.sum(axis=0) > 50)  # a vertical dotted line across the plot
    assert columns.tolist() == [510]  # hour 5.5 of 0..9 on the x axis from 70 to 790 px
