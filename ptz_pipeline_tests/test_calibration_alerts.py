"""Failed calibration checks reach Slack with a reason (not only the offset check): the intrinsics RMS and
the reference scan's coverage, on a real temporary instance with a simulated camera."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.devices import load_devices
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.settings import local_resources
from ptz_pipeline.sim.survey import provide_chessboards

pytest_plugins = ["ptz_pipeline_tests.servers"]
pytestmark = pytest.mark.integration


def test_failed_intrinsics_and_coverage_checks_alert_with_their_reason(tmp_path: Path, slack_server) -> None:
    camera = {
        "name": "cam-1",
        "reference": {
            "horizontal_stops": 2,
            "vertical_stops": 1,
            "pan_max": 60,
            "tilt_min": -15,
            "tilt_max": -15,
        },
        "backend": {"kind": "simulated", "image_width": 320, "image_height": 240},
    }
    (tmp_path / "devices.yaml").write_text(json.dumps([{"name": "site", "cameras": [camera]}]))
    resources = {
        **local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml")),
        "slack": SlackResource(access_token=slack_server.token, base_url=slack_server.base_url),
    }
    defs = build_definitions(resources)
    provide_chessboards(resources["storage"], load_devices(tmp_path / "devices.yaml").camera("site__cam-1"))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions(camera_partitions.name, ["site__cam-1"])
        selection = [dg.AssetKey(k) for k in ("camera_intrinsics", "reference_scan", "reference_features")]
        result = defs.resolve_job_def("calibrate_camera").execute_in_process(
            instance=instance,
            partition_key="site__cam-1",
            asset_selection=selection,
            run_config={  # thresholds no calibration can meet: both checks must fail
                "ops": {
                    "camera_intrinsics": {"config": {"max_rms_px": 0.001}},
                    "reference_features": {"config": {"min_features_per_stop": 100_000}},
                }
            },
        )
        assert result.success  # failed checks warn; the artefacts are still versioned
        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data for e in
                  result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert not checks["intrinsics_rms_below_1px"].passed
    assert ">= 0.001 px" in checks["intrinsics_rms_below_1px"].description
    assert not checks["reference_coverage"].passed
    assert "2 of 2 reference stops have fewer than" in checks["reference_coverage"].description
    texts = [r.body["text"] for r in slack_server.requests]
    assert any("chessboard calibration RMS" in t and "site__cam-1" in t for t in texts), texts
    assert any("reference stops have fewer than" in t for t in texts), texts
