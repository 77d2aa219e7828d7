"""A real Mosquitto MQTT broker (Debian package ``mosquitto``) on a free loopback port, for tests.

A test module uses the fixture with ``pytest_plugins = ["ptz_pipeline_tests.mosquitto"]``; the broker
allows anonymous clients and keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Broker:
    """A running broker at ``host:port``."""

    host: str
    port: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_mosquitto(workdir: Path) -> Iterator[Broker]:
    """Run mosquitto with a config in ``workdir`` until the block ends; fails the test when it cannot."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.fail("mosquitto not found: the MQTT tests need the Debian package 'mosquitto'")
    port = _free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log_path = workdir / "mosquitto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on 127.0.0.1:{port} (exit code {process.poll()}): "
                                f"{log_path.read_text(errors='replace')[-1000:]}")
                time.sleep(0.05)
        yield Broker("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto broker shared by a module's tests."""
    with start_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker
