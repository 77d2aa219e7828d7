"""`ptz-georeg`: the seed's three steps on local folders (intrinsics, R_align, orientation offsets)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from geometry.camera import Intrinsics, ZoomModel, load_calibration, save_calibration
from geometry.drift import DriftConfig, DriftEstimate, estimate_drift
from geometry.intrinsics import calibrate_chessboard, parse_pattern
from geometry.rotations import drift_matrix


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
    save_calibration(args.out, calib.intrinsics, calib.rms)
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
    result = estimate_r_align(
        load_control_points(args.control_points), intr, _zoom_model(args.zoom_model, intr)
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
    from ptz_pipeline import scans
    from ptz_pipeline.resources.storage import ObjectStorageResource
    from ptz_pipeline.settings import model_dir

    intr, _ = load_calibration(args.intrinsics)
    zoom_model = _zoom_model(args.zoom_model, intr)
    extractor = make_extractor(args.features, model_dir(), resize_max=args.resize_max)
    scans_found = []
    for folder in (args.reference, args.queries):  # check both folders before the slow extraction
        path = Path(folder).resolve()
        storage = ObjectStorageResource(url=str(path.parent))
        manifest = scans.read_manifest(storage, path.name)
        if manifest is None:
            raise FileNotFoundError(f"{path}/manifest.json not found (a scan folder needs its manifest)")
        print(f"{manifest.kind}: {len(manifest.frames)} frames in {path}", file=sys.stderr)
        scans_found.append((storage, path.name, manifest))
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
