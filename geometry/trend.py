"""Drift trend of one camera: is its hourly drift history stable, or did the mount step, creep or oscillate?

Input: one camera's hourly drift estimates (:class:`OffsetHistory`: hours, yaw/pitch/roll in degrees with a
1-σ each; failed hours are NaN or absent). Five models are fitted to the three angles jointly by weighted
least squares, weights ``1 / (σ² + floor²)`` (the floor stands for jitter the estimator does not model):

- ``constant``: one level per angle (3 parameters);
- ``step``: a level per angle before and after one hour common to the angles (6 + 1: the hour, scanned over
  every split with ``min_step_samples`` valid hours on each side): a bumped pole moves all angles at once;
- ``line`` and ``parabola``: a polynomial in time per angle (6 or 9): creep, e.g. a settling pole;
- ``oscillation``: a level and a sinusoid per angle with a common period (9 + 1: the period, scanned from
  ``min_period_hours`` to span / ``min_cycles`` and refined): thermal, day-night.

The model with the smallest BIC, ``χ² / s² + k ln n`` (k parameters, n valid angle-hours), wins. ``s >= 1``
is the smallest robust scale (1.4826 median |r / σ|) of the models' normalised residuals r / σ, so σ
reported too small make s larger instead of inventing trends. Residuals beyond ``outlier_z`` s σ of the
winning model are outliers: they are dropped and the models fitted again. A model whose effect (step size,
total creep over the history, oscillation amplitude) stays below ``min_effect_deg`` in every angle counts as
stable. The confidence is the BIC weight of the class: ``exp(-BIC / 2)`` summed over the models of that
class, normalised over all models fitted. Creep is any parabola: its monotony within the history is not
checked.

Units: hours (any origin, e.g. hours since the Unix epoch), degrees, degrees per day for creep rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ANGLES = ("yaw", "pitch", "roll")
"""Order of the angle columns everywhere in this module."""

Trend = Literal["stable", "step", "creep", "oscillation", "insufficient"]
"""The class of a history; ``insufficient``: too few valid hours to say (the result's reason says why)."""

_CLASS_OF_MODEL: dict[str, Trend] = {
    "constant": "stable",
    "step": "step",
    "line": "creep",
    "parabola": "creep",
    "oscillation": "oscillation",
}
_MAD_TO_SIGMA = 1.4826
"""σ of a normal distribution per median absolute deviation."""
_RIDGE = 1e-12
"""Relative ridge added to the normal matrices (of the mean diagonal)."""


@dataclass(frozen=True)
class OffsetHistory:
    """One camera's hourly drift estimates: ``hours`` (n,) in hours (any origin), ``angles_deg`` (n, 3) yaw,
    pitch, roll in degrees and ``sigma_deg`` (n, 3) their 1-σ in degrees.

    Rows are sorted by hour on construction; hours must be finite and distinct. An angle that is not finite
    or whose σ is not finite and positive (a failed hour) becomes NaN, angle and σ alike.
    """

    hours: np.ndarray
    angles_deg: np.ndarray
    sigma_deg: np.ndarray

    def __post_init__(self) -> None:
        hours = np.asarray(self.hours, dtype=float)
        angles = np.asarray(self.angles_deg, dtype=float)
        sigma = np.asarray(self.sigma_deg, dtype=float)
        n = hours.shape[0] if hours.ndim == 1 else -1
        if n < 0 or angles.shape != (n, 3) or sigma.shape != (n, 3):
            raise ValueError(
                f"hours must be (n,), angles_deg and sigma_deg (n, 3); got {hours.shape}, {angles.shape}, "
                f"{sigma.shape}"
            )
        if not np.all(np.isfinite(hours)):
            raise ValueError("hours must be finite")
        order = np.argsort(hours, kind="stable")
        hours, angles, sigma = hours[order], angles[order], sigma[order]
        if np.any(np.diff(hours) == 0):
            raise ValueError(
                f"hours must be distinct; repeated: {sorted(set(hours[1:][np.diff(hours) == 0]))}"
            )
        bad = ~(np.isfinite(angles) & np.isfinite(sigma) & (sigma > 0))
        angles, sigma = np.where(bad, np.nan, angles), np.where(bad, np.nan, sigma)
        object.__setattr__(self, "hours", hours)
        object.__setattr__(self, "angles_deg", angles)
        object.__setattr__(self, "sigma_deg", sigma)

    def __len__(self) -> int:
        return len(self.hours)

    @property
    def valid(self) -> np.ndarray:
        """(n, 3) bool: the angle was estimated that hour."""
        return np.isfinite(self.angles_deg)

    def window(self, start_hour: float = -np.inf, end_hour: float = np.inf) -> OffsetHistory:
        """The rows with ``start_hour <= hour <= end_hour``."""
        keep = (self.hours >= start_hour) & (self.hours <= end_hour)
        return OffsetHistory(self.hours[keep], self.angles_deg[keep], self.sigma_deg[keep])


@dataclass(frozen=True)
class TrendConfig:
    """Settings of :func:`classify_trend` (degrees, hours)."""

    floor_deg: float = 0.001
    """Added in quadrature to every σ (degrees): jitter of the mount or the estimate that σ does not model."""
    min_samples: int = 12
    """Fewest valid hours per angle to classify at all."""
    min_step_samples: int = 4
    """Valid hours needed on each side of a step (fewer cannot be told from outliers)."""
    min_period_hours: float = 6.0
    """Shortest oscillation period searched (hours)."""
    min_cycles: float = 2.0
    """An oscillation must show this many periods within the history: the longest period searched is the
    span / min_cycles (a longer one would be indistinguishable from creep)."""
    frequency_oversampling: float = 5.0
    """Frequency grid step = 1 / (span · oversampling) before the best period is refined."""
    outlier_z: float = 5.0
    """Residuals beyond this many σ (times the noise scale s) of the winning model are outliers."""
    max_outlier_fraction: float = 0.1
    """At most this fraction of the valid angle-hours is rejected as outliers."""
    min_effect_deg: float = 0.01
    """A step, total creep over the history or oscillation amplitude below this in every angle (degrees)
    counts as stable, however significant."""

    def __post_init__(self) -> None:
        if self.floor_deg < 0 or self.min_effect_deg < 0:
            raise ValueError("floor_deg and min_effect_deg must be >= 0")
        if self.min_samples < 4 or self.min_step_samples < 1:
            raise ValueError("min_samples must be >= 4 and min_step_samples >= 1")
        if self.min_period_hours <= 0 or self.min_cycles < 1 or self.frequency_oversampling < 1:
            raise ValueError("min_period_hours must be > 0, min_cycles and frequency_oversampling >= 1")
        if self.outlier_z <= 0 or not 0 <= self.max_outlier_fraction < 0.5:
            raise ValueError("outlier_z must be > 0 and max_outlier_fraction in [0, 0.5)")


@dataclass(frozen=True)
class AngleEvidence:
    """What the chosen class says about one angle (degrees, hours; NaN where it does not apply).

    ``level_deg``: the mean (stable, oscillation), the level before the step (step) or the fitted value at the
    first valid hour (creep). σ are 1-σ, scaled by the noise scale s of the result.
    """

    angle: str
    samples: int
    """Valid hours used (outliers excluded)."""
    outliers: int
    """Hours of this angle rejected as outliers."""
    level_deg: float
    level_sigma_deg: float
    step_deg: float
    """Step: level after minus level before."""
    step_sigma_deg: float
    rate_deg_per_day: float
    """Creep: mean rate over the history (total change / span)."""
    rate_sigma_deg_per_day: float
    amplitude_deg: float
    """Oscillation: half the peak-to-peak swing."""
    amplitude_sigma_deg: float
    peak_hour: float
    """Oscillation: the hour of the last maximum within the history (on its hour axis)."""
    rms_residual_deg: float
    """Root mean square residual of the fit (degrees, unweighted)."""


@dataclass(frozen=True)
class TrendResult:
    """The class of one camera's drift history with its evidence (hours on the history's axis, degrees).

    ``step_hour``: the first valid hour at the new level (the step happened after the valid hour before it);
    ``period_hours``: the oscillation period; both NaN for other classes. ``bic``: the BIC of each model the
    history supports (``constant``, ``line``, ``parabola``, and ``step`` and ``oscillation`` when it is long
    enough for them; empty when insufficient).
    ``outliers`` (n, 3): the angle-hours rejected, rows as in the history.
    """

    trend: Trend
    confidence: float
    """BIC weight of the class among all models, 0..1 (0 when insufficient)."""
    reason: str
    angles: tuple[AngleEvidence, ...]
    step_hour: float
    period_hours: float
    noise_scale: float
    """s >= 1: robust scale of the normalised residuals; every σ here is multiplied by it."""
    bic: dict[str, float]
    outliers: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class _Fit:
    """One model fitted to all three angles: design (n, p) shared by the angles, parameters (3, p), their
    unscaled covariance (3, p, p) and χ² (3,) per angle."""

    model: str
    design: np.ndarray
    beta: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    n_params: int
    step_index: int = -1
    period_hours: float = float("nan")

    def effects_deg(self) -> np.ndarray:
        """Size of the model's change per angle (degrees): step, total creep, amplitude; 0 for constant."""
        if self.model == "step":
            return np.abs(self.beta[:, 1])
        if self.model in ("line", "parabola"):
            return np.abs(2.0 * self.beta[:, 1])  # p(+1) - p(-1) on the normalised time axis
        if self.model == "oscillation":
            return np.hypot(self.beta[:, 1], self.beta[:, 2])
        return np.zeros(3)


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of each angle on a shared design: X (..., n, p), y and w (n, 3) with y = 0
    where w = 0. Returns parameters (..., 3, p), χ² (..., 3) (from the normal equations: y should be
    centred) and the normal matrices (..., 3, p, p)."""
    p = X.shape[-1]
    outer = (X[..., :, None] * X[..., None, :]).reshape(*X.shape[:-1], p * p)  # (..., n, p²)
    A = np.moveaxis((np.swapaxes(outer, -1, -2) @ w).reshape(*X.shape[:-2], p, p, 3), -1, -3)
    b = np.swapaxes(np.swapaxes(X, -1, -2) @ (w * y), -1, -2)  # (..., 3, p)
    # A relative ridge keeps degenerate designs solvable (e.g. samples every 12 h: sin(2π t / 12 h) = 0); the
    # parameter they cannot determine then gets a huge variance instead of an error.
    A = A + _RIDGE * np.trace(A, axis1=-2, axis2=-1)[..., None, None] / p * np.eye(p)
    beta = np.linalg.solve(A, b[..., None])[..., 0]
    chi2 = np.sum(w * y * y, axis=0) - np.sum(b * beta, axis=-1)
    return beta, chi2, A


def _final_fit(
    model: str,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    n_params: int,
    step_index: int = -1,
    period_hours: float = float("nan"),
) -> _Fit:
    """A model's parameters, covariance and χ² (from the residuals) for one design X (n, p)."""
    beta, _, A = _wls(X, y, w)
    chi2 = np.sum(w * (y - X @ beta.T) ** 2, axis=0)
    return _Fit(model, X, beta, np.linalg.inv(A), chi2, n_params, step_index, period_hours)


def _sinusoid_design(t: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """[1, cos 2πft, sin 2πft] for each frequency (1/hours): (F, n, 3)."""
    phase = 2.0 * np.pi * freqs[:, None] * t[None, :]
    return np.stack([np.ones_like(phase), np.cos(phase), np.sin(phase)], axis=-1)


def _fit_models(t: np.ndarray, y: np.ndarray, w: np.ndarray, config: TrendConfig) -> list[_Fit]:
    """Every model that the history supports, fitted to centred angles y (n, 3) with weights w (n, 3); t
    (n,) hours since the first valid hour."""
    rows = np.flatnonzero(np.any(w > 0, axis=1))
    span = t[rows[-1]] - t[rows[0]]
    u = 2.0 * (t - t[rows[0]]) / span - 1.0
    ones = np.ones_like(t)
    fits = [
        _final_fit("constant", ones[:, None], y, w, 3),
        _final_fit("line", np.stack([ones, u], axis=1), y, w, 6),
        _final_fit("parabola", np.stack([ones, u, u * u], axis=1), y, w, 9),
    ]
    # Step: a split before row k is allowed when every angle has min_step_samples valid hours on each side;
    # χ² of each split from cumulative sums (up to a constant): -Σ_sides (Σ w y)² / Σ w.
    counts = np.cumsum(w > 0, axis=0)
    before = np.concatenate([np.zeros((1, 3)), counts[:-1]])
    m = config.min_step_samples
    splits = rows[np.all((before[rows] >= m) & (counts[-1] - before[rows] >= m), axis=1)]
    if len(splits):
        W, WY = np.cumsum(w, axis=0), np.cumsum(w * y, axis=0)
        W_left, WY_left = W[splits - 1], WY[splits - 1]
        score = WY_left**2 / W_left + (WY[-1] - WY_left) ** 2 / (W[-1] - W_left)
        k = int(splits[np.argmax(score.sum(axis=1))])
        X_k = np.stack([ones, (np.arange(len(t)) >= k).astype(float)], axis=1)
        fits.append(_final_fit("step", X_k, y, w, 7, step_index=k))
    # Oscillation: a frequency grid between min_cycles / span and 1 / min_period_hours, refined by a parabola
    # through the grid's best χ² and its neighbours.
    f_lo, f_hi = config.min_cycles / span, 1.0 / config.min_period_hours
    if f_lo <= f_hi:
        df = 1.0 / (span * config.frequency_oversampling)
        freqs = np.arange(f_lo, f_hi + 0.5 * df, df)
        chi2 = _wls(_sinusoid_design(t, freqs), y, w)[1].sum(axis=1)
        i = int(np.argmin(chi2))
        candidates = [
            _final_fit(
                "oscillation", _sinusoid_design(t, freqs[i : i + 1])[0], y, w, 10, period_hours=1.0 / freqs[i]
            )
        ]
        curvature = chi2[i - 1] - 2.0 * chi2[i] + chi2[i + 1] if 0 < i < len(freqs) - 1 else 0.0
        if curvature > 0:
            f = freqs[i] + 0.5 * df * (chi2[i - 1] - chi2[i + 1]) / curvature
            candidates.append(
                _final_fit(
                    "oscillation", _sinusoid_design(t, np.array([f]))[0], y, w, 10, period_hours=1.0 / f
                )
            )
        fits.append(min(candidates, key=lambda fit: float(fit.chi2.sum())))
    return fits


def _normalised_residuals(fit: _Fit, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(y - fit) / σ per angle-hour (n, 3); 0 where the weight is 0."""
    return (y - fit.design @ fit.beta.T) * np.sqrt(w)


def _linear(beta: np.ndarray, cov: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Value and 1-σ of the linear combination ``g · beta`` of parameters with covariance ``cov``."""
    return float(g @ beta), float(np.sqrt(g @ cov @ g))


def _evidence(
    fit: _Fit,
    t: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    centre: np.ndarray,
    origin_hour: float,
    outliers: np.ndarray,
    s: float,
) -> tuple[AngleEvidence, ...]:
    """Per-angle evidence of one fit (degrees, hours); σ scaled by the noise scale s. ``t``: hours since
    ``origin_hour``, the fit's t = 0; ``centre``: what was subtracted from the angles (degrees)."""
    nan = float("nan")
    rows = np.flatnonzero(np.any(w > 0, axis=1))
    span = t[rows[-1]] - t[rows[0]]
    p = fit.beta.shape[1]
    g_level = {"line": np.array([1.0, -1.0]), "parabola": np.array([1.0, -1.0, 1.0])}.get(
        fit.model, np.eye(p)[0]
    )
    g_change = np.eye(p)[min(1, p - 1)]
    residual = (y - fit.design @ fit.beta.T) * (w > 0)
    evidence = []
    for a, name in enumerate(ANGLES):
        beta, cov = fit.beta[a], fit.cov[a] * s * s
        step = rate = amplitude = (nan, nan)
        peak = nan
        if fit.model == "step":
            step = _linear(beta, cov, g_change)
        elif fit.model in ("line", "parabola"):
            rate = _linear(beta, cov, g_change * 2.0 * 24.0 / span)  # (p(+1) - p(-1)) / span, per day
        elif fit.model == "oscillation":
            amp = float(np.hypot(beta[1], beta[2]))
            amplitude = (amp, _linear(beta, cov, np.array([0.0, beta[1], beta[2]]) / max(amp, 1e-300))[1])
            first = np.arctan2(beta[2], beta[1]) / (2.0 * np.pi) * fit.period_hours  # a maximum, hours
            cycles = np.floor((t[rows[-1]] - first) / fit.period_hours)
            peak = float(origin_hour + first + fit.period_hours * cycles)
        level = _linear(beta, cov, g_level)
        used = w[:, a] > 0
        evidence.append(
            AngleEvidence(
                angle=name,
                samples=int(used.sum()),
                outliers=int(outliers[:, a].sum()),
                level_deg=level[0] + float(centre[a]),
                level_sigma_deg=level[1],
                step_deg=step[0],
                step_sigma_deg=step[1],
                rate_deg_per_day=rate[0],
                rate_sigma_deg_per_day=rate[1],
                amplitude_deg=amplitude[0],
                amplitude_sigma_deg=amplitude[1],
                peak_hour=peak,
                rms_residual_deg=float(np.sqrt(np.sum(residual[:, a] ** 2) / max(1, used.sum()))),
            )
        )
    return tuple(evidence)


def _describe(
    trend: Trend, evidence: tuple[AngleEvidence, ...], step_hour: float, period_hours: float
) -> str:
    """One line for logs and alerts: the class and its per-angle numbers."""

    def per_angle(value: str, sigma: str, unit: str) -> str:
        return ", ".join(
            f"{e.angle} {getattr(e, value):+.4f} ± {getattr(e, sigma):.4f}{unit}" for e in evidence
        )

    if trend == "step":
        return f"step at hour {step_hour:g}: {per_angle('step_deg', 'step_sigma_deg', '°')}"
    if trend == "creep":
        return f"creep: {per_angle('rate_deg_per_day', 'rate_sigma_deg_per_day', '°/day')}"
    if trend == "oscillation":
        return (
            f"oscillation, period {period_hours:.1f} h: amplitude "
            f"{per_angle('amplitude_deg', 'amplitude_sigma_deg', '°')}"
        )
    return f"stable: level {per_angle('level_deg', 'level_sigma_deg', '°')}"


def classify_trend(history: OffsetHistory, config: TrendConfig | None = None) -> TrendResult:
    """Classify one camera's drift history as stable, step, creep or oscillation (see the module docstring),
    or insufficient when an angle has fewer than ``config.min_samples`` valid hours."""
    config = config or TrendConfig()
    valid = history.valid
    outliers = np.zeros_like(valid)
    nan = float("nan")
    if np.any(valid.sum(axis=0) < config.min_samples):
        counts = ", ".join(f"{a} {c}" for a, c in zip(ANGLES, valid.sum(axis=0), strict=True))
        reason = f"insufficient: valid hours {counts}, need {config.min_samples}"
        return TrendResult("insufficient", 0.0, reason, (), nan, nan, nan, {}, outliers)
    rows = np.flatnonzero(np.any(valid, axis=1))
    origin = float(history.hours[rows[0]])
    t = history.hours - origin
    w_all = np.where(valid, 1.0 / (np.nan_to_num(history.sigma_deg) ** 2 + config.floor_deg**2), 0.0)
    centre = np.sum(w_all * np.nan_to_num(history.angles_deg), axis=0) / np.sum(w_all, axis=0)
    y = np.where(valid, history.angles_deg - centre, 0.0)
    budget = int(config.max_outlier_fraction * valid.sum())
    while True:
        w = np.where(outliers, 0.0, w_all)
        fits = _fit_models(t, y, w, config)
        z = [np.abs(_normalised_residuals(f, y, w)) for f in fits]
        s = max(1.0, _MAD_TO_SIGMA * min(float(np.median(zi[w > 0])) for zi in z))
        bic = np.array([f.chi2.sum() / s**2 + f.n_params * np.log(np.count_nonzero(w)) for f in fits])
        best = int(np.argmin(bic))
        # Reject the worst residuals (within a factor 2 of the largest) and fit again, within the budget.
        zb = (z[best] / s).ravel()
        new = np.flatnonzero((zb > config.outlier_z) & (zb >= 0.5 * zb.max()))
        room = budget - int(outliers.sum())
        if len(new) == 0 or room <= 0:
            break
        outliers.ravel()[new[np.argsort(-zb[new])][:room]] = True
    classes: list[Trend] = [
        "stable" if np.all(f.effects_deg() < config.min_effect_deg) else _CLASS_OF_MODEL[f.model]
        for f in fits
    ]
    weights = np.exp(-0.5 * (bic - bic[best]))
    trend = classes[best]
    confidence = float(sum(wt for wt, c in zip(weights, classes, strict=True) if c == trend) / weights.sum())
    fit = fits[best] if trend != "stable" else fits[0]
    evidence = _evidence(fit, t, y, w, centre, origin, outliers, s)
    step_hour = float(history.hours[fit.step_index]) if fit.model == "step" else nan
    return TrendResult(
        trend=trend,
        confidence=confidence,
        reason=_describe(trend, evidence, step_hour, fit.period_hours),
        angles=evidence,
        step_hour=step_hour,
        period_hours=fit.period_hours,
        noise_scale=s,
        bic={f.model: float(b) for f, b in zip(fits, bic, strict=True)},
        outliers=outliers,
    )
