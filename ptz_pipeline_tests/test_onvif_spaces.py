"""ONVIF position spaces: degrees <-> generic -1..1, pan wrap-around, range errors, degrees spaces."""

from __future__ import annotations

import numpy as np
import pytest

from ptz_pipeline.onvif.spaces import (
    GENERIC_PAN_TILT_SPACE,
    PositionSpace,
    check_within,
    from_generic,
    is_degrees_space,
    to_generic,
    wrap_pan,
)

GENERIC = PositionSpace(degrees=False, pan_range_deg=(-180.0, 180.0), tilt_range_deg=(-90.0, 45.0))


@pytest.mark.parametrize("range_deg", [(-180.0, 180.0), (0.0, 350.0), (170.0, -170.0), (-90.0, 45.0)])
def test_generic_round_trip(range_deg: tuple[float, float]) -> None:
    degrees = np.linspace(min(range_deg), max(range_deg), 37)
    generic = [to_generic(value, range_deg) for value in degrees]
    assert min(generic) == pytest.approx(-1.0) and max(generic) == pytest.approx(1.0)
    assert [from_generic(value, range_deg) for value in generic] == pytest.approx(list(degrees), abs=1e-9)


def test_range_ends_map_to_minus_and_plus_one() -> None:
    assert to_generic(45.0, (-90.0, 45.0)) == pytest.approx(1.0)
    assert to_generic(-90.0, (-90.0, 45.0)) == pytest.approx(-1.0)
    assert to_generic(170.0, (170.0, -170.0)) == pytest.approx(-1.0)  # a reversed axis
    assert from_generic(0.0, (-180.0, 180.0)) == 0.0


@pytest.mark.parametrize(
    ("pan", "range_deg", "expected"),
    [
        (200.0, (-180.0, 180.0), -160.0),
        (-200.0, (-180.0, 180.0), 160.0),
        (180.0, (-180.0, 180.0), 180.0),  # already inside: kept, not moved to -180
        (540.0, (-180.0, 180.0), 180.0),
        (-20.0, (0.0, 360.0), 340.0),
        (725.0, (0.0, 350.0), 5.0),
        (100.0, (170.0, -170.0), 100.0),
    ],
)
def test_wrap_pan(pan: float, range_deg: tuple[float, float], expected: float) -> None:
    assert wrap_pan(pan, range_deg) == pytest.approx(expected)


def test_pan_without_equivalent_in_range_names_value_and_range() -> None:
    with pytest.raises(ValueError, match=r"pan 175° .*\[-170, 170\]°"):
        wrap_pan(175.0, (-170.0, 170.0))


def test_to_camera_wraps_pan_into_the_generic_range() -> None:
    x, y, z = GENERIC.to_camera(200.0, 0.0, 0.25)
    assert x == pytest.approx(-160.0 / 180.0)
    assert y == pytest.approx(to_generic(0.0, (-90.0, 45.0)))
    assert z == 0.25
    assert GENERIC.from_camera(x, y, z) == pytest.approx((-160.0, 0.0, 0.25))


def test_generic_space_round_trip_through_the_camera() -> None:
    rng = np.random.default_rng(0)
    for pan, tilt, zoom in zip(rng.uniform(-180, 180, 50), rng.uniform(-90, 45, 50), rng.uniform(0, 1, 50),
                               strict=True):
        assert GENERIC.from_camera(*GENERIC.to_camera(pan, tilt, zoom)) == pytest.approx((pan, tilt, zoom))


@pytest.mark.parametrize(
    ("pan", "tilt", "zoom", "message"),
    [
        (0.0, 50.0, 0.0, r"tilt 50° is outside the range \[-90, 45\]°"),
        (0.0, -95.0, 0.0, r"tilt -95° is outside the range \[-90, 45\]°"),
        (0.0, 0.0, 1.2, r"zoom 1.2 is outside the range \[0, 1\]"),
    ],
)
def test_out_of_range_names_value_and_range(pan: float, tilt: float, zoom: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GENERIC.to_camera(pan, tilt, zoom)


def test_range_limit_within_float_tolerance_is_accepted() -> None:
    assert check_within(45.0 + 1e-12, (-90.0, 45.0), "tilt") == 45.0


def test_degrees_space_passes_degrees_through_and_wraps_into_its_limits() -> None:
    space = PositionSpace.from_node(
        "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionSpaceDegrees", (0.0, 360.0), (-90.0, 10.0),
        pan_range_deg=(-180.0, 180.0), tilt_range_deg=(-90.0, 90.0),
    )
    assert space.degrees
    assert space.to_camera(120.0, -30.0, 0.5) == (120.0, -30.0, 0.5)
    assert space.from_camera(120.0, -30.0, 0.5) == (120.0, -30.0, 0.5)
    assert space.to_camera(-20.0, 0.0, 0.0)[0] == pytest.approx(340.0)
    with pytest.raises(ValueError, match=r"tilt 20° is outside the range \[-90, 10\]°"):
        space.to_camera(0.0, 20.0, 0.0)


def test_space_kind_from_uri_and_limits() -> None:
    assert not is_degrees_space(GENERIC_PAN_TILT_SPACE, (-1.0, 1.0), (-1.0, 1.0))
    assert is_degrees_space("http://example.com/PanTiltSpaces/SphericalPositionSpaceDegrees", (-1.0, 1.0))
    assert is_degrees_space(GENERIC_PAN_TILT_SPACE, (-180.0, 180.0), (-1.0, 1.0))  # limits beyond 1
    generic = PositionSpace.from_node(GENERIC_PAN_TILT_SPACE, (-1.0, 1.0), (-1.0, 1.0),
                                      pan_range_deg=(-170.0, 170.0), tilt_range_deg=(-90.0, 0.0))
    assert not generic.degrees and generic.pan_range_deg == (-170.0, 170.0)


def test_zoom_range_of_a_non_generic_zoom_space() -> None:
    space = PositionSpace(degrees=True, pan_range_deg=(0.0, 360.0), tilt_range_deg=(-90.0, 90.0),
                          zoom_range=(1.0, 30.0))
    assert space.to_camera(0.0, 0.0, 0.5)[2] == pytest.approx(15.5)
    assert space.from_camera(0.0, 0.0, 30.0)[2] == pytest.approx(1.0)


def test_empty_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="tilt range"):
        PositionSpace(degrees=False, pan_range_deg=(-180.0, 180.0), tilt_range_deg=(10.0, 10.0))
