"""The per-camera drift view: camera_drift (plot, table, trend) from Iceberg rows, and its sensor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import numpy as np
import pytest

from ptz_pipeline import grouped, sensors
from ptz_pipeline.assets.drift import CAMERA_DRIFT, camera_drift
from ptz_pipeline.assets.offsets import ORIENTATION_OFFSETS
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.partitions import camera_hour_key, camera_partitions, hour_key
from ptz_pipeline.results import ResultRow
from ptz_pipeline.settings import local_resources

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
        yaw, pitch, roll = (0.2 if h >= step_at else 0.0, 0.05, -0.02) + rng.normal(0, 0.002, 3)
        rows.append(
            ResultRow(
                **common,
                success=True,
                yaw_offset=yaw,
                pitch_offset=pitch,
                roll_offset=roll,
                sigma_yaw=0.002,
                sigma_pitch=0.002,
                sigma_roll=0.002,
            )  # fmt: skip
        )
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
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=resources)
    result = sensors.drift_after_estimate(context)
    assert {r.tags[grouped.SITE_TAG]: grouped.requested_keys(r) for r in result.run_requests} == {
        "site-a": ["site-a__cam-1", "site-a__cam-2"],
        "site-b": ["site-b__cam-3"],
    }
    again = dg.build_sensor_context(
        instance=instance, definitions=defs, resources=resources, cursor=result.cursor
    )
    assert not sensors.drift_after_estimate(again).run_requests
