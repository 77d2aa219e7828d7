"""Integration: the asset graph with a camera reached over the real protocols (``python -m ptz_pipeline.sim``:
ONVIF, RTSP; backend ``kind: onvif``) beside the same camera spec rendered in process (``kind: simulated``).

Both are calibrated the same way (chessboard photos and the survey come from the spec, written to each
camera's storage prefix), scan a 4 x 2 reference grid, then capture the CURRENT hour live (a real camera
captures only its own hour) after their mounts moved by the same small rotation: POSTed to the server as a
disturbance, given to the in-process camera as a drift offset. Each estimate is compared with its truth
(the server's GET /sim/truth; the in-process spec) and with the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from geometry.camera import Intrinsics, ZoomModel
from geometry.features import Features
from geometry.rotations import drift_angles
from ptz_pipeline import scans
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.devices import CameraConfig, Deployment, load_devices
from ptz_pipeline.partitions import camera_hour_range_tags, camera_partitions, hour_key
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.settings import local_resources
from ptz_pipeline_tests.test_sim_server import PASSWORD, USER, Sim, running_sim

pytestmark = pytest.mark.integration

TOLERANCE_DEG = 0.02
SPEC = {"kind": "simulated", "image_width": 256, "image_height": 192, "hfov_deg": 60.0,
        "mount_ypr_deg": [40.0, 1.0, -0.5], "drift_amplitude_deg": [0.0, 0.0, 0.0], "seed": 3}
"""One camera spec for the server and the in-process camera (small frames: fast features); its mount moves
only by DISTURBANCE, so each truth is exact whenever its scans were taken."""
GRID = {"horizontal_stops": 4, "vertical_stops": 2, "pan_min": 0, "pan_max": 270, "tilt_min": -20,
        "tilt_max": -8, "zoom": 0.0}
QUERY_STOPS = [[0.0, -20.0, 0.0], [180.0, -8.0, 0.0]]
"""Active-mode query stops: two of the reference grid's stops, one per row."""
DISTURBANCE = (0.3, -0.1, 0.05)
"""The mount's motion between reference and query (yaw, pitch, roll degrees)."""
ONVIF_CAMERA, LOCAL_CAMERA = "field__onvif-cam", "field-local__sim-cam"
USER_ENV, PASSWORD_ENV = "REAL_PIPELINE_USER", "REAL_PIPELINE_PASSWORD"


def _camera(name: str, backend: dict) -> dict:
    return {"name": name, "mode": "active", "ptz_stops": QUERY_STOPS, "reference": GRID, "backend": backend}


def _devices(path: Path, onvif_port: int, local_drift_offset: tuple[float, float, float]) -> Path:
    """The pipeline's devices.yaml: the server's camera as a real one and the spec in process."""
    onvif = {"kind": "onvif", "host": "127.0.0.1", "port": onvif_port, "username_env": USER_ENV,
             "password_env": PASSWORD_ENV, "telemetry": "onvif", "poll_interval_s": 0.1, "settle_s": 0.2,
             "stream_latency_s": 0.2}
    local = {**SPEC, "drift_offset_deg": list(local_drift_offset)}
    path.write_text(yaml.safe_dump([
        {"name": "field", "cameras": [_camera("onvif-cam", onvif)]},
        {"name": "field-local", "cameras": [_camera("sim-cam", local)]},
    ]))
    return path


SERVER_SITE = {"name": "field", "cameras": [_camera("onvif-cam", SPEC)]}
"""The server's devices.yaml deployment: the ONVIF camera's key with the simulated spec."""


def _server_camera() -> CameraConfig:
    """The server's camera under the ONVIF camera's name: its spec provides the calibration fixtures."""
    return Deployment.model_validate(SERVER_SITE).cameras[0]


@dataclass
class Outcome:
    """What the module's pipeline produced."""

    instance: dg.DagsterInstance
    rows: pd.DataFrame
    truth: dict[str, tuple[float, float, float]]
    """Camera key -> true drift (yaw, pitch, roll degrees) between its reference and query scans."""


def _run(
    resources: dict, instance: dg.DagsterInstance, job: str, **kwargs: object
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(resources)
    return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("real_pipeline")
    server = tmp / "server.yaml"
    server.write_text(yaml.safe_dump([SERVER_SITE]))
    env = {USER_ENV: USER, PASSWORD_ENV: PASSWORD}
    with running_sim(tmp, "--devices", str(server), "--fps", "10", "--slew", "360") as sim, \
            pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield _materialise(tmp, sim)


def _materialise(tmp: Path, sim: Sim) -> Outcome:
    """Calibrate both cameras, move the mounts, capture and estimate the current hour."""
    data = str(tmp / "data")
    calibration = local_resources(data, str(_devices(tmp / "devices.yaml", sim.onvif_port, (0.0, 0.0, 0.0))))
    storage = calibration["storage"]
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp / "home"))
    instance.add_dynamic_partitions(camera_partitions.name, [ONVIF_CAMERA, LOCAL_CAMERA])
    fleet = load_devices(tmp / "devices.yaml")

    def run(job: str, **kwargs: object) -> dg.ExecuteInProcessResult:
        return _run(calibration, instance, job, **kwargs)

    assert calibrate_simulated(run, storage, _server_camera())
    assert calibrate_simulated(run, storage, fleet.camera(LOCAL_CAMERA))
    reference_truth = sim.truth()
    reply = requests.post(sim.admin("disturbance"), auth=(USER, PASSWORD), timeout=5,
                          json=dict(zip(("yaw", "pitch", "roll"), DISTURBANCE, strict=True)))
    assert reply.json()["disturbance_ypr_deg"] == list(DISTURBANCE)

    query = local_resources(data, str(_devices(tmp / "query.yaml", sim.onvif_port, DISTURBANCE)))
    hour = hour_key(datetime.now(UTC))
    tags = camera_hour_range_tags([ONVIF_CAMERA, LOCAL_CAMERA], [hour])
    assert _run(query, instance, "capture_queries", tags=tags).success
    query_truth = sim.truth()
    assert _run(query, instance, "estimate_offsets", tags=tags).success

    onvif_truth = drift_angles(np.array(reference_truth["R_WB"]).T @ np.array(query_truth["R_WB"]))
    spec = fleet.camera(LOCAL_CAMERA).backend
    now = datetime.now(UTC)
    disturbed = spec.model_copy(update={"drift_offset_deg": DISTURBANCE})
    local_truth = drift_angles(spec.R_WB(now).T @ disturbed.R_WB(now))
    truth = {ONVIF_CAMERA: onvif_truth, LOCAL_CAMERA: local_truth}
    return Outcome(instance, query["iceberg"].read_rows(), truth)


def _estimate(outcome: Outcome, key: str) -> np.ndarray:
    deployment, name = key.split("__")
    row = outcome.rows[(outcome.rows["deployment"] == deployment) & (outcome.rows["device_id"] == name)]
    assert len(row) == 1 and row.iloc[0]["success"], row.to_dict("records")
    return row.iloc[0][["yaw_offset", "pitch_offset", "roll_offset"]].to_numpy(dtype=float)


def test_onvif_reference_scan_is_a_complete_4_by_2_grid(outcome: Outcome) -> None:
    """The scan the reference_scan asset reports for the ONVIF camera: a manifest naming 8 stored frames at
    the grid's stops (reported telemetry), each of the stream's size."""
    scans_of_camera = dg.AssetRecordsFilter(asset_key=dg.AssetKey("reference_scan"),
                                            asset_partitions=[ONVIF_CAMERA])
    records = outcome.instance.fetch_materializations(scans_of_camera, limit=1).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["grid"].value == "4 x 2" and metadata["frames"].value == 8
    folder = Path(urlsplit(metadata["location"].value).path)  # a file: URI
    manifest = scans.ScanManifest.model_validate_json((folder / "manifest.json").read_bytes())
    assert manifest.camera == ONVIF_CAMERA and manifest.kind == "reference" and len(manifest.frames) == 8
    reported = [(f.pan % 360.0, f.tilt, f.zoom) for f in manifest.frames]
    assert reported == [pytest.approx(stop, abs=0.2) for stop in _server_camera().reference.stops()]
    images = [scans.decode_image((folder / frame.image).read_bytes()) for frame in manifest.frames]
    assert {image.shape for image in images} == {(SPEC["image_height"], SPEC["image_width"], 3)}


def test_drift_estimates_agree_with_the_truth_and_each_other(outcome: Outcome) -> None:
    onvif, local = _estimate(outcome, ONVIF_CAMERA), _estimate(outcome, LOCAL_CAMERA)
    assert np.abs(outcome.truth[LOCAL_CAMERA] - np.array(DISTURBANCE)).max() < 1e-9
    print(f"\nONVIF estimate {onvif.round(4)} truth {np.round(outcome.truth[ONVIF_CAMERA], 4)}; in-process "
          f"estimate {local.round(4)} truth {np.round(outcome.truth[LOCAL_CAMERA], 4)}")
    assert np.abs(outcome.truth[ONVIF_CAMERA] - np.array(DISTURBANCE)).max() < 1e-6  # the disturbance
    assert np.abs(onvif - outcome.truth[ONVIF_CAMERA]).max() < TOLERANCE_DEG
    assert np.abs(local - outcome.truth[LOCAL_CAMERA]).max() < TOLERANCE_DEG
    assert np.abs(onvif - local).max() < TOLERANCE_DEG


def test_frames_of_another_size_get_scaled_intrinsics(tmp_path: Path) -> None:
    """A stream half the calibrated size: scan_observations scales K to each frame's size."""
    storage = ObjectStorageResource(url=str(tmp_path))
    base = Intrinsics.from_fov(60.0, 320, 240)
    image = np.zeros((120, 160, 3), np.uint8)
    telemetry = [(0.0, -10.0, 0.0, datetime.now(UTC))]
    manifest = scans.write_scan(storage, "scan", "site__cam", "query", [image], telemetry)
    points = np.random.default_rng(0).uniform(0, 100, (5, 2))
    scans.write_features(storage, "scan", manifest.frames[0],
                         Features(points, np.ones((5, 8)), np.ones(5), (160, 120), "disk"))
    (frame,) = scans.scan_observations(storage, "scan", manifest, base, ZoomModel.constant(base.fx))
    assert frame.intrinsics.image_size == (160, 120)
    np.testing.assert_allclose(frame.intrinsics.K, base.scaled(0.5).K)
