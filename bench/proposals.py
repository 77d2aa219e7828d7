"""R_align proposal benchmark on the simulator, through the Dagster assets: hours from a step drift to a
proposal, the proposal's error, and the drift read after applying it; writes the 'proposals' section of
BENCHMARKS.md.

Per step (STEPS), one simulated camera (320x240 frames with the renderer's nuisances, a reference row of 6
stops, 2 query stops, no drift but the step) on a temporary Dagster instance and data folder: calibrated
(calibrate_simulated), HISTORY_HOURS hours captured and estimated at drift 0, then the mount steps (a new
devices.yaml) and stays. Each following hour is captured, estimated, and r_align_proposal asked with the
production defaults (RAlignProposalConfig: N = 6 hours, trend over 72 h, at least 48 h of history) until it
proposes; the proposal is applied (r_align with apply_proposal, the version clock set between two hours) and
AFTER_HOURS more hours are estimated against the new R_align version. Truth: the step itself (the mount
does not move otherwise).

Measured: the mean offsets read at drift 0 before the step (the estimator's bias on this camera), hours from
the step to the proposal (the hours estimated at the new level when it came), failed estimates (a failed
hour is a failure row, missing for the proposal, as in production), the proposal Δ, its error
(largest angle of Δ_proposal - Δ_true, degrees) and σ, the largest |offset| read over the hours after
applying (the residual), and wall time.

Run from the repository root: .venv/bin/python -m bench.proposals [--quick]
(``--quick``: the first step only, printed, BENCHMARKS.md untouched)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import dagster as dg
import numpy as np
import yaml
from pyiceberg.utils.config import Config

from bench.report import markdown_table, write_section
from ptz_pipeline import proposals, versions
from ptz_pipeline.assets.proposal import R_ALIGN_PROPOSAL, RAlignProposalConfig
from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.devices import load_devices
from ptz_pipeline.partitions import camera_hour_range_tags, camera_partitions, hour_key, hour_start
from ptz_pipeline.resources.iceberg import CATALOG_NAME
from ptz_pipeline.settings import local_resources

COMMAND = ".venv/bin/python -m bench.proposals"
STEPS: tuple[tuple[float, float, float], ...] = ((0.4, 0.0, 0.0), (0.1, -0.15, 0.05))
"""Mount steps (yaw, pitch, roll degrees): a bumped pole, a small step in every angle."""
HISTORY_HOURS = 48
"""Hours at drift 0 before the step: ProposalConfig.min_trend_hours of history."""
MAX_WAIT_HOURS = 24
"""Hours after the step within which a proposal must come."""
AFTER_HOURS = 6
"""Hours estimated after applying the proposal."""
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CAMERA = "bench__cam-1"


def _devices(path: Path, step: tuple[float, float, float]) -> Path:
    """devices.yaml of the one camera with its mount stepped by ``step`` (degrees)."""
    camera = {
        "name": "cam-1",
        "mode": "active",
        "ptz_stops": [[0.0, -18.0, 0.0], [120.0, -18.0, 0.0]],
        "reference": {
            "horizontal_stops": 6, "vertical_stops": 1, "pan_min": 0, "pan_max": 300, "tilt_min": -18,
            "tilt_max": -18, "zoom": 0.0,
        },
        "backend": {
            "kind": "simulated", "image_width": 320, "image_height": 240, "hfov_deg": 60.0,
            "mount_ypr_deg": [30.0, 1.0, -0.5], "drift_amplitude_deg": [0.0, 0.0, 0.0],
            "drift_offset_deg": list(step), "seed": 1,
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump([{"name": "bench", "cameras": [camera]}]))
    return path


class _Runs:
    """Jobs of the definitions for one devices.yaml, on a shared instance and data folder."""

    def __init__(self, data: Path, devices: Path, instance: dg.DagsterInstance) -> None:
        self.resources = local_resources(str(data), str(devices))
        self.defs = build_definitions(self.resources)
        self.instance = instance
        self.camera = load_devices(devices).camera(CAMERA)

    def run(self, job: str, check: bool = True, **kwargs: object) -> dg.ExecuteInProcessResult:
        """Run ``job`` in process; RuntimeError when it fails, unless ``check`` is False."""
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=kwargs.pop("run_config", QUIET), **kwargs
        )
        if check and not result.success:
            raise RuntimeError(f"{job} failed: {result.get_step_failure_events()}")
        return result

    def hours(self, job: str, hours: list[str]) -> None:
        """``job`` over these hours of the camera; a failed estimate is that hour's failure row, as in
        production (the proposal counts it as a missing hour), so only capture must succeed."""
        self.run(job, check=job != "estimate_offsets", tags=camera_hour_range_tags([CAMERA], hours))

    def materialize(self, asset: dg.AssetKey, config: dict) -> None:
        """The camera's partition of ``r_align`` or ``r_align_proposal`` with this asset config."""
        run_config = {**QUIET, "ops": {asset.path[-1]: {"config": config}}}
        job = "calibrate_camera" if asset.path[-1] == "r_align" else "drift_view"
        self.run(job, partition_key=CAMERA, asset_selection=[asset], run_config=run_config)


def _first_proposal(runs: _Runs, hours: list[str]) -> tuple[int, proposals.ProposalRecord] | None:
    """Estimate ``hours`` one at a time, asking r_align_proposal (production defaults) after each: (hours
    estimated, the record) at the first proposal, None when none came."""
    cam, defaults = runs.camera, RAlignProposalConfig().model_dump()
    for waited, hour in enumerate(hours, start=1):
        runs.hours("estimate_offsets", [hour])
        runs.materialize(R_ALIGN_PROPOSAL, defaults)
        _, record = proposals.read_proposal(runs.resources["storage"], cam.deployment, cam.name)
        if record.proposed:
            return waited, record
    return None


def _angles(values: Iterable[float]) -> str:
    """(yaw, pitch, roll) in degrees, 4 decimals."""
    return "(" + ", ".join(f"{v:+.4f}" for v in values) + ")"


def converge(step: tuple[float, float, float], tmp: Path) -> list[object]:
    """One step's table row (see the module docstring and the headers in main)."""
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    total = HISTORY_HOURS + MAX_WAIT_HOURS + AFTER_HOURS
    hours = [hour_key(now - timedelta(hours=n)) for n in range(total, 0, -1)]
    history, later = hours[:HISTORY_HOURS], hours[HISTORY_HOURS:]
    clock = [hour_start(hours[0]) - timedelta(hours=1)]
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp / "home"))
    instance.add_dynamic_partitions(camera_partitions.name, [CAMERA])
    with mock.patch.object(versions, "utc_now", lambda: clock[0]):
        before = _Runs(tmp / "data", _devices(tmp / "before.yaml", (0.0, 0.0, 0.0)), instance)
        calibrate_simulated(before.run, before.resources["storage"], before.camera)
        before.hours("capture_queries", history)
        before.hours("estimate_offsets", history)
        after = _Runs(tmp / "data", _devices(tmp / "after.yaml", step), instance)
        after.hours("capture_queries", later)
        found = _first_proposal(after, later[:MAX_WAIT_HOURS])
        if found is None:
            return [step, "-", f"none in {MAX_WAIT_HOURS}", "-", "-", "-", "-", "-", time.perf_counter() - t0]
        waited, record = found
        applied = later[waited : waited + AFTER_HOURS]
        clock[0] = hour_start(applied[0]) - timedelta(minutes=30)
        after.materialize(dg.AssetKey("r_align"), {"apply_proposal": True})
        after.hours("estimate_offsets", applied)
    rows = after.resources["iceberg"].read_rows().set_index("timestamp")
    offsets = rows[["yaw_offset", "pitch_offset", "roll_offset"]]
    bias = offsets[offsets.index < hour_start(later[0])].mean().to_numpy()
    residual = float(offsets[offsets.index >= hour_start(applied[0])].abs().to_numpy().max())
    error = float(np.abs(np.subtract(record.delta_deg, step)).max())
    return [
        _angles(step),
        _angles(bias),
        waited,
        int((~rows["success"].astype(bool)).sum()),
        _angles(record.delta_deg),
        error,
        max(record.delta_sigma_deg),
        residual,
        time.perf_counter() - t0,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first step only; print, do not write")
    args = parser.parse_args()
    if Config().get_catalog_config(CATALOG_NAME):
        sys.exit(f"pyiceberg configures a '{CATALOG_NAME}' catalog: unset it, the bench writes its own rows")
    rows = []
    for step in STEPS[:1] if args.quick else STEPS:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(converge(step, Path(tmp)))
            print(rows[-1], flush=True)
    headers = [
        "step (yaw, pitch, roll) °",
        "read at drift 0 (mean) °",
        "hours to proposal",
        "failed hours",
        "proposal Δ °",
        "error °",
        "σ °",
        "residual °",
        "wall s",
    ]
    body = "\n\n".join(
        [
            "The assets on the simulator (bench/proposals.py's docstring: one camera at 320x240 with the "
            f"renderer's nuisances, {HISTORY_HOURS} h at drift 0, then a step that stays). r_align_proposal "
            "with the production defaults (N = 6 hours, trend over 72 h with 48 h of history) asked after "
            "each hour's estimate; the proposal applied (r_align with apply_proposal) and "
            f"{AFTER_HOURS} more hours estimated against the new version. Read at drift 0: the mean "
            f"offsets of the {HISTORY_HOURS} hours before the step (the estimator's bias on this camera). "
            "Hours to proposal: the hours estimated at the new level when it came; failed hours: estimates "
            "that failed (of all hours; a failed hour counts as missing). Error: largest angle of "
            "Δ_proposal - step; σ: the proposal's largest 1-σ; residual: the largest |offset| of the hours "
            "after applying.",
            markdown_table(headers, rows),
        ]
    )
    print(body)
    if not args.quick:
        write_section("proposals", COMMAND, body)


if __name__ == "__main__":
    main()
