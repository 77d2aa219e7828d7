"""Pipeline benchmark: Dagster runs on simulated cameras; writes the 'pipeline' section of BENCHMARKS.md.

1. End-to-end seconds per camera-hour partition: one ``capture_queries`` run (query_scan: the simulator
   renders 5 query frames at 640x480, JPEG to storage) then one ``estimate_offsets`` run (orientation_offsets:
   DISK extraction of the 5 frames, estimation against a reference scan prepared beforehand, Iceberg row),
   each partition in its own pair of runs. The run wall time (``execute_in_process``) is split into the time
   spent inside the asset bodies' calls (timed in the same process by wrapping capture_query, the extractor,
   estimate_drift, storage and Iceberg calls) and the rest, which is Dagster's overhead.
2. A 24 h x 20 camera backfill of orientation_offsets over stored query scans whose features are stored
   (so estimation only): (a) ONE run over the whole camera x hour range (BackfillPolicy.single_run) vs
   (b) one run per partition, measured on a subset and extrapolated. To stay affordable on 2 cores the
   backfill fleet uses the SIFT extractor (DriftEstimationResource extractor_kind="sift") at 320x240.

Everything runs on a temporary Dagster instance (SQLite storage in a temporary DAGSTER_HOME), temporary
data folder and generated devices.yaml. ``--quick`` is a smoke run (fewer cameras and hours) that prints
its tables without writing BENCHMARKS.md.

Run from the repository root: .venv/bin/python -m bench.pipeline [--quick]
"""

from __future__ import annotations

import argparse
import functools
import operator
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import dagster as dg
import numpy as np
import torch
import yaml
from pyiceberg.utils.config import Config

from bench.report import REPO_ROOT, markdown_table, write_section
from geometry.features import make_extractor
from ptz_pipeline import scans
from ptz_pipeline.assets import offsets as offset_assets
from ptz_pipeline.assets import query as query_assets
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.devices import camera_key, load_devices
from ptz_pipeline.partitions import (
    camera_hour_key,
    camera_hour_range_tags,
    camera_partitions,
    hour_start,
    recent_hours,
    split_camera_hour,
)
from ptz_pipeline.resources.estimation import DriftEstimationResource
from ptz_pipeline.resources.iceberg import CATALOG_NAME, IcebergResource
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource
from ptz_pipeline.settings import local_resources, model_dir
from ptz_pipeline.sim.truth import true_drift

COMMAND = ".venv/bin/python -m bench.pipeline"
THREADS = 2
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CATEGORIES = ("camera", "extraction", "estimation", "storage", "iceberg")
"""Timed work inside the asset bodies; the rest of a run's wall time is Dagster's."""
E2E_TARGET_S, OVERHEAD_TARGET, BACKFILL_TARGET_S = 5.0, 0.20, 600.0
ORIENTATION_OFFSETS = dg.AssetKey("orientation_offsets")


@dataclass(frozen=True)
class Scenario:
    """A simulated fleet: image size (pixels), query stops (pan, tilt deg, zoom) and reference grid."""

    width: int
    height: int
    ptz_stops: tuple[tuple[float, float, float], ...]
    grid_pans: int = 11
    """Reference: one row at tilt -15°, pan 0..300°, 30° apart at hfov 60°: neighbouring frames overlap, so
    the scan corrects the chessboard calibration (6 stops 60° apart share no view: the fleet bench's
    0.036°)."""


E2E = Scenario(640, 480, ((20, -15, 0.0), (80, -12, 0.0), (140, -18, 0.0), (200, -15, 0.0), (260, -12, 0.0)))
BACKFILL = Scenario(320, 240, ((30, -15, 0.0), (150, -15, 0.0)))


def camera_entry(name: str, seed: int, scenario: Scenario) -> dict:
    """One active simulated camera of devices.yaml; the mount and its drift vary with ``seed``."""
    return {
        "name": name,
        "mode": "active",
        "ptz_stops": [list(stop) for stop in scenario.ptz_stops],
        "reference": {
            "horizontal_stops": scenario.grid_pans, "vertical_stops": 1, "pan_min": 0, "pan_max": 300,
            "tilt_min": -15, "tilt_max": -15, "zoom": 0.0,
        },
        "backend": {
            "kind": "simulated", "image_width": scenario.width, "image_height": scenario.height,
            "hfov_deg": 60.0, "mount_ypr_deg": [(37.0 * seed) % 360 - 180, 1.0, -0.5],
            "drift_amplitude_deg": [0.2 + 0.03 * (seed % 10), 0.3, 0.2], "drift_period_hours": 12.0,
            "seed": seed,
        },
    }  # fmt: skip


class Timers:
    """Exclusive wall time (s) spent inside wrapped functions, by category (nested calls counted once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._children: list[float] = []

    def reset(self) -> None:
        self.seconds.clear()

    def wrap(self, category: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: object, **kwargs: object) -> object:
            self._children.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self.seconds[category] += elapsed - self._children.pop()
                if self._children:
                    self._children[-1] += elapsed

        return timed

    @contextmanager
    def patched(self, extractor: object) -> Iterator[None]:
        """Wrap the calls the capture and estimation asset bodies make (module attributes, looked up at
        call time), and ``extractor.extract``."""
        targets = [
            (query_assets, "capture_query", "camera"),
            (scans, "write_scan", "storage"),
            (scans, "read_manifest", "storage"),
            (scans, "scan_observations", "storage"),
            (offset_assets, "load_intrinsics", "storage"),
            (offset_assets, "load_reference_observations", "storage"),
            (offset_assets, "estimate_drift", "estimation"),
            (IcebergResource, "replace_rows", "iceberg"),
            (extractor, "extract", "extraction"),
        ]
        with ExitStack() as stack:
            for owner, name, category in targets:
                stack.enter_context(mock.patch.object(owner, name, self.wrap(category, getattr(owner, name))))
            yield


@dataclass
class Measured:
    """One or more runs: summed wall time and timed work (s) by category."""

    runs: int
    partitions: int
    wall_s: float
    work_s: dict[str, float]
    failed_runs: int = 0

    @property
    def dagster_s(self) -> float:
        return self.wall_s - sum(self.work_s.values())

    def __add__(self, other: Measured) -> Measured:
        work = {c: self.work_s.get(c, 0.0) + other.work_s.get(c, 0.0) for c in CATEGORIES}
        return Measured(
            self.runs + other.runs,
            self.partitions + other.partitions,
            self.wall_s + other.wall_s,
            work,
            self.failed_runs + other.failed_runs,
        )


class Bench:
    """Definitions + a temporary SQLite-backed instance + a generated devices.yaml."""

    def __init__(self, tmp: Path, fleet: dict[str, list[dict]], estimation: DriftEstimationResource) -> None:
        tmp.mkdir(parents=True)
        devices = tmp / "devices.yaml"
        devices.write_text(yaml.safe_dump([{"name": s, "cameras": c} for s, c in fleet.items()]))
        data = tmp / "data"
        self.resources = {
            **local_resources(str(data), str(devices)),
            "storage": ObjectStorageResource(url=str(data / "storage")),  # ignore PTZ_STORAGE_URL
            "slack": SlackResource(),  # alerts go to the log, never to a real channel
            "estimation": estimation,
        }
        self.defs = build_definitions(self.resources)
        (tmp / "dagster_home").mkdir()
        (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.instance = dg.DagsterInstance.local_temp(tempdir=str(tmp / "dagster_home"))
        self.fleet = load_devices(devices)
        self.keys = [c.key for c in self.fleet.cameras()]
        self.instance.add_dynamic_partitions(camera_partitions.name, self.keys)
        self.timers = Timers()

    @property
    def storage(self) -> ObjectStorageResource:
        return self.resources["storage"]

    def run(self, job: str, **kwargs: object) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=QUIET, **kwargs
        )

    def measure(self, job: str, partitions: int, **kwargs: object) -> Measured:
        """Wall time of one run and the timed work inside it."""
        self.timers.reset()
        t0 = time.perf_counter()
        result = self.run(job, **kwargs)
        wall = time.perf_counter() - t0
        work = {c: self.timers.seconds.get(c, 0.0) for c in CATEGORIES}
        return Measured(1, partitions, wall, work, failed_runs=0 if result.success else 1)

    def calibrate(self, say: Callable[[str], None]) -> float:
        """Calibrate every camera as the demo does (chessboards, intrinsics, reference scan + features,
        survey, R_align); returns the seconds this took."""
        t0 = time.perf_counter()
        for i, cam in enumerate(self.fleet.cameras(), start=1):
            if not calibrate_simulated(self.run, self.storage, cam):
                raise SystemExit(f"calibration failed for {cam.key}")
            say(f"calibrated {cam.key} ({i}/{len(self.keys)})")
        return time.perf_counter() - t0

    def accuracy(self, partition_keys: set[str]) -> tuple[int, int, float]:
        """(successful rows, rows, max |estimate - simulator truth| in degrees) over ``partition_keys``."""
        rows = self.resources["iceberg"].read_rows()
        rows = rows[rows["partition_key"].isin(partition_keys)]
        errors = []
        for row in rows.itertuples():
            if not row.success:
                continue
            cam = self.fleet.camera(camera_key(row.deployment, row.device_id))
            hour = hour_start(split_camera_hour(row.partition_key)[1])
            truth = true_drift(self.storage, cam, hour)
            errors.append(
                np.max(np.abs(np.subtract((row.yaw_offset, row.pitch_offset, row.roll_offset), truth)))
            )
        return len(errors), len(rows), float(max(errors)) if errors else float("nan")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def breakdown_row(label: str, m: Measured) -> list[object]:
    """Table row: total wall time, then seconds per partition: wall, each category and Dagster."""
    n = m.partitions
    return [
        label,
        m.runs,
        m.partitions,
        m.wall_s,
        m.wall_s / n,
        *(m.work_s[c] / n for c in CATEGORIES),
        m.dagster_s / n,
        f"{100 * m.dagster_s / m.wall_s:.1f} %",
    ]


BREAKDOWN_HEADERS = [
    "runs", "partitions", "wall s (total)", "wall s / partition", "camera s", "extraction s",
    "estimation s", "storage s", "Iceberg s", "Dagster s", "Dagster share",
]  # fmt: skip


def per_run_process_costs() -> tuple[float, float]:
    """(s to start a Python process importing torch + the definitions, s to load DISK weights): what a run
    launched in its own process (DefaultRunLauncher, K8sRunLauncher) pays on top of the in-process numbers."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import torch, ptz_pipeline.definitions"], cwd=REPO_ROOT, check=True
    )
    start_s = time.perf_counter() - t0
    defaults = local_resources()["estimation"]
    t0 = time.perf_counter()
    make_extractor("disk", model_dir(), max_keypoints=defaults.max_keypoints, resize_max=defaults.resize_max)
    return start_s, time.perf_counter() - t0


def disk_seconds_by_size(image: np.ndarray, sizes: tuple[int, ...] = (640, 480, 320)) -> list[list[object]]:
    """DISK seconds per frame at several ``resize_max`` (longest image side fed to the network)."""
    rows = []
    for size in sizes:
        extractor = make_extractor("disk", model_dir(), max_keypoints=2048, resize_max=size)
        extractor.extract(image)
        t0 = time.perf_counter()
        feats = extractor.extract(image)
        rows.append([size, time.perf_counter() - t0, len(feats)])
    return rows


def end_to_end(tmp: Path, n_hours: int, say: Callable[[str], None]) -> str:
    """Part 1: capture + DISK + estimation per camera-hour, each partition in its own two runs."""
    say(f"== end to end: 1 camera, {len(E2E.ptz_stops)} query frames at {E2E.width}x{E2E.height}, DISK")
    bench = Bench(
        tmp,
        {"bench-e2e": [camera_entry("cam-1", 1, E2E)]},
        DriftEstimationResource(model_dir=str(model_dir())),
    )
    cal_s = bench.calibrate(say)
    cam = next(bench.fleet.cameras())
    hours = recent_hours(datetime.now(UTC), n_hours)
    rows, runs = [], []
    with bench.timers.patched(bench.resources["estimation"].extractor()):
        for hour in hours:
            pk = str(camera_hour_key(cam.key, hour))
            capture = bench.measure("capture_queries", 1, partition_key=pk)
            m = replace(capture + bench.measure("estimate_offsets", 1, partition_key=pk), partitions=1)
            runs.append(m)
            rows.append(breakdown_row(hour, m))
            say(f"{pk}: {m.wall_s:.1f} s ({m.failed_runs} failed runs)")
    total = functools.reduce(operator.add, runs)
    rows.append(breakdown_row("mean", total))
    ok, n_rows, max_err = bench.accuracy({str(camera_hour_key(cam.key, hour)) for hour in hours})
    per_partition = total.wall_s / n_hours
    overhead = total.dagster_s / total.wall_s
    geometry = (total.work_s["extraction"] + total.work_s["estimation"]) / total.wall_s
    prefix = scans.query_prefix(cam.deployment, cam.name, hour_start(hours[0]))
    say("DISK seconds per frame by resize_max")
    sizes = disk_seconds_by_size(
        scans.read_images(bench.storage, prefix, scans.read_manifest(bench.storage, prefix))[0]
    )
    start_s, disk_load_s = per_run_process_costs()
    table = markdown_table(["hour", *BREAKDOWN_HEADERS], rows)
    return "\n".join(
        [
            f"### 1. End to end per camera-hour partition (DISK, {E2E.width}x{E2E.height})",
            "",
            f"One simulated camera; {len(E2E.ptz_stops)} active query stops per hour; reference scan of "
            f"{E2E.grid_pans} stops with DISK features prepared beforehand (calibrate_camera, {cal_s:.0f} s, "
            f"not counted). Each partition = one `capture_queries` run (query_scan: render + JPEG) + one "
            "`estimate_offsets` run (orientation_offsets: DISK extraction of the query frames, estimation, "
            "Iceberg row), `execute_in_process` on a SQLite instance, console log at WARNING. Columns after "
            "the wall time: seconds inside the asset bodies' calls, timed in-process (camera = simulator "
            "render; storage = JPEG/npz/manifest I/O; Iceberg = the row commit); Dagster = wall minus those.",
            "",
            table,
            "",
            f"Estimates: {ok}/{n_rows} succeeded, max |error| vs simulator truth {max_err:.4f} deg.",
            "",
            f"Seconds per partition end to end **{per_partition:.2f} s** (target <= {E2E_TARGET_S:.0f} s on "
            f"{THREADS} cores: {_met(per_partition <= E2E_TARGET_S)}); geometry (DISK + estimation) "
            f"{100 * geometry:.0f} % of it; Dagster overhead **{100 * overhead:.1f} %** (target <= "
            f"{100 * OVERHEAD_TARGET:.0f} %: {_met(overhead <= OVERHEAD_TARGET)}).",
            "",
            "DISK seconds per frame (one 640x480 frame, max 2048 keypoints) by `resize_max`:",
            "",
            markdown_table(["resize_max px", "s / frame", "keypoints"], sizes),
            "",
            f"Not included above (runs here are in-process): a run launched in its own process pays "
            f"~{start_s:.1f} s of Python + torch + definitions imports, and an estimation run with DISK "
            f"loads its weights (~{disk_load_s:.2f} s) even when every feature is already stored.",
        ]
    )


def backfill(tmp: Path, n_cameras: int, n_hours: int, n_single: int, say: Callable[[str], None]) -> str:
    """Part 2: orientation_offsets over stored scans, one run over the range vs one run per partition."""
    sites = max(1, n_cameras // 5)
    fleet = {
        f"site-{s:02d}": [
            camera_entry(f"cam-{i:02d}", i + 1, BACKFILL) for i in range(n_cameras) if i % sites == s
        ]
        for s in range(sites)
    }
    say(f"== backfill: {n_cameras} cameras x {n_hours} h, SIFT at {BACKFILL.width}x{BACKFILL.height}")
    bench = Bench(tmp, fleet, DriftEstimationResource(model_dir=str(model_dir()), extractor_kind="sift"))
    cal_s = bench.calibrate(say)
    hours = recent_hours(datetime.now(UTC), n_hours)
    n_partitions = n_cameras * n_hours
    tags = camera_hour_range_tags(bench.keys, hours)
    t0 = time.perf_counter()
    if not bench.run("capture_queries", tags=tags).success:
        raise SystemExit("capture_queries failed")
    capture_s = time.perf_counter() - t0
    say(f"captured {n_partitions} query scans in one run: {capture_s:.1f} s")
    extractor = bench.resources["estimation"].extractor()
    with bench.timers.patched(extractor):
        history = bench.measure("estimate_offsets", n_partitions, tags=tags)
        say(f"history pass (SIFT extraction stored + estimation): {history.wall_s:.1f} s")
        single = bench.measure("estimate_offsets", n_partitions, tags=tags)
        say(f"(a) backfill in one run: {single.wall_s:.1f} s")
        materialized = len(bench.instance.get_materialized_partitions(ORIENTATION_OFFSETS))
        subset = [
            str(camera_hour_key(bench.keys[i % n_cameras], hours[i % n_hours])) for i in range(n_single)
        ]
        runs = []
        for i, pk in enumerate(subset, start=1):
            runs.append(bench.measure("estimate_offsets", 1, partition_key=pk))
            say(f"(b) run {i}/{n_single} {pk}: {runs[-1].wall_s:.2f} s")
    per_run = functools.reduce(operator.add, runs)
    ok, n_rows, max_err = bench.accuracy({str(camera_hour_key(k, h)) for k in bench.keys for h in hours})
    scale = n_partitions / n_single
    extrapolated = Measured(
        n_partitions, n_partitions, per_run.wall_s * scale, {c: v * scale for c, v in per_run.work_s.items()}
    )
    ratio = extrapolated.wall_s / single.wall_s
    rows = [
        breakdown_row("history pass: one run, SIFT extraction + estimation", history),
        breakdown_row("(a) backfill, one run (single_run)", single),
        breakdown_row(f"(b) one run per partition, measured on {n_single}", per_run),
        breakdown_row(f"(b) extrapolated x{scale:g} to {n_partitions}", extrapolated),
    ]
    failed = single.failed_runs + per_run.failed_runs + history.failed_runs
    return "\n".join(
        [
            f"### 2. Backfill of orientation_offsets: {n_cameras} cameras x {n_hours} h = {n_partitions} "
            "partitions",
            "",
            f"Fleet of {n_cameras} simulated cameras in {sites} site(s), {len(BACKFILL.ptz_stops)} query "
            f"frames per hour at {BACKFILL.width}x{BACKFILL.height}, reference grid of "
            f"{BACKFILL.grid_pans} stops. "
            "To keep this affordable on 2 cores the fleet uses the **SIFT** extractor configured in "
            '`DriftEstimationResource(extractor_kind="sift")`, not DISK. Set-up (not counted): one '
            f"calibrate_camera run per camera, {cal_s:.0f} s in all; capture of all {n_partitions} query "
            "scans in one `capture_queries` run "
            f"{capture_s:.0f} s; a first `estimate_offsets` pass over the range (the hourly history: "
            "extracts and stores the query features, writes the rows). The backfill then re-estimates from "
            "stored features only and replaces the rows. (a) is ONE `execute_in_process` over the whole "
            "camera x hour range (range tags, BackfillPolicy.single_run); (b) runs one partition per run on "
            f"{n_single} partitions spread over cameras and hours and is **extrapolated** per partition to "
            f"all {n_partitions}. Per-partition columns are seconds per partition.",
            "",
            markdown_table(["mode", *BREAKDOWN_HEADERS], rows),
            "",
            f"Partitions materialized by (a): {materialized}/{n_partitions}; estimates "
            f"{ok}/{n_rows} succeeded, max |error| vs simulator truth {max_err:.4f} deg; "
            f"failed runs: {failed}.",
            "",
            f"Backfill total: (a) one run **{single.wall_s:.0f} s** (target <= {BACKFILL_TARGET_S:.0f} s: "
            f"{_met(single.wall_s <= BACKFILL_TARGET_S)}) vs (b) one run per partition "
            f"**{extrapolated.wall_s:.0f} s** (extrapolated; {extrapolated.wall_s / n_partitions:.2f} s per "
            f"run); (b)/(a) = **{ratio:.1f}x**. (b) excludes the per-run process start a real launcher adds "
            "(see section 1).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run; prints, does not write BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if Config().get_catalog_config(CATALOG_NAME):
        sys.exit(f"pyiceberg configures a '{CATALOG_NAME}' catalog: unset it, the bench writes its own rows")
    torch.set_num_threads(THREADS)
    e2e_hours, cameras, hours, single = (1, 3, 3, 3) if args.quick else (3, 20, 24, 24)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ptz-bench-pipeline-") as tmp:
        os.environ["DAGSTER_HOME"] = tmp  # nothing may reach the user's instance
        parts = [
            end_to_end(Path(tmp) / "e2e", e2e_hours, say),
            backfill(Path(tmp) / "backfill", cameras, hours, single, say),
        ]
    load_after = os.getloadavg()
    body = "\n\n".join(
        [
            f"Dagster {dg.__version__}; torch threads {THREADS}; the CPU is shared with other work: load "
            f"average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; whole bench "
            f"{time.perf_counter() - t_start:.0f} s.",
            *parts,
        ]
    )
    print("\n" + body)
    if args.quick:
        print("\n(--quick: BENCHMARKS.md not written)")
    else:
        write_section("pipeline", COMMAND, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
