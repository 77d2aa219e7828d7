"""A small RTSP server that streams a simulated camera's view as H.264 (like a real PTZ camera).

``ffmpeg`` (Debian package ``ffmpeg``) reads raw RGB frames on stdin, encodes them with libx264 (no B-frames,
a keyframe every 0.5 s, SPS/PPS in the SDP and before every keyframe) and sends RTP/RTCP to two local UDP
sockets. A threaded Python RTSP server answers OPTIONS/DESCRIBE/SETUP/PLAY/TEARDOWN/GET_PARAMETER and relays
the packets to every playing client interleaved on its RTSP connection (RTP/AVP/TCP). A SETUP asking for UDP
gets ``461 Unsupported Transport``, on which FFmpeg-based clients (OpenCV, PyAV, ffmpeg) retry over TCP at
once, so a plain ``cv2.VideoCapture(url)`` works (OpenCV asks for TCP first anyway).

FFmpeg's RTSP demuxer reads about 20 frames before an open returns (it estimates the frame rate), so opening
takes about 20 / fps s plus up to one keyframe interval: ~1.5 s at 20 fps, ~5 s at 5 fps. Clients that know
the rate can skip that with the format option ``fpsprobesize=0`` (OpenCV:
``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp|fpsprobesize;0"``): ~2 s at 5 fps.
"""

from __future__ import annotations

import logging
import queue
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

PUBLIC_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
STARTUP_TIMEOUT_S = 5.0
CLIENT_QUEUE_PACKETS = 2048  # per client; packets beyond this (a client not reading) are dropped
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    461: "Unsupported Transport",
    501: "Not Implemented",
}


class _Client:
    """One RTSP connection: a reader thread (requests) and a writer thread (responses and media)."""

    def __init__(self, server: RtspServer, sock: socket.socket, address: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.outbox: queue.Queue[bytes | None] = queue.Queue(CLIENT_QUEUE_PACKETS)  # None: stop writing
        self.session: str | None = None
        self.channels = (0, 1)  # interleaved channels for RTP and RTCP
        self.playing = False
        self.closing = False  # the server ends this connection: nothing more to flush
        self.reader = threading.Thread(target=self._read_loop, name=f"rtsp-client-{address}", daemon=True)
        self.writer = threading.Thread(target=self._write_loop, name=f"rtsp-writer-{address}", daemon=True)

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def send_media(self, channel_index: int, packet: bytes) -> None:
        """Queue one RTP (0) or RTCP (1) packet, dropped when this client has fallen behind."""
        header = struct.pack("!cBH", b"$", self.channels[channel_index], len(packet))
        try:
            self.outbox.put_nowait(header + packet)
        except queue.Full:
            pass  # dropped: the client decodes garbage until the next keyframe, like over a bad link

    def close(self, abort: bool = False) -> None:
        """End the connection now (the reader thread then ends): ``abort`` resets it (RST) on close."""
        self.playing = False
        self.closing = True
        if abort:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected

    def _write_loop(self) -> None:
        try:
            while (data := self.outbox.get()) is not None:
                self.sock.sendall(data)
        except OSError:
            pass  # the client went away; the reader notices too
        finally:
            self.playing = False
            self._shutdown_socket()

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                buffer, keep_open = self._handle_buffer(buffer)
                if not keep_open:
                    break
        except (OSError, queue.Full):
            pass  # the client went away (or stopped reading our replies)
        finally:
            self.playing = False
            try:  # end the writer, after it sent what is queued (a TEARDOWN or error reply) unless closing
                self.outbox.put(None, block=not self.closing, timeout=1.0)
                if not self.closing:
                    self.writer.join(timeout=1.0)
            except queue.Full:
                pass  # the writer is busy sending: the shutdown below makes that fail
            self._shutdown_socket()  # unblocks a writer stuck on a client that does not read
            self.writer.join()
            self.sock.close()
            self.server._forget(self)

    def _handle_buffer(self, buffer: bytes) -> tuple[bytes, bool]:
        """Consume complete interleaved packets (client RTCP, ignored) and requests; returns the rest."""
        while buffer:
            if buffer[:1] == b"$":
                if len(buffer) < 4:
                    break
                size = struct.unpack("!H", buffer[2:4])[0]
                if len(buffer) < 4 + size:
                    break
                buffer = buffer[4 + size :]
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].decode("utf-8", "replace").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body_size = int(headers.get("content-length", "0"))
            if len(buffer) < end + 4 + body_size:
                break
            buffer = buffer[end + 4 + body_size :]
            if not self._handle_request(head[0], headers):
                return buffer, False
        return buffer, True

    def _reply(
        self, status: int, cseq: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        lines = [f"RTSP/1.0 {status} {_REASONS[status]}", f"CSeq: {cseq}", "Server: ptz-pipeline-sim"]
        if self.session is not None:
            lines.append(f"Session: {self.session};timeout=60")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.outbox.put(("\r\n".join(lines) + "\r\n\r\n").encode() + body, timeout=5)

    def _handle_request(self, request_line: str, headers: dict[str, str]) -> bool:
        """Answer one request; returns False when the connection should close (TEARDOWN, bad request)."""
        parts = request_line.split()
        cseq = headers.get("cseq", "0")
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            self._reply(400, cseq)
            return False
        method, url = parts[0].upper(), parts[1]
        if method == "OPTIONS":
            self._reply(200, cseq, {"Public": PUBLIC_METHODS})
        elif method == "DESCRIBE":
            if not self.server._matches_path(url):
                self._reply(404, cseq)
            else:
                base = url.rstrip("/") + "/"
                self._reply(
                    200,
                    cseq,
                    {"Content-Base": base, "Content-Type": "application/sdp"},
                    self.server._sdp.encode(),
                )
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport.upper():
                self._reply(461, cseq)
                return True
            for field in transport.split(";"):
                if field.strip().startswith("interleaved="):
                    first, _, second = field.strip()[len("interleaved=") :].partition("-")
                    self.channels = (int(first), int(second or int(first) + 1))
            self.session = self.session or uuid.uuid4().hex[:16]
            reply = f"RTP/AVP/TCP;unicast;interleaved={self.channels[0]}-{self.channels[1]}"
            self._reply(200, cseq, {"Transport": reply})
        elif method == "PLAY":
            if self.session is None:
                self._reply(455, cseq)
            else:
                self._reply(200, cseq, {"Range": "npt=0.000-"})
                self.playing = True
        elif method == "TEARDOWN":
            self._reply(200, cseq)
            return False
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._reply(200, cseq)
        else:
            self._reply(501, cseq)
        return True


class RtspServer:
    """Serves frames from ``frame_source`` as ``rtsp://host:port/<path>`` (H.264 over RTP, TCP-interleaved).

    ``frame_source()`` returns the current RGB uint8 frame (H x W x 3) and is called ``fps`` times a second.
    Frames are resized to ``width`` x ``height`` pixels when given (default: the first frame's size; both must
    be even for H.264 4:2:0). ``latency_s`` delays what clients see by that many seconds (real cameras lag
    1-2 s; during the first ``latency_s`` after start the first frame is shown); ``timestamp_overlay`` burns
    the capture's wall-clock time into the bottom-left corner. ``port=0`` picks a free port (see ``url``).
    ``start()`` may be called again after ``stop()`` or ``kill_stream()`` (a camera coming back).
    """

    def __init__(
        self,
        frame_source: Callable[[], np.ndarray],
        host: str = "127.0.0.1",
        port: int = 8554,
        path: str = "stream",
        fps: float = 5.0,
        latency_s: float = 0.0,
        timestamp_overlay: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.frame_source = frame_source
        self.host = host
        self.port = port
        self.path = path.strip("/")
        self.fps = fps
        self.latency_s = latency_s
        self.timestamp_overlay = timestamp_overlay
        self.width = width
        self.height = height
        self._size: tuple[int, int] | None = None  # (width, height) being streamed
        self._sdp = ""
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._first_packet = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._rtp_sockets: list[socket.socket] = []
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``rtsp://host:port/path`` (the bound port once started with ``port=0``)."""
        return f"rtsp://{self.host}:{self.port}/{self.path}"

    @property
    def running(self) -> bool:
        """Whether the stream is served (started, not stopped or killed since)."""
        return self._ffmpeg is not None

    def start(self) -> None:
        """Start ffmpeg and the server threads; returns once the server accepts RTSP connections.

        Raises RuntimeError when ffmpeg is missing or fails to start, OSError when the port is in use.
        """
        if self._ffmpeg is not None:
            raise RuntimeError(f"RTSP server {self.url} is already running")
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise RuntimeError(
                "ffmpeg not found on PATH: the RTSP simulator needs it "
                "(Debian package 'ffmpeg': apt-get install ffmpeg)"
            )
        self._size = None
        first = self._prepare(self.frame_source())
        self._listener = self._listen()
        self._stopping.clear()
        self._first_packet.clear()
        try:
            self._rtp_sockets = [self._udp_socket(), self._udp_socket()]
            self._workdir = tempfile.TemporaryDirectory(prefix="ptz-rtsp-")
            self._ffmpeg = self._spawn_ffmpeg(ffmpeg, Path(self._workdir.name))
            self._spawn(self._relay_loop, "rtsp-relay")
            self._spawn(self._feed_loop, "rtsp-feed", first)
            self._sdp = self._wait_for_sdp(Path(self._workdir.name))
        except BaseException:
            self._shutdown(abort=True)
            raise
        self._spawn(self._accept_loop, "rtsp-accept")
        log.info("RTSP simulator serving %s (%dx%d at %g fps)", self.url, *self._size, self.fps)

    def stop(self) -> None:
        """Stop ffmpeg, close all connections and join the server threads; idempotent."""
        self._shutdown(abort=False)

    def kill_stream(self) -> None:
        """Fault injection: kill ffmpeg and reset every connection (clients see the stream die mid-read).

        The port stops accepting connections too, until ``start()`` is called again.
        """
        self._shutdown(abort=True)

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        """Validate ``frame``, fix the stream size on the first frame, resize to it and add the overlay."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"frame_source must return an RGB uint8 H x W x 3 array, got {frame.dtype} {frame.shape}"
            )
        if self._size is None:
            size = (self.width or frame.shape[1], self.height or frame.shape[0])
            if size[0] % 2 or size[1] % 2:
                raise ValueError(f"H.264 needs an even frame size, got {size[0]}x{size[1]} pixels")
            self._size = size
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        if self.timestamp_overlay:
            frame = frame.copy()
            text = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            scale = max(frame.shape[0] / 720, 0.3)
            origin = (int(10 * scale), frame.shape[0] - int(12 * scale))
            thickness = max(1, round(2 * scale))
            for colour, extra in (((0, 0, 0), 2), ((255, 255, 255), 0)):  # white on a black outline
                cv2.putText(
                    frame,
                    text,
                    origin,
                    cv2.FONT_HERSHEY_SIMPLEX,
                    scale,
                    colour,
                    thickness + extra,
                    cv2.LINE_AA,
                )
        return np.ascontiguousarray(frame)

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            raise OSError(
                exc.errno,
                f"cannot serve RTSP on {self.host}:{self.port}: port {self.port} is "
                f"in use or unavailable ({exc.strerror})",
            ) from exc
        listener.listen(16)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        return listener

    def _udp_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        return sock

    def _spawn_ffmpeg(self, ffmpeg: str, workdir: Path) -> subprocess.Popen[bytes]:
        assert self._size is not None
        rtp_port, rtcp_port = (sock.getsockname()[1] for sock in self._rtp_sockets)
        gop = max(1, round(self.fps / 2))  # a keyframe (with SPS/PPS) every 0.5 s: new clients start quickly
        command = [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-nostats",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{self._size[0]}x{self._size[1]}",
            "-framerate",
            f"{self.fps:g}",
            "-i",
            "pipe:0",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
            "-g",
            str(gop),
            "-flags",
            "+global_header",
            "-bsf:v",
            "dump_extra",
            "-f",
            "rtp",
            "-sdp_file",
            str(workdir / "stream.sdp"),
            f"rtp://127.0.0.1:{rtp_port}?rtcpport={rtcp_port}&pkt_size=1400",
        ]
        with open(workdir / "ffmpeg.log", "wb") as stderr:
            return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)

    def _wait_for_sdp(self, workdir: Path) -> str:
        """ffmpeg writes the SDP before its first RTP packet; returns it with RTSP control attributes."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        assert self._ffmpeg is not None
        while not self._first_packet.wait(0.05):
            if self._ffmpeg.poll() is not None or time.monotonic() > deadline:
                detail = (workdir / "ffmpeg.log").read_text(errors="replace").strip()[-2000:]
                raise RuntimeError(
                    f"ffmpeg did not start streaming within {STARTUP_TIMEOUT_S:g} s "
                    f"(exit code {self._ffmpeg.poll()}): {detail or 'no output'}"
                )
        session, media = [], []
        for line in (workdir / "stream.sdp").read_text().splitlines():
            if line.startswith("m="):
                media.append("m=video 0 " + line.split(" ", 2)[2])
            elif line.startswith("c="):
                (media or session).append("c=IN IP4 0.0.0.0")
            elif line:
                (media or session).append(line)
        return "\r\n".join(session + ["a=control:*"] + media + ["a=control:streamid=0", ""])

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _feed_loop(self, first: np.ndarray) -> None:
        """Capture a frame every 1/fps s and write the one captured ``latency_s`` ago to ffmpeg."""
        assert self._ffmpeg is not None and self._ffmpeg.stdin is not None
        stdin = self._ffmpeg.stdin
        period = 1.0 / self.fps
        delayed: deque[tuple[float, np.ndarray]] = deque([(time.monotonic(), first)])
        next_tick = time.monotonic()
        failing = False
        while True:
            try:
                stdin.write(delayed[0][1].tobytes())
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return  # ffmpeg ended (stop, kill_stream or a crash)
            next_tick = max(next_tick + period, time.monotonic())
            if self._stopping.wait(next_tick - time.monotonic()):
                return
            try:
                frame = self._prepare(self.frame_source())
                failing = False
            except Exception:
                if not failing:  # once per run of failures
                    log.exception("RTSP simulator: frame_source failed; repeating the last frame")
                failing = True
                frame = delayed[-1][1]
            delayed.append((time.monotonic(), frame))
            shown_after = time.monotonic() - self.latency_s
            while len(delayed) > 1 and delayed[1][0] <= shown_after:
                delayed.popleft()

    def _relay_loop(self) -> None:
        """Forward ffmpeg's RTP (channel 0) and RTCP (channel 1) packets to every playing client."""
        channels = {sock: index for index, sock in enumerate(self._rtp_sockets)}
        while not self._stopping.is_set():
            readable, _, _ = select.select(self._rtp_sockets, [], [], 0.1)
            for sock in readable:
                packet = sock.recv(65536)
                self._first_packet.set()
                with self._lock:
                    clients = [client for client in self._clients if client.playing]
                for client in clients:
                    client.send_media(channels[sock], packet)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(self, sock, address)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._clients.add(client)
            client.start()

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    def _matches_path(self, url: str) -> bool:
        path = url.split("://", 1)[-1].partition("/")[2].split("?")[0]
        return path.strip("/") == self.path

    def _shutdown(self, abort: bool) -> None:
        """Stop everything; ``abort`` kills ffmpeg and resets connections instead of closing them."""
        self._stopping.set()
        if abort and self._ffmpeg is not None:
            self._ffmpeg.kill()
        for thread in self._threads:  # the feed, relay and accept loops end on _stopping
            thread.join()
        self._threads = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.stdin.close()  # type: ignore[union-attr]  # ffmpeg ends at end of input
            except OSError:
                pass  # ffmpeg already gone
            try:
                self._ffmpeg.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._ffmpeg.kill()
                self._ffmpeg.wait()
            self._ffmpeg = None
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close(abort=abort)
        for client in clients:
            client.reader.join()  # the reader joins the writer and closes the socket
        for sock in self._rtp_sockets:
            sock.close()
        self._rtp_sockets = []
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
