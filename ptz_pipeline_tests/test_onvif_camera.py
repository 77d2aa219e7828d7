"""The ``onvif`` camera backend (OnvifPTZCamera) against ``python -m ptz_pipeline.sim`` over real sockets:
onvif-zeep, RTSP through OpenCV, MQTT telemetry through Mosquitto, HTTP digest snapshots.

The simulator runs as a subprocess on free loopback ports with the password passed by --password-env; its
camera renders without nuisances, so a frame can be compared with ``render_frame`` at the REPORTED pose.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from ptz_pipeline.camera import (
    CameraUnreachableError,
    CaptureError,
    NoStableWindowError,
    PTZCamera,
    Telemetry,
    open_camera,
)
from ptz_pipeline.capture import capture_query
from ptz_pipeline.devices import CameraConfig, Deployment, load_devices
from ptz_pipeline.onvif.camera import OnvifPTZCamera
from ptz_pipeline.sim.camera import render_frame
from ptz_pipeline_tests.test_portforward import assert_gone, fake_kubectl  # noqa: F401 - a fixture used below
from ptz_pipeline_tests.test_sim_server import PASSWORD, USER, Sim, absolute_move, connect, ncc, running_sim
from ptz_pipeline_tests.test_sim_server import status as onvif_status

if TYPE_CHECKING:
    from ptz_pipeline_tests.mosquitto import Broker

pytest_plugins = ["ptz_pipeline_tests.mosquitto"]
pytestmark = pytest.mark.integration

SERVER_KEY = "yard__ptz-1"
SERVER_DEVICES = """
- name: yard
  cameras:
    - name: ptz-1
      backend: {kind: simulated, nuisances: false, image_width: 320, image_height: 240, home: [0, -15, 0]}
"""
"""The simulator's camera: small and without nuisances (a served frame equals a render of its pose)."""
SPEC = load_devices(SERVER_DEVICES).camera(SERVER_KEY).backend
SIM_ARGS = ("--fps", "10", "--slew", "120")
"""10 fps: the RTSP stream opens in ~1 s; 120 °/s: a long slew still takes over a second."""
USER_ENV, PASSWORD_ENV = "ONVIF_TEST_USER", "ONVIF_TEST_PASSWORD"
MIN_NCC = 0.9


def onvif_camera(port: int, camera: dict | None = None, **backend: object) -> CameraConfig:
    """The simulator's camera as devices.yaml describes a real one: credentials named, short timings."""
    fields = {
        "kind": "onvif", "host": "127.0.0.1", "port": port, "username_env": USER_ENV,
        "password_env": PASSWORD_ENV, "settle_s": 0.3, "stream_latency_s": 0.3, "poll_interval_s": 0.2,
        "connect_timeout_s": 5.0, "move_timeout_s": 10.0, **backend,
    }  # fmt: skip
    entry = {"name": "ptz-1", "backend": fields, **(camera or {})}
    return Deployment.model_validate({"name": "yard", "cameras": [entry]}).cameras[0]


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def matches_render(image: np.ndarray, telemetry: Telemetry) -> float:
    """NCC of a frame with the simulator's render at the telemetry's pose and time."""
    pose = (telemetry.pan, telemetry.tilt, telemetry.zoom)
    return ncc(image, render_frame(SPEC, SERVER_KEY, *pose, telemetry.timestamp))


def set_stream(sim: Sim, running: bool) -> None:
    """Kill or restart the simulator's RTSP stream (POST /sim/stream)."""
    reply = requests.post(sim.admin("stream"), json={"running": running}, auth=(USER, PASSWORD), timeout=15)
    assert reply.json() == {"running": running}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment variables the cameras' username_env / password_env name."""
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture(scope="module")
def sim(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The simulator in degree space, publishing telemetry to the test broker."""
    workdir = tmp_path_factory.mktemp("sim")
    (workdir / "devices.yaml").write_text(SERVER_DEVICES)
    broker = ("--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port))
    with running_sim(workdir, "--devices", str(workdir / "devices.yaml"), *broker, *SIM_ARGS) as process:
        yield process


@pytest.mark.parametrize("telemetry", ["mqtt", "onvif"])
def test_move_returns_the_reported_position_and_the_frame_shows_it(
    sim: Sim, mosquitto: Broker, telemetry: str
) -> None:
    cam = onvif_camera(sim.onvif_port, telemetry=telemetry, mqtt_host=mosquitto.host,
                       mqtt_port=mosquitto.port)
    camera = open_camera(cam)
    try:
        assert isinstance(camera, OnvifPTZCamera) and isinstance(camera, PTZCamera)
        assert camera.name == SERVER_KEY and not camera.virtual_clock
        reported = camera.move_to(-40.0, -12.0, 0.3)
        truth = sim.truth()
        assert (truth["pan"], truth["tilt"], truth["zoom"], truth["moving"]) == (320.0, -12.0, 0.3, False)
        # what the camera reports (its pan 0..360), not what was commanded (-40)
        assert (reported.pan, reported.tilt, reported.zoom) == pytest.approx((320.0, -12.0, 0.3), abs=1e-6)
        image, seen = camera.grab(datetime(2000, 1, 1, tzinfo=UTC))  # `at` is ignored: a real camera is live
        assert image.shape == (SPEC.image_height, SPEC.image_width, 3) and image.dtype == np.uint8
        assert (seen.pan, seen.tilt, seen.zoom) == pytest.approx((320.0, -12.0, 0.3), abs=1e-6)
        assert abs(seen.timestamp - datetime.now(UTC)) < timedelta(seconds=5)
        assert matches_render(image, seen) > MIN_NCC
        elsewhere = Telemetry(seen.pan + 5.0, seen.tilt, seen.zoom, seen.timestamp)
        assert matches_render(image, elsewhere) < 0.8
    finally:
        camera.close()
    camera.close()


def test_wait_stable_waits_for_stillness_and_honours_its_timeout(sim: Sim, mosquitto: Broker) -> None:
    """Passive mode: someone else moves the camera; wait_stable fails while it slews, then sees it still."""
    cam = onvif_camera(sim.onvif_port, {"mode": "passive", "stabilize_time": 1.0, "timeout": 10.0},
                       telemetry="mqtt", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port)
    operator = connect(sim)
    with closing(OnvifPTZCamera(cam)) as camera:
        camera.move_to(0.0, -10.0, 0.0)
        absolute_move(operator, 179.0, -10.0, 0.0)  # 179° at 120 °/s: about 1.5 s of slewing
        start = time.monotonic()
        with pytest.raises(NoStableWindowError, match=rf"^{SERVER_KEY}: not still for 1 s within 0.5 s"):
            camera.wait_stable(1.0, timeout=0.5)
        assert 0.5 <= time.monotonic() - start < 1.2
        assert 5.0 < camera.latch.latest().pan < 175.0  # reported on its way, not the target
        now = datetime.now(UTC)
        images, telemetry = capture_query(camera, cam, now, now + timedelta(hours=1))
        assert time.monotonic() - start > 2.2  # arrival after ~1.5 s, then still for 1 s
    (image,), ((pan, tilt, zoom, stamp),) = images, telemetry
    assert (pan, tilt, zoom) == pytest.approx((179.0, -10.0, 0.0), abs=1e-6)
    assert matches_render(image, Telemetry(pan, tilt, zoom, stamp)) > MIN_NCC


def test_active_capture_visits_every_stop(sim: Sim) -> None:
    stops = [(10.0, -10.0, 0.0), (130.0, -20.0, 0.2), (250.0, -5.0, 0.0)]
    cam = onvif_camera(sim.onvif_port, {"mode": "active", "ptz_stops": stops}, telemetry="onvif")
    now = datetime.now(UTC)
    with closing(OnvifPTZCamera(cam)) as camera:
        images, telemetry = capture_query(camera, cam, now, now + timedelta(hours=1))
    assert [t[:3] for t in telemetry] == [pytest.approx(stop, abs=1e-6) for stop in stops]
    for image, (pan, tilt, zoom, stamp) in zip(images, telemetry, strict=True):
        assert matches_render(image, Telemetry(pan, tilt, zoom, stamp)) > MIN_NCC


def test_unreachable_camera_names_host_and_port_within_the_timeout() -> None:
    port = free_port()
    start = time.monotonic()
    refused = rf"^{SERVER_KEY}: ONVIF camera at 127.0.0.1:{port} unreachable: Connection refused$"
    with pytest.raises(CameraUnreachableError, match=refused):
        OnvifPTZCamera(onvif_camera(port))
    assert time.monotonic() - start < 2.0
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(CameraUnreachableError,
                           match=rf"^{SERVER_KEY}: ONVIF camera at 127.0.0.1:{port} unreachable: no answer "
                                 r"within 1 s$"):
            OnvifPTZCamera(onvif_camera(port, connect_timeout_s=1.0))
        assert time.monotonic() - start < 2.5


def test_wrong_credentials_are_not_authorized_and_the_password_stays_secret(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-horse-battery"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    with pytest.raises(CameraUnreachableError) as raised:
        OnvifPTZCamera(onvif_camera(sim.onvif_port))
    message = str(raised.value)
    assert message.startswith(f"{SERVER_KEY}: ONVIF camera at 127.0.0.1:{sim.onvif_port}: not authorized")
    assert "\n" not in message and wrong not in message and PASSWORD not in message


def test_broker_down_is_a_clear_error_without_hanging(sim: Sim) -> None:
    port = free_port()
    before = set(threading.enumerate())
    start = time.monotonic()
    with pytest.raises(CameraUnreachableError,
                       match=rf"^{SERVER_KEY}: MQTT broker 127.0.0.1:{port} unreachable: Connection refused"):
        OnvifPTZCamera(onvif_camera(sim.onvif_port, telemetry="mqtt", mqtt_host="127.0.0.1", mqtt_port=port))
    assert time.monotonic() - start < 3.0
    assert not {thread for thread in set(threading.enumerate()) - before if thread.is_alive()}


def test_stream_dying_mid_scan_falls_back_to_the_snapshot_or_fails_clearly(
    sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    """Decided: with snapshot_fallback (the default) the scan goes on with ONVIF snapshots; without it the
    capture fails with CaptureError naming the camera and the (redacted) stream. The stream coming back is
    used again."""
    fallback = "taking the ONVIF snapshot instead"
    with (closing(OnvifPTZCamera(onvif_camera(sim.onvif_port))) as camera,
          closing(OnvifPTZCamera(onvif_camera(sim.onvif_port, snapshot_fallback=False))) as strict):
        camera.move_to(30.0, -10.0, 0.0)
        image, seen = camera.grab(datetime.now(UTC))
        assert matches_render(image, seen) > MIN_NCC
        set_stream(sim, running=False)
        try:
            camera.move_to(60.0, -10.0, 0.0)
            with caplog.at_level(logging.WARNING, logger="ptz_pipeline.onvif.camera"):
                image, seen = camera.grab(datetime.now(UTC))
            assert fallback in caplog.text and PASSWORD not in caplog.text
            assert seen.pan == pytest.approx(60.0) and matches_render(image, seen) > MIN_NCC
            with pytest.raises(CaptureError) as raised:
                strict.grab(datetime.now(UTC))
            message = str(raised.value)
            assert message.startswith(f"{SERVER_KEY}: RTSP rtsp://***@127.0.0.1:")
            assert "reconnected once" in message and PASSWORD not in message and USER not in message
        finally:
            set_stream(sim, running=True)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ptz_pipeline.onvif.camera"):
            image, seen = camera.grab(datetime.now(UTC))
        assert fallback not in caplog.text and matches_render(image, seen) > MIN_NCC


def test_generic_space_with_garbage_move_status_uses_positions(tmp_path: Path) -> None:
    """A camera in ONVIF's generic space whose MoveStatus is template text: arrival and stillness come from
    the reported positions; pan wraps into the configured range."""
    (tmp_path / "devices.yaml").write_text(SERVER_DEVICES)
    args = ("--devices", str(tmp_path / "devices.yaml"), "--generic-space", "--pan-range", "-170", "190",
            "--move-status", "garbage", *SIM_ARGS)
    with running_sim(tmp_path, *args) as generic:
        cam = onvif_camera(generic.onvif_port, telemetry="onvif", poll_interval_s=0.1,
                           pan_range_deg=(-170.0, 190.0))
        with closing(OnvifPTZCamera(cam)) as camera:
            assert not camera.space.degrees
            assert onvif_status(connect(generic))[3:] == ("string", "string")
            reported = camera.move_to(200.0, -30.0, 0.1)  # 200° is -160° in the pan range
            reported_pose = (reported.pan, reported.tilt, reported.zoom)
            assert reported_pose == pytest.approx((-160.0, -30.0, 0.1), abs=1e-4)
            truth = generic.truth()
            assert (truth["pan"], truth["tilt"]) == pytest.approx((200.0, -30.0)) and not truth["moving"]
            assert camera.wait_stable(0.5, timeout=5.0).pan == pytest.approx(-160.0, abs=1e-4)
            image, seen = camera.grab(datetime.now(UTC))
    assert matches_render(image, seen) > MIN_NCC


def test_port_forward_runs_while_the_camera_is_open(
    sim: Sim, fake_kubectl: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811 - the imported fixture
) -> None:
    """A deployment reached through ``kubectl port-forward`` (a stand-in kubectl relaying to the simulator):
    the stream URI the camera gives (its own RTSP port) is reached through the forwarded local port, and
    kubectl is stopped on close and when opening fails."""
    onvif, rtsp = free_port(), free_port()
    remote_rtsp = urlsplit(sim.urls["rtsp"]).port
    deployment = {"name": "yard", "cluster": {"context": "site", "namespace": "cameras", "target": "svc/cams",
                                              "ports": [[onvif, sim.onvif_port], [rtsp, remote_rtsp]]}}
    cam = Deployment.model_validate({**deployment, "cameras": [onvif_camera(onvif).model_dump()]}).cameras[0]
    with closing(OnvifPTZCamera(cam)) as camera:
        assert camera.stream_url == f"rtsp://127.0.0.1:{rtsp}/stream"
        camera.move_to(90.0, -10.0, 0.0)
        image, seen = camera.grab(datetime.now(UTC))
        assert matches_render(image, seen) > MIN_NCC
    assert_gone(fake_kubectl)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(CameraUnreachableError, match=rf"127.0.0.1:{onvif}: not authorized"):
        OnvifPTZCamera(cam)
    assert_gone(fake_kubectl)
