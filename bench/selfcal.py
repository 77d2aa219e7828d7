"""Self-calibration benchmark: intrinsics from a rotating scan (geometry.selfcal) against the chessboard on
the same simulated cameras; writes the 'selfcal' section of BENCHMARKS.md.

1. Intrinsics. Simulated cameras with different lenses (image size, field of view, distortion), typical
   nuisances. Baseline: the pipeline's chessboard calibration (geometry.intrinsics.calibrate_chessboard on
   the simulator's 12 chessboard photos, ptz_pipeline.sim.survey.chessboard_photos; fx, fy, cx, cy, 5
   distortion coefficients). Ours: geometry.selfcal.self_calibrate (default SelfCalConfig) on a scan of two
   tilt rows around the horizon (pan step <= 0.7 x the field of view, rows 0.6 x the vertical field of view
   apart), telemetry with Gaussian noise of 0.05° per axis, features DISK (the pipeline's) or SIFT, mutual
   nearest neighbours. Errors against the simulator's truth: focal length (%, fx), principal point (px, the
   larger of cx and cy), k1 and k2.
2. Zoom curve. A 10x lens whose focal length is NOT linear in zoom, f = f0 exp(ln 10 zoom), with k1 from
   -0.08 to +0.01 and an off-centre principal point (rendered with geometry.render), scanned at zooms 0,
   0.25, 0.5, 0.75, 1 (3 x 2 stops at zoom 0, 2 x 2 stops half a field of view apart at the others; DISK).
   Error of the fitted zoom model's focal length over 101 zooms, against the baseline of a straight line
   between the true end points (the pipeline's two-point zoom table with an exact zoom_focal_ratio).
3. Drift with the self-calibrated K. For each camera the scan above is the reference; query frames at zoom
   0 (pan ±10°, tilt ±5° from a scan stop) are rendered hours later, when the simulated mount has drifted,
   and geometry.drift.estimate_drift (DISK, mutual NN, photometric refinement) is run with the true K, the
   chessboard K and the self-calibrated K (DISK), each calibration without and with its covariance (as the
   pipeline passes it: the reference scan corrects the calibration and σ includes what remains). Error:
   |estimate - truth| of the joint drift per hour; |error| / σ of the worst angle.

Run from the repository root: .venv/bin/python -m bench.selfcal [--quick] [--drift-only]
(``--quick``: two cameras, one hour each, no zoom curve; ``--drift-only``: part 3 alone, DISK only; either
prints without writing BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Before numpy loads: the adjustment's dense matrices are small, where BLAS threads only add overhead.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

from bench.offsets import TimedMatcher
from bench.report import markdown_table, write_section
from geometry.camera import Intrinsics, ZoomModel
from geometry.drift import CalibrationUncertainty, DriftConfig, FrameObservation, estimate_drift
from geometry.features import DiskExtractor, Features, SiftExtractor
from geometry.intrinsics import calibrate_chessboard
from geometry.matching import MutualNNMatcher
from geometry.refine import grey
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, Rx, Rz
from geometry.selfcal import ScanFrame, SelfCalibration, self_calibrate
from ptz_pipeline.assets.intrinsics import CHESSBOARD_PATTERN, CHESSBOARD_SQUARE_M
from ptz_pipeline.datasets import PANORAMA
from ptz_pipeline.devices import SimulatedBackend
from ptz_pipeline.settings import model_dir
from ptz_pipeline.sim.camera import render_frame
from ptz_pipeline.sim.survey import chessboard_photos

COMMAND = ".venv/bin/python -m bench.selfcal"
AT = datetime(2026, 3, 1, 6, tzinfo=UTC)
"""When the scans (the references) are captured."""
TELEMETRY_NOISE_DEG = 0.05
QUERIES_PER_HOUR = 4
CAMERA_SEEDS = (11, 12, 13, 14)


@dataclass(frozen=True)
class Lens:
    name: str
    size: tuple[int, int]
    hfov_deg: float
    dist: tuple[float, float]

    def spec(self, seed: int) -> SimulatedBackend:
        return SimulatedBackend(
            kind="simulated",
            image_width=self.size[0],
            image_height=self.size[1],
            hfov_deg=self.hfov_deg,
            dist=(*self.dist, 0.0, 0.0, 0.0),
            seed=seed,
        )


LENSES = (
    Lens("640x480 60° k1 -0.08 (the demo's)", (640, 480), 60.0, (-0.08, 0.02)),
    Lens("640x360 75° k1 -0.15", (640, 360), 75.0, (-0.15, 0.04)),
    Lens("800x600 45° k1 -0.03", (800, 600), 45.0, (-0.03, 0.0)),
    Lens("640x480 90° k1 -0.25", (640, 480), 90.0, (-0.25, 0.07)),
)


@dataclass
class Camera:
    """A simulated camera's scan (the reference frames) and its calibrations."""

    lens: Lens
    spec: SimulatedBackend
    images: list[np.ndarray]
    stops: list[tuple[float, float]]
    features: dict[str, list[Features]]
    calibrations: dict[str, tuple[Intrinsics, float, float]]
    """Method -> (intrinsics at zoom 0, seconds, of which matching)."""
    covariances: dict[str, np.ndarray]
    """Method -> the calibration's covariance (9 x 9, geometry.intrinsics.CALIBRATION_PARAMETERS)."""


def scan_stops(intr: Intrinsics) -> list[tuple[float, float]]:
    """Two tilt rows around the horizon, pan step <= 0.7 hfov, rows 0.6 vfov apart (degrees)."""
    w, h = intr.image_size
    hfov, vfov = (2.0 * np.degrees(np.arctan(s / 2.0 / intr.fx)) for s in (w, h))
    n = int(np.ceil(360.0 / (0.7 * hfov)))
    return [(float(pan), tilt) for tilt in (-5.0, -5.0 - 0.6 * vfov) for pan in np.arange(n) * 360.0 / n]


def with_telemetry_noise(
    stops: list[tuple[float, float]], rng: np.random.Generator
) -> list[tuple[float, float]]:
    return [
        (p + rng.normal(0, TELEMETRY_NOISE_DEG), t + rng.normal(0, TELEMETRY_NOISE_DEG)) for p, t in stops
    ]


def errors(est: Intrinsics, truth: Intrinsics) -> list[float]:
    """Focal error (%), principal point error (px, the larger of cx and cy), |k1 error|, |k2 error|."""
    return [
        100.0 * (est.fx / truth.fx - 1.0),
        float(np.max(np.abs(est.K[:2, 2] - truth.K[:2, 2]))),
        abs(est.dist[0] - truth.dist[0]),
        abs(est.dist[1] - truth.dist[1]),
    ]


def timed_selfcal(frames: list[ScanFrame]) -> tuple[SelfCalibration, float, float]:
    """The self-calibration, its seconds and the seconds of descriptor matching among them."""
    matcher = TimedMatcher(MutualNNMatcher(device="cpu"))
    t0 = time.perf_counter()
    result = self_calibrate(frames, matcher)
    return result, time.perf_counter() - t0, matcher.seconds


def calibrate_camera(
    lens: Lens, seed: int, extractors: dict[str, DiskExtractor | SiftExtractor], rng: np.random.Generator
) -> Camera:
    spec = lens.spec(seed)
    stops = scan_stops(spec.intrinsics)
    images = [render_frame(spec, "cam", pan, tilt, 0.0, AT) for pan, tilt in stops]
    t0 = time.perf_counter()
    board = calibrate_chessboard(
        chessboard_photos(spec), CHESSBOARD_PATTERN, square_size_m=CHESSBOARD_SQUARE_M
    )
    calibrations = {"chessboard": (board.intrinsics, time.perf_counter() - t0, 0.0)}
    covariances = {"chessboard": board.covariance}
    telemetry = with_telemetry_noise(stops, rng)
    features = {}
    for name, extractor in extractors.items():
        features[name] = [extractor.extract(im) for im in images]
        frames = [
            ScanFrame(f, p, t, 0.0, f"{p:.0f}/{t:.0f}")
            for f, (p, t) in zip(features[name], telemetry, strict=True)
        ]
        result, seconds, match_seconds = timed_selfcal(frames)
        calibrations[f"selfcal {name}"] = (result.intrinsics, seconds, match_seconds)
        covariances[f"selfcal {name}"] = result.covariance
        print(
            f"  {name}: σ {result.sigma}, RMS {result.rms_px:.3f} px, {len(result.pairs)} pairs", flush=True
        )
    return Camera(lens, spec, images, stops, features, calibrations, covariances)


def intrinsics_section(cameras: list[Camera]) -> str:
    rows = []
    errs: dict[str, list[list[float]]] = {}
    for cam in cameras:
        for method, (intr, seconds, match_seconds) in cam.calibrations.items():
            errs.setdefault(method, []).append(errors(intr, cam.spec.intrinsics))
            images = 12 if method == "chessboard" else len(cam.stops)
            rows.append([cam.lens.name, images, method, *errs[method][-1], seconds, match_seconds])
    headers = ["camera", "images", "method", "focal error %", "principal point error px", "|k1 error|"]
    headers += ["|k2 error|", "s", "matching s"]
    base = np.abs(errs["chessboard"])
    verdicts = []
    for method in [m for m in errs if m != "chessboard"]:
        e = np.abs(errs[method])
        focal, pp = e[:, 0].max(), e[:, 1].max()
        ratio = np.median(e[:, :2] / base[:, :2], axis=0)
        verdicts.append(
            f"- {method}: worst focal error **{focal:.3g} %** (target <= 0.3 %: {_met(focal <= 0.3)}), worst "
            f"principal point error **{pp:.3g} px** (target <= 2 px: {_met(pp <= 2.0)}); median ratio to the "
            f"chessboard's error: focal {ratio[0]:.2g}x, principal point {ratio[1]:.2g}x."
        )
    return "\n".join(
        [
            "### 1. Intrinsics: self-calibration vs chessboard on the same simulated cameras",
            "",
            f"Typical nuisances; self-calibration telemetry with {TELEMETRY_NOISE_DEG}° noise per axis; 's' "
            "is the calibration's time without rendering and feature extraction (chessboard: corner "
            "detection included), 'matching s' the descriptor matching's share of it (the self-calibration "
            "matches the pairs of frames whose optical axes are within 90°).",
            "",
            markdown_table(headers, rows),
            "",
            *verdicts,
        ]
    )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def zoom_section(extractor: DiskExtractor) -> str:
    w, h = 640, 480
    pano = Panorama.load(PANORAMA)
    R_align = Rz(np.radians(30.0)) @ Rx(np.radians(1.0))
    f0 = Intrinsics.from_fov(60.0, w, h).fx
    pp = np.array([(w - 1) / 2 + 3.0, (h - 1) / 2 - 2.0])

    def lens(zoom: float) -> Intrinsics:
        f = f0 * 10.0**zoom
        K = np.array([[f, 0.0, pp[0]], [0.0, f, pp[1]], [0.0, 0.0, 1.0]])
        return Intrinsics(K, np.array([-0.08 + 0.09 * zoom, 0.02 * (1.0 - zoom), 0.0, 0.0]), (w, h))

    stops = [(pan, tilt, 0.0) for tilt in (-5.0, -35.0) for pan in (-40.0, 0.0, 40.0)]
    for zoom in (0.25, 0.5, 0.75, 1.0):
        step = np.degrees(np.arctan(w / 2 / lens(zoom).fx)) / 2
        stops += [(dp * step, -20.0 + dt * step, zoom) for dt in (-1, 1) for dp in (-1, 1)]
    rng = np.random.default_rng(7)
    frames = [
        ScanFrame(
            extractor.extract(render_view(pano, lens(z), R_align @ R_BC(p, t), rng, Nuisances.typical())),
            p + rng.normal(0, TELEMETRY_NOISE_DEG),
            t + rng.normal(0, TELEMETRY_NOISE_DEG),
            z,
            f"{z}:{p:.1f}/{t:.1f}",
        )
        for p, t, z in stops
    ]
    result, seconds, _ = timed_selfcal(frames)
    fitted = result.zoom_model()
    linear = ZoomModel((0.0, 1.0), (lens(0.0).fx, lens(1.0).fx))
    zooms = np.linspace(0.0, 1.0, 101)
    truth = np.array([lens(z).fx for z in zooms])
    curves = {"fitted (ours)": fitted, "straight line through the true ends (baseline)": linear}
    curve_rows = []
    for name, model in curves.items():
        err = 100.0 * (np.array([model.focal(z) for z in zooms]) / truth - 1.0)
        curve_rows.append([name, float(np.max(np.abs(err))), float(np.sqrt(np.mean(err**2)))])
    level_rows = [
        [
            lv.zoom,
            len(lv.frames),
            lv.intrinsics.fx,
            100.0 * (lv.intrinsics.fx / lens(lv.zoom).fx - 1.0),
            100.0 * lv.sigma_focal_px / lv.intrinsics.fx,
            lv.intrinsics.dist[0],
            lens(lv.zoom).dist[0],
            lv.sigma_k[0],
            lv.initialisation,
        ]
        for lv in result.levels
    ]
    pp_err = float(np.max(np.abs(result.intrinsics.K[:2, 2] - pp)))
    return "\n".join(
        [
            "### 2. Zoom curve: a 10x lens, f = f0 exp(ln 10 zoom) (640x480, DISK)",
            "",
            f"{len(frames)} frames, {len(result.pairs)} overlapping pairs, self-calibration {seconds:.1f} s; "
            f"principal point error {pp_err:.3g} px.",
            "",
            markdown_table(
                ["zoom", "frames", "f px", "focal error %", "σ f %", "k1", "true k1", "σ k1", "started by"],
                level_rows,
            ),
            "",
            markdown_table(["zoom model", "max focal error % (101 zooms)", "RMS focal error %"], curve_rows),
            "",
            f"Max error ratio fitted / baseline: **{curve_rows[0][1] / curve_rows[1][1]:.2g}x**.",
        ]
    )


def drift_section(
    cameras: list[Camera], disk: DiskExtractor, hours: list[float], rng: np.random.Generator
) -> str:
    matcher = MutualNNMatcher(device="cpu")
    variants = ["truth"] + [f"{m}{c}" for m in ("chessboard", "selfcal disk") for c in ("", " + covariance")]
    errs: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    z: dict[str, list[float]] = {v: [] for v in variants}
    failures = dict.fromkeys(variants, 0)
    for cam in cameras:
        greys = [grey(im) for im in cam.images]
        for hour in hours:
            t = AT + timedelta(hours=hour)
            truth = np.array(cam.spec.true_drift(AT, t))
            picks = rng.choice(len(cam.stops), QUERIES_PER_HOUR, replace=False)
            stops = [
                (cam.stops[i][0] + rng.uniform(-10, 10), cam.stops[i][1] + rng.uniform(-5, 5)) for i in picks
            ]
            images = [render_frame(cam.spec, "cam", p, tl, 0.0, t) for p, tl in stops]
            feats = [disk.extract(im) for im in images]
            for variant in variants:
                method = variant.removesuffix(" + covariance")
                intr = cam.spec.intrinsics if variant == "truth" else cam.calibrations[method][0]
                uncertainty = (
                    CalibrationUncertainty(intr, cam.covariances[method])
                    if variant.endswith("covariance")
                    else None
                )
                references = [
                    FrameObservation(f, p, tl, 0.0, intr, f"r{i}", image=g)
                    for i, (f, (p, tl), g) in enumerate(
                        zip(cam.features["disk"], cam.stops, greys, strict=True)
                    )
                ]
                queries = [
                    FrameObservation(f, p, tl, 0.0, intr, f"q{i}", image=grey(im))
                    for i, (f, (p, tl), im) in enumerate(zip(feats, stops, images, strict=True))
                ]
                joint = estimate_drift(
                    queries, references, matcher, DriftConfig(), calibration=uncertainty
                ).joint
                if joint.success:
                    errs[variant].append(np.abs([joint.yaw_deg, joint.pitch_deg, joint.roll_deg] - truth))
                    sigma = [joint.sigma_yaw_deg, joint.sigma_pitch_deg, joint.sigma_roll_deg]
                    z[variant].append(float(np.max(errs[variant][-1] / np.array(sigma))))
                else:
                    failures[variant] += 1
            print(f"  drift {cam.lens.name} +{hour} h: {[e[-1].round(5).tolist() for e in errs.values()]}")
    rows = []
    for variant in variants:
        e = np.array(errs[variant]).reshape(-1, 3)
        rows.append(
            [
                variant,
                len(e),
                failures[variant],
                *np.median(e, axis=0),
                *np.max(e, axis=0),
                max(z[variant], default=np.nan),
            ]
        )
    headers = ["K", "hours", "failed", *(f"median |{a}| err °" for a in ("yaw", "pitch", "roll"))]
    headers += [f"max |{a}| err °" for a in ("yaw", "pitch", "roll")] + ["max |err|/σ"]
    by_variant = {row[0]: row for row in rows}

    def ratio(columns: slice, suffix: str) -> float:
        """Worst angle's error over ``columns``, self-calibrated K / chessboard K (``suffix``: covariance)."""
        own, board = by_variant[f"selfcal disk{suffix}"], by_variant[f"chessboard{suffix}"]
        return float(np.max(own[columns]) / np.max(board[columns]))

    medians, maxima = ([ratio(c, s) for s in ("", " + covariance")] for c in (slice(3, 6), slice(6, 9)))
    return "\n".join(
        [
            "### 3. Drift with the self-calibrated K",
            "",
            f"{len(cameras)} cameras x {len(hours)} hours ({', '.join(f'+{h:g} h' for h in hours)} after "
            f"the scan), {QUERIES_PER_HOUR} query frames per hour at zoom 0, typical nuisances; the scan's "
            "frames (exact telemetry) are the reference; joint drift per hour. '+ covariance': the "
            "calibration passed with its covariance (as the pipeline does): the reference scan corrects it "
            "and σ includes what remains; max |err|/σ of the worst angle per hour.",
            "",
            markdown_table(headers, rows),
            "",
            "Worst median angle error, self-calibrated K / chessboard K: "
            f"**{medians[0]:.2g}x** without covariances, **{medians[1]:.2g}x** with them; worst max angle "
            f"error: {maxima[0]:.2g}x without, {maxima[1]:.2g}x with.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two cameras, one hour; print only")
    parser.add_argument("--drift-only", action="store_true", help="part 3 alone (DISK); print only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    rng = np.random.default_rng(2026)
    disk = DiskExtractor(model_dir(), device="cpu")
    extractors = {"disk": disk} if args.drift_only else {"disk": disk, "sift": SiftExtractor()}
    lenses = LENSES[:2] if args.quick else LENSES
    cameras = []
    for lens, seed in zip(lenses, CAMERA_SEEDS, strict=False):
        print(f"[{time.perf_counter() - start:6.0f} s] {lens.name}", flush=True)
        cameras.append(calibrate_camera(lens, seed, extractors, rng))
    sections = [] if args.drift_only else [intrinsics_section(cameras)]
    print(*sections, flush=True)
    if not (args.quick or args.drift_only):
        sections.append(zoom_section(disk))
        print(sections[-1], flush=True)
    hours = [5.0] if args.quick else [3.0, 9.0, 15.0]
    sections.append(drift_section(cameras, disk, hours, rng))
    print(sections[-1])
    total = time.perf_counter() - start
    body = "\n\n".join([f"torch threads {torch.get_num_threads()}; whole bench {total:.0f} s.", *sections])
    if not (args.quick or args.drift_only):
        write_section("selfcal", COMMAND, body)


if __name__ == "__main__":
    main()
