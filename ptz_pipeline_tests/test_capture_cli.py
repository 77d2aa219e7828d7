"""The seed's capture commands on in-process simulated cameras (`collect-reference`, `extract-query`, the
`extract_query` API), `import` into the pipeline's storage, the exit statuses, and control points as CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geometry.alignment import enu_to_lla, estimate_r_align, load_control_points, load_r_align, save_r_align
from geometry.camera import save_calibration
from ptz_pipeline import scans
from ptz_pipeline.assets.common import load_intrinsics
from ptz_pipeline.capture import extract_query, read_scan_folder, write_scan_folder
from ptz_pipeline.cli import main
from ptz_pipeline.devices import SIM_EPOCH, CameraConfig, load_devices
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.sim import survey

SIM = {"kind": "simulated", "image_width": 320, "image_height": 240, "nuisances": False}
ACTIVE_STOPS = [[10.0, -12.0, 0.0], [60.0, -15.0, 0.3], [200.0, -8.0, 0.0]]
GRID = {
    "horizontal_stops": 3,
    "vertical_stops": 2,
    "pan_min": 0,
    "pan_max": 90,
    "tilt_min": -20,
    "tilt_max": -10,
}
FLEET = [
    {
        "name": "site-a",
        "cameras": [
            {"name": "cam-1", "mode": "active", "ptz_stops": ACTIVE_STOPS, "reference": GRID, "backend": SIM},
            {"name": "cam-2", "zoom_focal_ratio": [[0.0, 1.0], [1.0, 3.0]], "backend": SIM},  # seed's grid
        ],
    },
    {"name": "site-b", "cameras": [{"name": "cam-down", "backend": {**SIM, "fail": "unreachable"}}]},
]


@pytest.fixture()
def devices(tmp_path: Path) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(json.dumps(FLEET))  # JSON is YAML
    return path


def camera(devices: Path, key: str) -> CameraConfig:
    return load_devices(devices).camera(key)


def stored_frames(folder: Path) -> list[scans.ScanFrame]:
    """The frames of a complete scan folder (every image it names present)."""
    _, _, manifest = read_scan_folder(folder)
    return manifest.frames


def ptz(frames: list[scans.ScanFrame]) -> np.ndarray:
    return np.array([(f.pan, f.tilt, f.zoom) for f in frames])


def test_collect_reference_one_folder_per_camera(
    devices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every camera of the deployment: its devices.yaml grid, or the seed's 16 x 6 when it gives none."""
    out = tmp_path / "refs"
    assert (
        main(["collect-reference", "--devices", str(devices), "--device", "site-a", "--out", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["cam-1", "cam-2"]
    cam1 = stored_frames(out / "cam-1")
    np.testing.assert_allclose(ptz(cam1), camera(devices, "site-a__cam-1").reference.stops())
    cam2 = stored_frames(out / "cam-2")
    assert len({f.pan for f in cam2}) == 16 and len({f.tilt for f in cam2}) == 6 and len(cam2) == 96
    manifest = json.loads((out / "cam-1" / "manifest.json").read_text())
    assert (manifest["camera"], manifest["kind"]) == ("site-a__cam-1", "reference")
    progress = [line for line in capsys.readouterr().err.splitlines() if "reference stop" in line]
    assert len(progress) == 6 + 96 and progress[0].startswith("site-a__cam-1: reference stop 1/6 pan=0.00")


def test_collect_reference_one_camera_with_grid_from_the_command_line(devices: Path, tmp_path: Path) -> None:
    out = tmp_path / "ref"
    argv = ["collect-reference", "--devices", str(devices), "--device", "site-a", "--camera", "cam-1"]
    assert main([*argv, "--horizontal-stops", "2", "--vertical-stops", "3", "--out", str(out)]) == 0
    frames = stored_frames(out)  # one camera: the folder is the scan
    expected = [(pan, tilt, 0.0) for tilt in (-20.0, -15.0, -10.0) for pan in (0.0, 90.0)]
    np.testing.assert_allclose(ptz(frames), expected)
    assert Image.open(out / frames[0].image).size == (320, 240)


def test_collect_reference_scans_the_zoom_levels_after_the_grid(tmp_path: Path) -> None:
    """With ``reference.zoom_levels`` (intrinsics: self) the scan holds the grid, then 2 x 2 stops per level,
    as the reference_scan asset scans them (the self-calibration's zoom curve needs them)."""
    zoomed = {
        "name": "cam-z",
        "intrinsics": "self",
        "reference": {**GRID, "zoom_levels": [0.5]},
        "zoom_focal_ratio": [[0.0, 1.0], [1.0, 3.0]],
        "backend": SIM,
    }
    devices = tmp_path / "devices.yaml"
    devices.write_text(json.dumps([{"name": "site-z", "cameras": [zoomed]}]))
    argv = ["collect-reference", "--devices", str(devices), "--device", "site-z"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    frames = ptz(stored_frames(tmp_path / "r"))
    np.testing.assert_allclose(frames, camera(devices, "site-z__cam-z").reference_stops())
    assert len(frames) == 6 + 4 and np.all(frames[6:, 2] == 0.5)


def test_extract_query_active_visits_every_stop(devices: Path, tmp_path: Path) -> None:
    argv = ["extract-query", "--devices", str(devices), "--device", "site-a"]
    assert main([*argv, "--camera", "cam-1", "--out", str(tmp_path / "q1")]) == 0
    np.testing.assert_allclose(ptz(stored_frames(tmp_path / "q1")), ACTIVE_STOPS)
    # --stops makes a passive camera active
    stops = "5,-10,0;300,-14,0.5"
    assert main([*argv, "--camera", "cam-2", "--stops", stops, "--out", str(tmp_path / "q2")]) == 0
    np.testing.assert_allclose(ptz(stored_frames(tmp_path / "q2")), [(5, -10, 0), (300, -14, 0.5)])
    assert json.loads((tmp_path / "q2" / "manifest.json").read_text())["mode"] == "active"


def test_extract_query_passive_captures_one_frame(devices: Path, tmp_path: Path) -> None:
    argv = ["extract-query", "--devices", str(devices), "--device", "site-a", "--camera", "cam-2"]
    assert main([*argv, "--stabilize-time", "5", "--timeout", "60", "--out", str(tmp_path / "q")]) == 0
    frames = stored_frames(tmp_path / "q")
    assert len(frames) == 1
    np.testing.assert_allclose(ptz(frames), [camera(devices, "site-a__cam-2").backend.home])  # where it stood


@pytest.mark.parametrize("device_id", ["site-a/cam-2", "site-a__cam-2"])
def test_extract_query_api_returns_the_seeds_dict(
    devices: Path, monkeypatch: pytest.MonkeyPatch, device_id: str
) -> None:
    monkeypatch.setenv("PTZ_DEVICES", str(devices))
    result = extract_query(
        device_id, stabilize_time=1, timeout=5, active_ptz_stops=[(20, -10, 0), (40, -10, 0)]
    )
    try:
        assert set(result) == {"camera_frames", "telemetry", "capture_positions", "temp_dir", "manifest_path"}
        assert all(isinstance(f, Image.Image) and f.size == (320, 240) for f in result["camera_frames"])
        assert result["capture_positions"] == [(20.0, -10.0, 0.0), (40.0, -10.0, 0.0)]
        assert sorted(result["telemetry"]) == [0, 1]
        assert set(result["telemetry"][1]) == {"pan", "tilt", "zoom", "timestamp"}
        assert result["telemetry"][1]["timestamp"].tzinfo is not None
        assert Path(result["manifest_path"]) == Path(result["temp_dir"]) / "manifest.json"
        assert len(stored_frames(Path(result["temp_dir"]))) == 2
    finally:
        shutil.rmtree(result["temp_dir"])


def test_import_stores_the_artefacts_where_the_assets_read_them(
    devices: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTZ_STORAGE_URL", str(tmp_path / "store"))
    cam = camera(devices, "site-a__cam-2")
    save_calibration(tmp_path / "calibration.npz", cam.backend.intrinsics, 0.25)
    R = cam.backend.R_mount
    save_r_align(tmp_path / "R_align.npy", R)
    reference = tmp_path / "reference"
    images = [np.full((240, 320, 3), i * 40, np.uint8) for i in range(3)]
    telemetry = [(i * 30.0, -12.0, 0.0, SIM_EPOCH + timedelta(minutes=i)) for i in range(3)]
    write_scan_folder(reference, "anything", "reference", images, telemetry)
    argv = ["import", "--devices", str(devices), "--device", "site-a", "--camera", "cam-2"]
    argv += ["--intrinsics", str(tmp_path / "calibration.npz"), "--r-align", str(tmp_path / "R_align.npy")]
    assert main([*argv, "--reference", str(reference)]) == 0

    storage = ObjectStorageResource(url=str(tmp_path / "store"))
    intr, zoom_model = load_intrinsics(storage, cam)  # as the assets read them
    np.testing.assert_allclose(intr.K, cam.backend.intrinsics.K)
    assert zoom_model.focal(1.0) == pytest.approx(3.0 * intr.fx)  # zoom_focal_ratio x calibrated fx
    keys = storage.list_keys(scans.camera_root(cam.deployment, cam.name))
    [r_align] = [
        k for k in keys if k.startswith(f"{cam.deployment}/{cam.name}/r_align/") and k.endswith(".npy")
    ]
    np.testing.assert_array_equal(load_r_align(io.BytesIO(storage.get_bytes(r_align))), R)
    [manifest_key] = [k for k in keys if "/reference_scan/" in k and k.endswith("/manifest.json")]
    prefix = manifest_key.removesuffix("/manifest.json")
    manifest = scans.read_manifest(storage, prefix)
    assert manifest.camera == cam.key and [f.pan for f in manifest.frames] == [0.0, 30.0, 60.0]
    assert len(scans.read_images(storage, prefix, manifest)) == 3


def bad_manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "ref"
    write_scan_folder(folder, "x", "reference", [np.zeros((8, 8, 3), np.uint8)], [(0, 0, 0, SIM_EPOCH)])
    doc = json.loads((folder / "manifest.json").read_text())
    del doc["frames"][0]["tilt"]
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("invalid-field", "devices.yaml: [0].cameras[1].stabilize_time: Input should be greater than 0"),
        ("no-deployment", "devices.yaml: site-x: no such deployment (known: site-a, site-b)"),
        ("no-camera", "devices.yaml: site-a/cam-9: no such camera (known: cam-1, cam-2)"),
        ("bad-manifest", "ref/manifest.json: frames[0].tilt: Field required"),
        ("stops-out-of-range", "site-a__cam-1: ptz_stops[0]: pan must be within [-360, 360] degrees"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_file_and_key(
    devices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    cam1 = ["--devices", str(devices), "--device", "site-a", "--camera", "cam-1"]
    argv = ["extract-query", *cam1, "--out", str(tmp_path / "q")]
    if case == "invalid-field":
        fleet = json.loads(json.dumps(FLEET))
        fleet[0]["cameras"][1]["stabilize_time"] = -1
        devices.write_text(json.dumps(fleet))
    elif case == "no-deployment":
        argv[argv.index("site-a")] = "site-x"
    elif case == "no-camera":
        argv[argv.index("cam-1")] = "cam-9"
    elif case == "bad-manifest":
        argv = ["import", *cam1, "--reference", str(bad_manifest(tmp_path))]
    else:
        argv += ["--stops", "400,0,0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err and "pydantic.dev" not in err
    assert not (tmp_path / "q").exists()


def test_unreachable_camera_exits_1_with_one_line(
    devices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reason is the last line of stderr (after any progress lines), the only one saying it failed."""
    reason = "capture failed: simulated camera site-b__cam-down: connection refused (injected failure)"
    common = ["--devices", str(devices), "--device", "site-b"]
    for argv in (["collect-reference"], ["extract-query", "--camera", "cam-down"]):
        assert main([*argv, *common, "--out", str(tmp_path / "out")]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert lines[-1] == reason and sum("failed" in line for line in lines) == 1
        assert not (tmp_path / "out").exists()


# --- control points: CSV mirrors the JSON document --------------------------------------------------------

CAMERA_LLA = (47.4979, 19.0402, 130.0)


@pytest.fixture(scope="module")
def survey_doc() -> tuple[CameraConfig, dict]:
    """Surveyed landmarks (ENU m, camera at the origin) clicked in frames of a simulated camera."""
    cam = load_devices(json.dumps(FLEET)).camera("site-a__cam-1")
    frames = [(0.0, -10.0, 0.0), (70.0, -20.0, 0.5), (160.0, -5.0, 0.0), (250.0, -30.0, 1.0)]
    return cam, survey.control_points(cam.backend, [(*f, SIM_EPOCH) for f in frames], per_frame=2)


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return path


def lla_doc(doc: dict) -> dict:
    """The same survey in WGS-84, the camera at CAMERA_LLA."""
    points = []
    for p in doc["points"]:
        lat, lon, alt = enu_to_lla(np.array([p["enu"]]), CAMERA_LLA)[0].tolist()
        points.append({**{k: v for k, v in p.items() if k != "enu"}, "lat": lat, "lon": lon, "alt": alt})
    return {"camera_position": dict(zip(("lat", "lon", "alt"), CAMERA_LLA, strict=True)), "points": points}


@pytest.mark.parametrize("frame", ["enu", "lla"])
def test_control_points_csv_gives_the_json_r_align(
    survey_doc: tuple[CameraConfig, dict], tmp_path: Path, frame: str
) -> None:
    cam, doc = survey_doc
    if frame == "lla":
        doc = lla_doc(doc)
        camera_row = {"name": "camera", **doc["camera_position"]}
        rows = [camera_row, *doc["points"]]
    else:
        camera_row = dict(zip(("east", "north", "up"), doc["camera_position"]["enu"], strict=True))
        enu = [dict(zip(("east", "north", "up"), p["enu"], strict=True)) for p in doc["points"]]
        rows = [{"name": "camera", **camera_row}]
        rows += [
            {**{k: v for k, v in p.items() if k != "enu"}, **e}
            for p, e in zip(doc["points"], enu, strict=True)
        ]
    (tmp_path / "cp.json").write_text(json.dumps(doc))
    from_json = load_control_points(tmp_path / "cp.json")
    assert load_control_points(write_csv(tmp_path / "cp.csv", rows)) == from_json
    intr, zoom = cam.backend.intrinsics, cam.backend.zoom_model
    np.testing.assert_array_equal(
        estimate_r_align(tmp_path / "cp.csv", intr, zoom).R_align,
        estimate_r_align(from_json, intr, zoom).R_align,
    )


def test_control_points_csv_by_reference_image_on_the_command_line(
    survey_doc: tuple[CameraConfig, dict], tmp_path: Path
) -> None:
    """Points naming the reference frame they were clicked in (``image``) take its telemetry."""
    cam, doc = survey_doc
    positions = list(dict.fromkeys((p["pan"], p["tilt"], p["zoom"]) for p in doc["points"]))
    images = [np.zeros((8, 8, 3), np.uint8)] * len(positions)
    write_scan_folder(tmp_path / "ref", cam.key, "reference", images, [(*p, SIM_EPOCH) for p in positions])
    image_of = {pos: f"images/{i:03d}.jpg" for i, pos in enumerate(positions)}
    rows = [{"name": "camera", "east": 0.0, "north": 0.0, "up": 0.0}]
    for p in doc["points"]:
        rows.append(
            {"name": p["name"], "image": image_of[(p["pan"], p["tilt"], p["zoom"])], "u": p["u"], "v": p["v"]}
        )
        rows[-1].update(zip(("east", "north", "up"), p["enu"], strict=True))
    (tmp_path / "cp.json").write_text(json.dumps(doc))
    save_calibration(tmp_path / "calibration.npz", cam.backend.intrinsics, 0.0)
    (tmp_path / "zoom.json").write_text(json.dumps(cam.backend.zoom_model.to_dict()))
    common = [
        "r-align",
        "--intrinsics",
        str(tmp_path / "calibration.npz"),
        "--zoom-model",
        str(tmp_path / "zoom.json"),
    ]
    assert (
        main([*common, "--control-points", str(tmp_path / "cp.json"), "--out", str(tmp_path / "a.npy")]) == 0
    )
    csv_argv = [
        "--control-points",
        str(write_csv(tmp_path / "cp.csv", rows)),
        "--reference",
        str(tmp_path / "ref"),
    ]
    assert main([*common, *csv_argv, "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(load_r_align(tmp_path / "a.npy"), load_r_align(tmp_path / "b.npy"))


def test_control_points_csv_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "cp.csv").write_text("name,pan,tilt,zoom,u,v,e,n,u\na,1,2,0,3,4,5,6,7\n")
    with pytest.raises(ValueError, match=r"cp.csv: control points CSV: columns \['u'\] named twice"):
        load_control_points(tmp_path / "cp.csv")
    (tmp_path / "cp.csv").write_text("name,image,u,v,east,north,up\na,images/009.jpg,3,4,5,6,7\n")
    with pytest.raises(ValueError, match="control point 'a': image 'images/009.jpg' is not a frame"):
        load_control_points(tmp_path / "cp.csv", {"images/000.jpg": (0.0, 0.0, 0.0)})
