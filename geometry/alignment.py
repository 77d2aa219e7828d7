"""Mount alignment ``R_align = R_WB`` (mount frame B -> world frame W, local ENU at the camera) from
control points: landmarks with known world coordinates seen at pixel (u, v) in frames with PTZ telemetry.

Each observation gives a bearing in the mount frame, ``b_B = R_BC(pan, tilt) @ unproject(u, v)`` (with
the intrinsics at the frame's zoom), and the landmark gives the world bearing ``d_W = (p_W - c_W) / |.|``
from the camera position ``c_W``; ``R_align`` maps the first onto the second. Three methods:

- ``bearings`` (camera position known): Wahba's problem solved in closed form (Kabsch SVD), then a robust
  refinement (scipy ``least_squares`` on the angular residuals, soft-L1 loss then Cauchy loss, both with
  scale ``robust_scale_deg``) that tolerates gross outliers;
- ``resection`` (position unknown, >= 6 landmarks off a single plane): the mount bearings become "virtual
  pixels" of a pinhole camera fixed to the mount (unit focal length, axis along the mean bearing); the Gold
  Standard camera matrix of those virtual pixels (``geometry.dlt``) is decomposed into R and the camera
  centre, and the pose (rotation + position) is then refined robustly with the known virtual intrinsics;
- ``ground_plane`` (landmarks given as map coordinates on the ground plane, >= 4): Gold Standard plane
  homography map -> virtual pixels, decomposed into rotation and camera position (x, y and height above
  the plane; the map scale is metric so the height is estimated unless given), then refined robustly.

Residuals are angles (degrees) between the observed and predicted bearings.

Control-points document (JSON, YAML or CSV file, ``load_control_points``; or an already parsed mapping,
``parse_control_points``)::

    {
      "enu_origin": {"lat": 47.4979, "lon": 19.0402, "alt": 120.0},    # optional, WGS-84 deg, ellipsoidal m
      "camera_position": {"lat": 47.4979, "lon": 19.0402, "alt": 126.5},  # optional; or {"enu": [e, n, u]}
      "camera_height_m": 6.5,                                           # optional, map_xy points only
      "points": [
        {"name": "church", "pan": 12.5, "tilt": -1.2, "zoom": 0.0, "u": 812.4, "v": 330.1,
         "enu": [410.2, 1220.0, 35.0]},                                # ENU metres, or
        {"name": "mast", "pan": ..., "lat": 47.51, "lon": 19.05, "alt": 180.0},   # WGS-84, or
        {"name": "kerb", "pan": ..., "map_xy": [12.0, 40.5]}           # ground-plane map metres
      ]
    }

Unknown keys are rejected (a misspelt key must not silently change the method). pan/tilt are degrees
(``rotations.R_BC`` convention), zoom is ONVIF 0..1, (u, v) distorted pixels. Instead of pan, tilt and
zoom a point may name the reference frame it was clicked in, ``"image": "images/007.jpg"`` (a key of the
reference scan's manifest), when the frames' telemetry is passed as ``frames``. Every point has exactly one
of ``enu``, ``lat``/``lon``/``alt`` or ``map_xy``.

The same document as CSV (``parse_control_points_csv``; a header row, then one row per landmark, empty
cells are absent values)::

    name,pan,tilt,zoom,image,u,v,lat,lon,alt,east,north,up,map_x,map_y
    camera,,,,,,,47.4979,19.0402,126.5,,,,,          <- camera_position (or east, north, up)
    church,12.5,-1.2,0.0,,812.4,330.1,,,,410.2,1220.0,35.0,,
    mast,,,,images/007.jpg,402.0,210.7,47.51,19.05,180.0,,,,,

Columns may come in any order and unused ones may be left out. ``east, north, up`` is the JSON ``enu``
(pixel ``u`` keeps its name), ``map_x, map_y`` is ``map_xy``. Two row names are reserved: ``camera`` gives
``camera_position`` (lat, lon, alt or east, north, up) or, with ``up`` alone, ``camera_height_m``;
``enu_origin`` gives ``enu_origin`` (lat, lon, alt). ``map_xy`` axes are east and north (e.g. a projected CRS
minus an offset) with the ground plane at height 0; map points cannot be mixed with the others.

ENU coordinates are relative to ``enu_origin`` when given; without it their frame is taken as ENU at the
camera (its origin should then be near the camera, within a few hundred metres). Geodetic points are
converted with pyproj relative to ``enu_origin``, else to the camera's lat/lon/alt, else to the mean of the
points (then the camera position is estimated and reported as ``camera_lla``). Whenever the frame's origin
is geodetic, the result is re-expressed in ENU at the camera (the frames differ by ~0.009 deg/km).

``R_align.npy`` holds R_align as a 3x3 float64 array (``save_r_align`` / ``load_r_align``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import yaml
from pyproj import Transformer
from scipy.optimize import least_squares

from geometry.camera import Intrinsics, ZoomModel
from geometry.dlt import decompose_camera_matrix, gold_standard_camera_matrix, gold_standard_homography
from geometry.rotations import R_BC, pan_tilt_of_direction, project_to_so3, rotvec_to_matrix

LLA = tuple[float, float, float]
"""WGS-84 (latitude deg, longitude deg, ellipsoidal altitude m)."""

MAX_VIRTUAL_ANGLE_DEG = 80.0
"""Resection and ground-plane methods need every bearing within this angle of the mean bearing."""


@dataclass(frozen=True)
class ControlPoint:
    """A landmark seen at distorted pixel (u, v) in a frame taken at (pan, tilt) degrees and ONVIF zoom,
    with exactly one of: ``enu`` (m), ``lla`` (WGS-84 lat, lon deg, alt m) or ``map_xy`` (ground plane, m)."""

    name: str
    pan: float
    tilt: float
    zoom: float
    u: float
    v: float
    enu: tuple[float, float, float] | None = None
    lla: LLA | None = None
    map_xy: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("enu", "lla", "map_xy") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"control point {self.name!r}: give exactly one of enu, lat/lon/alt, map_xy")
        coords = np.asarray(getattr(self, given[0]), dtype=float)
        if coords.shape != (2 if given[0] == "map_xy" else 3,):
            raise ValueError(f"control point {self.name!r}: {given[0]} has the wrong length")
        if not np.all(np.isfinite([self.pan, self.tilt, self.zoom, self.u, self.v, *coords])):
            raise ValueError(f"control point {self.name!r}: values must be finite numbers")

    @property
    def kind(self) -> str:
        return "enu" if self.enu is not None else "lla" if self.lla is not None else "map_xy"


@dataclass(frozen=True)
class ControlPoints:
    """Control points plus what is known of the camera: position in ENU (m, relative to
    ``enu_origin_lla`` or the camera) or WGS-84, and height above the ground plane (map_xy points)."""

    points: tuple[ControlPoint, ...]
    camera_enu: tuple[float, float, float] | None = None
    camera_lla: LLA | None = None
    enu_origin_lla: LLA | None = None
    camera_height_m: float | None = None

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("control points: the list of points is empty")
        names = [p.name for p in self.points]
        if len(set(names)) != len(names):
            raise ValueError("control points: point names must be unique")
        if self.camera_enu is not None and self.camera_lla is not None:
            raise ValueError("control points: give the camera position as enu or as lat/lon/alt, not both")
        if self.camera_height_m is not None and not self.camera_height_m > 0:
            raise ValueError("control points: camera height above the ground plane must be positive")


@dataclass(frozen=True)
class AlignmentResult:
    """R_align (= R_WB, mount -> ENU at the camera, 3x3 float64) with per-point angular residuals.

    ``camera_position_enu``: estimated camera position (m) in the control points' frame (ENU at the
    origin, or map x, y and height above the ground plane); None when the position was given.
    ``camera_lla``: estimated WGS-84 camera position when the control points are geodetic.
    """

    R_align: np.ndarray
    method: str
    names: tuple[str, ...]
    residuals_deg: np.ndarray
    rms_deg: float
    camera_position_enu: np.ndarray | None = None
    camera_lla: LLA | None = None


# --- geodesy -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _lla_to_ecef() -> Transformer:
    return Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)


def ecef_to_enu_rotation(lat_deg: float, lon_deg: float) -> np.ndarray:
    """Rotation taking ECEF vectors to the local ENU frame at geodetic (lat, lon) degrees."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
    return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])


def _ecef(lla: np.ndarray) -> np.ndarray:
    lla = np.atleast_2d(np.asarray(lla, dtype=float))
    x, y, z = _lla_to_ecef().transform(lla[:, 1], lla[:, 0], lla[:, 2])
    return np.column_stack([x, y, z])


def lla_to_enu(lla: np.ndarray, origin_lla: Sequence[float]) -> np.ndarray:
    """WGS-84 (N, 3) [lat deg, lon deg, alt m] -> ENU metres (N, 3) at ``origin_lla``."""
    o = np.asarray(origin_lla, dtype=float)
    return (_ecef(lla) - _ecef(o)) @ ecef_to_enu_rotation(o[0], o[1]).T


def enu_to_lla(enu: np.ndarray, origin_lla: Sequence[float]) -> np.ndarray:
    """ENU metres (N, 3) at ``origin_lla`` -> WGS-84 (N, 3) [lat deg, lon deg, alt m]."""
    o = np.asarray(origin_lla, dtype=float)
    ecef = np.atleast_2d(enu) @ ecef_to_enu_rotation(o[0], o[1]) + _ecef(o)
    lon, lat, alt = _lla_to_ecef().transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], direction="INVERSE")
    return np.column_stack([lat, lon, alt])


# --- bearings and pose refinement ----------------------------------------------------------------


def mount_bearings(
    points: Sequence[ControlPoint], intrinsics: Intrinsics, zoom_model: ZoomModel | None = None
) -> np.ndarray:
    """Unit bearings (N, 3) in the mount frame: R_BC(pan, tilt) @ unproject(u, v) at each point's zoom."""
    out = []
    for p in points:
        intr = intrinsics if zoom_model is None else zoom_model.intrinsics_at(intrinsics, p.zoom)
        out.append(R_BC(p.pan, p.tilt) @ intr.unproject(np.array([[p.u, p.v]]))[0])
    return np.array(out)


def _tangent_basis(b: np.ndarray) -> np.ndarray:
    """Two unit vectors orthogonal to each unit bearing (N, 3) -> (N, 2, 3)."""
    helper = np.where(np.abs(b[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(b, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return np.stack([e1, np.cross(b, e1)], axis=1)


def _angular_residuals(b: np.ndarray, basis: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane error vectors (N, 2) of unit directions d against bearings b, with norm equal to
    the angle between them (radians), and those angles (N,)."""
    t = np.einsum("nij,nj->ni", basis, d)
    s = np.linalg.norm(t, axis=1)
    angle = np.arctan2(s, np.sum(b * d, axis=1))
    gain = np.divide(angle, s, out=np.ones_like(s), where=s > 1e-300)
    return t * gain[:, None], angle


def _refine_pose(
    b_B: np.ndarray,
    points_W: np.ndarray,
    R_init: np.ndarray,
    c_init: np.ndarray,
    free_position: Sequence[bool],
    robust_scale_deg: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust (soft-L1, then Cauchy) refinement of R_align and the free components of the camera
    position on the angular residuals. Returns (R_align, camera position, per-point angles in radians)."""
    free = np.asarray(free_position, dtype=bool)
    basis = _tangent_basis(b_B)

    def pose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.array(c_init, dtype=float)
        c[free] += x[3:]
        return rotvec_to_matrix(x[:3]) @ R_init, c

    def residuals(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R, c = pose(x)
        d = points_W - c
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return _angular_residuals(b_B, basis, d @ R)  # rows of d @ R are R^T d: bearings in B

    x = np.zeros(3 + int(free.sum()))
    # soft-L1 (convex, safe from the closed-form start), then Cauchy, whose influence fades for outliers
    for loss in ("soft_l1", "cauchy"):
        x = least_squares(
            lambda x: residuals(x)[0].ravel(),
            x,
            loss=loss,
            f_scale=math.radians(robust_scale_deg),
            x_scale="jac",
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
        ).x
    R, c = pose(x)
    return R, c, residuals(x)[1]


def _result(
    method: str,
    names: Sequence[str] | None,
    R: np.ndarray,
    angles_rad: np.ndarray,
    position: np.ndarray | None = None,
) -> AlignmentResult:
    res = np.degrees(angles_rad)
    labels = tuple(names) if names is not None else tuple(str(i) for i in range(len(res)))
    return AlignmentResult(
        R_align=np.asarray(R, dtype=np.float64),
        method=method,
        names=labels,
        residuals_deg=res,
        rms_deg=float(np.sqrt(np.mean(res**2))),
        camera_position_enu=position,
    )


def _check_bearings(b_B: np.ndarray, coords: np.ndarray, dim: int, min_n: int, method: str) -> None:
    if b_B.ndim != 2 or b_B.shape[1] != 3 or coords.shape != (len(b_B), dim):
        raise ValueError(f"{method}: need bearings (N, 3) and coordinates (N, {dim}) with equal N")
    if len(b_B) < min_n:
        raise ValueError(f"{method} needs at least {min_n} control points, got {len(b_B)}")
    if not (np.all(np.isfinite(b_B)) and np.all(np.isfinite(coords))):
        raise ValueError(f"{method}: bearings and coordinates must be finite")


# --- the three methods ---------------------------------------------------------------------------


def align_from_bearings(
    bearings_B: np.ndarray,
    points_W: np.ndarray,
    camera_W: Sequence[float],
    names: Sequence[str] | None = None,
    robust_scale_deg: float = 0.1,
) -> AlignmentResult:
    """Method (a): camera position known (ENU m). Kabsch/Wahba SVD of mount bearings (N, 3) against
    world bearings to the landmarks (N, 3, ENU m), then robust refinement on angular residuals
    (``robust_scale_deg`` is the residual scale where the loss turns from quadratic to linear)."""
    b = np.asarray(bearings_B, dtype=float)
    P = np.asarray(points_W, dtype=float)
    c = np.asarray(camera_W, dtype=float).reshape(3)
    _check_bearings(b, P, 3, 2, "bearing alignment")
    d = P - c
    dist = np.linalg.norm(d, axis=1)
    if np.any(dist <= 0):
        raise ValueError("bearing alignment: a landmark coincides with the camera position")
    B = (d / dist[:, None]).T @ b  # sum_i d_i b_i^T; R_align = argmax tr(R^T B)
    s = np.linalg.svd(B, compute_uv=False)
    if s[1] <= 1e-9 * s[0]:
        raise ValueError("bearing alignment: all bearings are parallel, rotation about them is undetermined")
    R, _, angles = _refine_pose(b, P, project_to_so3(B), c, [False] * 3, robust_scale_deg)
    return _result("bearings", names, R, angles)


def _virtual_camera(b_B: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Mount-fixed pinhole with unit focal length looking along the mean bearing: (R_BV, virtual pixels)."""
    m = b_B.mean(axis=0)
    if np.linalg.norm(m) < 1e-9:
        raise ValueError(f"{method}: bearings surround the camera, no single virtual pinhole holds them")
    R_BV = R_BC(*pan_tilt_of_direction(m))
    v = b_B @ R_BV  # rows are R_BV^T b
    if np.min(v[:, 2]) < math.cos(math.radians(MAX_VIRTUAL_ANGLE_DEG)):
        raise ValueError(
            f"{method}: control points span more than {MAX_VIRTUAL_ANGLE_DEG:.0f} deg from their mean "
            "direction; use a known camera position (bearing method) instead"
        )
    return R_BV, v[:, :2] / v[:, 2:3]


def align_by_resection(
    bearings_B: np.ndarray,
    points_W: np.ndarray,
    names: Sequence[str] | None = None,
    robust_scale_deg: float = 0.1,
) -> AlignmentResult:
    """Method (b): camera position unknown, N >= 6 landmarks (ENU m) not all on one plane. Gold Standard
    resection of virtual pixels -> RQ decomposition -> R_align and camera position -> robust refinement."""
    b = np.asarray(bearings_B, dtype=float)
    P = np.asarray(points_W, dtype=float)
    _check_bearings(b, P, 3, 6, "resection")
    R_BV, pix = _virtual_camera(b, "resection")
    _, R_VW, t = decompose_camera_matrix(gold_standard_camera_matrix(P, pix))
    if np.count_nonzero(P @ R_VW[2] + t[2] > 0) < len(P) / 2:
        raise ValueError("resection: landmarks behind the camera; are the ENU axes mirrored (east/north)?")
    c = -R_VW.T @ t
    R, c, angles = _refine_pose(b, P, R_VW.T @ R_BV.T, c, [True] * 3, robust_scale_deg)
    return _result("resection", names, R, angles, c)


def align_from_ground_plane(
    bearings_B: np.ndarray,
    map_xy: np.ndarray,
    camera_height_m: float | None = None,
    names: Sequence[str] | None = None,
    robust_scale_deg: float = 0.1,
) -> AlignmentResult:
    """Method (c): landmarks on the ground plane, map (x east, y north) metres (N, 2), N >= 4. Gold Standard
    homography map -> virtual pixels, decomposed into rotation and camera position (x, y, height above the
    plane), refined robustly; ``camera_height_m`` fixes the height when known."""
    b = np.asarray(bearings_B, dtype=float)
    xy = np.asarray(map_xy, dtype=float)
    _check_bearings(b, xy, 2, 4, "ground-plane alignment")
    R_BV, pix = _virtual_camera(b, "ground-plane alignment")
    H = gold_standard_homography(xy, pix)  # ~ [r1 r2 t] of R_VW, t = -R_VW c (virtual K = I)
    H = H / (0.5 * (np.linalg.norm(H[:, 0]) + np.linalg.norm(H[:, 1])))
    if np.count_nonzero(np.column_stack([xy, np.ones(len(xy))]) @ H[2] > 0) < len(xy) / 2:
        H = -H
    R_VW = project_to_so3(np.column_stack([H[:, 0], H[:, 1], np.cross(H[:, 0], H[:, 1])]))
    c = -R_VW.T @ H[:, 2]
    if c[2] <= 0:
        raise ValueError("ground-plane alignment: camera below the ground plane; is map_xy (east, north)?")
    if camera_height_m is not None:
        c[2] = camera_height_m
    ground = np.column_stack([xy, np.zeros(len(xy))])
    free = [True, True, camera_height_m is None]
    R, c, angles = _refine_pose(b, ground, R_VW.T @ R_BV.T, c, free, robust_scale_deg)
    return _result("ground_plane", names, R, angles, c)


# --- control points: dispatch and file I/O -------------------------------------------------------


def estimate_r_align(
    control_points: ControlPoints | str | Path,
    intrinsics: Intrinsics,
    zoom_model: ZoomModel | None = None,
    robust_scale_deg: float = 0.1,
) -> AlignmentResult:
    """R_align from control points (or a control-points file), choosing the method from what they hold:
    map_xy points -> ground plane; known camera position -> bearings; otherwise resection."""
    cp = control_points if isinstance(control_points, ControlPoints) else load_control_points(control_points)
    b = mount_bearings(cp.points, intrinsics, zoom_model)
    names = [p.name for p in cp.points]
    kinds = {p.kind for p in cp.points}
    if "map_xy" in kinds:
        if kinds != {"map_xy"}:
            raise ValueError("control points: map_xy points cannot be mixed with enu or lat/lon/alt points")
        if cp.camera_enu is not None or cp.camera_lla is not None:
            raise ValueError("control points: with map_xy points give camera_height_m, not camera_position")
        xy = np.array([p.map_xy for p in cp.points], dtype=float)
        return align_from_ground_plane(b, xy, cp.camera_height_m, names, robust_scale_deg)

    origin = cp.enu_origin_lla or cp.camera_lla
    if origin is None and "lla" in kinds:
        if "enu" in kinds or cp.camera_enu is not None:
            raise ValueError("control points: enu coordinates mixed with lat/lon/alt need enu_origin")
        origin = tuple(np.mean([p.lla for p in cp.points], axis=0))
    world = np.array(
        [p.enu if p.kind == "enu" else lla_to_enu(np.array(p.lla), origin)[0] for p in cp.points], dtype=float
    )
    camera = cp.camera_enu
    if cp.camera_lla is not None:
        camera = lla_to_enu(np.array(cp.camera_lla), origin)[0]
    if camera is not None:
        result = align_from_bearings(b, world, camera, names, robust_scale_deg)
    else:
        result = align_by_resection(b, world, names, robust_scale_deg)
    if origin is None:
        return result  # ENU frame taken to be at the camera
    cam_enu = result.camera_position_enu if camera is None else np.asarray(camera, dtype=float)
    cam_lla = enu_to_lla(cam_enu, origin)[0]
    R_camera_origin = ecef_to_enu_rotation(cam_lla[0], cam_lla[1]) @ ecef_to_enu_rotation(*origin[:2]).T
    return replace(
        result,
        R_align=R_camera_origin @ result.R_align,
        camera_lla=None if camera is not None else (float(cam_lla[0]), float(cam_lla[1]), float(cam_lla[2])),
    )


FrameTelemetry = Mapping[str, tuple[float, float, float]]
"""Reference image key -> (pan deg, tilt deg, zoom 0..1) reported when the frame was taken."""


def _lla_of(entry: dict, what: str) -> LLA:
    try:
        return float(entry["lat"]), float(entry["lon"]), float(entry["alt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{what}: needs numeric lat, lon and alt") from exc


def _floats(entry: dict, key: str, n: int, what: str) -> tuple[float, ...] | None:
    """``entry[key]`` as ``n`` floats, None when absent; ValueError naming ``what`` and ``key`` otherwise."""
    if key not in entry:
        return None
    try:
        values = tuple(float(x) for x in entry[key])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {key} needs {n} numbers") from exc
    if len(values) != n:
        raise ValueError(f"{what}: {key} needs {n} numbers, got {len(values)}")
    return values


_TOP_KEYS = {"enu_origin", "camera_position", "camera_height_m", "points"}
_TELEMETRY_KEYS = ("pan", "tilt", "zoom")
_POINT_KEYS = {"name", *_TELEMETRY_KEYS, "image", "u", "v", "enu", "lat", "lon", "alt", "map_xy"}


def _check_keys(entry: dict, allowed: set[str], what: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _telemetry(entry: dict, frames: FrameTelemetry | None, what: str) -> dict[str, float]:
    """pan, tilt, zoom given in the point, or those of the reference frame its ``image`` names."""
    if "image" not in entry:
        return {k: entry[k] for k in _TELEMETRY_KEYS if k in entry}
    if any(k in entry for k in _TELEMETRY_KEYS):
        raise ValueError(f"{what}: give pan, tilt, zoom or image, not both")
    if frames is None:
        raise ValueError(f"{what}: image {entry['image']!r} needs the reference scan's telemetry")
    if entry["image"] not in frames:
        raise ValueError(f"{what}: image {entry['image']!r} is not a frame of the reference scan")
    return dict(zip(_TELEMETRY_KEYS, frames[entry["image"]], strict=True))


def _point_from_dict(entry: dict, index: int, frames: FrameTelemetry | None) -> ControlPoint:
    if not isinstance(entry, dict):
        raise ValueError(f"control point #{index}: expected a mapping")
    name = str(entry.get("name", f"#{index}"))
    what = f"control point {name!r}"
    _check_keys(entry, _POINT_KEYS, what)
    given = {**_telemetry(entry, frames, what), "u": entry.get("u"), "v": entry.get("v")}
    try:
        telemetry = {k: float(given[k]) for k in (*_TELEMETRY_KEYS, "u", "v")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{what}: needs numeric pan, tilt, zoom (or image), u and v") from exc
    has_lla = any(k in entry for k in ("lat", "lon", "alt"))
    return ControlPoint(
        name=name,
        **telemetry,
        enu=_floats(entry, "enu", 3, what),
        lla=_lla_of(entry, what) if has_lla else None,
        map_xy=_floats(entry, "map_xy", 2, what),
    )


def parse_control_points(data: dict, frames: FrameTelemetry | None = None) -> ControlPoints:
    """Control points from a parsed document (format in the module docstring); ``frames`` gives the
    telemetry of points that name a reference ``image``."""
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ValueError("control points: expected a mapping with a 'points' list")
    _check_keys(data, _TOP_KEYS, "control points")
    camera = data.get("camera_position") or {}
    _check_keys(camera, {"enu", "lat", "lon", "alt"}, "camera_position")
    has_lla = any(k in camera for k in ("lat", "lon", "alt"))
    origin = data.get("enu_origin")
    height = data.get("camera_height_m")
    return ControlPoints(
        points=tuple(_point_from_dict(e, i, frames) for i, e in enumerate(data["points"])),
        camera_enu=_floats(camera, "enu", 3, "camera_position"),
        camera_lla=_lla_of(camera, "camera_position") if has_lla else None,
        enu_origin_lla=_lla_of(origin, "enu_origin") if origin is not None else None,
        camera_height_m=float(height) if height is not None else None,
    )


_CSV_AXES = {"enu": ("east", "north", "up"), "map_xy": ("map_x", "map_y")}
"""Document key -> its CSV columns."""


def _csv_axes(row: dict[str, str]) -> dict[str, object]:
    """A CSV row (empty cells dropped) with its axis columns gathered into the document's lists."""
    entry: dict[str, object] = dict(row)
    for key, columns in _CSV_AXES.items():
        if any(c in entry for c in columns):
            entry[key] = [entry.pop(c, None) for c in columns]
    return entry


def _csv_document(text: str) -> dict:
    """The JSON document a control-points CSV stands for (rows ``camera`` and ``enu_origin`` become the
    top-level keys)."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))  # a spreadsheet's byte-order mark
    header = [c.strip() for c in reader.fieldnames or []]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise ValueError(
            f"control points CSV: columns {twice} named twice (ENU is east, north, up; u, v are pixels)"
        )
    document: dict = {"points": []}
    for line, raw in enumerate(reader, start=2):
        if None in raw:
            raise ValueError(f"control points CSV: line {line} has more cells than the header")
        row = {k.strip(): v.strip() for k, v in raw.items() if v is not None and v.strip()}
        name = row.get("name")
        if name == "camera" and set(row) == {"name", "up"}:
            document["camera_height_m"] = row["up"]
        elif name in ("camera", "enu_origin"):
            entry = _csv_axes({k: v for k, v in row.items() if k != "name"})
            document["camera_position" if name == "camera" else "enu_origin"] = entry
        elif row:
            document["points"].append(_csv_axes(row))
    return document


def parse_control_points_csv(text: str, frames: FrameTelemetry | None = None) -> ControlPoints:
    """Control points from CSV text (columns in the module docstring); ``frames`` as in
    :func:`parse_control_points`."""
    return parse_control_points(_csv_document(text), frames)


def load_control_points(path: str | Path, frames: FrameTelemetry | None = None) -> ControlPoints:
    """Read a control-points file (.json, .yaml, .yml or .csv; format in the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"control-points file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".csv"):
        raise ValueError(f"{path}: control-points file must be .json, .yaml, .yml or .csv")
    text = path.read_text()
    try:
        if suffix == ".csv":
            return parse_control_points_csv(text, frames)
        return parse_control_points(json.loads(text) if suffix == ".json" else yaml.safe_load(text), frames)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"{path}: {exc}") from exc


# --- R_align.npy -----------------------------------------------------------------------------------


def _as_rotation(R: np.ndarray, what: str) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ValueError(f"{what}: expected a finite 3x3 matrix, got shape {R.shape}")
    if np.max(np.abs(R.T @ R - np.eye(3))) > 1e-6 or np.linalg.det(R) <= 0:
        raise ValueError(f"{what}: not a rotation matrix (needs R^T R = I and det R = +1)")
    return R


def save_r_align(path: str | Path | BinaryIO, R: np.ndarray) -> None:
    """Write R_align (3x3 rotation) as ``R_align.npy`` (float64) to a path or a binary file object."""
    R = _as_rotation(R, "R_align")
    if hasattr(path, "write"):
        np.save(path, R)
        return
    with open(Path(path), "wb") as f:
        np.save(f, R)


def load_r_align(path: str | Path | BinaryIO) -> np.ndarray:
    """Read ``R_align.npy`` from a path or binary file object and check it is a 3x3 rotation (float64)."""
    if not hasattr(path, "read"):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"R_align file not found: {path}")
    try:
        R = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable R_align .npy ({exc})") from None
    return _as_rotation(R, f"R_align ({path})")
