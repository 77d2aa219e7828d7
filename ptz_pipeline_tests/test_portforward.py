"""kubectl port-forward: a stand-in kubectl first on PATH relays real sockets to a loopback echo server."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptz_pipeline.onvif.portforward import PortForwardError, port_forward

pytestmark = pytest.mark.integration

FAKE_KUBECTL = """#!{python}
# Stand-in for kubectl port-forward: records argv and pid, then relays 127.0.0.1:LOCAL -> 127.0.0.1:REMOTE.
import json, os, socket, sys, threading, time

with open(os.environ["FAKE_KUBECTL_LOG"], "w") as log:
    json.dump({{"argv": sys.argv[1:], "pid": os.getpid()}}, log)
mode = os.environ.get("FAKE_KUBECTL_MODE", "forward")
if mode == "fail":
    print("E0101 00:00:00.000 1 portforward.go:400] an error occurred", file=sys.stderr)
    print("error: unable to forward port because pod is not running. Current status=Pending", file=sys.stderr)
    sys.exit(1)
if mode == "silent":
    time.sleep(60)


def relay(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, remote):
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", remote))
        for pair in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay, args=pair, daemon=True).start()


args = sys.argv[1:]
for spec in args[args.index("port-forward") + 2:]:
    local, remote = map(int, spec.split(":"))
    listener = socket.create_server(("127.0.0.1", local))
    print(f"Forwarding from 127.0.0.1:{{local}} -> {{remote}}", flush=True)
    threading.Thread(target=serve, args=(listener, remote), daemon=True).start()
threading.Event().wait()
"""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """A loopback TCP echo server (the "pod" port)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts the stand-in ``kubectl`` first on PATH; returns the file it records its argv and pid to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "kubectl.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(record))
    return record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo_through(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(data)
        return sock.recv(65536)


def assert_gone(record: Path) -> None:
    pid = json.loads(record.read_text())["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_forwards_ports_and_stops_kubectl(fake_kubectl: Path, echo_port: int) -> None:
    onvif, rtsp = free_port(), free_port()
    with port_forward("ctx-site-a", "cameras", "deploy/onvif-proxy", [(onvif, echo_port), (rtsp, echo_port)]):
        assert echo_through(onvif, b"GetStatus") == b"GetStatus"
        assert echo_through(rtsp, b"OPTIONS") == b"OPTIONS"
    assert json.loads(fake_kubectl.read_text())["argv"] == [
        "--context", "ctx-site-a", "-n", "cameras", "port-forward", "deploy/onvif-proxy",
        f"{onvif}:{echo_port}", f"{rtsp}:{echo_port}",
    ]
    assert_gone(fake_kubectl)
    with pytest.raises(ConnectionRefusedError):
        echo_through(onvif, b"x")


def test_kubectl_is_stopped_when_the_block_raises(fake_kubectl: Path, echo_port: int) -> None:
    with pytest.raises(RuntimeError, match="camera failed"):
        with port_forward(None, "cameras", "pod/cam-1", [(free_port(), echo_port)]):
            raise RuntimeError("camera failed")
    argv = json.loads(fake_kubectl.read_text())["argv"]
    assert argv[:3] == ["-n", "cameras", "port-forward"]  # no --context
    assert_gone(fake_kubectl)


def test_kubectl_missing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PortForwardError, match=r"'kubectl' not found on PATH: .* deploy/x in namespace ns"):
        with port_forward("ctx", "ns", "deploy/x", [(free_port(), 80)]):
            pytest.fail("the block must not run")


def test_early_exit_reports_the_last_stderr_line(fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "fail")
    expected = (r"kubectl port-forward to deploy/x in namespace ns \(context ctx\) exited with code 1: "
                r"error: unable to forward port because pod is not running")
    with pytest.raises(PortForwardError, match=expected):
        with port_forward("ctx", "ns", "deploy/x", [(free_port(), 80)]):
            pytest.fail("the block must not run")


def test_ports_that_never_answer_are_named(fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "silent")
    port = free_port()
    with pytest.raises(PortForwardError, match=rf"local port\(s\) {port} did not answer within 0.5 s"):
        with port_forward("ctx", "ns", "deploy/x", [(port, 80)], ready_timeout_s=0.5):
            pytest.fail("the block must not run")
    assert_gone(fake_kubectl)


def test_local_port_in_use_is_refused(fake_kubectl: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(PortForwardError, match=rf"local port\(s\) {port} already in use"):
            with port_forward("ctx", "ns", "deploy/x", [(port, 80)]):
                pytest.fail("the block must not run")
    assert not fake_kubectl.exists()  # kubectl was never started
