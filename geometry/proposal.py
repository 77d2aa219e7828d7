"""R_align proposals: when a camera's drift has settled at one rotation Δ, propose the alignment that makes
the drift read zero again.

Conventions (:mod:`geometry.rotations`): the true mount orientation is ``R_WB = R_align · Δ`` with
``Δ = drift_matrix(yaw, pitch, roll)``. With ``R_align' = R_align · Δ̄`` the drift measured afterwards is
``Δ̄⁻¹ · Δ``, which is the identity while the mount stays where it settled.

A proposal needs (:func:`propose_r_align`): a trend over the last ``trend_hours`` (at least
``min_trend_hours`` of history) that is stable or a step (creep or an oscillation means the drift keeps
changing, so no single Δ is right for long) and fits with a noise scale of at most ``max_noise_scale``; the
latest valid hour at most ``max_missing_hours`` before the history's last row (failed hours are NaN rows)
and consistent with that trend (not an outlier: it may be the start of a new change); the last
``hours`` (N) valid hours after any step, with at most ``max_missing_hours`` failed or outlier hours among
them, all within ``consistency_z`` σ of their mean and without a significant slope; and a mean drift of at
least ``min_drift_deg`` in some angle. Otherwise the result says which condition failed.

Units: degrees, hours (the history's axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from geometry.rotations import drift_angles, drift_matrix, mean_rotation, rotation_angle_deg
from geometry.trend import ANGLES, OffsetHistory, TrendConfig, TrendResult, classify_trend


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of :func:`propose_r_align` (degrees, hours)."""

    hours: int = 6
    """N: consecutive valid hours that must show the same drift."""
    max_missing_hours: int = 2
    """Failed or outlier hours allowed among the N (they lie within N + this consecutive hours)."""
    consistency_z: float = 3.5
    """Every angle of each of the N hours lies within this many σ (times the trend's noise scale) of the
    mean."""
    slope_z: float = 3.0
    """A slope within the N hours beyond this many of its σ means the mount is still moving."""
    min_drift_deg: float = 0.02
    """Below this in every angle (degrees), the drift is not worth a new alignment."""
    trend_hours: float = 72.0
    """The trend is classified over the hours in [last valid hour - this, last valid hour]."""
    min_trend_hours: float = 48.0
    """Fewest hours from the first to the last valid hour of that window: a shorter history cannot rule out
    a daily oscillation (two periods are needed to see one)."""
    max_noise_scale: float = 3.0
    """A trend whose noise scale s is larger fits the history badly (σ far too small, or a change that no
    model describes): no proposal."""
    trend: TrendConfig = field(default_factory=TrendConfig)

    def __post_init__(self) -> None:
        if self.hours < 2 or self.max_missing_hours < 0:
            raise ValueError("hours must be >= 2 and max_missing_hours >= 0")
        if self.consistency_z <= 0 or self.slope_z <= 0 or self.min_drift_deg < 0:
            raise ValueError("consistency_z and slope_z must be > 0, min_drift_deg >= 0")
        if not 0 <= self.min_trend_hours <= self.trend_hours or self.max_noise_scale < 1:
            raise ValueError("need 0 <= min_trend_hours <= trend_hours and max_noise_scale >= 1")


@dataclass(frozen=True)
class AlignProposal:
    """A proposed ``R_align' = R_align · Δ̄`` with its evidence, or the reason there is none.

    ``delta`` Δ̄: the weighted chordal mean (:func:`geometry.rotations.mean_rotation`, weights 1 / mean σ²
    of the hour) of the drift over ``hours_used``; ``delta_deg`` its yaw, pitch, roll and ``delta_sigma_deg``
    their 1-σ (degrees, scaled by the trend's noise scale); ``spread_deg``: the largest angle (degrees)
    between one hour's drift and Δ̄. When refused, ``proposed`` is False, ``reason`` says why, and the
    matrices and angles are NaN unless they were computed before the refusal.
    """

    proposed: bool
    reason: str
    R_align: np.ndarray
    delta: np.ndarray
    delta_deg: tuple[float, float, float]
    delta_sigma_deg: tuple[float, float, float]
    spread_deg: float
    hours_used: tuple[float, ...]
    trend: TrendResult


def propose_r_align(
    R_align: np.ndarray, history: OffsetHistory, config: ProposalConfig | None = None
) -> AlignProposal:
    """Propose ``R_align · Δ̄`` when the drift of ``history`` (measured against ``R_align``) has stayed at one
    Δ̄ for the last N valid hours; see the module docstring for the conditions. ``history``: the camera's
    hours up to now, failed hours included as NaN rows (a camera that stopped answering is not settled)."""
    config = config or ProposalConfig()
    R_align = np.asarray(R_align, dtype=float)
    if R_align.shape != (3, 3) or not np.allclose(R_align.T @ R_align, np.eye(3), atol=1e-6):
        raise ValueError("R_align must be a 3x3 rotation matrix")
    valid_hours = history.hours[np.any(history.valid, axis=1)]
    recent = history.window(valid_hours[-1] - config.trend_hours) if len(valid_hours) else history
    trend = classify_trend(recent, config.trend)
    nan = float("nan")
    refused = AlignProposal(
        False,
        "",
        np.full((3, 3), nan),
        np.full((3, 3), nan),
        (nan, nan, nan),
        (nan, nan, nan),
        nan,
        (),
        trend,
    )
    if trend.trend in ("insufficient", "creep", "oscillation"):
        verb = "" if trend.trend == "insufficient" else "drift keeps changing: "
        return replace(refused, reason=f"{verb}{trend.reason}")
    rows = np.flatnonzero(np.any(recent.valid, axis=1))
    span = float(recent.hours[rows[-1]] - recent.hours[rows[0]])
    if span < config.min_trend_hours:
        return replace(
            refused,
            reason=f"history too short: {span:g} h of the {config.min_trend_hours:g} h needed to rule out a "
            "daily oscillation",
        )
    if trend.noise_scale > config.max_noise_scale:
        return replace(
            refused,
            reason=f"the {trend.trend} trend fits badly (noise scale {trend.noise_scale:.1f} > "
            f"{config.max_noise_scale:g}): σ far too small or an unmodelled change",
        )
    usable = np.all(recent.valid, axis=1) & ~np.any(trend.outliers, axis=1)
    latest = rows[-1]
    silent = float(recent.hours[-1] - recent.hours[latest])
    if silent > config.max_missing_hours:
        return replace(
            refused,
            reason=f"no valid hour in the last {silent:g} h (since hour {recent.hours[latest]:g}): waiting "
            "for new estimates",
        )
    if not usable[latest]:
        return replace(
            refused,
            reason=f"the latest hour {recent.hours[latest]:g} disagrees with the {trend.trend} trend (an "
            "outlier or a new change): waiting for consistent hours",
        )
    since = ""
    if trend.trend == "step":
        usable &= recent.hours >= trend.step_hour
        since = f" since the step at hour {trend.step_hour:g}"
    used = np.flatnonzero(usable)[-config.hours :]
    hours_used = tuple(float(h) for h in recent.hours[used])
    refused = replace(refused, hours_used=hours_used)
    if len(used) < config.hours:
        return replace(refused, reason=f"too few hours: {len(used)} valid of {config.hours}{since}")
    used_span = hours_used[-1] - hours_used[0]
    if used_span > config.hours - 1 + config.max_missing_hours:
        return replace(
            refused,
            reason=f"the last {config.hours} valid hours{since} span {used_span:g} h: more than "
            f"{config.max_missing_hours} missing",
        )
    angles = recent.angles_deg[used]
    sigma = np.sqrt(recent.sigma_deg[used] ** 2 + config.trend.floor_deg**2) * trend.noise_scale
    weights = 1.0 / np.mean(sigma**2, axis=1)
    delta = mean_rotation(np.stack([drift_matrix(*a) for a in angles]), weights)
    delta_deg = drift_angles(delta)
    s0, s1, s2 = np.sqrt(weights**2 @ sigma**2) / weights.sum()
    spread = max(rotation_angle_deg(drift_matrix(*a), delta) for a in angles)
    refused = replace(
        refused,
        delta=delta,
        delta_deg=delta_deg,
        delta_sigma_deg=(float(s0), float(s1), float(s2)),
        spread_deg=spread,
    )
    z = np.abs(angles - np.asarray(delta_deg)) / sigma
    if z.max() > config.consistency_z:
        i, a = np.unravel_index(np.argmax(z), z.shape)
        return replace(
            refused,
            reason=f"not settled: at hour {hours_used[i]:g} {ANGLES[a]} is off the mean of the last "
            f"{config.hours} hours by {angles[i, a] - delta_deg[a]:+.4f}° ({z[i, a]:.1f} σ)",
        )
    t, w = recent.hours[used][:, None], 1.0 / sigma**2
    t_w = t - (w * t).sum(axis=0) / w.sum(axis=0)  # hours centred on each angle's weighted mean
    slope = (w * t_w * angles).sum(axis=0) / (w * t_w**2).sum(axis=0)
    slope_z = np.abs(slope) * np.sqrt((w * t_w**2).sum(axis=0))
    if slope_z.max() > config.slope_z:
        a = int(np.argmax(slope_z))
        return replace(
            refused,
            reason=f"still moving: {ANGLES[a]} {slope[a] * 24:+.4f}°/day ({slope_z[a]:.1f} σ) over the last "
            f"{config.hours} hours",
        )
    if np.max(np.abs(delta_deg)) < config.min_drift_deg:
        return replace(
            refused, reason=f"nothing to correct: drift below {config.min_drift_deg}° in every angle"
        )
    summary = ", ".join(
        f"{name} {d:+.4f} ± {s:.4f}°"
        for name, d, s in zip(ANGLES, delta_deg, refused.delta_sigma_deg, strict=True)
    )
    return replace(
        refused,
        proposed=True,
        reason=f"drift {summary} steady for {config.hours} hours{since} (spread {spread:.4f}°)",
        R_align=R_align @ delta,
    )
