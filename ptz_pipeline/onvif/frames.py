"""Frames from a camera: an RTSP stream (OpenCV's FFmpeg backend over TCP) or an ONVIF HTTP snapshot.

Images are RGB uint8 (H x W x 3); times are timezone-aware UTC. Credentials in URLs never appear in errors
or logs: URLs are shown through :func:`redact_url`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import cv2
import numpy as np
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from ptz_pipeline.camera import CaptureError

log = logging.getLogger(__name__)

_SECRET_QUERY_KEY = re.compile(r"pass|pwd|token|key|auth|secret|user", re.IGNORECASE)
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_FFMPEG_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "500000"}
"""RTSP over TCP (no lost UDP packets); analyse 0.5 s of stream when opening (FFmpeg's default is 5 s)."""
_env_lock = threading.Lock()


def redact_url(url: str) -> str:
    """``url`` without user and password (``***@host``) and with secret-looking query values as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "&".join(
        f"{key}=***" if _SECRET_QUERY_KEY.search(key) else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _use_ffmpeg_options() -> None:
    """Add our options to OpenCV's FFmpeg capture options (a process-wide environment variable, read when a
    stream opens); options already set there are kept."""
    with _env_lock:
        current = os.environ.get(_FFMPEG_OPTIONS_ENV, "")
        present = {item.partition(";")[0] for item in current.split("|") if item}
        added = [f"{key};{value}" for key, value in _FFMPEG_OPTIONS.items() if key not in present]
        if added:
            os.environ[_FFMPEG_OPTIONS_ENV] = "|".join(([current] if current else []) + added)


class _Reader:
    """One open stream and the thread decoding it, keeping the latest frame (BGR) and its arrival time."""

    def __init__(self, capture: cv2.VideoCapture, name: str) -> None:
        self.opened_at = datetime.now(UTC)
        self.alive = True
        self._capture = capture
        self._frame: np.ndarray | None = None
        self._arrival: datetime | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtsp-reader {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                ok, frame = self._capture.read()
                if not ok:  # end of stream, connection lost or no frame within the read timeout
                    break
                with self._changed:
                    self._frame, self._arrival = frame, datetime.now(UTC)
                    self._changed.notify_all()
        finally:
            self._capture.release()
            with self._changed:
                self.alive = False
                self._changed.notify_all()

    def frame_after(self, after: datetime, timeout: float) -> tuple[np.ndarray, datetime] | None:
        """The latest frame once one arrived at or after ``after``; None if the stream ends or ``timeout`` s
        pass first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._frame is not None and self._arrival is not None and self._arrival >= after:
                    return self._frame, self._arrival
                remaining = deadline - time.monotonic()
                if not self.alive or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def close(self, timeout: float) -> None:
        """Stop decoding; the capture is released once a read in progress returns (at most ``timeout`` s)."""
        self._stopping.set()
        self._thread.join(timeout)


class RtspGrabber:
    """Frames from an RTSP stream taken after a given moment, with one reconnect when the stream fails.

    The stream opens on the first :meth:`grab_after`; a thread then decodes every frame as it arrives, so no
    stale frames queue up in buffers and the RTSP session stays alive. ``settle_s`` is the stream's worst-case
    latency from exposure to arrival (typically 1-2 s): a frame arriving ``settle_s`` s after a moment, and
    ``settle_s`` s after the stream opened (which delivers already-buffered frames in a burst), was exposed
    after that moment. ``open_timeout_s`` bounds opening, ``read_timeout_s`` the wait for a frame beyond that.
    Corrupt macroblocks (decoder warnings on real streams) are not failures. One caller at a time.
    """

    def __init__(self, url: str, *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                 settle_s: float = 2.0) -> None:
        self._url = url
        self.name = redact_url(url)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.settle_s = settle_s
        self._reader: _Reader | None = None

    def grab_after(self, t_settled: datetime) -> tuple[np.ndarray, datetime]:
        """(RGB uint8 image, exposure time) of a frame exposed after ``t_settled`` (UTC).

        The exposure time returned is the earliest the frame can have been exposed (arrival - ``settle_s``),
        never before ``t_settled``. Raises CaptureError naming the stream when neither the open stream nor
        one reconnect delivers such a frame in time.
        """
        failures: list[str] = []
        for _ in range(2):
            if self._reader is None or not self._reader.alive:
                self._drop_reader()
                try:
                    self._reader = self._open()
                except CaptureError as exc:
                    failures.append(str(exc))
                    continue
            settle = timedelta(seconds=self.settle_s)
            after = max(t_settled, self._reader.opened_at) + settle
            wait = max(0.0, (after - datetime.now(UTC)).total_seconds()) + self.read_timeout_s
            got = self._reader.frame_after(after, wait)
            if got is not None:
                frame, arrival = got
                return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), arrival - settle
            failures.append("the stream ended" if not self._reader.alive
                            else f"no new frame within {self.read_timeout_s:g} s")
            self._drop_reader()
        raise CaptureError(
            f"RTSP {self.name}: no frame exposed after {t_settled.isoformat()} "
            f"(reconnected once; {'; then '.join(failures)})"
        )

    def _open(self) -> _Reader:
        _use_ffmpeg_options()
        log.info("opening RTSP stream %s", self.name)
        capture = cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.read_timeout_s * 1000),
        ])
        if not capture.isOpened():
            capture.release()
            raise CaptureError(f"the stream did not open within {self.open_timeout_s:g} s (refused, no "
                               "answer, wrong path or credentials)")
        return _Reader(capture, self.name)

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close(self.read_timeout_s + 1.0)

    def close(self) -> None:
        """Stop decoding and release the stream; safe to call twice."""
        self._drop_reader()

    def __enter__(self) -> RtspGrabber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _os_reason(exc: BaseException) -> str:
    """The operating system's reason (e.g. "Connection refused") behind a requests error, else its type."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def snapshot(url: str, username: str | None, password: str | None, timeout: float) -> np.ndarray:
    """An RGB uint8 image from an ONVIF snapshot URI (HTTP GET with digest or basic auth, as the camera asks).

    ``timeout`` s bounds the connection and each read. Raises CaptureError naming the redacted URL (never a
    credential).
    """
    name = redact_url(url)
    try:
        response = requests.get(url, auth=HTTPDigestAuth(username, password or "") if username else None,
                                timeout=timeout)
        challenge = response.headers.get("WWW-Authenticate", "").lower()
        if response.status_code == 401 and username and "basic" in challenge:
            response = requests.get(url, auth=HTTPBasicAuth(username, password or ""), timeout=timeout)
    except requests.Timeout:
        raise CaptureError(f"snapshot {name}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise CaptureError(f"snapshot {name}: request failed: {_os_reason(exc)}") from None
    if response.status_code != 200:
        hint = " (wrong or missing credentials?)" if response.status_code in (401, 403) else ""
        raise CaptureError(f"snapshot {name}: HTTP {response.status_code} {response.reason}{hint}")
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        content_type = response.headers.get("Content-Type", "no Content-Type")
        raise CaptureError(f"snapshot {name}: the answer is not an image ({content_type}, "
                           f"{len(response.content)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
