"""The drift of one camera-hour: match the query frames to the reference scan, then solve.

Each query frame is matched (once) to the reference frames its telemetry overlaps; each query keypoint keeps
its match in the nearest reference frame and each reference keypoint one match, so that residuals are
independent. When the frames carry their images, up to ``refine_max_matches`` inliers of a first drift per
query frame are re-found in the reference by photometric alignment (:mod:`geometry.refine`, which removes
the detector's position bias). Each query frame is then solved alone and all of them jointly, for one drift
(:func:`geometry.drift.solver.solve_drift`). With an optical centre offset (estimated from the reference
scan, :mod:`geometry.drift.parallax`) each match's depth is marginalised; with the calibration's covariance
every frame uses the calibration corrected by the reference scan and σ includes what remains uncertain
(:mod:`geometry.drift.calibration`). A query frame that no reference frame overlaps fails with its reason;
one whose view the reference does not explain (occluded, repainted, looking elsewhere) is flagged as a
changed scene and kept out of the joint estimate; failures say when the view is much darker or hazier than
its reference. Angles in degrees, pixels in each frame's own image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geometry.drift.calibration import corrected, with_calibration_dirs
from geometry.drift.parallax import cached_reference_scan_model
from geometry.drift.photometric import photometrically_refined
from geometry.drift.solver import (
    inlier_mask,
    kabsch_rotation,
    ransac_drift,
    refine_drift,
    solve_drift,
)
from geometry.drift.types import (
    BearingMatches,
    CalibrationUncertainty,
    DriftConfig,
    DriftEstimate,
    DriftReport,
    FrameObservation,
    OpticalCentreOffset,
)
from geometry.matching import Matcher, select_reference_frames
from geometry.rotations import R_BC


def estimate_drift(
    queries: list[FrameObservation],
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig | None = None,
    offset: OpticalCentreOffset | None = None,
    calibration: CalibrationUncertainty | None = None,
) -> DriftReport:
    """Mount drift of one camera-hour: each query frame is matched (once) to the reference frames its
    telemetry overlaps; the report holds one estimate per query frame (that frame alone) and the joint
    estimate of the single drift shared by all of them. Angles and σ in degrees; failures carry a reason.

    ``offset``: the camera's optical-centre offset (:func:`estimate_optical_centre_offset` of the same
    reference scan, which a caller may keep per camera); when None and ``config.parallax``, it is estimated
    here from ``references`` (once per process and scan, :func:`cached_reference_scan_model`).
    ``calibration``: the calibration the frames' intrinsics derive from, with its covariance: the reference
    scan corrects it (:func:`geometry.drift.calibration.refine_calibration`, every frame then uses the
    corrected one) and its remaining uncertainty enters σ."""
    if not queries:
        raise ValueError("estimate_drift needs at least one query frame")
    if not references:
        raise ValueError("estimate_drift needs at least one reference frame")
    config = config or DriftConfig()
    posterior = None
    if (offset is None and config.parallax) or calibration is not None:
        scan = cached_reference_scan_model(references, matcher, config, calibration)
        offset = scan.offset if offset is None and config.parallax else offset
        if calibration is not None:  # every frame with the calibration the scan corrected
            queries = corrected(queries, calibration, scan.correction)
            references = corrected(references, calibration, scan.correction)
            posterior = scan.calibration
    used = offset if offset is not None and offset.used else None
    covariance = None if posterior is None else posterior.covariance
    sizes = tuple(q.intrinsics.image_size for q in queries)
    reference_pan_tilts = np.array([[r.pan_deg, r.tilt_deg] for r in references])
    reference_hfovs = np.array([r.hfov_deg for r in references])
    reference_bearings: dict[int, np.ndarray] = {}
    first_ids = np.cumsum([0] + [len(f.features) for f in [*queries, *references]])

    per_query: list[BearingMatches] = []
    per_frame: list[tuple[str, DriftEstimate]] = []
    overlapped = False
    for qi, query in enumerate(queries):
        ref_ids = select_reference_frames(
            (query.pan_deg, query.tilt_deg),
            query.hfov_deg,
            reference_pan_tilts,
            reference_hfovs,
            max_frames=config.max_reference_frames,
        )
        name = query.name or f"query_{qi}"
        if not ref_ids:
            reason = (
                f"no reference frame overlaps the query's telemetry (pan {query.pan_deg:.1f}°, tilt "
                f"{query.tilt_deg:.1f}°, hfov {query.hfov_deg:.1f}°)"
            )
            per_frame.append((name, DriftEstimate.failure(reason, 0, 1)))
            continue
        overlapped = True
        query_bearings = query.mount_bearings()
        parts = []
        for ri in ref_ids:
            reference = references[ri]
            if ri not in reference_bearings:
                reference_bearings[ri] = reference.intrinsics.unproject(reference.features.keypoints)
            pairs = np.asarray(matcher.match(query.features, reference.features)[0], dtype=int).reshape(-1, 2)
            parts.append(
                BearingMatches.from_pair(
                    (qi, ri),
                    query,
                    query_bearings,
                    reference,
                    reference_bearings[ri],
                    pairs,
                    first_ids[[qi, len(queries) + ri]],
                    sizes,
                    used.inverse_depths[ri] if used is not None and used.inverse_depths else None,
                )
            )
        matches = detected = BearingMatches.concatenate(parts).first_per_keypoint(0)  # nearest first
        D0 = (
            _initial_drift(matches, config, used)
            if _can_refine(query, [references[i] for i in ref_ids], config)
            else None
        )
        estimate = None
        if D0 is not None:
            refined = photometrically_refined(matches, D0, query, references, config, used)
            if posterior is not None:  # for the calibration's share of σ
                refined = with_calibration_dirs(refined, queries, references, posterior)
            estimate = solve_drift(refined, config, [D0], 1, used, covariance)
        if estimate is not None and estimate.success:
            matches = refined
        else:  # no refinement possible, or too little of it converged: the matches as detected
            if posterior is not None:
                matches = with_calibration_dirs(matches, queries, references, posterior)
            estimate = solve_drift(
                matches, config, n_query_frames=1, offset=used, calibration_covariance=covariance
            )
        changed = _scene_change(detected, estimate, query, references, reference_bearings, config, used)
        note, degraded = _appearance(query, references[ref_ids[0]], config)
        if estimate.success and degraded:  # night, infrared, fog: not measured against a clear day reference
            changed = f"scene changed: {note}; not measured against this reference"
        if changed:  # flagged, never measured
            estimate = DriftEstimate.failure(changed, estimate.n_matches, 1, estimate.inliers)
        elif estimate.inliers >= config.min_inliers:  # the joint pools frames that show the reference scene
            per_query.append(matches)
        if not estimate.success and note and note not in estimate.reason:
            estimate = replace(estimate, reason=f"{estimate.reason}; {note}")
        per_frame.append((name, estimate))

    if not per_query:
        reason = (
            "no query frame shows the reference scene: " + "; ".join(f"{n}: {e.reason}" for n, e in per_frame)
            if overlapped
            else "no reference frame overlaps any query frame's telemetry"
        )
        return DriftReport(per_frame, DriftEstimate.failure(reason, 0, len(queries)), offset, posterior)
    hypotheses = [e.D for _, e in per_frame if e.success]
    pooled = BearingMatches.concatenate(per_query).first_per_keypoint(1)
    joint = solve_drift(pooled, config, hypotheses, len(queries), used, covariance)
    return DriftReport(per_frame, joint, offset, posterior)


def _initial_drift(
    matches: BearingMatches, config: DriftConfig, offset: OpticalCentreOffset | None
) -> np.ndarray | None:
    """A first drift for the photometric refinement: the RANSAC hypothesis re-fitted (Kabsch, bearings) to
    its inliers, and with an optical centre ``offset`` refined once with each match's depth marginalised;
    None with fewer than ``min_inliers`` inliers (then :func:`solve_drift` says why)."""
    if len(matches) < config.min_inliers:
        return None
    D = ransac_drift(matches, config, [], np.random.default_rng(config.seed))
    if D is None:
        return None
    offset_m = None if offset is None else offset.offset_m
    inliers = inlier_mask(matches, D, config, offset_m=offset_m)
    if inliers.sum() < config.min_inliers:
        return None
    D = kabsch_rotation(matches.m_query[inliers], matches.m_reference[inliers])
    if offset_m is None:
        return D
    inliers = inlier_mask(matches, D, config, offset_m=offset_m)
    if inliers.sum() < config.min_inliers:
        return None
    return refine_drift(matches.subset(inliers), D, np.zeros(2), config, offset_m)[0]


def _can_refine(query: FrameObservation, references: list[FrameObservation], config: DriftConfig) -> bool:
    return config.refine is not None and all(f.image is not None for f in [query, *references])


_GRID = (8, 6)
"""Cells (columns, rows) of the query image in which :func:`_scene_change` compares the reference's
texture with the inliers."""


def _scene_change(
    matches: BearingMatches,
    estimate: DriftEstimate,
    query: FrameObservation,
    references: list[FrameObservation],
    reference_bearings: dict[int, np.ndarray],
    config: DriftConfig,
    offset: OpticalCentreOffset | None,
) -> str:
    """Why the query frame does not show the reference scene ("" when it does or nothing was estimated):
    of the grid cells of the query image where the reference's keypoints land under the estimated drift
    (at least 3), the share holding an inlier of the ``matches`` as detected must reach
    ``config.min_explained_fraction``; an occluded, repainted or rebuilt part of the view has the reference's
    texture but no inliers. ``reference_bearings``: the unit camera-frame bearings of each matched reference
    frame's keypoints."""
    if not estimate.success:
        return ""
    D = estimate.D
    inliers = inlier_mask(matches, D, config, offset_m=None if offset is None else offset.offset_m)
    w, h = query.intrinsics.image_size
    R_q = R_BC(query.pan_deg, query.tilt_deg)

    def cells(pixels: np.ndarray) -> np.ndarray:
        inside = np.all((pixels >= 0) & (pixels < (w, h)), axis=1)
        ij = (pixels[inside] / (w, h) * _GRID).astype(int)
        return np.bincount(ij[:, 1] * _GRID[0] + ij[:, 0], minlength=_GRID[0] * _GRID[1])

    expected = np.zeros(_GRID[0] * _GRID[1], int)
    for ri in np.unique(matches.reference_index):
        reference = references[ri]
        # the reference's keypoint bearings (``reference_bearings``), reference camera -> query camera
        b = reference_bearings[ri] @ R_BC(reference.pan_deg, reference.tilt_deg).T @ D @ R_q
        expected += cells(query.intrinsics.project(b[b[:, 2] > 0.1]))
    textured = expected >= 3
    explained = (cells(matches.query_pixels[inliers]) > 0) & textured
    share = explained.sum() / max(int(textured.sum()), 1)
    if share >= config.min_explained_fraction:
        return ""
    return (
        f"scene changed: the reference explains only {share:.0%} of the view where it has texture (inliers "
        f"in {explained.sum()} of {textured.sum()} cells; at least {config.min_explained_fraction:.0%} "
        "needed): part of the view is occluded, repainted or rebuilt, or the camera looks elsewhere"
    )


def _appearance(
    query: FrameObservation, reference: FrameObservation, config: DriftConfig
) -> tuple[str, bool]:
    """How the query's image differs from its reference's: a note ("" without images or when they look
    alike) and whether it is darker (mean grey level) or flatter (RMS gradient, per reference pixel: a
    zoomed-in view's gradients are spread over more pixels) by more than ``config.max_darkening``."""
    if query.image is None or reference.image is None:
        return "", False

    def brightness_contrast(image: np.ndarray) -> tuple[float, float]:
        gx, gy = np.gradient(image)
        return float(image.mean()), float(np.sqrt(np.mean(gx**2 + gy**2)))

    (b_q, c_q), (b_r, c_r) = brightness_contrast(query.image), brightness_contrast(reference.image)
    magnification = max(query.intrinsics.fx / reference.intrinsics.fx, 1.0)
    darker, flatter = b_r / max(b_q, 1e-3), c_r / max(c_q * magnification, 1e-3)
    if darker > config.max_darkening:
        return f"the view is {darker:.1f}x darker than the reference (night or infrared?)", True
    if flatter > config.max_darkening:
        return (
            f"the view has {flatter:.1f}x less contrast than the reference (fog, glare or a dirty lens?)",
            True,
        )
    return "", False
