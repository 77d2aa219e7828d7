"""Mapping between the pipeline's PTZ degrees and a camera's ONVIF absolute-position space.

The pipeline uses pan/tilt in degrees (mount frame, see ptz_pipeline.camera) and ONVIF-normalised zoom 0..1.
An ONVIF PTZ node takes and reports absolute positions either in the generic space (pan/tilt -1..1, zoom
0..1), which a per-camera ``range_deg = (degrees at -1, degrees at +1)`` maps linearly onto degrees, or
directly in degrees. Pan wraps around (pan and pan ± 360° are the same direction); tilt and zoom do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GENERIC_PAN_TILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
GENERIC_ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
_EPS = 1e-9  # tolerance for values on a range limit after floating-point arithmetic

Range = tuple[float, float]


def _limits(range_: Range) -> Range:
    """(low, high) of a range given in either order."""
    return min(range_), max(range_)


def _fmt(range_: Range, unit: str) -> str:
    low, high = _limits(range_)
    return f"[{low:g}, {high:g}]{unit}"


def wrap_pan(pan_deg: float, range_deg: Range) -> float:
    """The direction ``pan_deg`` as ``pan_deg + k * 360`` inside ``range_deg`` (degrees), smallest |k| first.

    E.g. 200° in [-180, 180] -> -160°. ValueError naming the value and the range when no equivalent fits.
    """
    low, high = _limits(range_deg)
    k_low = math.ceil((low - pan_deg) / 360.0 - _EPS)
    k_high = math.floor((high - pan_deg) / 360.0 + _EPS)
    if k_low > k_high:
        raise ValueError(f"pan {pan_deg:g}° has no equivalent (± 360°) within the pan range "
                         f"{_fmt(range_deg, '°')}")
    k = min(max(0, k_low), k_high)
    return min(max(pan_deg + 360.0 * k, low), high)


def check_within(value: float, range_: Range, name: str, unit: str = "°") -> float:
    """``value`` clipped onto ``range_`` (within float tolerance); ValueError naming both when outside."""
    low, high = _limits(range_)
    if not low - _EPS <= value <= high + _EPS:
        raise ValueError(f"{name} {value:g}{unit} is outside the range {_fmt(range_, unit)}")
    return min(max(value, low), high)


def to_generic(value_deg: float, range_deg: Range) -> float:
    """Degrees -> generic -1..1, linear through ``range_deg`` = (degrees at -1, degrees at +1)."""
    at_minus_one, at_plus_one = range_deg
    return -1.0 + 2.0 * (value_deg - at_minus_one) / (at_plus_one - at_minus_one)


def from_generic(value: float, range_deg: Range) -> float:
    """Generic -1..1 -> degrees, linear through ``range_deg`` = (degrees at -1, degrees at +1)."""
    at_minus_one, at_plus_one = range_deg
    return at_minus_one + (value + 1.0) / 2.0 * (at_plus_one - at_minus_one)


def is_degrees_space(uri: str, *limits: Range) -> bool:
    """True when a pan/tilt space is in degrees: its URI says "Degrees" or a limit exceeds 1 in magnitude."""
    return "degrees" in uri.lower() or any(abs(limit) > 1.0 + _EPS for range_ in limits for limit in range_)


@dataclass(frozen=True)
class PositionSpace:
    """How one camera's PTZ node takes and reports absolute positions.

    ``degrees``: the node's pan/tilt are degrees (else the generic space -1..1). ``pan_range_deg`` and
    ``tilt_range_deg``: in the generic space the degrees at -1 and at +1 (either may be the larger: a
    reversed axis); in a degrees space the node's own limits in degrees. Pan commands are wrapped into the pan
    range; tilt and zoom outside their range raise ValueError. ``zoom_range``: the node's zoom at ONVIF zoom
    0 and 1 ((0, 1) for the generic zoom space).
    """

    degrees: bool
    pan_range_deg: Range
    tilt_range_deg: Range
    zoom_range: Range = (0.0, 1.0)

    def __post_init__(self) -> None:
        ranges = {"pan": self.pan_range_deg, "tilt": self.tilt_range_deg, "zoom": self.zoom_range}
        for name, range_ in ranges.items():
            if range_[0] == range_[1]:
                raise ValueError(f"{name} range {range_} is empty: its two ends must differ")

    @classmethod
    def from_node(
        cls,
        pan_tilt_uri: str,
        pan_limits: Range,
        tilt_limits: Range,
        *,
        pan_range_deg: Range,
        tilt_range_deg: Range,
        zoom_limits: Range = (0.0, 1.0),
    ) -> PositionSpace:
        """The space of a PTZ node's absolute pan/tilt space (URI, X and Y limits) and zoom limits.

        ``pan_range_deg``/``tilt_range_deg`` (the camera's configured degrees at generic -1/+1) are used when
        the node's space is generic; a degrees space brings its own limits.
        """
        if is_degrees_space(pan_tilt_uri, pan_limits, tilt_limits):
            return cls(True, pan_limits, tilt_limits, zoom_limits)
        return cls(False, pan_range_deg, tilt_range_deg, zoom_limits)

    def to_camera(self, pan: float, tilt: float, zoom: float) -> tuple[float, float, float]:
        """(pan deg, tilt deg, zoom 0..1) -> the node's (x, y, z); ValueError when out of range."""
        pan = wrap_pan(pan, self.pan_range_deg)
        tilt = check_within(tilt, self.tilt_range_deg, "tilt")
        zoom = check_within(zoom, (0.0, 1.0), "zoom", unit="")
        z = self.zoom_range[0] + zoom * (self.zoom_range[1] - self.zoom_range[0])
        if self.degrees:
            return pan, tilt, z
        return to_generic(pan, self.pan_range_deg), to_generic(tilt, self.tilt_range_deg), z

    def from_camera(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """The node's reported (x, y, z) -> (pan deg, tilt deg, zoom 0..1); no range check (a report)."""
        zoom = (z - self.zoom_range[0]) / (self.zoom_range[1] - self.zoom_range[0])
        if self.degrees:
            return x, y, zoom
        return from_generic(x, self.pan_range_deg), from_generic(y, self.tilt_range_deg), zoom
