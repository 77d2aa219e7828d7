"""The daily Slack digest per deployment: OK / alerting / failing cameras, worst offsets, trends (HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np

from ptz_pipeline.assets.digest import slack_digest, sparkline
from ptz_pipeline.partitions import camera_hour_key, hour_key
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.results import ResultRow
from ptz_pipeline.settings import local_resources

pytest_plugins = ["ptz_pipeline_tests.servers"]

DAY = datetime(2026, 11, 23, tzinfo=UTC)


def _rows() -> list[ResultRow]:
    """site-a: cam-1 calm, cam-2 over its 0.3° threshold at 05:00, cam-3 unreachable; site-b: cam-4."""
    rows = []
    for h in range(24):
        t = DAY + timedelta(hours=h)
        for site, cam, yaw in (("site-a", "cam-1", 0.05), ("site-a", "cam-2", 0.45 if h == 5 else 0.1),
                               ("site-a", "cam-3", None), ("site-b", "cam-4", -0.02)):  # fmt: skip
            common = {"deployment": site, "device_id": cam, "timestamp": t, "mode": "active"}
            pk = str(camera_hour_key(f"{site}__{cam}", hour_key(t)))
            if yaw is None:
                rows.append(
                    ResultRow(**common, partition_key=pk, success=False, failure_logs="camera unreachable")
                )
            else:
                rows.append(
                    ResultRow(
                        **common,
                        partition_key=pk,
                        success=True,
                        yaw_offset=yaw,
                        pitch_offset=0.01,
                        roll_offset=-0.01,
                        sigma_yaw=0.001,
                        sigma_pitch=0.001,
                        sigma_roll=0.001,
                    )  # fmt: skip
                )
    return rows


def test_digest_sums_up_each_deployment_in_one_message(tmp_path: Path, monkeypatch, slack_server) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fleet = [
        {"name": "site-a", "cameras": [{"name": "cam-1"}, {"name": "cam-2", "offset_threshold_deg": 0.3},
                                       {"name": "cam-3"}]},
        {"name": "site-b", "cameras": [{"name": "cam-4"}]},
    ]  # fmt: skip
    (tmp_path / "devices.yaml").write_text(json.dumps(fleet))
    resources = local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml"))
    resources["slack"] = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    rows = _rows()
    resources["iceberg"].replace_rows([r.partition_key for r in rows], rows)
    assert dg.materialize([slack_digest], resources=resources, partition_key="2026-11-23").success
    texts = [r.body["text"] for r in slack_server.requests]
    assert len(texts) == 2
    site_a = next(t for t in texts if "site-a" in t)
    assert "Daily calibration digest: site-a, 2026-11-23 (UTC)" in site_a
    assert "Cameras: 1 OK, 1 alerting, 1 failing" in site_a
    assert "cam-2: ALERT in 1 hours" in site_a and "worst yaw=+0.450° at 05:00 (threshold 0.3°)" in site_a
    assert "cam-3: FAILING (24/24 hours failed: camera unreachable)" in site_a
    assert "Cameras: 1 OK, 0 alerting, 0 failing" in next(t for t in texts if "site-b" in t)
    # the week's series per camera, as camera_drift plots it: one character per 6 hours, NaN where no row;
    # the day is the last 4 characters; cam-2's yaw peaks in the bucket holding 05:00 (0.45 among 0.1s)
    cam2_series = site_a.split("cam-2: ")[1].splitlines()[1]
    yaw = cam2_series.split("yaw ")[1].split(" ")[0]
    assert yaw == "·" * 24 + "█▁▁▁", cam2_series
    assert "+0.100..+0.158°" in cam2_series  # the 00-06 mean: (5 x 0.1 + 0.45) / 6 = 0.1583
    assert "no data" in site_a.split("cam-3: ")[1].splitlines()[1]


def test_sparkline_scales_min_to_max_and_marks_gaps() -> None:
    assert sparkline(np.array([0.0, 0.5, 1.0, np.nan])) == "▁▅█·"
    assert sparkline(np.array([2.0, 2.0])) == "▄▄"
    assert sparkline(np.array([np.nan, np.nan])) == "··"
