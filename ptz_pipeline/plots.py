"""A camera's drift over time as a PNG (drawn with OpenCV, no plotting library): yaw, pitch, roll ± σ."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import cv2
import numpy as np

MARK_BGR = (120, 120, 120)
"""Colour of the vertical version-change marks (grey)."""
COLOURS_BGR = {"yaw": (200, 90, 30), "pitch": (40, 160, 40), "roll": (40, 40, 210)}
"""Line colour per angle (blue, green, red)."""


def drift_plot_png(
    hours: list[datetime],
    angles_deg: np.ndarray,
    sigma_deg: np.ndarray,
    title: str,
    threshold_deg: float | None = None,
    size: tuple[int, int] = (900, 360),
    marks: Sequence[tuple[datetime, str]] = (),
) -> bytes:
    """PNG of yaw/pitch/roll (degrees, ``angles_deg`` (n, 3), NaN for failed hours) with ±σ whiskers over
    ``hours`` (UTC); dashed lines at ±``threshold_deg``; a dotted grey vertical line, labelled, at each of
    ``marks`` (hour, label: e.g. a calibration version change). Axes: time to the right, degrees up."""
    width, height = size
    left, right, top, bottom = 70, 110, 34, 40
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, title, (left, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    values = angles_deg[np.isfinite(angles_deg)]
    if not hours or values.size == 0:
        cv2.putText(image, "no estimates yet", (left, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0))
        return _png(image)
    limit = max(float(np.nanmax(np.abs(values))), threshold_deg or 0.0, 1e-3) * 1.15
    t0, t1 = hours[0].timestamp(), max(hours[-1].timestamp(), hours[0].timestamp() + 3600.0)

    def x_of(t: datetime) -> int:
        return int(left + (t.timestamp() - t0) / (t1 - t0) * (width - left - right))

    def y_of(v: float) -> int:
        return int(top + (limit - v) / (2 * limit) * (height - top - bottom))

    cv2.rectangle(image, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for v in (-limit / 1.15, 0.0, limit / 1.15):
        cv2.line(image, (left, y_of(v)), (width - right, y_of(v)), (225, 225, 225), 1)
        cv2.putText(image, f"{v:+.3f}", (4, y_of(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    if threshold_deg is not None:
        for v in (-threshold_deg, threshold_deg):
            for x in range(left, width - right, 12):
                cv2.line(image, (x, y_of(v)), (min(x + 6, width - right), y_of(v)), (0, 0, 180), 1)
    for n, (t, label) in enumerate(marks):
        x = x_of(t)
        for y in range(top, height - bottom, 8):
            cv2.line(image, (x, y), (x, min(y + 3, height - bottom)), MARK_BGR, 1)
        cv2.putText(image, label, (x + 3, top + 12 + 12 * (n % 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, MARK_BGR)
    for t in (hours[0], hours[-1]):
        cv2.putText(image, f"{t:%m-%d %H:%M}", (x_of(t) - 30, height - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0)
    for k, (name, colour) in enumerate(COLOURS_BGR.items()):
        points = []
        for t, v, sigma in zip(hours, angles_deg[:, k], sigma_deg[:, k], strict=True):
            if np.isfinite(v):
                points.append((x_of(t), y_of(v)))
                cv2.line(image, (points[-1][0], y_of(v - sigma)), (points[-1][0], y_of(v + sigma)), colour, 1)
                cv2.circle(image, points[-1], 2, colour, -1)
        if len(points) > 1:
            cv2.polylines(image, [np.array(points, np.int32)], False, colour, 1, cv2.LINE_AA)
        cv2.putText(
            image, name, (width - right + 10, top + 20 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour
        )
    return _png(image)


def _png(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
