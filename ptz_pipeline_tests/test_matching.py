"""Matchers on rendered views with a known rotation (inliers of the ground-truth homography), mutual-NN on
descriptors with a known correspondence, LightGlue weight loading, and reference-frame selection."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from geometry.features import LIGHTGLUE_DISK_WEIGHTS, DiskExtractor, Features, SiftExtractor, model_path
from geometry.matching import (
    LightGlueMatcher,
    MutualNNMatcher,
    make_matcher,
    mutual_nn_ratio,
    select_reference_frames,
)
from ptz_pipeline.settings import model_dir
from ptz_pipeline_tests.test_features import rendered_pair, transfer_errors


@pytest.fixture(scope="module")
def pair_features() -> dict[str, tuple[Features, Features, np.ndarray]]:
    image_a, image_b, H_ab, _ = rendered_pair()
    try:
        disk = DiskExtractor(model_dir(), max_keypoints=1024, resize_max=640, device="cpu")
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    sift = SiftExtractor(max_keypoints=2048)
    return {
        "disk": (disk.extract(image_a), disk.extract(image_b), H_ab),
        "sift": (sift.extract(image_a), sift.extract(image_b), H_ab),
    }


@pytest.fixture(scope="module")
def lightglue() -> LightGlueMatcher:
    return LightGlueMatcher(model_dir(), device="cpu")


@pytest.mark.parametrize(
    ("matcher_kind", "feature_kind"), [("lightglue", "disk"), ("mnn", "disk"), ("mnn", "sift")]
)
def test_matches_are_inliers_of_the_true_homography(
    pair_features, lightglue, matcher_kind, feature_kind
) -> None:
    fa, fb, H_ab = pair_features[feature_kind]
    matcher = lightglue if matcher_kind == "lightglue" else make_matcher("mnn", device="cpu")
    t0 = time.perf_counter()
    matches, scores = matcher.match(fa, fb)
    elapsed = time.perf_counter() - t0
    assert matches.dtype == np.int64 and matches.shape[1] == 2 and scores.shape == (len(matches),)
    assert len(np.unique(matches[:, 0])) == len(matches) and len(np.unique(matches[:, 1])) == len(matches)
    err = transfer_errors(H_ab, fa.keypoints[matches[:, 0]], fb.keypoints[matches[:, 1]])
    inlier_ratio = np.mean(err < 2.0)
    assert len(matches) > 200, len(matches)
    assert inlier_ratio > 0.9, inlier_ratio
    assert elapsed < 10.0, f"{matcher_kind} took {elapsed:.2f} s for {len(fa)} x {len(fb)} keypoints on CPU"


def test_lightglue_rejects_what_its_weights_cannot_match(pair_features, lightglue) -> None:
    fa, fb, _ = pair_features["disk"]
    sa, _, _ = pair_features["sift"]
    with pytest.raises(ValueError, match="DISK"):
        lightglue.match(sa, fb)
    empty = Features(np.zeros((0, 2)), np.zeros((0, 128)), np.zeros(0), fa.image_size, "disk")
    matches, scores = lightglue.match(empty, fb)
    assert matches.shape == (0, 2) and scores.shape == (0,)
    with pytest.raises(ValueError, match="cannot match"):
        MutualNNMatcher().match(sa, fb)


def test_lightglue_loads_every_weight_of_the_checkpoint(lightglue) -> None:
    state = torch.load(model_path(LIGHTGLUE_DISK_WEIGHTS, model_dir()), map_location="cpu", weights_only=True)
    model = lightglue.model
    assert torch.equal(model.transformers[3].self_attn.Wqkv.weight, state["self_attn.3.Wqkv.weight"])
    assert torch.equal(model.transformers[8].cross_attn.to_out.weight, state["cross_attn.8.to_out.weight"])
    assert torch.equal(model.log_assignment[8].final_proj.weight, state["log_assignment.8.final_proj.weight"])
    unused = [k for k in state if k.startswith("log_assignment.") and k.endswith(".r")]
    assert sum(1 for _ in model.parameters()) == len(state) - len(unused)


def test_mutual_nn_ratio_recovers_a_known_correspondence() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 64)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    perm = rng.permutation(300)[:200]  # query i is reference perm[i] plus noise
    query = ref[perm] + rng.normal(scale=0.02, size=(200, 64)).astype(np.float32)
    distractors = rng.normal(size=(50, 64)).astype(np.float32)
    query = np.vstack([query, distractors / np.linalg.norm(distractors, axis=1, keepdims=True)])
    matches, scores = mutual_nn_ratio(query, ref, ratio=0.8)
    truth = {(i, int(p)) for i, p in enumerate(perm)}
    assert {tuple(m) for m in matches.tolist()} == truth
    assert np.all((scores > 0) & (scores <= 1))

    # a reference descriptor duplicated: the ratio test rejects the ambiguous query, ratio 1 keeps it
    ambiguous = np.vstack([ref, ref[perm[0]][None]])
    kept = {tuple(m) for m in mutual_nn_ratio(query, ambiguous, ratio=0.8)[0].tolist()}
    assert (0, int(perm[0])) not in kept and (1, int(perm[1])) in kept
    loose = mutual_nn_ratio(query, ambiguous, ratio=1.0)[0]
    assert 0 in loose[:, 0]


def test_mutual_nn_ratio_input_checks() -> None:
    m, s = mutual_nn_ratio(np.zeros((0, 8)), np.ones((5, 8)))
    assert m.shape == (0, 2) and s.shape == (0,)
    m, _ = mutual_nn_ratio(np.ones((1, 8)), np.ones((1, 8)))
    np.testing.assert_array_equal(m, [[0, 0]])
    with pytest.raises(ValueError, match="equal D"):
        mutual_nn_ratio(np.ones((3, 8)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="ratio"):
        mutual_nn_ratio(np.ones((3, 8)), np.ones((3, 8)), ratio=0.0)
    with pytest.raises(ValueError, match="unknown matcher"):
        make_matcher("flann")


def _axis_angle_deg(p1: float, t1: float, p2: float, t2: float) -> float:
    """Great-circle angle between two (pan, tilt) directions (spherical law of cosines, degrees)."""
    t1, t2, dp = np.radians(t1), np.radians(t2), np.radians(p2 - p1)
    c = np.sin(t1) * np.sin(t2) + np.cos(t1) * np.cos(t2) * np.cos(dp)
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def test_select_reference_frames_picks_the_nearest_overlapping_frames() -> None:
    grid = [(float(p), float(t)) for t in (-30, -10, 10) for p in range(0, 360, 30)]
    query = (47.0, -12.0)
    chosen = select_reference_frames(query, 50.0, grid, 50.0, max_frames=3)
    by_angle = sorted(range(len(grid)), key=lambda i: _axis_angle_deg(*query, *grid[i]))
    assert chosen == by_angle[:3]
    assert grid[chosen[0]] == (60.0, -10.0)

    # wrap-around in pan: 355° is next to 0° and 330°
    row = [(float(p), -10.0) for p in range(0, 360, 30)]
    near_north = select_reference_frames((355.0, -10.0), 50.0, row, [50.0] * len(row), max_frames=2)
    assert [row[i] for i in near_north] == [(0.0, -10.0), (330.0, -10.0)]

    # a narrow query far above the grid overlaps nothing; a wide one reaches the top row
    assert select_reference_frames((0.0, 50.0), 10.0, grid, 30.0) == []
    assert select_reference_frames((0.0, 50.0), 90.0, grid, 30.0, max_frames=1) == [grid.index((0.0, 10.0))]


def test_select_reference_frames_input_checks() -> None:
    with pytest.raises(ValueError, match="one reference hfov"):
        select_reference_frames((0.0, 0.0), 50.0, [(0.0, 0.0), (10.0, 0.0)], [50.0])
    with pytest.raises(ValueError, match="fields of view"):
        select_reference_frames((0.0, 0.0), 0.0, [(0.0, 0.0)], 50.0)
    with pytest.raises(ValueError, match="max_frames"):
        select_reference_frames((0.0, 0.0), 50.0, [(0.0, 0.0)], 50.0, max_frames=0)
    assert select_reference_frames((0.0, 0.0), 50.0, [], []) == []
