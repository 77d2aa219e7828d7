"""``python -m ptz_pipeline.sim`` over real sockets: onvif-zeep, OpenCV's RTSP client, HTTP digest, Mosquitto.

The simulator runs as a subprocess on free loopback ports (port 0; the ``ready`` line names the bound ones).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import requests
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError
from requests.auth import HTTPDigestAuth

from ptz_pipeline.devices import load_devices
from ptz_pipeline.sim.__main__ import main as sim_main
from ptz_pipeline.sim.camera import render_frame
from ptz_pipeline.sim.head import SlewingHead

if TYPE_CHECKING:
    from ptz_pipeline_tests.mosquitto import Broker

pytest_plugins = ["ptz_pipeline_tests.mosquitto"]
pytestmark = pytest.mark.integration

USER, PASSWORD = "operator", "correct horse"
CAMERA_KEY = "yard__ptz-1"
DEVICES_YAML = """
- name: yard
  cameras:
    - name: ptz-1
      ptz_stops: [[0, -10, 0]]
      backend: {kind: simulated, nuisances: false, home: [0, -15, 0]}
"""
"""The module's camera: no nuisances (occluders, noise), so the served view can be compared with a render."""
SPEC = load_devices(DEVICES_YAML).camera(CAMERA_KEY).backend
RTSP_CLIENT_OPTIONS = "rtsp_transport;tcp|fpsprobesize;1|analyzeduration;200000"
"""FFmpeg would otherwise probe 20 frames (4 s at 5 fps) for the frame rate before the first frame."""
READY_TIMEOUT_S = 30.0


@dataclass
class Sim:
    """A running simulator subprocess and the URLs from its ready line."""

    process: subprocess.Popen[str]
    urls: dict[str, str]

    @property
    def onvif_port(self) -> int:
        return urlsplit(self.urls["onvif"]).port or 80

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.onvif_port}/sim/{path}"

    def truth(self) -> dict:
        """GET /sim/truth with basic auth."""
        return requests.get(self.admin("truth"), auth=(USER, PASSWORD), timeout=5).json()


@contextmanager
def running_sim(tmp_path: Path, *args: str) -> Iterator[Sim]:
    """Start ``python -m ptz_pipeline.sim`` (password from the environment), wait for ``ready``; SIGTERM and
    wait at the end (kill when it hangs)."""
    with open(tmp_path / "sim.stderr", "w+") as stderr:
        command = [sys.executable, "-m", "ptz_pipeline.sim", "--onvif-port", "0", "--rtsp-port", "0",
                   "--user", USER, "--password-env", "SIM_TEST_PASSWORD", *args]
        env = {**os.environ, "SIM_TEST_PASSWORD": PASSWORD}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
        reader.start()
        try:
            try:
                line = lines.get(timeout=READY_TIMEOUT_S)
            except queue.Empty:
                line = ""
            if not line.startswith("ready "):
                stderr.seek(0)
                pytest.fail(f"simulator not ready (exit code {process.poll()}): {line!r} "
                            f"{stderr.read()[-2000:]}")
            assert PASSWORD not in line
            yield Sim(process, dict(item.split("=", 1) for item in line.split()[1:]))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            reader.join(timeout=5)


def ffmpeg_children(pid: int) -> set[int]:
    """PIDs of ffmpeg processes whose parent is ``pid``."""
    found = subprocess.run(["pgrep", "-P", str(pid), "ffmpeg"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


def running_ffmpegs() -> set[int]:
    found = subprocess.run(["pgrep", "-x", "ffmpeg"], capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


@pytest.fixture(scope="module")
def sim(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """CAMERA_KEY from a devices file in degree space, publishing telemetry to the test broker."""
    workdir = tmp_path_factory.mktemp("sim")
    devices = workdir / "devices.yaml"
    devices.write_text(DEVICES_YAML)
    broker = ("--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port))
    with running_sim(workdir, "--devices", str(devices), "--camera", CAMERA_KEY, *broker) as process:
        yield process


@dataclass
class Onvif:
    """onvif-zeep services of the simulator and its profile token."""

    camera: ONVIFCamera
    media: object
    ptz: object
    token: str


def connect(sim: Sim) -> Onvif:
    camera = ONVIFCamera("127.0.0.1", sim.onvif_port, USER, PASSWORD)
    media = camera.create_media_service()
    return Onvif(camera, media, camera.create_ptz_service(), media.GetProfiles()[0].token)


@pytest.fixture(scope="module")
def onvif(sim: Sim) -> Onvif:
    return connect(sim)


def absolute_move(client: Onvif, x: float, y: float, zoom: float) -> None:
    request = client.ptz.create_type("AbsoluteMove")
    request.ProfileToken = client.token
    request.Position = {"PanTilt": {"x": x, "y": y}, "Zoom": {"x": zoom}}
    client.ptz.AbsoluteMove(request)


def status(client: Onvif) -> tuple[float, float, float, str, str]:
    """(x, y, zoom, pan/tilt MoveStatus, zoom MoveStatus) from GetStatus."""
    reply = client.ptz.GetStatus({"ProfileToken": client.token})
    position, move = reply.Position, reply.MoveStatus
    return position.PanTilt.x, position.PanTilt.y, position.Zoom.x, move.PanTilt, move.Zoom


def wait_idle(client: Onvif, timeout: float = 10.0) -> tuple[float, float, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x, y, zoom, pan_tilt, zoom_status = status(client)
        if pan_tilt == zoom_status == "IDLE":
            return x, y, zoom
        time.sleep(0.05)
    raise AssertionError("the head did not arrive")


def test_slewing_head_moves_at_finite_rates_the_short_way_round() -> None:
    head = SlewingHead((350.0, 0.0, 0.0), pan_rate_deg_s=10.0, tilt_rate_deg_s=5.0, zoom_rate_s=0.5)
    head.move_to(10.0, 100.0, 0.25, now=0.0)  # tilt clamped to 90
    assert head.target == (10.0, 90.0, 0.25)
    assert head.position(1.0) == pytest.approx((0.0, 5.0, 0.25))  # through 0, not back round 180
    assert head.moving_axes(1.0) == (True, True, False)
    assert head.position(2.0) == pytest.approx((10.0, 10.0, 0.25)) and head.moving(2.0)
    head.stop(now=4.0)
    assert head.position(100.0) == pytest.approx((10.0, 20.0, 0.25)) and not head.moving(100.0)
    head.disturb(1.0, -0.5, 0.25)
    assert head.disturbance_ypr_deg == (1.0, -0.5, 0.25) and head.position(100.0)[0] == pytest.approx(10.0)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two RGB images' grey levels."""
    grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64) for image in (a, b)]
    grey = [(g - g.mean()) / g.std() for g in grey]
    return float(np.mean(grey[0] * grey[1]))


def test_profiles_stream_uri_and_device_information(sim: Sim, onvif: Onvif) -> None:
    profiles = onvif.media.GetProfiles()
    assert len(profiles) == 1 and profiles[0].PTZConfiguration.token == "ptz_config"
    assert profiles[0].VideoEncoderConfiguration.Resolution.Width == SPEC.image_width
    setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    uri = onvif.media.GetStreamUri({"StreamSetup": setup, "ProfileToken": onvif.token})
    assert uri.Uri == sim.urls["rtsp"]
    assert onvif.camera.devicemgmt.GetDeviceInformation().SerialNumber == CAMERA_KEY
    services = onvif.camera.devicemgmt.GetServices({"IncludeCapability": False})
    assert [service.XAddr.rsplit("/", 1)[1] for service in services] == [
        "device_service", "media_service", "ptz_service"]
    spaces = onvif.ptz.GetConfigurationOptions({"ConfigurationToken": "ptz_config"}).Spaces
    assert spaces.AbsolutePanTiltPositionSpace[0].URI.endswith("PositionSpaceDegrees")
    assert spaces.AbsoluteZoomPositionSpace[0].URI.endswith("ZoomSpaces/PositionGenericSpace")


def test_absolute_move_slews_arrives_and_stop_halts(onvif: Onvif) -> None:
    absolute_move(onvif, 90.0, -10.0, 0.0)
    x, y, zoom, pan_tilt, _ = status(onvif)
    assert pan_tilt == "MOVING" and 0.0 <= x < 89.0  # 60 deg/s: 1.5 s on the way
    assert wait_idle(onvif) == pytest.approx((90.0, -10.0, 0.0), abs=1e-5)

    absolute_move(onvif, 180.0, -10.0, 0.0)
    time.sleep(0.3)
    onvif.ptz.Stop({"ProfileToken": onvif.token})
    x, _, _, pan_tilt, zoom_status = status(onvif)
    assert pan_tilt == zoom_status == "IDLE" and 95.0 < x < 175.0
    time.sleep(0.2)
    assert status(onvif)[0] == x


def test_ws_username_token_auth(sim: Sim) -> None:
    with pytest.raises(ONVIFError, match="NotAuthorized"):
        ONVIFCamera("127.0.0.1", sim.onvif_port, USER, "wrong")
    plain = ONVIFCamera("127.0.0.1", sim.onvif_port, USER, PASSWORD, encrypt=False)  # PasswordText
    assert plain.devicemgmt.GetDeviceInformation().SerialNumber == CAMERA_KEY
    envelope = ('<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
                '<{0} xmlns="http://www.onvif.org/ver10/device/wsdl"/></env:Body></env:Envelope>')
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
    no_token = [requests.post(sim.urls["onvif"], data=envelope.format(name), headers=headers, timeout=5)
                for name in ("GetSystemDateAndTime", "GetDeviceInformation")]
    assert no_token[0].status_code == 200 and "UTCDateTime" in no_token[0].text
    assert no_token[1].status_code == 400 and "ter:NotAuthorized" in no_token[1].text


def test_rtsp_frame_after_arrival_matches_the_render(sim: Sim, onvif: Onvif,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    absolute_move(onvif, 45.0, -10.0, 0.2)
    wait_idle(onvif)
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", RTSP_CLIENT_OPTIONS)
    capture = cv2.VideoCapture(sim.urls["rtsp"], cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000])
    try:
        frames = [capture.read() for _ in range(3)]
    finally:
        capture.release()
    assert all(ok for ok, _ in frames)
    frame = cv2.cvtColor(frames[-1][1], cv2.COLOR_BGR2RGB)
    now = datetime.now(UTC)
    assert ncc(frame, render_frame(SPEC, CAMERA_KEY, 45.0, -10.0, 0.2, now)) > 0.95
    assert ncc(frame, render_frame(SPEC, CAMERA_KEY, 60.0, -10.0, 0.2, now)) < 0.6


def test_snapshot_is_a_jpeg_of_the_view_behind_digest_auth(onvif: Onvif) -> None:
    absolute_move(onvif, 200.0, -5.0, 0.0)
    wait_idle(onvif)
    uri = onvif.media.GetSnapshotUri({"ProfileToken": onvif.token}).Uri
    assert requests.get(uri, timeout=5).status_code == 401
    assert requests.get(uri, auth=HTTPDigestAuth(USER, "wrong"), timeout=5).status_code == 401
    reply = requests.get(uri, auth=HTTPDigestAuth(USER, PASSWORD), timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB)
    assert ncc(image, render_frame(SPEC, CAMERA_KEY, 200.0, -5.0, 0.0, datetime.now(UTC))) > 0.98


def test_mqtt_telemetry_converges_to_the_commanded_pose(sim: Sim, onvif: Onvif, mosquitto: Broker) -> None:
    samples: queue.Queue[dict] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, userdata, flags, reason, props: c.subscribe(f"ptz/{CAMERA_KEY}/telemetry")
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, userdata, message: samples.put(json.loads(message.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert subscribed.wait(5)
        absolute_move(onvif, 330.0, -20.0, 0.5)  # from wherever the head is: the short way round
        received = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not received or received[-1]["moving"]):
            received.append(samples.get(timeout=2))
    finally:
        client.disconnect()
        client.loop_stop()
    assert any(sample["moving"] for sample in received) and len(received) >= 3
    last = received[-1]
    assert not last["moving"]
    assert (last["pan"], last["tilt"], last["zoom"]) == pytest.approx((330.0, -20.0, 0.5), abs=1e-9)
    assert datetime.fromisoformat(last["timestamp"]).utcoffset().total_seconds() == 0
    assert all(0.0 <= sample["pan"] < 360.0 for sample in received)


def test_disturbance_moves_the_view_and_truth_reports_it(sim: Sim, onvif: Onvif) -> None:
    absolute_move(onvif, 100.0, -10.0, 0.0)
    wait_idle(onvif)
    assert requests.get(sim.admin("truth"), timeout=5).status_code == 401
    reply = requests.post(sim.admin("disturbance"), json={"yaw": 2.0, "roll": -0.5}, auth=(USER, PASSWORD),
                          timeout=5)
    try:
        assert reply.status_code == 200
        truth = requests.get(sim.admin("truth"), auth=HTTPDigestAuth(USER, PASSWORD), timeout=5).json()
        assert truth["disturbance_ypr_deg"] == [2.0, 0.0, -0.5]
        assert truth["drift_ypr_deg"] == pytest.approx(np.add(truth["spec_drift_ypr_deg"], [2.0, 0.0, -0.5]))
        assert (truth["pan"], truth["tilt"], truth["moving"]) == (100.0, -10.0, False)
        uri = onvif.media.GetSnapshotUri({"ProfileToken": onvif.token}).Uri
        jpeg = requests.get(uri, auth=HTTPDigestAuth(USER, PASSWORD), timeout=5).content
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        now = datetime.now(UTC)
        disturbed = SPEC.model_copy(update={"drift_offset_deg": (2.0, 0.0, -0.5)})
        assert ncc(image, render_frame(disturbed, CAMERA_KEY, 100.0, -10.0, 0.0, now)) > 0.98
        assert ncc(image, render_frame(SPEC, CAMERA_KEY, 100.0, -10.0, 0.0, now)) < 0.9
    finally:
        requests.post(sim.admin("disturbance"), json={}, auth=(USER, PASSWORD), timeout=5)


def test_generic_space_garbage_status_then_sigterm_exits_cleanly(tmp_path: Path) -> None:
    with running_sim(tmp_path, "--generic-space", "--move-status", "garbage", "--slew", "180") as generic:
        client = connect(generic)
        space = client.ptz.GetConfigurations()[0].DefaultAbsolutePantTiltPositionSpace
        assert space == "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
        absolute_move(client, 0.5, 0.0, 0.0)  # pan_range_deg (-180, 180): x = 0.5 is pan 90 degrees
        assert status(client)[3:] == ("string", "string")
        deadline = time.monotonic() + 5  # MoveStatus is garbage: ask the truth endpoint when it arrived
        while (truth := generic.truth())["moving"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (truth["pan"], truth["tilt"]) == (90.0, 0.0)
        assert status(client)[:2] == pytest.approx((0.5, 0.0), abs=1e-6)
        ffmpegs = ffmpeg_children(generic.process.pid)
        assert ffmpegs
        generic.process.send_signal(signal.SIGTERM)
        assert generic.process.wait(timeout=15) == 0
    assert not ffmpegs & running_ffmpegs()


def test_clear_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = sim_main(["--onvif-port", str(port), "--rtsp-port", "0", "--user", USER, "--password", PASSWORD])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and f"port {port} is in use" in err and PASSWORD not in err

    devices = tmp_path / "devices.yaml"
    devices.write_text("- name: site\n  cameras:\n    - name: cam\n      ptz_stops: [[0, -10, 0]]\n"
                       f"      backend: {{kind: simulated, panorama: {tmp_path / 'missing.jpg'}}}\n")
    rc = sim_main(["--onvif-port", "0", "--rtsp-port", "0", "--user", USER, "--password", PASSWORD,
                   "--devices", str(devices)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "panorama not found" in err
