"""Photometric refinement of one query frame's matches (:mod:`geometry.refine`) under a first drift, with
each match predicted at the depth its detected keypoints give when the optical centre is offset.

Pixels are each frame's own (distorted) pixels; inverse depths are 1/m at the offset's nominal length.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from geometry.drift.solver import inlier_mask, reprojection_errors, whitening
from geometry.drift.types import BearingMatches, DriftConfig, FrameObservation, OpticalCentreOffset
from geometry.refine import refine_matches
from geometry.rotations import R_BC


def photometrically_refined(
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
    b_reference, reference_pixels = matches.b_reference.copy(), matches.reference_pixels.copy()
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
        b_reference[sel], reference_pixels[sel] = r_int.unproject(refined), refined
        keep[sel] = ok
    return replace(matches, b_reference=b_reference, reference_pixels=reference_pixels).subset(keep)


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
