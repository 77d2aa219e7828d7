"""Photometric match refinement against the renderer's ground truth (zoom, roll, nuisances on both frames)."""

from __future__ import annotations

import numpy as np
import pytest

from geometry.camera import Intrinsics
from geometry.features import SiftExtractor
from geometry.refine import RefineConfig, grey, refine_matches
from geometry.render import Nuisances, Panorama, render_view
from geometry.rotations import R_BC, Rz, drift_matrix
from ptz_pipeline.datasets import PANORAMA

SIZE = (640, 360)


@pytest.fixture(scope="module")
def pair() -> dict:
    """A reference frame and a query frame zoomed in x1.5 with a 2° roll and a small pan, both with typical
    nuisances (blur, noise, JPEG, white balance, occluders), and the true query -> reference pixel map."""
    pano = Panorama.load(PANORAMA)
    rng = np.random.default_rng(4)
    base = Intrinsics.from_fov(60.0, *SIZE)
    zoomed = base.with_focal(1.5 * base.fx)
    R_ref = Rz(0.3) @ R_BC(30.0, -12.0)
    R_q = Rz(0.3) @ drift_matrix(0.0, 0.0, 2.0) @ R_BC(33.0, -13.0)
    R_rq = R_ref.T @ R_q  # query camera -> reference camera
    ref_img = render_view(pano, base, R_ref, rng, Nuisances.typical())
    q_img = render_view(pano, zoomed, R_q, rng, Nuisances.typical())
    q_pts = SiftExtractor(max_keypoints=600).extract(q_img).keypoints.astype(float)
    truth = base.project(zoomed.unproject(q_pts) @ R_rq.T)
    w, h = SIZE
    inside = np.all((truth > 20) & (truth < np.array([w - 21, h - 21])), axis=1)
    return {
        "ref": grey(ref_img),
        "query": grey(q_img),
        "q_pts": q_pts[inside],
        "truth": truth[inside],
        "to_query": lambda p: zoomed.project(base.unproject(p) @ R_rq),
    }


def test_refinement_recovers_true_positions_without_bias(pair: dict) -> None:
    rng = np.random.default_rng(5)
    predicted = pair["truth"] + rng.uniform(-0.6, 0.6, pair["truth"].shape)  # a rough first estimate
    refined, ok = refine_matches(pair["query"], pair["ref"], pair["q_pts"], pair["to_query"], predicted)
    err = (refined - pair["truth"])[ok]
    assert ok.mean() > 0.7, ok.mean()
    assert np.median(np.linalg.norm(err, axis=1)) < 0.08, np.median(np.linalg.norm(err, axis=1))
    assert np.all(np.abs(err.mean(axis=0)) < 0.02), err.mean(axis=0)  # the predictions' error is gone
    start = np.linalg.norm(predicted - pair["truth"], axis=1)[ok]
    assert np.median(np.linalg.norm(err, axis=1)) < 0.3 * np.median(start)


def test_refinement_rejects_what_it_cannot_align(pair: dict) -> None:
    q_pts, truth = pair["q_pts"][:50], pair["truth"][:50]
    flat = np.full_like(pair["ref"], 128.0)
    _, ok = refine_matches(flat, flat, q_pts, pair["to_query"], truth)
    assert not ok.any()  # no texture: no position
    far = truth + np.array([3.0, 0.0])  # predictions too far off: a move beyond max_shift_px is refused
    refined, ok = refine_matches(pair["query"], pair["ref"], q_pts, pair["to_query"], far)
    assert not np.any(ok & (np.linalg.norm(refined - far, axis=1) > RefineConfig().max_shift_px))
    edge = np.array([[2.0, 100.0]])
    _, ok = refine_matches(pair["query"], pair["ref"], pair["to_query"](edge), pair["to_query"], edge)
    assert not ok.any()  # the patch would leave the reference image
    refined, ok = refine_matches(
        pair["query"], pair["ref"], np.zeros((0, 2)), pair["to_query"], np.zeros((0, 2))
    )
    assert refined.shape == (0, 2) and ok.shape == (0,)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="half_window"):
        RefineConfig(half_window=1)
    with pytest.raises(ValueError, match="min_zncc"):
        RefineConfig(min_zncc=2.0)
    with pytest.raises(ValueError, match="grey"):
        grey(np.zeros((4, 4, 3, 1)))
