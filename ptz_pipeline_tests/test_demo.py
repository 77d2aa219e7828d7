"""`make demo` says when it fails: a camera-hour without an estimate makes it exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptz_pipeline import demo

pytestmark = pytest.mark.integration


def test_demo_exits_non_zero_when_a_camera_hour_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DAGSTER_HOME", "PTZ_DATA_DIR", "PTZ_DEVICES"):  # the demo sets them; restored after
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
    assert demo.main(["--hours", "1", "--home", str(tmp_path / "demo"), "--devices", str(devices)]) == 1
    out = capsys.readouterr().out
    assert "1 of 1 camera-hours have no estimate" in out and "runs failed" in out
    assert "dagster dev -w workspace.yaml" in out  # the UI command
    assert 'SELECT * FROM "ptz"."calibration_results"\nWHERE deployment = \'site\'' in out  # production query
