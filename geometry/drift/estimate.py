"""The drift of one camera-hour: match the query frames to the reference scan, then solve.

Each query frame is matched (once) to the reference frames its telemetry overlaps; each query keypoint keeps
its match in the nearest reference frame and each reference keypoint one match, so that residuals are
independent. When the frames carry their images, up to ``refine_max_matches`` inliers of a first drift per
query frame are re-found in the reference by photometric alignment (:mod:`geometry.refine`, which removes
the detector's position bias). Each query frame is then solved alone and all of them jointly, for one drift
(:func:`geometry.drift.solver.solve_drift`). A query frame that no reference frame overlaps fails with its
reason. Angles in degrees, pixels in each frame's own image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geometry.drift.parallax import cached_optical_centre_offset
from geometry.drift.solver import (
    inlier_mask,
    kabsch_rotation,
    ransac_drift,
    refine_drift,
    reprojection_errors,
    solve_drift,
    whitening,
)
from geometry.drift.types import (
    BearingMatches,
    DriftConfig,
    DriftEstimate,
    DriftReport,
    FrameObservation,
    OpticalCentreOffset,
)
from geometry.matching import Matcher, select_reference_frames
from geometry.refine import refine_matches
from geometry.rotations import R_BC


def estimate_drift(
    queries: list[FrameObservation],
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig | None = None,
    offset: OpticalCentreOffset | None = None,
) -> DriftReport:
    """Mount drift of one camera-hour: each query frame is matched (once) to the reference frames its
    telemetry overlaps; the report holds one estimate per query frame (that frame alone) and the joint
    estimate of the single drift shared by all of them. Angles and σ in degrees; failures carry a reason.

    ``offset``: the camera's optical-centre offset (:func:`estimate_optical_centre_offset` of the same
    reference scan, which a caller may keep per camera); when None and ``config.parallax``, it is estimated
    here from ``references`` (once per process and scan, :func:`cached_optical_centre_offset`)."""
    if not queries:
        raise ValueError("estimate_drift needs at least one query frame")
    if not references:
        raise ValueError("estimate_drift needs at least one reference frame")
    config = config or DriftConfig()
    if offset is None and config.parallax:
        offset = cached_optical_centre_offset(references, matcher, config)
    used = offset if offset is not None and offset.used else None
    sizes = tuple(q.intrinsics.image_size for q in queries)
    reference_pan_tilts = np.array([[r.pan_deg, r.tilt_deg] for r in references])
    reference_hfovs = np.array([r.hfov_deg for r in references])
    reference_bearings: dict[int, np.ndarray] = {}
    first_ids = np.cumsum([0] + [len(f.features) for f in [*queries, *references]])

    per_query: list[BearingMatches] = []
    per_frame: list[tuple[str, DriftEstimate]] = []
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
        matches = BearingMatches.concatenate(parts).first_per_keypoint(0)  # nearest reference first
        D0 = (
            _initial_drift(matches, config, used)
            if _can_refine(query, [references[i] for i in ref_ids], config)
            else None
        )
        estimate = None
        if D0 is not None:
            refined = _photometrically_refined(matches, D0, query, references, config, used)
            estimate = solve_drift(refined, config, [D0], n_query_frames=1, offset=used)
        if estimate is not None and estimate.success:
            matches = refined
        else:  # no refinement possible, or too little of it converged: the matches as detected
            estimate = solve_drift(matches, config, n_query_frames=1, offset=used)
        per_query.append(matches)
        per_frame.append((name, estimate))

    if not per_query:
        reason = "no reference frame overlaps any query frame's telemetry"
        return DriftReport(per_frame, DriftEstimate.failure(reason, 0, len(queries)), offset)
    hypotheses = [e.D for _, e in per_frame if e.success]
    pooled = BearingMatches.concatenate(per_query).first_per_keypoint(1)
    joint = solve_drift(pooled, config, hypotheses, n_query_frames=len(queries), offset=used)
    return DriftReport(per_frame, joint, offset)


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


def _photometrically_refined(
    matches: BearingMatches,
    D: np.ndarray,
    query: FrameObservation,
    references: list[FrameObservation],
    config: DriftConfig,
    offset: OpticalCentreOffset | None,
) -> BearingMatches:
    """The inliers of drift ``D`` among one query frame's ``matches`` (at most ``refine_max_matches`` of
    them) with their reference positions refined photometrically (:func:`geometry.refine.refine_matches`);
    matches whose refinement fails are dropped. The query keypoints stay as detected: they only say where
    the query is sampled, so the query detector's bias no longer matters. With an optical centre
    ``offset`` each match is predicted at the depth its detected keypoints give (along its epipolar line)."""
    offset_m = np.zeros(3) if offset is None else offset.offset_m
    inliers = np.flatnonzero(inlier_mask(matches, D, config, offset_m=offset_m))
    if len(inliers) > config.refine_max_matches:
        rng = np.random.default_rng(config.seed)
        inliers = np.sort(rng.choice(inliers, config.refine_max_matches, replace=False))
    matches = matches.subset(inliers)
    rho = _inverse_depths(matches, D, offset_m, config)
    b_reference = matches.b_reference.copy()
    keep = np.zeros(len(matches), dtype=bool)
    R_q = D @ R_BC(query.pan_deg, query.tilt_deg)  # query camera -> reference mount
    for ri in np.unique(matches.reference_index):
        reference = references[ri]
        sel = np.flatnonzero(matches.reference_index == ri)
        R_r = R_BC(reference.pan_deg, reference.tilt_deg)
        R_rq = R_r.T @ R_q  # query camera -> reference camera
        t_r = R_r.T @ (R_q - R_r) @ offset_m  # query centre - reference centre, reference camera (m)
        q_int, r_int = query.intrinsics, reference.intrinsics
        pixels, rho_sel = matches.query_pixels[sel], rho[sel, None]

        def to_query(p: np.ndarray, r_int=r_int, q_int=q_int, R_rq=R_rq, t_r=t_r, rho=rho_sel) -> np.ndarray:
            return q_int.project(r_int.unproject(p) @ R_rq - rho * (t_r @ R_rq))

        refined, ok = refine_matches(
            query.image,
            reference.image,
            pixels,
            to_query,
            r_int.project(q_int.unproject(pixels) @ R_rq.T + rho_sel * t_r),
            config.refine,
        )
        b_reference[sel] = r_int.unproject(refined)
        keep[sel] = ok
    return replace(matches, b_reference=b_reference).subset(keep)


def _inverse_depths(
    matches: BearingMatches, D: np.ndarray, offset_m: np.ndarray, config: DriftConfig
) -> np.ndarray:
    """Inverse depth (N,) of each match's point along its query bearing (1/m at the offset's length): its
    prior (from the reference scan, else near 0) updated by where its detected reference keypoint lies along
    its epipolar line under drift ``D``; zeros without offset."""
    weights = whitening(matches, D, np.zeros(2), offset_m, config)
    if weights is None:
        return np.zeros(len(matches))
    return weights.inverse_depths(reprojection_errors(matches, D)[0])[0]
