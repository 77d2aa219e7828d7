"""Test helpers that start real local servers on free localhost ports (real sockets, no mocks).

- ``moto_s3``: a moto S3 server (ThreadedMotoServer) with boto3's environment pointed at it.
- ``slack_server``: an http.server imitating Slack's ``chat.postMessage`` and an incoming webhook, recording
  every request.

A test module uses the fixtures with ``pytest_plugins = ["ptz_pipeline_tests.servers"]``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

SLACK_TOKEN = "xoxb-test-token-0123456789"
WEBHOOK_PATH = "/services/T000/B000/XXXX"


@pytest.fixture
def unreachable_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (a port bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class MotoS3:
    """A running moto S3 server that boto3's environment points at."""

    endpoint_url: str

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint_url).create_bucket(Bucket=name)


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """Start moto's S3 server in a thread on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """boto3's standard environment (AWS_ENDPOINT_URL, fake credentials) pointed at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return MotoS3(endpoint_url=moto_server)


@dataclass
class SlackRequest:
    """One request the Slack imitation received."""

    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class SlackServer:
    """Slack imitation: ``base_url`` for WebClient, ``webhook_url`` for WebhookClient, recorded requests.

    ``chat.postMessage`` answers ``ok: false, error: not_authed`` unless the bearer token is SLACK_TOKEN,
    ``channel_not_found`` for the channel ``missing``; the webhook answers 404 ``no_service`` elsewhere.
    """

    base_url: str
    webhook_url: str
    token: str = SLACK_TOKEN
    requests: list[SlackRequest] = field(default_factory=list)


def _slack_handler(server: SlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            """Keep the test output quiet."""

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
            if self.headers.get("Content-Type", "").startswith("application/json"):
                body = json.loads(raw)
            else:
                body = {k: v[0] for k, v in parse_qs(raw).items()}
            server.requests.append(SlackRequest(self.path, dict(self.headers.items()), body))
            if self.path == "/api/chat.postMessage":
                if self.headers.get("Authorization") != f"Bearer {SLACK_TOKEN}":
                    answer = {"ok": False, "error": "not_authed"}
                elif body.get("channel") == "missing":
                    answer = {"ok": False, "error": "channel_not_found"}
                else:
                    answer = {"ok": True, "channel": "C0123", "ts": "1700000000.000100"}
                self._reply(200, json.dumps(answer).encode(), "application/json; charset=utf-8")
            elif self.path == WEBHOOK_PATH:
                self._reply(200, b"ok", "text/plain")
            else:
                self._reply(404, b"no_service", "text/plain")

    return Handler


@contextmanager
def start_slack_server() -> Iterator[SlackServer]:
    """Run the Slack imitation in a thread on a free localhost port for the duration of the block."""
    http = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = http.server_address[:2]
    server = SlackServer(
        base_url=f"http://{host}:{port}/api/", webhook_url=f"http://{host}:{port}{WEBHOOK_PATH}"
    )
    http.RequestHandlerClass = _slack_handler(server)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()
        thread.join()


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    """The Slack imitation for one test."""
    with start_slack_server() as server:
        yield server


@pytest.fixture(scope="module")
def slack_module_server() -> Iterator[SlackServer]:
    """The Slack imitation shared by a module's tests."""
    with start_slack_server() as server:
        yield server
