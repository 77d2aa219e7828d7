"""Real external data sets for the tests and the benchmarks: where they live and their loaders.

The panorama and OpenCV's chessboard photos ship inside the package (``PACKAGED_DATA``, each with its
SOURCE.txt and licence); the VGG Model House has no licence text, so it is read from ``SHARED_DATA``
(``../shared/data`` beside the checkout), which a user's clone may not have. Each loader takes the data set's
own folder and raises FileNotFoundError naming it when absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
"""External data beside the checkout (../shared/data): the VGG Model House among others."""
PACKAGED_DATA = Path(__file__).resolve().parent / "data"
"""Data shipped in the package: panorama/ (CC BY-SA 3.0) and opencv_left_chessboard/ (Apache-2.0)."""
PANORAMA = PACKAGED_DATA / "panorama" / "examplepano.jpg"
OPENCV_CHESSBOARD = PACKAGED_DATA / "opencv_left_chessboard"


class ModelHouseView(NamedTuple):
    """One view of the Oxford VGG Model House: 3-D points X (N, 3), their matched Harris corners x (N, 2,
    pixels of the 768x576 image) and VGG's published 3x4 camera matrix P (up to scale and sign)."""

    name: str
    """The view's file stem, e.g. ``house.000``."""
    X: np.ndarray
    x: np.ndarray
    P: np.ndarray


def _require_folder(folder: Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} not found at {folder} (expected in ../shared/data beside the checkout; see its README)"
        )
    return folder


def load_model_house(folder: Path) -> list[ModelHouseView]:
    """All views of the VGG Model House from ``folder`` (3D/house.p3d, 2D/house.nview-corners with '*' for
    unmatched, 2D/house.NNN.corners, 3D/house.NNN.P)."""
    root = _require_folder(folder, "VGG Model House data")
    X_all = np.loadtxt(root / "3D" / "house.p3d")
    rows = [line.split() for line in (root / "2D" / "house.nview-corners").read_text().splitlines() if line]
    if len(rows) != len(X_all):
        raise ValueError(f"{root}: house.nview-corners has {len(rows)} rows for {len(X_all)} 3-D points")
    views = []
    for v in range(len(rows[0])):
        corners = np.loadtxt(root / "2D" / f"house.{v:03d}.corners")
        pairs = np.array([(i, int(r[v])) for i, r in enumerate(rows) if r[v] != "*"])
        P = np.loadtxt(root / "3D" / f"house.{v:03d}.P")
        views.append(ModelHouseView(f"house.{v:03d}", X_all[pairs[:, 0]], corners[pairs[:, 1]], P))
    return views


def opencv_chessboard_paths(folder: Path) -> list[Path]:
    """OpenCV's chessboard photos ``images/left*.jpg`` in ``folder``, sorted by name (13; no left10)."""
    root = _require_folder(folder, "OpenCV chessboard images")
    paths = sorted((root / "images").glob("left*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no images/left*.jpg in {root}")
    return paths
