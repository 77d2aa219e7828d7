"""`ptz-georeg` end to end: `intrinsics` against cv2.calibrateCamera on OpenCV's own chessboard photos,
`r-align` and `offsets` against the simulated camera's ground truth (mount rotation and its drift)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from geometry.alignment import load_r_align, save_r_align
from geometry.camera import load_calibration, save_calibration
from geometry.rotations import rotation_angle_deg
from ptz_pipeline import scans
from ptz_pipeline.cli import REPORT_COLUMNS, main
from ptz_pipeline.devices import SIM_EPOCH, CameraConfig, SimulatedBackend, load_devices
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.sim import survey
from ptz_pipeline.sim.camera import SimulatedPTZCamera

# --- intrinsics: OpenCV's left*.jpg ------------------------------------------------------------------------

PATTERN = (9, 6)


def chessboard_folder(shared_data: Path) -> Path:
    return shared_data / "opencv_left_chessboard"


def square_size_m(folder: Path) -> float:
    """Square size (m) of OpenCV's board, from the C++ sample's output reference/left_intrinsics.yml."""
    fs = cv2.FileStorage(str(folder / "reference" / "left_intrinsics.yml"), cv2.FILE_STORAGE_READ)
    try:
        return fs.getNode("square_size").real()
    finally:
        fs.release()


def opencv_calibration(paths: list[Path], square_m: float) -> tuple[float, np.ndarray]:
    """(RMS px, K) from OpenCV alone, as its own modules/python/test/test_calibration.py does it (flags 0)."""
    board = np.zeros((PATTERN[0] * PATTERN[1], 3), np.float32)
    board[:, :2] = np.indices(PATTERN).T.reshape(-1, 2) * square_m
    object_points, image_points = [], []
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        found, corners = cv2.findChessboardCorners(gray, PATTERN)
        if found:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 30, 0.1)
            object_points.append(board)
            image_points.append(cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria))
    size = gray.shape[::-1]
    rms, K, _, _, _ = cv2.calibrateCamera(object_points, image_points, size, None, None, flags=0)
    return rms, K


def test_intrinsics_matches_opencv_calibrate_camera(shared_data: Path, tmp_path: Path) -> None:
    folder = chessboard_folder(shared_data)
    images = folder / "images"
    square = square_size_m(folder)
    out = tmp_path / "calibration.npz"
    argv = ["intrinsics", "--images", str(images), "--pattern", "9x6", "--square", str(square)]
    assert main([*argv, "--out", str(out)]) == 0
    intr, rms = load_calibration(out)
    assert intr.image_size == (640, 480)
    rms_cv, K_cv = opencv_calibration(sorted(images.glob("*.jpg")), square)
    assert abs(rms - rms_cv) < 0.01  # OpenCV's own test tolerance on the RMS (pixels)
    ours = np.array([intr.fx, intr.fy, intr.K[0, 2], intr.K[1, 2]])
    theirs = np.array([K_cv[0, 0], K_cv[1, 1], K_cv[0, 2], K_cv[1, 2]])
    assert np.all(np.abs(ours / theirs - 1.0) < 0.005), (ours, theirs)


def test_intrinsics_rejects_a_folder_without_images(tmp_path: Path) -> None:
    """Run as the installed console script: the exit status and message a shell user sees."""
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    script = Path(sys.executable).with_name("ptz-georeg")
    argv = [str(script), "intrinsics", "--images", str(empty), "--square", "0.025"]
    result = subprocess.run(
        [*argv, "--out", str(tmp_path / "calibration.npz")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert f"no .png/.jpg images in {empty}" in result.stderr
    assert not (tmp_path / "calibration.npz").exists()


@pytest.mark.parametrize("pattern", ["9by6", "1x6", "9x6x2"])
def test_intrinsics_bad_pattern_is_rejected_by_argparse(
    tmp_path: Path, pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["intrinsics", "--images", str(tmp_path), "--pattern", pattern, "--square", "0.025"])
    assert exc.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "--pattern" in err and repr(pattern) in err


# --- simulated camera: r-align and offsets -----------------------------------------------------------------

SIM_KW = dict(image_width=480, image_height=360, drift_amplitude_deg=(1.2, 0.6, 0.4), seed=3)
T_REFERENCE = SIM_EPOCH + timedelta(hours=2)
T_QUERY = SIM_EPOCH + timedelta(hours=9)
REFERENCE_STOPS = [(pan, tilt, 0.0) for tilt in (-25.0, -10.0) for pan in (0.0, 40.0, 80.0)]
QUERY_STOPS = [(21.0, -19.0, 0.0), (52.0, -17.0, 0.2)]
CAMERA = "site-a__cam-1"


@pytest.fixture(scope="module")
def sim_camera() -> CameraConfig:
    """The simulated camera as a devices.yaml entry (JSON is YAML)."""
    site, name = CAMERA.split("__")
    cam = {"name": name, "ptz_stops": QUERY_STOPS, "backend": {"kind": "simulated", **SIM_KW}}
    return load_devices(json.dumps([{"name": site, "cameras": [cam]}])).camera(CAMERA)


@pytest.fixture(scope="module")
def sim(sim_camera: CameraConfig) -> SimulatedBackend:
    return sim_camera.backend


def write_camera_files(tmp_path: Path, spec: SimulatedBackend) -> list[str]:
    """The simulator's true intrinsics and zoom model as the CLI reads them; returns their CLI arguments."""
    save_calibration(tmp_path / "calibration.npz", spec.intrinsics, 0.0)
    (tmp_path / "zoom_model.json").write_text(json.dumps(spec.zoom_model.to_dict()))
    return [
        "--intrinsics",
        str(tmp_path / "calibration.npz"),
        "--zoom-model",
        str(tmp_path / "zoom_model.json"),
    ]


CLICK_NOISE_PX = 0.3


def rotation_tolerance_deg(doc: dict, spec: SimulatedBackend) -> float:
    """Bound on the R_align error from the click noise alone: the rotation's covariance is the inverse of
    sum_i (I - d_i d_i^T) / sigma_i^2 over the landmarks' unit bearings d_i, with sigma_i = noise / f(zoom_i)
    radians; the bound is 4.5 standard deviations along the worst-determined axis (chi-3 tail ~1e-4)."""
    info = np.zeros((3, 3))
    for p in doc["points"]:
        d = np.asarray(p["enu"]) / np.linalg.norm(p["enu"])
        sigma = CLICK_NOISE_PX / spec.zoom_model.focal(p["zoom"])
        info += (np.eye(3) - np.outer(d, d)) / sigma**2
    return math.degrees(4.5 * math.sqrt(np.linalg.eigvalsh(np.linalg.inv(info)).max()))


def test_r_align_recovers_the_true_mount_rotation(sim: SimulatedBackend, tmp_path: Path) -> None:
    frames = [
        (0.0, -10.0, 0.0),
        (70.0, -20.0, 0.5),
        (160.0, -5.0, 0.0),
        (250.0, -30.0, 1.0),
        (320.0, 0.0, 0.2),
    ]
    doc = survey.control_points(
        sim, [(*f, T_REFERENCE) for f in frames], per_frame=3, click_noise_px=CLICK_NOISE_PX
    )
    cp_path = tmp_path / "control_points.json"
    cp_path.write_text(json.dumps(doc))
    out = tmp_path / "R_align.npy"
    argv = ["r-align", *write_camera_files(tmp_path, sim), "--control-points", str(cp_path)]
    assert main([*argv, "--out", str(out)]) == 0

    R_true = sim.R_WB(T_REFERENCE)
    tol = rotation_tolerance_deg(doc, sim)
    assert tol < 0.1 * rotation_angle_deg(sim.R_mount, R_true)  # the drift at T_REFERENCE is resolved
    assert rotation_angle_deg(load_r_align(out), R_true) < tol


def test_r_align_missing_intrinsics_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cp.json").write_text(json.dumps({"points": []}))
    missing = tmp_path / "calibration.npz"
    argv = ["r-align", "--intrinsics", str(missing), "--control-points", str(tmp_path / "cp.json")]
    assert main(argv) == 2
    assert f"calibration file not found: {missing}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scan_images(sim_camera: CameraConfig) -> dict[str, tuple[list[np.ndarray], list[tuple]]]:
    """Reference frames rendered at T_REFERENCE and query frames at T_QUERY (the mount has drifted)."""
    camera = SimulatedPTZCamera(sim_camera)
    out = {}
    for kind, stops, at in (("reference", REFERENCE_STOPS, T_REFERENCE), ("query", QUERY_STOPS, T_QUERY)):
        images, telemetry = [], []
        for pan, tilt, zoom in stops:
            camera.move_to(pan, tilt, zoom)
            image, t = camera.grab(at)
            images.append(image)
            telemetry.append((t.pan, t.tilt, t.zoom, t.timestamp))
        out[kind] = (images, telemetry)
    return out


def write_scans(root: Path, scan_images: dict) -> None:
    storage = ObjectStorageResource(url=str(root))
    for kind, (images, telemetry) in scan_images.items():
        scans.write_scan(storage, kind, CAMERA, kind, images, telemetry)


@pytest.mark.parametrize(("features", "options"), [("sift", []), ("disk", []), ("disk", ["--no-refine"])])
def test_offsets_report_matches_the_simulated_drift(
    sim: SimulatedBackend, scan_images: dict, tmp_path: Path, features: str, options: list[str]
) -> None:
    torch.set_num_threads(2)
    write_scans(tmp_path, scan_images)
    save_r_align(tmp_path / "R_align.npy", sim.R_WB(T_REFERENCE))
    out = tmp_path / "report.xlsx"
    argv = ["offsets", "--reference", str(tmp_path / "reference"), "--queries", str(tmp_path / "query")]
    argv += [
        *write_camera_files(tmp_path, sim),
        "--features",
        features,
        "--r-align",
        str(tmp_path / "R_align.npy"),
    ]
    assert main([*argv, *options, "--resize-max", "480", "--out", str(out)]) == 0

    query_images = [
        f.image for f in scans.read_manifest(ObjectStorageResource(url=str(tmp_path)), "query").frames
    ]
    truth = np.array(sim.true_drift(T_REFERENCE, T_QUERY))
    assert np.linalg.norm(truth) > 0.5  # a report of zero drift would fail below
    # an empty cell comes back from Excel as NaN: the successful rows' empty reason
    excel = pd.read_excel(out, dtype={"reason": object}).fillna({"reason": ""})
    parquet = pd.read_parquet(tmp_path / "report.parquet")
    for df in (excel, parquet):
        assert list(df.columns) == REPORT_COLUMNS
        assert len(df) == len(QUERY_STOPS) + 1
        assert df["query"].iloc[-1] == "ALL"
        assert all(frame in name for frame, name in zip(query_images, df["query"].iloc[:-1], strict=True))
        assert df["success"].astype(bool).all(), df["reason"].tolist()
        assert (df["inliers"] > 0).all()
        sigmas = df[["sigma_yaw_deg", "sigma_pitch_deg", "sigma_roll_deg"]].to_numpy(float)
        assert np.all(np.isfinite(sigmas) & (sigmas > 0))
        # every query frame of the hour saw the same drift; the joint (ALL) row is the one reported
        angles = df[["yaw_deg", "pitch_deg", "roll_deg"]].to_numpy(float)
        assert np.all(np.abs(angles - truth) < 0.05), (angles, truth)
    pd.testing.assert_frame_equal(excel, parquet, check_dtype=False)

    corrected = load_r_align(tmp_path / "R_align_corrected.npy")
    assert rotation_angle_deg(corrected, sim.R_WB(T_QUERY)) < 0.05


def test_offsets_scan_without_manifest_is_refused(
    sim: SimulatedBackend, scan_images: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scans(tmp_path, scan_images)
    incomplete = tmp_path / "reference"
    (incomplete / "manifest.json").unlink()  # images present, manifest never written: an incomplete scan
    argv = ["offsets", "--reference", str(incomplete), "--queries", str(tmp_path / "query")]
    save_calibration(tmp_path / "calibration.npz", sim.intrinsics, 0.0)
    code = main([*argv, "--intrinsics", str(tmp_path / "calibration.npz"), "--features", "sift"])
    assert code == 2
    assert f"{incomplete}/manifest.json not found" in capsys.readouterr().err
