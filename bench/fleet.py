"""Fleet benchmark: what the automation and the UI cost at 10, 100 and 1,000 cameras, and the CPU a
camera-hour needs; writes the 'fleet' section of BENCHMARKS.md.

Per fleet size N, in a process of its own (so that its peak RSS is its own):
1. A generated devices.yaml of N simulated cameras in sites of 10 (5 active, 5 passive), loaded as the code
   location's definitions (``ptz_pipeline.definitions`` with PTZ_DEVICES pointing at it), and a temporary
   SQLite instance holding the N camera partitions. No camera is rendered: sensors never open one.
2. Sensor ticks, each evaluation function called with ``dg.build_sensor_context`` on that instance and
   definitions (as test_sensors.py does): devices_sensor (first tick: adds the N cameras; steady tick:
   devices.yaml unchanged), hourly_active_capture (the hourly 'schedule': one run request per site),
   passive_capture, offsets_after_capture after the hour's N query_scan materializations. Median of 3 ticks;
   peak Python heap of one tick (tracemalloc, a separate pass: tracing slows the tick); and the time of
   ``load_devices`` alone, which every tick but offsets_after_capture calls.
3. The UI's partition-status query for orientation_offsets (GraphQL ``assetPartitionStatuses``, what the
   asset's Partitions tab and the asset graph ask for) over all ~8,000 hourly partitions since 2026-01-01 x N
   cameras, after recording one hour x N cameras of materializations (cold: Dagster builds its status cache),
   after one more hour (incremental: what a page load pays once per hour) and once more (warm). Recording a
   whole year (8.76 M events at 1,000 cameras, tens of ms each on SQLite here) is out of reach; the status
   cache holds ranges, so its size follows the gaps in the history, not the number of keys.
Once: one site-hour measured end to end (a site of 10 cameras: one capture_queries run and one
estimate_offsets run, DISK at 640x480, 5 stops, torch and BLAS on one thread) with the CPU time of each
category (capture, DISK, matching, estimation, storage, Iceberg; Dagster = the run's process CPU minus those),
extrapolated per camera-hour to each fleet size, and the sizing line.

Run from the repository root: .venv/bin/python -m bench.fleet --cameras 10,100,1000 [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import yaml

from bench.pipeline import E2E, Timers
from bench.report import REPO_ROOT, markdown_table, write_section

COMMAND = ".venv/bin/python -m bench.fleet --cameras 10,100,1000"
SITE_SIZE = 10
TICK_TARGET_S, PARTITION_TARGET_S, DAGSTER_TARGET = 1.0, 2.0, 0.10
SENSORS = ("devices_sensor", "hourly_active_capture", "passive_capture", "offsets_after_capture")
SCHEDULE = "hourly_active_capture"
"""The hourly capture sensor: the one that does the schedule's job."""
CATEGORIES = ("camera", "extraction", "matching", "estimation", "storage", "iceberg")
LABELS = {"camera": "capture", "extraction": "DISK", "matching": "matching", "estimation": "estimation",
          "storage": "storage", "iceberg": "Iceberg"}  # fmt: skip
PARTITION_QUERY = """
query PartitionStatus($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      assetPartitionStatuses {
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim {
              ... on DefaultPartitionStatuses {
                materializedPartitions failedPartitions materializingPartitions
              }
              ... on TimePartitionStatuses { ranges { status startKey endKey } }
            }
          }
        }
      }
    }
  }
}
"""
"""The partition-status part of the UI's PartitionHealthQuery for a camera x hour asset."""
def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_fleet(n_cameras: int) -> list[dict]:
    """devices.yaml content: ``n_cameras`` simulated cameras in sites of SITE_SIZE, alternately active and
    passive."""
    sites = []
    for s in range(-(-n_cameras // SITE_SIZE)):
        cameras = []
        for c in range(min(SITE_SIZE, n_cameras - s * SITE_SIZE)):
            cam = {"name": f"cam-{c:02d}", "mode": "active" if c % 2 == 0 else "passive",
                   "backend": {"kind": "simulated", "image_width": 320, "image_height": 240}}  # fmt: skip
            if cam["mode"] == "active":
                cam["ptz_stops"] = [[0, -15, 0.0]]
            cameras.append(cam)
        sites.append({"name": f"site-{s:03d}", "cameras": cameras})
    return sites


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(median seconds of ``repeats`` calls, peak Python heap MB of one more call under tracemalloc)."""
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return statistics.median(seconds), peak / 2**20


@contextmanager
def code_location(instance: object) -> Iterator[object]:
    """The webserver's view of the code location ``ptz_pipeline.definitions`` (loaded in this process)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    from ptz_pipeline.demo import code_location_origin

    load_target = InProcessWorkspaceLoadTarget(code_location_origin())
    with WorkspaceProcessContext(instance, load_target) as context:
        yield context


def record(instance: object, asset: str, keys: list[str]) -> float:
    """Report a materialization of each key of ``asset`` (no run); returns the seconds this took."""
    import dagster as dg

    t0 = time.perf_counter()
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))
    return time.perf_counter() - t0


def fleet_workdir(n_cameras: int) -> tuple[Path, dict[str, str]]:
    """A temporary folder with the fleet's devices.yaml and DAGSTER_HOME, and the environment that makes
    ``ptz_pipeline.definitions`` load that fleet (the measuring process starts with it, as a code server)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ptz-bench-fleet-{n_cameras}-"))
    (tmp / "devices.yaml").write_text(yaml.safe_dump(synthetic_fleet(n_cameras)))
    (tmp / "dagster_home").mkdir()
    (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {"DAGSTER_HOME": str(tmp / "dagster_home"), "PTZ_DEVICES": str(tmp / "devices.yaml"),
           "PTZ_DATA_DIR": str(tmp / "data"), "PTZ_DEPLOYMENT": "local"}  # fmt: skip
    return tmp, env


def measure_fleet(n_cameras: int) -> dict:
    """Parts 1-3 for one fleet size, in a process started with :func:`fleet_workdir`'s environment."""
    import dagster as dg

    from ptz_pipeline import sensors
    from ptz_pipeline.definitions import defs
    from ptz_pipeline.devices import load_devices
    from ptz_pipeline.partitions import (
        camera_hour_key,
        camera_partitions,
        hour_key,
        hourly_partitions,
        recent_hours,
    )

    out: dict = {"cameras": n_cameras, "sites": -(-n_cameras // SITE_SIZE), "ticks": {}}
    with dg.DagsterInstance.get() as instance:
        resources = defs.resources

        def tick(sensor: dg.SensorDefinition) -> dg.SensorResult:
            # opened as the daemon opens it: storage's nested S3Resource is a context manager
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                return sensor(context)

        t0 = time.perf_counter()
        first = tick(sensors.devices_sensor)
        out["devices_first_tick_s"] = time.perf_counter() - t0
        (added,) = first.dynamic_partitions_requests
        instance.add_dynamic_partitions(camera_partitions.name, list(added.partition_keys))
        say(f"{n_cameras} cameras: devices_sensor first tick {out['devices_first_tick_s']:.2f} s")
        now = datetime.now(UTC)
        keys = [str(camera_hour_key(k, hour_key(now))) for k in added.partition_keys]
        out["record_s_per_event"] = record(instance, "query_scan", keys) / len(keys)
        for name in SENSORS:  # no cursor: each tick does its work (the hour's requests, the new scans)
            seconds, heap_mb = timed(lambda name=name: tick(getattr(sensors, name)))
            out["ticks"][name] = {"s": seconds, "heap_mb": heap_mb}
            say(f"{n_cameras} cameras: {name} {seconds:.3f} s, heap peak {heap_mb:.1f} MB")
        out["devices_load_s"] = timed(lambda: load_devices(os.environ["PTZ_DEVICES"]))[0]
        requested = len(tick(getattr(sensors, SCHEDULE)).run_requests)
        if requested != out["sites"]:
            raise SystemExit(f"{SCHEDULE} requested {requested} runs for {out['sites']} sites")

        hours = recent_hours(now, 2)
        partition = {}
        with code_location(instance) as context:
            from dagster_graphql.test.utils import execute_dagster_graphql

            def query() -> None:
                result = execute_dagster_graphql(
                    context.create_request_context(), PARTITION_QUERY,
                    {"assetKey": {"path": ["orientation_offsets"]}},
                )  # fmt: skip
                if result.errors:
                    raise RuntimeError(f"partition status query failed: {result.errors}")

            for label, hour in (("cold", hours[0]), ("incremental", hours[1]), ("warm", None)):
                if hour is not None:
                    record(instance, "orientation_offsets", [f"{k}|{hour}" for k in added.partition_keys])
                t0 = time.perf_counter()
                query()
                partition[label] = time.perf_counter() - t0
                say(f"{n_cameras} cameras: partition status ({label}) {partition[label]:.2f} s")
        out["partition_s"] = partition
        out["hours"] = len(hourly_partitions.get_partition_keys(current_time=now))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


class CpuTimers(Timers):
    """Timers counting CPU seconds of the calling thread instead of wall time, nesting tracked per thread
    (capture runs its cameras in threads); ``patched`` wraps the same calls as bench.pipeline's."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, category: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed_call(*args: object, **kwargs: object) -> object:
            children = self._local.__dict__.setdefault("children", [])
            children.append(0.0)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - t0
                with self._lock:
                    self.seconds[category] += elapsed - children.pop()
                if children:
                    children[-1] += elapsed

        return timed_call


def site_accuracy(bench: object, hour: str) -> list[dict]:
    """Per camera of ``bench``: |estimate - simulator truth| (max over yaw, pitch, roll, degrees), the largest
    |error|/σ, and how far the mount moved during its reference and query scans (degrees,
    :func:`ptz_pipeline.sim.truth.mount_motion_deg`: the truth's approximation); None for a failed row."""
    import numpy as np

    from ptz_pipeline import scans, versions
    from ptz_pipeline.partitions import hour_start
    from ptz_pipeline.sim.truth import mount_motion_deg, true_drift

    rows = bench.resources["iceberg"].read_rows()
    start, out = hour_start(hour), []
    for cam in bench.fleet.cameras():
        row = rows[rows["partition_key"] == f"{cam.key}|{hour}"]
        if row.empty or not row.iloc[0]["success"]:
            out.append({"camera": cam.key, "error_deg": None})
            continue
        row = row.iloc[0]
        error = np.abs(np.subtract([row[f"{a}_offset"] for a in ("yaw", "pitch", "roll")],
                                   true_drift(bench.storage, cam, start)))  # fmt: skip
        sigma = np.array([row[f"sigma_{a}"] for a in ("yaw", "pitch", "roll")])
        references = versions.list_versions(bench.storage, cam.deployment, cam.name, "reference")
        motion = {}
        for scan, prefix in (
            ("reference", versions.valid_at(references, start)[0].prefix),
            ("query", scans.query_prefix(cam.deployment, cam.name, start)),
        ):
            frames = scans.read_manifest(bench.storage, prefix).frames
            motion[scan] = mount_motion_deg(cam.backend, [f.timestamp for f in frames])
        out.append({"camera": cam.key, "error_deg": float(error.max()),
                    "error_sigmas": float(np.max(error / sigma)), "motion_deg": motion})  # fmt: skip
    return out


def site_hour(tmp: Path, n_cameras: int) -> dict:
    """One site of ``n_cameras`` calibrated, then one hour captured and estimated: CPU s by category."""
    import torch
    from threadpoolctl import threadpool_limits

    from bench.pipeline import Bench, camera_entry
    from ptz_pipeline.partitions import camera_hour_range_tags, recent_hours
    from ptz_pipeline.resources.estimation import DriftEstimationResource
    from ptz_pipeline.settings import model_dir

    torch.set_num_threads(1)
    bench = Bench(
        tmp, {"site-000": [camera_entry(f"cam-{i:02d}", i + 1, E2E) for i in range(n_cameras)]},
        DriftEstimationResource(model_dir=str(model_dir())),
    )  # fmt: skip
    say(f"site-hour sample: calibrating {n_cameras} cameras (DISK, {E2E.width}x{E2E.height})")
    calibration_s = bench.calibrate(say)
    hours = recent_hours(datetime.now(UTC), 1)
    timers, estimation = CpuTimers(), bench.resources["estimation"]
    matcher = estimation.matcher()
    runs = {}
    with (
        threadpool_limits(1),
        timers.patched(estimation.extractor()),
        mock.patch.object(matcher, "match", timers.wrap("matching", matcher.match)),
    ):
        for job in ("capture_queries", "estimate_offsets"):
            timers.reset()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = bench.run(job, tags=camera_hour_range_tags(bench.keys, hours))
            runs[job] = {
                "ok": result.success,
                "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0,
                "work_s": {c: timers.seconds.get(c, 0.0) for c in CATEGORIES},
            }
            say(f"site-hour sample: {job} {runs[job]['wall_s']:.1f} s wall, {runs[job]['cpu_s']:.1f} s CPU")
    accuracy = site_accuracy(bench, hours[0])
    for camera in accuracy:
        say(f"site-hour sample: {camera}")
    return {"cameras": n_cameras, "calibration_s": calibration_s, "runs": runs, "accuracy": accuracy}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def per_camera_hour(sample: dict) -> dict[str, float]:
    """CPU seconds per camera-hour by category over the sample's two runs; Dagster = the rest of the runs'
    process CPU."""
    runs = sample["runs"].values()
    split = {LABELS[c]: sum(r["work_s"][c] for r in runs) / sample["cameras"] for c in CATEGORIES}
    split["Dagster"] = sum(r["cpu_s"] - sum(r["work_s"].values()) for r in runs) / sample["cameras"]
    return split


def fleet_table(results: list[dict]) -> str:
    headers = ["cameras", "sites", "load_devices s", "devices_sensor 1st tick s"]
    headers += [f"{name} tick s" for name in SENSORS]
    headers += ["tick heap peak MB", "partition status cold s", "incremental s", "warm s", "peak RSS MB"]
    rows = []
    for r in results:
        ticks, partition = r["ticks"], r["partition_s"]
        row = [r["cameras"], r["sites"], r["devices_load_s"], r["devices_first_tick_s"]]
        row += [ticks[name]["s"] for name in SENSORS]
        row += [max(t["heap_mb"] for t in ticks.values()), *partition.values(), r["peak_rss_mb"]]
        rows.append(row)
    return markdown_table(headers, rows)


def final_line(r: dict) -> str:
    others = max(r["ticks"][name]["s"] for name in SENSORS if name != SCHEDULE)
    return (
        f"cameras={r['cameras']} schedule_tick_s={r['ticks'][SCHEDULE]['s']:.3f} sensor_tick_s={others:.3f} "
        f"partition_s={max(r['partition_s'].values()):.3f} peak_rss_mb={r['peak_rss_mb']:.0f}"
    )


def report(results: list[dict], sample: dict) -> str:
    """The 'fleet' section body."""
    split = per_camera_hour(sample)
    cpu = sum(split.values())
    runs = sample["runs"]
    site_cpu = sum(r["cpu_s"] for r in runs.values())
    dagster_share = split["Dagster"] * sample["cameras"] / site_cpu
    measured = [a for a in sample["accuracy"] if a["error_deg"] is not None]
    if not measured:
        raise SystemExit("site-hour sample: no camera-hour was estimated")
    worst = max(measured, key=lambda a: a["error_deg"])
    motion = max(max(a["motion_deg"].values()) for a in measured)
    largest = results[-1]
    slow = [name for name, t in largest["ticks"].items() if t["s"] > TICK_TARGET_S]
    partition_ok = max(largest["partition_s"].values()) <= PARTITION_TARGET_S
    extrapolated = [
        [r["cameras"], 2 * r["sites"], r["cameras"] * cpu, r["cameras"] * cpu / 3600, r["cameras"] * cpu / 2]
        for r in results
    ]
    return "\n".join(
        [
            "### 1. Sensor ticks and the UI's partition status by fleet size",
            "",
            f"Synthetic fleets in sites of {SITE_SIZE} simulated cameras (half active, half passive), each "
            "size in its own process on a temporary SQLite instance; the definitions are "
            "`ptz_pipeline.definitions` loaded with that devices.yaml. Ticks: the sensors' evaluation "
            "functions with `dg.build_sensor_context` (median of 3; the hourly sensors and "
            "offsets_after_capture without a cursor, i.e. doing their hour's work: one run request per "
            "site; offsets after the hour's query_scan materializations of every camera); heap peak = "
            "Python allocations during one tick (tracemalloc). Partition status: the UI's GraphQL "
            f"`assetPartitionStatuses` of orientation_offsets over {largest['hours']} hourly partitions "
            "(2026-01-01 to now) x the cameras, after 1 hour x all cameras of materializations (cold: "
            "Dagster builds its status cache), after a 2nd hour (incremental) and again (warm). A full year "
            "of materializations (8.76 M events at 1,000 cameras) was not recorded: a runless "
            f"materialization costs {largest['record_s_per_event'] * 1000:.0f} ms on SQLite here; the cached "
            "status holds ranges, so it grows with the gaps in the history, not with the number of keys. "
            "Peak RSS: the whole measuring process (definitions, torch imported).",
            "",
            fleet_table(results),
            "",
            f"At {largest['cameras']} cameras: every tick <= {TICK_TARGET_S:.0f} s: {_met(not slow)}"
            + (f" ({', '.join(slow)}; `load_devices` parses devices.yaml on every tick)" if slow else "")
            + f"; partition status <= {PARTITION_TARGET_S:.0f} s: {_met(partition_ok)}.",
            "",
            f"### 2. One site-hour ({sample['cameras']} cameras) and the CPU of a camera-hour",
            "",
            f"One site of {sample['cameras']} simulated active cameras "
            f"({E2E.width}x{E2E.height}, {len(E2E.ptz_stops)} query stops, "
            f"reference scan of {E2E.grid_pans} stops "
            f"{300 / (E2E.grid_pans - 1):.0f}° apart, overlapping; chessboard intrinsics; calibration "
            f"{sample['calibration_s']:.0f} s, not counted), then one "
            "`capture_queries` run and one `estimate_offsets` run over the site's hour "
            "(`execute_in_process`, SQLite, DISK on CPU, torch and BLAS on one thread). CPU seconds of the "
            "calling thread inside each category's calls (capture = the simulator's render, standing in for "
            "a camera's RTSP frame; DISK = feature extraction; matching = mutual nearest neighbours; "
            "estimation = RANSAC, refinement, least squares; storage = images, features and manifests; "
            "Iceberg = the row commit); Dagster = the run's process CPU minus those. Estimates "
            f"{len(measured)}/{len(sample['accuracy'])} succeeded, max |error| vs the simulator "
            f"{worst['error_deg']:.4f}° ({worst['camera']}), max |error|/σ "
            f"{max(a['error_sigmas'] for a in measured):.1f}; the simulated mounts moved at most "
            f"{motion:.5f}° during a reference or query scan (the truth's approximation).",
            "",
            markdown_table(
                ["run", "wall s", "CPU s", *(LABELS[c] + " s" for c in CATEGORIES), "Dagster s"],
                [
                    [
                        job,
                        r["wall_s"],
                        r["cpu_s"],
                        *(r["work_s"][c] for c in CATEGORIES),
                        r["cpu_s"] - sum(r["work_s"].values()),
                    ]
                    for job, r in runs.items()
                ],  # fmt: skip
            ),
            "",
            "CPU seconds per camera-hour:",
            "",
            markdown_table([*split, "total"], [[*split.values(), cpu]]),
            "",
            f"Dagster overhead **{100 * dagster_share:.1f} %** of the site-hour's CPU (target <= "
            f"{100 * DAGSTER_TARGET:.0f} %: {_met(dagster_share <= DAGSTER_TARGET)}), in-process; a run "
            "launched in its own process or pod also pays its start (Python, torch and definitions imports: "
            "~3-4 s, see the pipeline section), i.e. ~0.3-0.4 s per camera-hour at 10 cameras a site.",
            "",
            "### 3. One hour of the whole fleet (extrapolated from the site-hour)",
            "",
            "Grouped runs: one capture and one estimation run per site and hour. CPU = cameras x "
            f"{cpu:.2f} s (active cameras at 5 stops; a passive camera's one frame costs less).",
            "",
            markdown_table(
                [
                    "cameras",
                    "runs per hour",
                    "CPU s per hour",
                    "cores busy (hourly cadence)",
                    "wall s on 2 cores",
                ],
                extrapolated,
            ),  # fmt: skip
            "",
            f"**Sizing (hourly cadence): {3600 / cpu:.0f} cameras per CPU core** (DISK on CPU, 640x480, "
            "5 stops, one thread per run); per GPU-hour: not measured (no GPU here).",
            "",
            "Final lines:",
            "",
            "```",
            *(final_line(r) for r in results),
            "```",
        ]
    )


def run_size(n_cameras: int) -> dict:
    """Parts 1-3 for ``n_cameras`` in a fresh process started with the fleet's environment."""
    tmp, env = fleet_workdir(n_cameras)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.fleet", "--measure", str(n_cameras)],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, check=True, text=True,
        ).stdout  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", default="10,100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="3-camera site sample; prints, writes nothing")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # the per-size process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_fleet(args.measure)))
        return 0
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    results = [run_size(int(n)) for n in args.cameras.split(",")]
    with tempfile.TemporaryDirectory(prefix="ptz-bench-site-hour-") as tmp:
        os.environ["DAGSTER_HOME"] = tmp  # nothing may reach the user's instance
        sample = site_hour(Path(tmp) / "site", 3 if args.quick else SITE_SIZE)
    import dagster as dg

    body = (
        f"Dagster {dg.__version__}; the CPU is shared with other work: load average {load_before[0]:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end; whole bench {time.perf_counter() - t_start:.0f} s."
        f"\n\n{report(results, sample)}"
    )
    print("\n" + body + "\n")
    if not args.quick:
        write_section("fleet", COMMAND, body)
    for r in results:
        print(final_line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
