"""Ground truth for simulated cameras: the drift the pipeline should report for a stored query scan."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from geometry.rotations import drift_angles, mean_rotation
from ptz_pipeline import scans, versions
from ptz_pipeline.devices import CameraConfig, SimulatedBackend


def _mean_mount(spec: SimulatedBackend, times: list[datetime]) -> np.ndarray:
    return mean_rotation(np.stack([spec.R_WB(t) for t in times]))


def mount_motion_deg(spec: SimulatedBackend, times: list[datetime]) -> float:
    """Largest angle (degrees) between the mount at any of ``times`` (a scan's frames) and its mean over them:
    how far the scan is from a rigid set of views, i.e. the scale of :func:`true_drift`'s approximation."""
    mean = _mean_mount(spec, times)
    cosines = [(np.trace(mean.T @ spec.R_WB(t)) - 1.0) / 2.0 for t in times]
    return float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))


def true_drift(
    storage: scans.Storage, cam: CameraConfig, hour: datetime
) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) degrees of the query scan's mount relative to the reference scan's, from the
    simulator's truth at the frames' capture times; None for real cameras or missing scans."""
    if not isinstance(cam.backend, SimulatedBackend):
        return None
    references = versions.list_versions(storage, cam.deployment, cam.name, "reference")
    if not references:
        return None
    ref = scans.read_manifest(storage, versions.valid_at(references, hour)[0].prefix)  # the one the hour used
    query = scans.read_manifest(storage, scans.query_prefix(cam.deployment, cam.name, hour))
    if ref is None or query is None:
        return None
    R_ref = _mean_mount(cam.backend, [f.timestamp for f in ref.frames])
    R_query = _mean_mount(cam.backend, [f.timestamp for f in query.frames])
    return drift_angles(R_ref.T @ R_query)
