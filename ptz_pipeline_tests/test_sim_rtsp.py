"""The simulator's RTSP server, read with OpenCV's FFmpeg backend over real loopback sockets."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ptz_pipeline.sim.rtsp import RtspServer

pytestmark = pytest.mark.integration

FPS = 20.0  # FFmpeg's RTSP demuxer reads ~20 frames while opening: a high rate keeps the tests short
WIDTH, HEIGHT = 320, 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ffmpeg_children() -> list[int]:
    """PIDs of ffmpeg processes started by this test process."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()  # "pid (name) state ppid ..."
        except OSError:
            continue  # the process ended while we looked
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if name == "ffmpeg" and int(rest.split()[1]) == os.getpid():
            pids.append(int(stat.parent.name))
    return pids


class Pattern:
    """A gradient with a checkerboard that moves by 4 px per call; remembers every frame it returned."""

    def __init__(self) -> None:
        self.count = 0
        self.frames: list[np.ndarray] = []
        self.lock = threading.Lock()
        y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
        self.red = (x * 255 // (WIDTH - 1)).astype(np.uint8)
        self.green = (y * 255 // (HEIGHT - 1)).astype(np.uint8)
        self.x, self.y = x, y

    def __call__(self) -> np.ndarray:
        with self.lock:
            self.count += 1
            checker = (((self.x + 4 * self.count) // 40 + self.y // 40) % 2 * 200 + 30).astype(np.uint8)
            frame = np.dstack([self.red, self.green, checker])
            self.frames.append(frame)
            return frame

    def best_difference(self, bgr: np.ndarray) -> float:
        """Smallest mean absolute difference (grey levels) between ``bgr`` and any frame returned so far."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.int16)
        with self.lock:
            frames = list(self.frames)
        return min(float(np.abs(rgb - frame).mean()) for frame in frames)


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Every test must leave no ffmpeg process and no server thread behind."""
    yield
    assert ffmpeg_children() == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("rtsp-")] == []


@contextmanager
def serve(source: Callable[[], np.ndarray], **kwargs: Any) -> Iterator[RtspServer]:
    """A started server on a free port (``kwargs`` as RtspServer's), stopped after the block."""
    server = RtspServer(source, port=free_port(), fps=FPS, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_capture(url: str) -> cv2.VideoCapture:
    """A plain FFmpeg-backend capture with open/read timeouts (no transport options)."""
    capture = cv2.VideoCapture(
        url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 8000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3000]
    )
    assert capture.isOpened(), f"cannot open {url}"
    return capture


def read_live(capture: cv2.VideoCapture) -> np.ndarray:
    """Drain the frames buffered while opening; returns the first frame that had to be waited for."""
    while True:
        started = time.monotonic()
        ok, frame = capture.read()
        assert ok
        if time.monotonic() - started > 0.4 / FPS:
            return frame


@pytest.fixture
def pattern() -> Pattern:
    return Pattern()


@pytest.fixture
def server(pattern: Pattern) -> Iterator[RtspServer]:
    with serve(pattern) as started:
        yield started


def test_client_reads_the_source_frames(server: RtspServer, pattern: Pattern) -> None:
    started = time.monotonic()
    capture = cv2.VideoCapture(server.url)  # no options at all: the UDP-first fallback to TCP must work
    try:
        assert capture.isOpened()
        frames = [capture.read() for _ in range(10)]
    finally:
        capture.release()
    assert time.monotonic() - started < 6.0
    for ok, frame in frames:
        assert ok
        assert frame.shape == (HEIGHT, WIDTH, 3)
        assert pattern.best_difference(frame) < 8.0


def test_two_clients_at_once_and_one_leaving(server: RtspServer, pattern: Pattern) -> None:
    first, second = open_capture(server.url), open_capture(server.url)
    try:
        for _ in range(5):
            for capture in (first, second):
                ok, frame = capture.read()
                assert ok and pattern.best_difference(frame) < 8.0
        first.release()
        for _ in range(int(FPS)):  # one second more for the client that stayed
            ok, frame = second.read()
            assert ok and pattern.best_difference(frame) < 8.0
    finally:
        first.release()
        second.release()


def test_latency_delays_what_clients_see() -> None:
    switch_at: list[float] = []

    def source() -> np.ndarray:
        value = 220 if switch_at and time.monotonic() >= switch_at[0] else 30
        return np.full((HEIGHT, WIDTH, 3), value, np.uint8)

    with serve(source, latency_s=1.0) as server:
        capture = open_capture(server.url)
        try:
            assert read_live(capture).mean() < 100
            switch_at.append(time.monotonic())
            while True:
                ok, frame = capture.read()
                assert ok and time.monotonic() - switch_at[0] < 4.0
                if frame.mean() > 125:
                    break
        finally:
            capture.release()
    delay = time.monotonic() - switch_at[0]
    assert 1.0 <= delay < 2.0


def test_timestamp_overlay_marks_the_corner() -> None:
    with serve(lambda: np.zeros((HEIGHT, WIDTH, 3), np.uint8), timestamp_overlay=True) as server:
        capture = open_capture(server.url)
        try:
            frame = read_live(capture)
        finally:
            capture.release()
    assert frame[HEIGHT - 30 :, : WIDTH // 2].max() > 150  # white text, bottom left
    assert frame[: HEIGHT // 2].max() < 40  # the rest stays black


def test_kill_stream_ends_a_reading_client(server: RtspServer) -> None:
    capture = open_capture(server.url)
    try:
        read_live(capture)
        server.kill_stream()
        killed = time.monotonic()
        while capture.read()[0]:  # frames already buffered may still come
            assert time.monotonic() - killed < 5.0
    finally:
        capture.release()
    assert time.monotonic() - killed < 5.0
    server.stop()  # idempotent after kill_stream


def test_port_in_use_is_an_oserror_naming_the_port(pattern: Pattern) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=str(port)):
            RtspServer(pattern, port=port).start()


def test_missing_ffmpeg_is_a_runtimeerror(pattern: Pattern, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="ffmpeg.*Debian package"):
        RtspServer(pattern, port=free_port()).start()
