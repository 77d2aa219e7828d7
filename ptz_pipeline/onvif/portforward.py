"""Reaching cameras inside a Kubernetes cluster: ``kubectl port-forward`` for the duration of a block.

A deployment of devices.yaml may name a kubectl context (``cluster``); its cameras' ONVIF, RTSP and MQTT
ports are then forwarded to local ports on 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO

from ptz_pipeline.camera import CameraUnreachableError

log = logging.getLogger(__name__)

_POLL_S = 0.1
_STOP_TIMEOUT_S = 5.0


class PortForwardError(CameraUnreachableError):
    """kubectl is missing, ``kubectl port-forward`` exited, or its local ports never answered."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _join(items: Iterable[object]) -> str:
    return ", ".join(map(str, items))


def _last_line(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else "no output"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate kubectl (SIGTERM, then SIGKILL after a grace period) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def port_forward(
    context: str | None,
    namespace: str,
    target: str,
    ports: Sequence[tuple[int, int]],
    kubectl: str = "kubectl",
    ready_timeout_s: float = 15.0,
) -> Iterator[None]:
    """Forward 127.0.0.1:local -> ``target``:remote for each ``(local, remote)`` of ``ports`` in the block.

    Runs ``kubectl [--context CONTEXT] -n NAMESPACE port-forward TARGET LOCAL:REMOTE ...`` (``target`` such as
    ``deploy/onvif-proxy`` or ``pod/cam-1``; no ``--context`` when ``context`` is None), returns into the
    block once every local port accepts TCP, and stops kubectl when the block ends, also on an error.
    Raises PortForwardError when kubectl is not on PATH, a local port is taken, kubectl exits early (with
    its last stderr line) or a port does not answer within ``ready_timeout_s`` s.
    """
    what = f"{target} in namespace {namespace}" + (f" (context {context})" if context else "")
    executable = shutil.which(kubectl)
    if executable is None:
        raise PortForwardError(f"{kubectl!r} not found on PATH: it is needed to port-forward to {what}")
    taken = [local for local, _ in ports if not _port_free(local)]
    if taken:
        raise PortForwardError(f"port-forward to {what}: local port(s) {_join(taken)} already in use")
    command = [executable, *(["--context", context] if context else []), "-n", namespace, "port-forward",
               target, *(f"{local}:{remote}" for local, remote in ports)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
        try:
            pending = [local for local, _ in ports]
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise PortForwardError(f"kubectl port-forward to {what} exited with code "
                                           f"{process.returncode}: {_last_line(stderr)}")
                pending = [port for port in pending if not _answers(port)]
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise PortForwardError(f"port-forward to {what}: local port(s) {_join(pending)} did not "
                                           f"answer within {ready_timeout_s:g} s")
                time.sleep(_POLL_S)
            log.info("forwarding %s to %s", _join(f"{local}->{remote}" for local, remote in ports), what)
            yield
        finally:
            _stop(process)
