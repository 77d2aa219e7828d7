"""The optical centre's offset from the pan/tilt axes, estimated from the reference scan.

On a real PTZ head the optical centre sits a few cm from the rotation centre, so frames at different pan/tilt
see near ground with parallax: with the offset ``o`` (camera frame, metres) a frame's optical centre is at
``R_BC(pan, tilt) · o`` from the rotation centre and a matched point at inverse depth ρ along the query
bearing projects on a straight epipolar line in the reference image
(:func:`geometry.drift.solver.line_directions`). The reference frames are exact rotations apart (drift
``I``, their telemetry), so their overlapping pairs are parallax pairs of one unknown offset: each pair is
matched, every match's depth is marginalised (:func:`geometry.drift.solver.whitening`) and the offset's
direction is found by a search over directions (MSAC on the whitened residuals) refined by robust least
squares on its tangent plane, with its covariance. Its length is not observable (the depths absorb it); it is
set to :attr:`DriftConfig.offset_length_m`. The offset is used only when the matches' median parallax along
their epipolar lines reaches :attr:`DriftConfig.min_parallax_px` (reference pixels).

:func:`reference_scan_model` adds what the same pairs tell about the calibration
(:mod:`geometry.drift.calibration`); :func:`cached_reference_scan_model` computes it once per process and
reference scan, for every camera-hour estimated against that scan.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import astuple

import numpy as np
from scipy.optimize import least_squares

from geometry.drift.calibration import corrected, refine_calibration, with_bearings
from geometry.drift.photometric import photometrically_refined
from geometry.drift.solver import Whitening, reprojection_errors, whitening
from geometry.drift.types import (
    BearingMatches,
    CalibrationUncertainty,
    DriftConfig,
    FrameObservation,
    OpticalCentreOffset,
    ReferenceScanModel,
)
from geometry.matching import Matcher, select_reference_frames

_SEARCH_DIRECTIONS = 100
"""Directions (a Fibonacci half-sphere: an offset and its opposite give the same epipolar lines) scored
before the least squares."""
_SEARCH_MATCHES = 4000
"""Matches (an even random subset) that score the directions."""
_CACHE: OrderedDict[bytes, ReferenceScanModel] = OrderedDict()
_CACHE_SIZE = 16
_CACHE_LOCK = threading.Lock()
_MAX_NFEV = 20
"""Evaluations of the direction's least squares (it converges in a few from the search's direction; without
parallax the cost is flat and it would wander)."""


def reference_pair_matches(
    references: list[FrameObservation], matcher: Matcher, config: DriftConfig
) -> BearingMatches | None:
    """Matches between overlapping reference frames (each frame with up to ``config.offset_pairs_per_frame``
    others, nearest first; each pair once), as bearing matches whose "query" is the first frame of the pair;
    every keypoint keeps one match. None when no two frames overlap."""
    pan_tilts = np.array([[r.pan_deg, r.tilt_deg] for r in references])
    hfovs = np.array([r.hfov_deg for r in references])
    first_ids = np.cumsum([0] + [len(r.features) for r in references])
    sizes = tuple(r.intrinsics.image_size for r in references)
    bearings = [r.intrinsics.unproject(r.features.keypoints) for r in references]
    parts, seen = [], set()
    for i, ref in enumerate(references):
        others = select_reference_frames(
            tuple(pan_tilts[i]), hfovs[i], pan_tilts, hfovs, max_frames=config.offset_pairs_per_frame + 1
        )
        mount = None
        for j in others:
            if j == i or (min(i, j), max(i, j)) in seen:
                continue
            seen.add((min(i, j), max(i, j)))
            mount = ref.mount_bearings() if mount is None else mount
            pairs = np.asarray(matcher.match(ref.features, references[j].features)[0], dtype=int)
            parts.append(
                BearingMatches.from_pair(
                    (i, j),
                    ref,
                    mount,
                    references[j],
                    bearings[j],
                    pairs.reshape(-1, 2),
                    first_ids[[i, j]],
                    sizes,
                )
            )
    if not parts:
        return None
    return BearingMatches.concatenate(parts).first_per_keypoint(0).first_per_keypoint(1)


def _half_sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the half-sphere z >= 0 (Fibonacci lattice), (n, 3)."""
    k = np.arange(n) + 0.5
    z = k / n
    phi = np.pi * (1 + 5**0.5) * k
    rho = np.sqrt(1 - z**2)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def _tangent_basis(u: np.ndarray) -> np.ndarray:
    """Two unit vectors (3, 2) orthogonal to the unit vector ``u`` and to each other."""
    return np.linalg.svd(u[None])[2][1:].T


class _DirectionFit:
    """Whitened residuals (pixels) of reference-pair matches as a function of the offset's direction, on the
    tangent plane of a unit direction ``u`` (parameters δ (2,): direction ``u + B δ`` normalised), followed by
    the prior on its angle from the optical axis (two residuals, in units of the noise)."""

    def __init__(
        self, matches: BearingMatches, r0: np.ndarray, u: np.ndarray, noise_px: float, config: DriftConfig
    ) -> None:
        self.matches, self.r0, self.u, self.noise_px, self.config = matches, r0, u, noise_px, config
        self.B = _tangent_basis(u)

    def offset(self, delta: np.ndarray) -> np.ndarray:
        v = self.u + self.B @ delta
        return self.config.offset_length_m * v / np.linalg.norm(v)

    def weights(self, delta: np.ndarray) -> Whitening:
        return whitening(self.matches, np.eye(3), np.zeros(2), self.offset(delta), self.config, self.noise_px)

    def whitened(self, delta: np.ndarray | None = None) -> np.ndarray:
        """The matches' whitened residuals (N, 2), pixels."""
        return self.weights(np.zeros(2) if delta is None else delta).apply(self.r0)[0]

    def __call__(self, delta: np.ndarray) -> np.ndarray:
        o = self.offset(delta) / self.config.offset_length_m
        prior = self.noise_px / self.config.offset_axis_sigma_rad * o[:2] * np.sign(o[2])
        return np.concatenate([self.whitened(delta).ravel(), prior])

    def covariance(self) -> np.ndarray:
        """Covariance (3 x 3, m²) of the offset at δ = 0: Gauss-Newton with central differences, σ² from the
        whitened residuals."""
        h = 1e-4
        J = np.stack([(self(h * e) - self(-h * e)) / (2 * h) for e in np.eye(2)], axis=1)
        r = self.whitened().ravel()
        sigma2 = float(r @ r) / (r.size - 2)
        L = self.config.offset_length_m
        return L**2 * self.B @ (sigma2 * np.linalg.inv(J.T @ J)) @ self.B.T


def estimate_optical_centre_offset(
    references: list[FrameObservation], matcher: Matcher, config: DriftConfig | None = None
) -> OpticalCentreOffset:
    """The optical centre's offset (camera frame, metres; its direction, at the nominal length) from the
    parallax between overlapping reference frames, with its covariance and the depths of the matched
    reference keypoints; no offset (and why) when the scan shows no parallax or too few matches."""
    config = config or DriftConfig()
    return _fit_offset(references, reference_pair_matches(references, matcher, config), config)


def reference_scan_model(
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig,
    calibration: CalibrationUncertainty | None = None,
) -> ReferenceScanModel:
    """The optical-centre offset of the reference scan (without ``config.parallax``: none) and, given the
    ``calibration`` the frames' intrinsics derive from, its correction by the scan
    (:func:`geometry.drift.calibration.refine_calibration`, on the pairs' matches refined photometrically
    when the frames carry images); the offset is then fitted again with the corrected intrinsics. A scan whose
    frames do not overlap cannot correct the calibration: it is kept as given, and its whole uncertainty
    enters σ (measured: a 6-stop scan 60° apart at hfov 60° left a chessboard's 0.1 % focal error as a 0.035°
    yaw bias with σ 0.0009°; with its uncertainty in σ, 1.9σ or refused as too uncertain)."""
    matches = reference_pair_matches(references, matcher, config)
    none = OpticalCentreOffset.none("parallax not modelled (DriftConfig.parallax is off)")
    offset = _fit_offset(references, matches, config) if config.parallax else none
    if calibration is None:
        return ReferenceScanModel(offset)
    if matches is None or len(matches) < config.min_inliers:  # no overlapping pairs: the prior, all in σ
        return ReferenceScanModel(offset, calibration)
    used, detected = (offset if offset.used else None), matches
    if config.refine is not None and all(r.image is not None for r in references):
        # the detector's position bias would pass into the calibration: refine the pairs' matches first
        matches = BearingMatches.concatenate(
            [
                photometrically_refined(
                    matches.subset(matches.query_index == i), np.eye(3), ref, references, config, used
                )
                for i, ref in enumerate(references)
                if np.any(matches.query_index == i)
            ]
        )
    correction, posterior = refine_calibration(
        matches, references, calibration, None if used is None else used.offset_m, config
    )
    if config.parallax:
        frames = corrected(references, calibration, correction)
        offset = _fit_offset(frames, with_bearings(detected, frames, frames), config)
    return ReferenceScanModel(offset, posterior, correction)


def _fit_offset(
    references: list[FrameObservation], matches: BearingMatches | None, config: DriftConfig
) -> OpticalCentreOffset:
    """:func:`estimate_optical_centre_offset` on the reference pairs' ``matches``."""
    if matches is None or len(matches) < config.min_inliers:
        return OpticalCentreOffset.none(
            f"too few matches between overlapping reference frames ({0 if matches is None else len(matches)})"
            " to measure parallax"
        )
    r0 = reprojection_errors(matches, np.eye(3))[0]
    thr2 = config.ransac_threshold_px**2

    def inliers_of(fit: _DirectionFit) -> np.ndarray:
        return np.sum(fit.whitened() ** 2, axis=1) < thr2

    # search: the MSAC cost of each direction (rotation-only residuals with the depths marginalised)
    noise = config.ransac_threshold_px / 4
    sample = np.random.default_rng(config.seed).permutation(len(matches))[:_SEARCH_MATCHES]
    few, r_few = matches.subset(sample), r0[sample]
    costs = [
        np.minimum(
            np.sum(_DirectionFit(few, r_few, u, noise, config).whitened() ** 2, axis=1) / thr2, 1
        ).sum()
        for u in _half_sphere(_SEARCH_DIRECTIONS)
    ]
    u = _half_sphere(_SEARCH_DIRECTIONS)[int(np.argmin(costs))]
    for _ in range(2):  # least squares on the inliers of the current direction, then once more
        inliers = inliers_of(_DirectionFit(matches, r0, u, noise, config))
        if inliers.sum() < config.min_inliers:
            return OpticalCentreOffset.none(
                f"too few consistent matches between overlapping reference frames ({int(inliers.sum())})"
            )
        kept, r_kept = matches.subset(inliers), r0[inliers]
        noise = whitening(kept, np.eye(3), np.zeros(2), config.offset_length_m * u, config).noise_px
        fit = _DirectionFit(kept, r_kept, u, noise, config)
        result = least_squares(
            fit, np.zeros(2), loss=config.loss, f_scale=config.loss_scale_px, max_nfev=_MAX_NFEV
        )
        u = fit.offset(result.x) / config.offset_length_m

    fit = _DirectionFit(kept, r_kept, u, noise, config)
    rho, rho_sigma = fit.weights(np.zeros(2)).inverse_depths(r_kept)
    if np.median(rho) < 0:  # cheirality: the sign that puts the points in front (the lines are the same)
        fit, rho = _DirectionFit(kept, r_kept, -u, noise, config), -rho
    parallax = float(np.median(rho * np.linalg.norm(fit.weights(np.zeros(2)).line, axis=1)))
    if parallax < config.min_parallax_px:
        return OpticalCentreOffset.none(
            f"no parallax between the reference frames (median {parallax:.3f} px < {config.min_parallax_px} "
            "px along the epipolar lines): views treated as rotations about the optical centre",
            parallax,
            len(kept),
        )
    return OpticalCentreOffset(
        fit.offset(np.zeros(2)),
        fit.covariance(),
        parallax,
        len(kept),
        inverse_depths=_keypoint_depths(references, kept, rho, rho_sigma),
    )


def _keypoint_depths(
    references: list[FrameObservation], matches: BearingMatches, rho: np.ndarray, rho_sigma: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per reference frame, (mean, σ) (K_r, 2) of each keypoint's inverse depth from the pair matches it is
    in (the most precise one where several), NaN elsewhere."""
    first_ids = np.cumsum([0] + [len(r.features) for r in references])
    depths = np.full((first_ids[-1], 2), np.nan)
    order = np.argsort(-rho_sigma)  # least precise first: later (more precise) writes win
    for column in (0, 1):
        depths[matches.keypoint_ids[order, column]] = np.stack([rho[order], rho_sigma[order]], axis=1)
    return tuple(depths[a:b] for a, b in zip(first_ids[:-1], first_ids[1:], strict=True))


def _scan_key(
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig,
    calibration: CalibrationUncertainty | None,
) -> bytes:
    """Digest of what the scan's model depends on: each reference frame's telemetry, intrinsics and
    features, the matcher's kind, the settings and the calibration."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{type(matcher).__qualname__}|{astuple(config)!r}".encode())
    arrays = (
        []
        if calibration is None
        else [calibration.intrinsics.K, calibration.intrinsics.dist, calibration.covariance]
    )
    for r in references:
        h.update(np.array([r.pan_deg, r.tilt_deg, r.zoom, *r.intrinsics.image_size]).tobytes())
        arrays += [r.intrinsics.K, r.intrinsics.dist, r.features.keypoints, r.features.descriptors]
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


def cached_reference_scan_model(
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig,
    calibration: CalibrationUncertainty | None = None,
) -> ReferenceScanModel:
    """:func:`reference_scan_model`, once per process for the same reference scan (keyed by the content of
    its frames' telemetry, intrinsics and features, the matcher's kind, the settings and the calibration):
    every camera-hour estimated against a scan needs the same model."""
    key = _scan_key(references, matcher, config, calibration)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    model = reference_scan_model(references, matcher, config, calibration)
    with _CACHE_LOCK:
        _CACHE[key] = model
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model
