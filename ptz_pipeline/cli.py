"""`ptz-georeg`: the seed's steps on local folders (intrinsics, R_align, orientation offsets), its capture
scripts on the cameras of devices.yaml (reference scan, query extraction), and the import of its artefacts.

Exit status: 0 done, 1 failed (a capture, storage, or an estimate without support; the reason on one line of
stderr), 2 bad input (one line ``FILE: key: problem``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pandas as pd

from geometry.camera import Intrinsics, ZoomModel, load_calibration, save_calibration
from geometry.drift import DriftConfig, DriftEstimate, estimate_drift
from geometry.intrinsics import calibrate_chessboard, parse_pattern
from geometry.rotations import drift_matrix
from ptz_pipeline import scans
from ptz_pipeline.camera import CameraError, Telemetry, open_camera
from ptz_pipeline.capture import (
    capture_query_now,
    query_camera,
    read_scan_folder,
    scan_reference,
    stop_line,
    write_scan_folder,
)
from ptz_pipeline.devices import CameraConfig, Fleet, ReferenceGrid, load_devices
from ptz_pipeline.resources.storage import StorageError
from ptz_pipeline.settings import local_resources, model_dir


def _pattern(text: str) -> tuple[int, int]:
    try:
        return parse_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _zoom_model(path: str | None, intr: Intrinsics) -> ZoomModel:
    if path is None:
        return ZoomModel.constant(intr.fx)
    return ZoomModel.from_dict(json.loads(Path(path).read_text()))


def cmd_intrinsics(args: argparse.Namespace) -> int:
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not images:
        raise FileNotFoundError(f"no .png/.jpg images in {args.images}")

    def progress(done: int, total: int, name: str) -> None:
        print(f"  corners {done}/{total}: {name}", file=sys.stderr)

    calib = calibrate_chessboard(images, args.pattern, square_size_m=args.square, progress=progress)
    save_calibration(args.out, calib.intrinsics, calib.rms, calib.covariance)
    K = calib.intrinsics.K
    print(f"RMS {calib.rms:.4f} px over {len(calib.used_views)} views; fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} "
          f"cx={K[0, 2]:.2f} cy={K[1, 2]:.2f}")  # fmt: skip
    if calib.rejected_views:
        print(f"rejected (no board found): {', '.join(calib.rejected_views)}")
    print(f"wrote {args.out}")
    return 0


def cmd_r_align(args: argparse.Namespace) -> int:
    from geometry.alignment import estimate_r_align, load_control_points, save_r_align

    intr, _ = load_calibration(args.intrinsics)
    frames = None
    if args.reference:
        _, _, manifest = read_scan_folder(args.reference)
        frames = {f.image: (f.pan, f.tilt, f.zoom) for f in manifest.frames}
    result = estimate_r_align(
        load_control_points(args.control_points, frames), intr, _zoom_model(args.zoom_model, intr)
    )
    save_r_align(args.out, result.R_align)
    print(f"method {result.method}: {len(result.residuals_deg)} points, RMS {result.rms_deg:.4f} deg, "
          f"max {max(result.residuals_deg):.4f} deg")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


REPORT_COLUMNS = [
    "query", "yaw_deg", "pitch_deg", "roll_deg", "sigma_yaw_deg", "sigma_pitch_deg", "sigma_roll_deg",
    "inliers", "success", "reason",
]  # fmt: skip


def report_row(query: str, e: DriftEstimate) -> dict:
    return {
        "query": query, "yaw_deg": e.yaw_deg, "pitch_deg": e.pitch_deg, "roll_deg": e.roll_deg,
        "sigma_yaw_deg": e.sigma_yaw_deg, "sigma_pitch_deg": e.sigma_pitch_deg,
        "sigma_roll_deg": e.sigma_roll_deg, "inliers": e.inliers, "success": e.success, "reason": e.reason,
    }  # fmt: skip


def cmd_offsets(args: argparse.Namespace) -> int:
    from geometry.features import make_extractor
    from geometry.matching import make_matcher

    intr, _ = load_calibration(args.intrinsics)
    zoom_model = _zoom_model(args.zoom_model, intr)
    extractor = make_extractor(args.features, model_dir(), resize_max=args.resize_max)
    scans_found = []
    for folder in (args.reference, args.queries):  # check both folders before the slow extraction
        storage, name, manifest = read_scan_folder(folder)
        print(f"{manifest.kind}: {len(manifest.frames)} frames in {Path(folder).resolve()}", file=sys.stderr)
        scans_found.append((storage, name, manifest))
    references, queries = (
        scans.scan_observations(storage, name, manifest, intr, zoom_model, extractor, with_images=args.refine)
        for storage, name, manifest in scans_found
    )
    config = DriftConfig() if args.refine else DriftConfig(refine=None)
    report = estimate_drift(queries, references, make_matcher(args.matcher, model_dir()), config)
    rows = [report_row(name, e) for name, e in report.per_frame] + [report_row("ALL", report.joint)]
    df = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    out = Path(args.out)
    df.to_excel(out, index=False)
    df.to_parquet(out.with_suffix(".parquet"), index=False)
    print(df.to_string(index=False))
    print(f"wrote {out} and {out.with_suffix('.parquet')}")
    j = report.joint
    if args.r_align and j.success:
        from geometry.alignment import load_r_align, save_r_align

        corrected = load_r_align(args.r_align) @ drift_matrix(j.yaw_deg, j.pitch_deg, j.roll_deg)
        corrected_path = out.with_name("R_align_corrected.npy")
        save_r_align(corrected_path, corrected)
        print(f"wrote {corrected_path} (R_align . drift: the mount's current alignment)")
    return 0 if j.success else 1


SEED_GRID = ReferenceGrid(horizontal_stops=16, vertical_stops=6)
"""The seed's reference grid (16 x 6 stops), for a camera whose devices.yaml entry gives no ``reference``."""


def _fleet(path: str | None) -> tuple[Fleet, str]:
    """devices.yaml at ``path`` (default: ``$PTZ_DEVICES``, else devices.yaml) and its name for messages."""
    source = Path(path or local_resources()["devices"].path)
    return load_devices(source), str(source)


def _cameras(path: str | None, deployment: str, camera: str | None) -> list[CameraConfig]:
    """The camera ``deployment/camera`` of the fleet file, or every camera of ``deployment`` (camera None)."""
    fleet, source = _fleet(path)
    found = {d.name: d for d in fleet.deployments}
    if deployment not in found:
        raise ValueError(f"{source}: {deployment}: no such deployment (known: {', '.join(found)})")
    cams = found[deployment].cameras
    chosen = [c for c in cams if camera in (None, c.name)]
    if not chosen:
        known = ", ".join(c.name for c in cams)
        raise ValueError(f"{source}: {deployment}/{camera}: no such camera (known: {known})")
    return chosen


def reference_grid(cam: CameraConfig, horizontal: int | None, vertical: int | None) -> ReferenceGrid:
    """devices.yaml's reference grid of ``cam`` (the seed's 16 x 6 when it gives none) with the stop counts
    given on the command line."""
    grid = cam.reference if "reference" in cam.model_fields_set else SEED_GRID
    counts = {"horizontal_stops": horizontal, "vertical_stops": vertical}
    return grid.model_copy(update={k: v for k, v in counts.items() if v is not None})


def _capture_failed(exc: CameraError) -> str:
    return f"capture failed: {_one_line(exc)}"


def _progress(key: str) -> Callable[[int, int, Telemetry], None]:
    """Print each reference stop of camera ``key`` on stderr."""
    return lambda done, total, t: print(f"{key}: {stop_line(done, total, t)}", file=sys.stderr)


def cmd_collect_reference(args: argparse.Namespace) -> int:
    cams = _cameras(args.devices, args.device, args.camera)
    failed = 0
    for cam in cams:
        grid = reference_grid(cam, args.horizontal_stops, args.vertical_stops)
        stops = cam.model_copy(update={"reference": grid}).reference_stops()  # grid, then zoom levels
        try:
            with closing(open_camera(cam)) as ptz:
                images, telemetry = scan_reference(ptz, stops, _progress(cam.key))
        except CameraError as exc:  # the other cameras are still collected
            print(_capture_failed(exc), file=sys.stderr)
            failed += 1
            continue
        folder = Path(args.out) / cam.name if len(cams) > 1 else Path(args.out)
        manifest = write_scan_folder(folder, cam.key, "reference", images, telemetry)
        zoomed = len(stops) - grid.horizontal_stops * grid.vertical_stops
        extra = f" + {zoomed} at zoom levels {grid.zoom_levels}" if zoomed else ""
        print(f"{cam.key}: {grid.horizontal_stops} x {grid.vertical_stops} stops{extra} -> {manifest}")
    return 1 if failed else 0


def cmd_extract_query(args: argparse.Namespace) -> int:
    [cam] = _cameras(args.devices, args.device, args.camera)
    cam = query_camera(cam, args.stabilize_time, args.timeout, args.stops)
    if cam.mode == "passive":
        print(
            f"{cam.key}: waiting up to {cam.timeout:g} s for {cam.stabilize_time:g} s of stillness",
            file=sys.stderr,
        )
    images, telemetry = capture_query_now(cam)
    manifest = write_scan_folder(args.out, cam.key, "query", images, telemetry, cam.mode)
    print(f"{cam.key}: {len(images)} frame(s), {cam.mode} -> {manifest}")
    return 0


def _reference_frames(folder: str) -> tuple[list, list[tuple]]:
    """Images (RGB uint8) and reported (pan, tilt, zoom, timestamp) of a local reference scan folder."""
    storage, name, manifest = read_scan_folder(folder)
    if manifest.kind != "reference":
        raise ValueError(
            f"{Path(folder).resolve() / 'manifest.json'}: kind: {manifest.kind!r}, not 'reference'"
        )
    telemetry = [(f.pan, f.tilt, f.zoom, f.timestamp) for f in manifest.frames]
    return scans.read_images(storage, name, manifest), telemetry


def cmd_import(args: argparse.Namespace) -> int:
    from geometry.alignment import load_r_align
    from ptz_pipeline.assets.common import store_intrinsics, store_r_align, store_reference_scan

    if not (args.intrinsics or args.r_align or args.reference):
        raise ValueError("import: nothing to import (give --intrinsics, --r-align and/or --reference)")
    [cam] = _cameras(args.devices, args.device, args.camera)
    # read and check every artefact before storing any
    calibration = load_calibration(args.intrinsics) if args.intrinsics else None
    R_align = load_r_align(args.r_align) if args.r_align else None
    reference = _reference_frames(args.reference) if args.reference else None
    storage = local_resources()["storage"]
    stored = []
    if calibration is not None:
        store_intrinsics(storage, cam, *calibration)
        stored.append("intrinsics and zoom model")
    if R_align is not None:
        store_r_align(storage, cam, R_align)
        stored.append("R_align")
    if reference is not None:
        store_reference_scan(storage, cam, *reference)
        stored.append(f"reference scan ({len(reference[0])} frames)")
    root = storage.uri(scans.camera_root(cam.deployment, cam.name))
    print(f"{cam.key}: stored {', '.join(stored)} under {root}")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _stops(text: str) -> list[tuple[float, float, float]]:
    """``"pan,tilt,zoom;pan,tilt,zoom"`` (degrees, degrees, 0..1) -> stops; ranges are checked with the
    camera's other settings."""
    stops = []
    for i, stop in enumerate(text.split(";")):
        try:
            pan, tilt, zoom = (float(x) for x in stop.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"stop {i}: {stop!r} is not 'pan,tilt,zoom'") from None
        stops.append((pan, tilt, zoom))
    return stops


def _camera_arguments(p: argparse.ArgumentParser, camera_help: str | None) -> None:
    """--devices, --device and --camera (required when ``camera_help`` is None)."""
    p.add_argument("--devices", help="devices.yaml (default: $PTZ_DEVICES, else devices.yaml)")
    p.add_argument("--device", required=True, help="deployment (site) name in devices.yaml")
    p.add_argument("--camera", required=camera_help is None, help=camera_help or "camera name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptz-georeg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("intrinsics", help="K and distortion from chessboard photos -> calibration.npz")
    p.add_argument("--images", required=True, help="folder of chessboard photos (.png/.jpg)")
    p.add_argument("--pattern", type=_pattern, default=(9, 6), help="inner corners, e.g. 9x6")
    p.add_argument("--square", type=float, required=True, help="square size in metres")
    p.add_argument("--out", default="calibration.npz")
    p.set_defaults(func=cmd_intrinsics)
    p = sub.add_parser("r-align", help="R_align (mount -> world ENU) from control points -> R_align.npy")
    p.add_argument("--intrinsics", required=True, help="calibration.npz")
    p.add_argument(
        "--control-points", required=True, help="JSON/YAML (geometry.alignment.load_control_points)"
    )
    p.add_argument("--zoom-model", help='JSON {"zoom": [...], "focal_px": [...]} (default: fixed focal)')
    p.add_argument("--reference", help="reference scan folder: telemetry of points that name an image")
    p.add_argument("--out", default="R_align.npy")
    p.set_defaults(func=cmd_r_align)
    p = sub.add_parser("offsets", help="drift of query frames vs a reference scan -> report.xlsx + .parquet")
    p.add_argument("--reference", required=True, help="reference scan folder (manifest.json + images)")
    p.add_argument("--queries", required=True, help="query scan folder (manifest.json + images)")
    p.add_argument("--intrinsics", required=True, help="calibration.npz")
    p.add_argument("--zoom-model", help='JSON {"zoom": [...], "focal_px": [...]} (default: fixed focal)')
    p.add_argument("--r-align", help="R_align.npy: also write the corrected alignment R_align . drift")
    p.add_argument("--features", choices=["disk", "sift"], default="disk")
    p.add_argument("--matcher", choices=["mnn", "lightglue"], default="mnn")
    p.add_argument("--resize-max", type=int, default=1024, help="longest side fed to the extractor (px)")
    p.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        help="use the matches as detected (no photometric refinement on the images)",
    )
    p.add_argument("--out", default="report.xlsx")
    p.set_defaults(func=cmd_offsets)
    p = sub.add_parser(
        "collect-reference",
        help="reference scan of devices.yaml cameras (grid, then reference.zoom_levels) -> scan folder(s)",
    )
    _camera_arguments(p, "camera name (default: every camera of the deployment, one sub-folder each)")
    p.add_argument("--horizontal-stops", type=_count, help="pan stops (default: devices.yaml, else 16)")
    p.add_argument("--vertical-stops", type=_count, help="tilt stops (default: devices.yaml, else 6)")
    p.add_argument("--out", required=True, help="folder for manifest.json + images/")
    p.set_defaults(func=cmd_collect_reference)
    p = sub.add_parser("extract-query", help="query frames of a devices.yaml camera -> scan folder")
    _camera_arguments(p, None)
    p.add_argument("--stabilize-time", type=_seconds, help="passive: seconds still before the frame")
    p.add_argument("--timeout", type=_seconds, help="passive: seconds to wait for a still camera")
    p.add_argument(
        "--stops",
        type=_stops,
        help='active stops "pan,tilt,zoom;..." (degrees, degrees, 0..1); forces active',
    )
    p.add_argument("--out", required=True, help="folder for manifest.json + images/")
    p.set_defaults(func=cmd_extract_query)
    p = sub.add_parser(
        "import", help="the original system's artefacts -> the camera's calibration in storage"
    )
    _camera_arguments(p, None)
    p.add_argument("--intrinsics", help="calibration.npz (also writes the zoom model from devices.yaml)")
    p.add_argument("--r-align", help="R_align.npy (3x3, mount -> world ENU)")
    p.add_argument("--reference", help="reference scan folder (manifest.json + images)")
    p.set_defaults(func=cmd_import)
    return parser


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line: its first line, with the count of the others."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    lines = [line for line in str(text).splitlines() if line.strip()] or [type(exc).__name__]
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CameraError as exc:  # before OSError's subclasses below: some camera errors are also OSErrors
        print(_capture_failed(exc), file=sys.stderr)
        return 1
    except StorageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return 1
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(_one_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
