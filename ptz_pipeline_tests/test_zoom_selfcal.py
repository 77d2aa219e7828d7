"""Integration: a 10x lens whose focal length is exponential in zoom (the nominal devices.yaml table says
linear) scanned at extra zoom levels (``reference.zoom_levels``) gets its f(zoom) from the self-calibration
through the assets, and a query at a zoom between the levels reads the drift with it."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ptz_pipeline.assets.common import load_intrinsics
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.partitions import recent_hours
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.versions import current
from ptz_pipeline_tests.test_intrinsics_selfcal import FOCAL_TARGET, GRID, _camera, _errors
from ptz_pipeline_tests.test_pipeline import Pipeline, _write_devices

pytest_plugins = ["ptz_pipeline_tests.servers"]
pytestmark = pytest.mark.integration


def test_a_nonlinear_zoom_lens_gets_its_focal_curve_from_zoom_level_scans(tmp_path: Path) -> None:
    """Truth f = f0 10^zoom; devices.yaml's nominal table is a straight line 1 -> 10 (wrong by up to 85 %
    in between). Scanned at 4 extra zoom levels, the stored zoom model is within 0.3 % at every zoom, and a
    query at zoom 0.3 (between the levels) reads the drift within the demo's tolerance."""
    levels = {**GRID, "zoom_levels": [0.25, 0.5, 0.75, 1.0]}
    zoom_cam = _camera(
        "zoom", "self", levels, image_width=480, image_height=360, zoom_max_ratio=10.0,
        zoom_curve="exponential", dist_at_max_zoom=[0.0, 0.0, 0.0, 0.0, 0.0],
    )  # fmt: skip
    zoom_cam["zoom_focal_ratio"] = [[0.0, 1.0], [1.0, 10.0]]
    zoom_cam["ptz_stops"] = [[170, -15, 0.3], [175, -12, 0.0]]
    p = Pipeline(tmp_path, _write_devices(tmp_path / "devices.yaml", {"site": [zoom_cam]}), SlackResource())
    storage = p.resources["storage"]
    cam = p.fleet.camera("site__zoom")
    assert len(cam.reference_stops()) == 16 + 4 * 4
    assert calibrate_simulated(p.run, storage, cam)
    intr, model = load_intrinsics(storage, cam)
    truth = cam.backend.zoom_model
    zooms = np.linspace(0.0, 1.0, 21)
    error = np.array([model.focal(z) / truth.focal(z) - 1.0 for z in zooms])
    nominal = np.array([cam.nominal_zoom_model.focal(z) * intr.fx / truth.focal(z) - 1.0 for z in zooms])
    print(
        f"\nzoom curve: max focal error {100 * np.abs(error).max():.4f} % "
        f"(nominal table {100 * np.abs(nominal).max():.1f} %)"
    )
    assert np.abs(error).max() <= FOCAL_TARGET, error
    assert np.abs(nominal).max() > 0.5  # the nominal table alone would be far off
    k1 = model.distortion(0.5)[0]
    assert abs(k1 - truth.distortion(0.5)[0]) < 0.02
    hours = recent_hours(datetime.now(UTC), 1)
    assert p.run_range("capture_queries", hours).success
    assert p.run_range("estimate_offsets", hours).success
    assert _errors(p, cam.key).max() < 0.02


def test_zoom_levels_too_far_apart_fail_the_intrinsics_with_a_reason_and_an_alert(
    tmp_path: Path, slack_server
) -> None:
    """The same 10x exponential lens scanned at zoom levels 0.5 and 1 only (focal x3.2 apart): their frames
    share no matches with the lower level's, so the fit holds zoom 0 alone. camera_intrinsics fails,
    naming the levels and the ~1.8x rule, alerts on Slack and writes no version (no silent fallback to the
    nominal table)."""
    far = {**GRID, "horizontal_stops": 4, "pan_max": 135, "zoom_levels": [0.5, 1.0]}
    zoom_cam = _camera(
        "far", "self", far, zoom_max_ratio=10.0, zoom_curve="exponential",
        dist_at_max_zoom=[0.0, 0.0, 0.0, 0.0, 0.0],
    )  # fmt: skip
    zoom_cam["zoom_focal_ratio"] = [[0.0, 1.0], [0.5, 3.16], [1.0, 10.0]]
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    p = Pipeline(tmp_path, _write_devices(tmp_path / "devices.yaml", {"site": [zoom_cam]}), slack)
    cam = p.fleet.camera("site__far")
    assert not calibrate_simulated(p.run, p.resources["storage"], cam)
    failures = [
        e.dagster_event.step_failure_data.error.message
        for e in p.instance.all_logs(p.instance.get_runs()[0].run_id)
        if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert len(failures) == 1, failures
    assert "zoom levels [0.5, 1.0]" in failures[0] and "at most ~1.8x apart" in failures[0], failures[0]
    assert "0 -> 0.5 (3.2x)" in failures[0], failures[0]
    texts = [r.body["text"] for r in slack_server.requests]
    assert any("site__far" in t and "zoom levels [0.5, 1.0]" in t for t in texts), texts
    assert current(p.resources["storage"], cam.deployment, cam.name, "intrinsics") is None
