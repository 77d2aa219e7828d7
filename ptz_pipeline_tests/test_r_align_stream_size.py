"""R_align of a camera whose stream differs in size from its chessboard photos: the survey is clicked in the
stream's reference frames, so K and the zoom table are scaled to them (simulator ground truth)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from geometry.rotations import rotation_angle_deg
from ptz_pipeline import scans
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.devices import load_devices
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.settings import local_resources
from ptz_pipeline.sim.survey import provide_chessboards, provide_survey
from ptz_pipeline.versions import current

pytestmark = pytest.mark.integration


def _fleet(width: int, height: int) -> str:
    camera = {
        "name": "cam-1",
        "reference": {"horizontal_stops": 3, "vertical_stops": 1, "pan_max": 80,
                      "tilt_min": -15, "tilt_max": -15},
        "backend": {"kind": "simulated", "image_width": width, "image_height": height, "nuisances": False,
                    "drift_amplitude_deg": [0.0, 0.0, 0.0], "dist": [0.0, 0.0, 0.0, 0.0, 0.0]},
    }  # fmt: skip
    return json.dumps([{"name": "site", "cameras": [camera]}])


def test_r_align_scales_the_intrinsics_to_the_reference_frames(tmp_path: Path) -> None:
    stream = load_devices(_fleet(320, 240)).camera("site__cam-1")  # what the camera streams
    photos = load_devices(_fleet(640, 480)).camera("site__cam-1")  # the same lens photographed at 640x480
    (tmp_path / "devices.yaml").write_text(_fleet(320, 240))
    resources = local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml"))
    storage = resources["storage"]
    provide_chessboards(storage, photos)
    defs = build_definitions(resources)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions(camera_partitions.name, ["site__cam-1"])
        job = defs.resolve_job_def("calibrate_camera")
        first = [dg.AssetKey("camera_intrinsics"), dg.AssetKey("reference_scan")]
        assert job.execute_in_process(
            instance=instance, partition_key="site__cam-1", asset_selection=first
        ).success
        provide_survey(storage, stream)
        r_align = [dg.AssetKey("r_align")]
        assert job.execute_in_process(
            instance=instance, partition_key="site__cam-1", asset_selection=r_align
        ).success
    version = current(storage, "site", "cam-1", "r_align").number
    R_align = np.load(io.BytesIO(storage.get_bytes(scans.r_align_key("site", "cam-1", version))))
    # 6 landmarks clicked with 0.3 px noise at f = 277 px (0.06° each) bound the error near 0.1°; with K
    # at the photos' size (unscaled) the same survey gave 20.8°
    assert rotation_angle_deg(R_align, stream.backend.R_WB(datetime.now(UTC))) < 0.25
