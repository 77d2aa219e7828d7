"""Bad input gives one line naming the file (and the key): an intrinsics file that is not an npz, a manifest
naming a missing image, an invalid manifest, a broken devices.yaml when the code location loads; r_align's
survey is JSON or CSV, never both."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from geometry.camera import load_calibration
from ptz_pipeline import scans, versions
from ptz_pipeline.assets.r_align import _control_points
from ptz_pipeline.cli import main
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.devices import DevicesConfigError, load_devices
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.settings import local_resources

REPO = Path(__file__).parents[1]
BROKEN_FLEET = """
- name: site-a
  cameras:
    - name: cam-1
      offset_threshold_deg: "0.3"
      backend: {kind: simulated}
"""
BROKEN_MESSAGE = "[0].cameras[0].offset_threshold_deg: Input should be a valid number"


def one_line(text: str) -> str:
    assert "\n" not in text.strip() and "errors.pydantic.dev" not in text, text
    return text.strip()


@pytest.fixture
def storage(tmp_path: Path) -> ObjectStorageResource:
    return ObjectStorageResource(url=str(tmp_path / "store"))


def write_manifest(storage: ObjectStorageResource, doc: dict) -> str:
    storage.put_json("scan/manifest.json", doc)
    return storage.uri("scan/manifest.json")


FRAME = {
    "image": "images/000.jpg",
    "pan": 10.0,
    "tilt": -5.0,
    "zoom": 0.0,
    "timestamp": "2026-11-23T10:00:00Z",
}


def test_an_intrinsics_file_that_is_not_an_npz_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "calibration.npz"
    text.write_text("fx=800\n")
    with pytest.raises(ValueError, match=rf"^{text}: not an npz archive"):
        load_calibration(text)
    array = tmp_path / "array.npz"
    with array.open("wb") as f:
        np.save(f, np.eye(3))  # one .npy array under an .npz name
    with pytest.raises(ValueError, match=rf"^{array}: not an npz archive"):
        load_calibration(array)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, camera_matrix=np.eye(3), dist_coeffs=np.zeros(5))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"^{truncated}: not a readable calibration \.npz \("):
        load_calibration(truncated)
    points = tmp_path / "points.json"
    points.write_text("{}")
    assert main(["r-align", "--intrinsics", str(text), "--control-points", str(points)]) == 2
    assert f"{text}: not an npz archive" in one_line(capsys.readouterr().err)


def test_a_manifest_naming_a_missing_image_names_manifest_and_frame(storage: ObjectStorageResource) -> None:
    uri = write_manifest(storage, {"camera": "site-a__cam-1", "kind": "query", "frames": [FRAME]})
    manifest = scans.read_manifest(storage, "scan")
    with pytest.raises(FileNotFoundError) as raised:
        scans.read_images(storage, "scan", manifest)
    assert one_line(str(raised.value)) == (
        f"{uri}: frame 'images/000.jpg': no image at {storage.uri('scan/images/000.jpg')}"
    )


def test_a_manifest_without_created_is_accepted(storage: ObjectStorageResource) -> None:
    write_manifest(storage, {"camera": "site-a__cam-1", "kind": "reference", "frames": [FRAME]})
    manifest = scans.read_manifest(storage, "scan")
    assert manifest.created is None
    assert manifest.frames[0].timestamp == datetime(2026, 11, 23, 10, tzinfo=UTC)


def test_an_invalid_manifest_is_one_line_file_key_problem(storage: ObjectStorageResource) -> None:
    frame = {k: v for k, v in FRAME.items() if k != "tilt"} | {"zoom": 1.5}
    uri = write_manifest(storage, {"camera": "site-a__cam-1", "kind": "query", "frames": [frame]})
    with pytest.raises(ValueError) as raised:
        scans.read_manifest(storage, "scan")
    assert one_line(str(raised.value)) == (
        f"{uri}: frames[0].tilt: Field required; frames[0].zoom: Input should be less than or equal to 1"
    )
    storage.put_bytes("scan/manifest.json", b'{"camera": "x", "kind": "que')  # truncated
    with pytest.raises(ValueError, match=rf"^{uri}: \(top level\): Invalid JSON"):
        scans.read_manifest(storage, "scan")


def test_broken_fleet_fails_building_the_definitions(tmp_path: Path) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text(BROKEN_FLEET)
    with pytest.raises(DevicesConfigError) as raised:
        build_definitions(local_resources(str(tmp_path / "data"), str(devices)))
    assert one_line(str(raised.value)) == f"{devices}: {BROKEN_MESSAGE}"


@pytest.mark.integration
def test_broken_fleet_fails_dagster_definitions_validate(tmp_path: Path) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text(BROKEN_FLEET)
    env = os.environ | {"PTZ_DEVICES": str(devices), "PTZ_DATA_DIR": str(tmp_path / "data")}
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert f"{devices}: {BROKEN_MESSAGE}" in done.stdout + done.stderr


def test_a_threshold_given_as_text_is_rejected() -> None:
    with pytest.raises(DevicesConfigError) as raised:
        load_devices(BROKEN_FLEET)
    assert one_line(str(raised.value)) == f"devices.yaml: {BROKEN_MESSAGE}"


def test_r_align_reads_the_survey_as_json_or_csv_and_refuses_two(storage: ObjectStorageResource) -> None:
    cam = load_devices("- name: site-a\n  cameras:\n    - name: cam-1\n").camera("site-a__cam-1")
    reference = versions.begin_version(storage, "site-a", "cam-1", "reference")
    scans.write_scan(storage, reference.prefix, cam.key, "reference", [np.zeros((16, 16, 3), np.uint8)],
                     [(10.0, -5.0, 0.0, datetime(2026, 11, 23, tzinfo=UTC))])  # fmt: skip
    csv = "name,image,u,v,east,north,up\ncamera,,,,0,0,0\nmast,images/000.jpg,8,8,100,200,5\n"
    storage.put_bytes(scans.control_points_key("site-a", "cam-1", "csv"), csv.encode())
    key, data, points = _control_points(storage, cam, reference)
    assert key.endswith("control_points.csv") and data == csv.encode()
    assert [(p.name, p.pan, p.tilt) for p in points.points] == [("mast", 10.0, -5.0)]  # the frame's telemetry
    storage.put_json(scans.control_points_key("site-a", "cam-1"), {"points": []})
    with pytest.raises(dg.Failure, match="two control-point files"):
        _control_points(storage, cam, reference)
    storage.delete_prefix("site-a/cam-1/r_align")
    with pytest.raises(dg.Failure, match="no control points"):
        _control_points(storage, cam, reference)
