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

from geometry.drift.solver import inlier_mask, kabsch_rotation, ransac_drift, solve_drift
from geometry.drift.types import BearingMatches, DriftConfig, DriftEstimate, DriftReport, FrameObservation
from geometry.matching import Matcher, select_reference_frames
from geometry.refine import refine_matches
from geometry.rotations import R_BC


def _mount_bearings(frame: FrameObservation) -> tuple[np.ndarray, np.ndarray]:
    """Unit mount-frame bearings (N, 3) of a frame's keypoints at its telemetry and their derivative with
    respect to the keypoint (N, 3, 2; per pixel, up to the bearing's length)."""
    xy = frame.intrinsics.undistort_pixels(frame.features.keypoints)
    h = np.hstack([xy, np.ones((len(xy), 1))])
    length = np.linalg.norm(h, axis=1)
    R = R_BC(frame.pan_deg, frame.tilt_deg)
    dirs = (R[:, :2] @ np.linalg.inv(frame.intrinsics.K[:2, :2]))[None] / length[:, None, None]
    return (h / length[:, None]) @ R.T, dirs


def _pair_matches(
    query_index: int,
    reference_index: int,
    query: FrameObservation,
    query_bearings: tuple[np.ndarray, np.ndarray],
    reference: FrameObservation,
    b_reference: np.ndarray,
    pairs: np.ndarray,
    keypoint_ids: np.ndarray,
    sizes: tuple[tuple[int, int], ...],
) -> BearingMatches:
    """Bearing matches of one (query, reference) pair from index pairs [query_idx, reference_idx]; their
    keypoint ids are ``pairs + keypoint_ids`` (the two frames' first ids)."""
    n = len(pairs)
    m_query, dirs = query_bearings
    return BearingMatches(
        m_query[pairs[:, 0]],
        dirs[pairs[:, 0]],
        b_reference[pairs[:, 1]],
        np.broadcast_to(R_BC(reference.pan_deg, reference.tilt_deg).T, (n, 3, 3)),
        np.broadcast_to(reference.intrinsics.K[:2, :2], (n, 2, 2)),
        np.full(n, query_index),
        query.features.keypoints[pairs[:, 0]].astype(float),
        np.full(n, reference_index),
        pairs + keypoint_ids,
        sizes,
    )


def estimate_drift(
    queries: list[FrameObservation],
    references: list[FrameObservation],
    matcher: Matcher,
    config: DriftConfig | None = None,
) -> DriftReport:
    """Mount drift of one camera-hour: each query frame is matched (once) to the reference frames its
    telemetry overlaps; the report holds one estimate per query frame (that frame alone) and the joint
    estimate of the single drift shared by all of them. Angles and σ in degrees; failures carry a reason."""
    if not queries:
        raise ValueError("estimate_drift needs at least one query frame")
    if not references:
        raise ValueError("estimate_drift needs at least one reference frame")
    config = config or DriftConfig()
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
        query_bearings = _mount_bearings(query)
        parts = []
        for ri in ref_ids:
            reference = references[ri]
            if ri not in reference_bearings:
                reference_bearings[ri] = reference.intrinsics.unproject(reference.features.keypoints)
            pairs = np.asarray(matcher.match(query.features, reference.features)[0], dtype=int).reshape(-1, 2)
            parts.append(
                _pair_matches(
                    qi,
                    ri,
                    query,
                    query_bearings,
                    reference,
                    reference_bearings[ri],
                    pairs,
                    first_ids[[qi, len(queries) + ri]],
                    sizes,
                )
            )
        matches = BearingMatches.concatenate(parts).first_per_keypoint(0)  # nearest reference first
        D0 = (
            _initial_drift(matches, config)
            if _can_refine(query, [references[i] for i in ref_ids], config)
            else None
        )
        estimate = None
        if D0 is not None:
            refined = _photometrically_refined(matches, D0, query, references, config)
            estimate = solve_drift(refined, config, [D0], n_query_frames=1)
        if estimate is not None and estimate.success:
            matches = refined
        else:  # no refinement possible, or too little of it converged: the matches as detected
            estimate = solve_drift(matches, config, n_query_frames=1)
        per_query.append(matches)
        per_frame.append((name, estimate))

    if not per_query:
        reason = "no reference frame overlaps any query frame's telemetry"
        return DriftReport(per_frame, DriftEstimate.failure(reason, 0, len(queries)))
    hypotheses = [e.D for _, e in per_frame if e.success]
    pooled = BearingMatches.concatenate(per_query).first_per_keypoint(1)
    return DriftReport(per_frame, solve_drift(pooled, config, hypotheses, n_query_frames=len(queries)))


def _initial_drift(matches: BearingMatches, config: DriftConfig) -> np.ndarray | None:
    """A first drift for the photometric refinement: the RANSAC hypothesis re-fitted (Kabsch, bearings) to
    its inliers; None with fewer than ``min_inliers`` of them (then :func:`solve_drift` says why)."""
    if len(matches) < config.min_inliers:
        return None
    D = ransac_drift(matches, config, [], np.random.default_rng(config.seed))
    if D is None:
        return None
    inliers = inlier_mask(matches, D, config)
    if inliers.sum() < config.min_inliers:
        return None
    return kabsch_rotation(matches.m_query[inliers], matches.m_reference[inliers])


def _can_refine(query: FrameObservation, references: list[FrameObservation], config: DriftConfig) -> bool:
    return config.refine is not None and all(f.image is not None for f in [query, *references])


def _photometrically_refined(
    matches: BearingMatches,
    D: np.ndarray,
    query: FrameObservation,
    references: list[FrameObservation],
    config: DriftConfig,
) -> BearingMatches:
    """The inliers of drift ``D`` among one query frame's ``matches`` (at most ``refine_max_matches`` of
    them) with their reference positions refined photometrically (:func:`geometry.refine.refine_matches`);
    matches whose refinement fails are dropped. The query keypoints stay as detected: they only say where
    the query is sampled, so the query detector's bias no longer matters."""
    inliers = np.flatnonzero(inlier_mask(matches, D, config))
    if len(inliers) > config.refine_max_matches:
        rng = np.random.default_rng(config.seed)
        inliers = np.sort(rng.choice(inliers, config.refine_max_matches, replace=False))
    matches = matches.subset(inliers)
    b_reference = matches.b_reference.copy()
    keep = np.zeros(len(matches), dtype=bool)
    R_q = R_BC(query.pan_deg, query.tilt_deg)
    for ri in np.unique(matches.reference_index):
        reference = references[ri]
        sel = np.flatnonzero(matches.reference_index == ri)
        R_rq = R_BC(reference.pan_deg, reference.tilt_deg).T @ D @ R_q  # query camera -> reference camera
        q_int, r_int = query.intrinsics, reference.intrinsics
        pixels = matches.query_pixels[sel]
        refined, ok = refine_matches(
            query.image,
            reference.image,
            pixels,
            lambda p, r_int=r_int, q_int=q_int, R_rq=R_rq: q_int.project(r_int.unproject(p) @ R_rq),
            r_int.project(q_int.unproject(pixels) @ R_rq.T),
            config.refine,
        )
        b_reference[sel] = r_int.unproject(refined)
        keep[sel] = ok
    return replace(matches, b_reference=b_reference).subset(keep)
