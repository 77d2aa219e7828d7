"""Frames: RtspGrabber on a real RTSP stream (ptz_pipeline.sim.rtsp), snapshots from a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from ptz_pipeline.camera import CaptureError
from ptz_pipeline.onvif.frames import RtspGrabber, redact_url, snapshot
from ptz_pipeline.sim.rtsp import RtspServer

USER, PASSWORD = "admin", "pa55-Secret!"
RED = (255, 0, 0)


def now() -> datetime:
    return datetime.now(UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def full_text(exc: BaseException) -> str:
    """The exception as a log would show it, with its chained causes."""
    return "".join(traceback.format_exception(exc))


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pa55@10.0.0.5:554/Streaming/101") == "rtsp://***@10.0.0.5:554/Streaming/101"
    assert redact_url("rtsp://admin@cam/x") == "rtsp://***@cam/x"
    assert (redact_url("http://cam/snap.cgi?channel=1&user=admin&password=pa55&token=abc")
            == "http://cam/snap.cgi?channel=1&user=***&password=***&token=***")
    assert redact_url("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"


# --- RTSP --------------------------------------------------------------------------------------------------


class Scene:
    """What the simulated camera sees: black, or ``colour`` from the wall-clock time ``switch_at`` on."""

    def __init__(self, colour: tuple[int, int, int] = RED) -> None:
        self.colour = colour
        self.switch_at: datetime | None = None

    def frame(self) -> np.ndarray:
        lit = self.switch_at is not None and now() >= self.switch_at
        return np.full((120, 160, 3), self.colour if lit else (0, 0, 0), np.uint8)


def is_colour(image: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(image.reshape(-1, 3).mean(axis=0) - colour).max() < 40)


@pytest.fixture
def stream() -> Iterator[tuple[RtspServer, Scene]]:
    """A real RTSP server (H.264 over TCP) showing a Scene with 0.8 s latency, like a real camera."""
    scene = Scene()
    server = RtspServer(scene.frame, port=0, fps=10, latency_s=0.8)
    server.start()
    yield server, scene
    server.stop()


@pytest.mark.integration
def test_grab_after_returns_an_rgb_frame_exposed_after_settling(stream: tuple[RtspServer, Scene]) -> None:
    server, scene = stream
    with (RtspGrabber(server.url, open_timeout_s=5, read_timeout_s=3, settle_s=1.2) as grabber,
          RtspGrabber(server.url, open_timeout_s=5, read_timeout_s=3, settle_s=0.0) as naive):
        for camera in (grabber, naive):  # both streams open and decoding before the scene changes
            image, _ = camera.grab_after(now())
            assert image.shape == (120, 160, 3) and image.dtype == np.uint8
            assert is_colour(image, (0, 0, 0))
        scene.switch_at = settled = now()  # e.g. the camera arrived at its stop
        stale, _ = naive.grab_after(settled)  # the stream still shows the past (0.8 s latency)
        assert is_colour(stale, (0, 0, 0))
        image, exposure = grabber.grab_after(settled)
        assert is_colour(image, RED)  # RGB order: red is channel 0
        assert settled <= exposure <= now()


@pytest.mark.integration
def test_a_dead_stream_raises_after_one_reconnect(stream: tuple[RtspServer, Scene]) -> None:
    server, _ = stream
    with RtspGrabber(server.url, open_timeout_s=2, read_timeout_s=1, settle_s=0.2) as grabber:
        grabber.grab_after(now())
        server.kill_stream()
        start = time.monotonic()
        with pytest.raises(CaptureError, match=r"RTSP rtsp://127.0.0.1:\d+/stream: no frame exposed after .*"
                                               r"reconnected once.*the stream did not open within 2 s"):
            grabber.grab_after(now())
        assert time.monotonic() - start < 2 * 2 + 1 + 1  # two opens at most, one read timeout, margin


@pytest.mark.integration
def test_a_server_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream"
        with RtspGrabber(url, open_timeout_s=0.5, read_timeout_s=0.5, settle_s=0.0) as grabber:
            start = time.monotonic()
            expected = r"did not open within 0.5 s.*; then the stream did not open"
            with pytest.raises(CaptureError, match=expected):
                grabber.grab_after(now())
            assert time.monotonic() - start < 2 * 0.5 + 2.0


@pytest.mark.integration
def test_reconnects_when_the_stream_comes_back(stream: tuple[RtspServer, Scene]) -> None:
    server, scene = stream
    with RtspGrabber(server.url, open_timeout_s=5, read_timeout_s=2, settle_s=0.2) as grabber:
        grabber.grab_after(now())
        server.kill_stream()
        scene.switch_at = now()
        server.start()  # same URL
        image, _ = grabber.grab_after(now())
        assert is_colour(image, RED)


@pytest.mark.integration
def test_stream_credentials_never_shown(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/stream?password={PASSWORD}"
    with RtspGrabber(url, open_timeout_s=1, read_timeout_s=1, settle_s=0.0) as grabber:
        with pytest.raises(CaptureError) as error:
            grabber.grab_after(now())
    assert "rtsp://***@127.0.0.1" in str(error.value)
    captured = capfd.readouterr()
    for text in (full_text(error.value), captured.out, captured.err, caplog.text):
        assert PASSWORD not in text


# --- snapshots ---------------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class SnapshotHandler(BaseHTTPRequestHandler):
    """``/snapshot.jpg`` behind the auth the server's ``auth`` attribute names (basic | digest); ``/page``
    answers HTML."""

    realm, nonce = "IP Camera", "5f2c1e0d9a"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        """Keep the test output quiet."""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.server.auth == "basic":  # type: ignore[attr-defined]
            return header == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        fields = {k: v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header)}
        if not header.startswith("Digest ") or fields.get("username") != USER:
            return False
        ha1 = _md5(f"{USER}:{self.realm}:{PASSWORD}")
        ha2 = _md5(f"GET:{fields['uri']}")
        expected = _md5(f"{ha1}:{self.nonce}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}")
        return fields.get("response") == expected

    def do_GET(self) -> None:
        if self.path == "/page":
            self._send(200, b"<html>login</html>", "text/html")
        elif not self._authorised():
            challenge = (f'Basic realm="{self.realm}"' if self.server.auth == "basic"  # type: ignore[attr-defined]
                         else f'Digest realm="{self.realm}", qop="auth", nonce="{self.nonce}", algorithm=MD5')
            self._send(401, b"unauthorised", "text/plain", {"WWW-Authenticate": challenge})
        else:
            jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), RED[::-1], np.uint8))[1].tobytes()
            self._send(200, jpeg, "image/jpeg")


@pytest.fixture(params=["basic", "digest"])
def snapshot_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The base URL of a camera's HTTP server asking for basic or digest auth."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SnapshotHandler)
    server.auth = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.integration
def test_snapshot_with_the_auth_the_camera_asks_for(snapshot_url: str) -> None:
    image = snapshot(f"{snapshot_url}/snapshot.jpg", USER, PASSWORD, timeout=2.0)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert is_colour(image, RED)


@pytest.mark.integration
def test_snapshot_wrong_password_never_shows_a_password(snapshot_url: str) -> None:
    expected = r"snapshot http://127.0.0.1:\d+/snapshot.jpg: HTTP 401 .*credentials"
    with pytest.raises(CaptureError, match=expected) as error:
        snapshot(f"{snapshot_url}/snapshot.jpg", USER, "wrong-" + PASSWORD, timeout=2.0)
    assert PASSWORD not in full_text(error.value)


@pytest.mark.integration
def test_snapshot_that_is_not_an_image(snapshot_url: str) -> None:
    with pytest.raises(CaptureError, match=r"not an image \(text/html, 18 bytes\)"):
        snapshot(f"{snapshot_url}/page", USER, PASSWORD, timeout=2.0)


@pytest.mark.integration
def test_snapshot_unreachable_never_shows_a_password() -> None:
    port = free_port()
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/snapshot.jpg?pwd={PASSWORD}"
    expected = f"http://***@127.0.0.1:{port}/snapshot.jpg?pwd=***: request failed: Connection refused"
    with pytest.raises(CaptureError, match=re.escape(expected)) as error:
        snapshot(url, USER, PASSWORD, timeout=2.0)
    assert PASSWORD not in full_text(error.value)


@pytest.mark.integration
def test_snapshot_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/snapshot.jpg"
        start = time.monotonic()
        with pytest.raises(CaptureError, match="no answer within 0.3 s"):
            snapshot(url, USER, PASSWORD, timeout=0.3)
        assert time.monotonic() - start < 2.0
