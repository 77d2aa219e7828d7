"""Telemetry: stillness, the latch, payload parsing, MQTT through a real mosquitto broker, polling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from ptz_pipeline.camera import CameraUnreachableError, MoveTimeoutError, NoStableWindowError, Telemetry
from ptz_pipeline.onvif.spaces import PositionSpace
from ptz_pipeline.onvif.telemetry import (
    MqttTelemetry,
    PayloadFields,
    PollingTelemetry,
    StillnessDetector,
    TelemetryLatch,
    parse_move_status,
    parse_payload,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def at(seconds: float, pan: float = 10.0, tilt: float = -5.0, zoom: float = 0.2) -> Telemetry:
    return Telemetry(pan, tilt, zoom, T0 + timedelta(seconds=seconds))


def seconds(value: float) -> datetime:
    return T0 + timedelta(seconds=value)


# --- stillness ---------------------------------------------------------------------------------------------


def test_stillness_from_positions() -> None:
    detector = StillnessDetector(pan_tilt_tol_deg=0.05, zoom_tol=0.002)
    assert detector.still_for(seconds(0)) == 0.0  # nothing known yet
    detector.feed(at(0))
    detector.feed(at(1, pan=10.02))  # within tolerance
    assert detector.still_for(seconds(5)) == pytest.approx(5.0)  # until now (sources may publish on change)
    detector.feed(at(6, pan=12.0))  # moved
    assert detector.still_for(seconds(7)) == pytest.approx(1.0)
    detector.feed(at(8, pan=12.0, zoom=0.21))  # zoom changed
    assert detector.still_for(seconds(8)) == 0.0


def test_slow_creep_is_measured_against_the_start_of_the_window() -> None:
    detector = StillnessDetector(pan_tilt_tol_deg=0.05)
    for step in range(10):
        detector.feed(at(step, tilt=-5.0 + 0.02 * step))  # 0.02° per sample, below the tolerance each time
    assert detector.still_for(seconds(9)) < 9.0


def test_pan_wrap_around_is_no_movement() -> None:
    detector = StillnessDetector()
    detector.feed(at(0, pan=359.99))
    detector.feed(at(1, pan=0.01))
    assert detector.still_for(seconds(3)) == pytest.approx(3.0)


def test_valid_move_status_is_used() -> None:
    detector = StillnessDetector()
    detector.feed(at(0), "idle")
    detector.feed(at(1), "MOVING")  # same position, but the camera says it moves
    assert detector.still_for(seconds(2)) == 0.0
    detector.feed(at(2), "Idle")
    assert detector.still_for(seconds(4)) == pytest.approx(2.0)
    detector.feed(at(5, pan=20.0), "IDLE")  # IDLE does not hide a position change
    assert detector.still_for(seconds(5)) == 0.0


@pytest.mark.parametrize("garbage", ["string", "UNKNOWN", "", "  ", None, 3, {"PanTilt": "string"}, {}])
def test_unusable_move_status_is_ignored(garbage: object) -> None:
    with_garbage, without = StillnessDetector(), StillnessDetector()
    for sample in (at(0), at(1), at(2, pan=11.0), at(3, pan=11.0)):
        with_garbage.feed(sample, garbage)
        without.feed(sample)
    assert with_garbage.still_for(seconds(6)) == without.still_for(seconds(6)) == pytest.approx(4.0)


def test_per_axis_move_status() -> None:
    assert parse_move_status({"PanTilt": "IDLE", "Zoom": "MOVING"}) == "MOVING"
    assert parse_move_status({"PanTilt": "idle", "Zoom": "IDLE"}) == "IDLE"
    assert parse_move_status({"PanTilt": "IDLE", "Zoom": "UNKNOWN"}) is None


# --- latch -------------------------------------------------------------------------------------------------


def test_latch_latest_and_nearest() -> None:
    latch = TelemetryLatch("site-a__cam-1", maxlen=3)
    assert latch.latest() is None
    with pytest.raises(Exception, match="site-a__cam-1: no telemetry"):
        latch.nearest(T0)
    for step in range(5):
        latch.feed(at(step, pan=float(step)))
    assert latch.latest() == at(4, pan=4.0)
    assert latch.nearest(seconds(2.4)).pan == 2.0
    assert latch.nearest(seconds(0.0)).pan == 2.0  # only the last 3 samples are held


def _feed_in_thread(
    latch: TelemetryLatch, samples: list[tuple[float, float]], period_s: float
) -> threading.Thread:
    """Feed (pan, tilt) samples stamped now, one every ``period_s`` s, from a thread."""

    def run() -> None:
        for pan, tilt in samples:
            latch.feed(Telemetry(pan, tilt, 0.0, now()))
            time.sleep(period_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_still_returns_once_still_long_enough() -> None:
    latch = TelemetryLatch("cam-1")
    feeder = _feed_in_thread(latch, [(float(pan), 0.0) for pan in range(5)] + [(9.0, 0.0)], period_s=0.05)
    start = time.monotonic()
    sample = latch.wait_still(0.4, timeout=5.0)
    assert sample.pan == 9.0
    assert 0.4 + 0.2 <= time.monotonic() - start < 2.0  # ~0.25 s of motion, then 0.4 s still
    feeder.join()


def test_wait_still_honours_its_timeout() -> None:
    latch = TelemetryLatch("site-a__cam-2")
    feeder = _feed_in_thread(latch, [(float(pan), 0.0) for pan in range(16)], period_s=0.05)  # moving
    start = time.monotonic()
    with pytest.raises(NoStableWindowError, match=r"site-a__cam-2: not still for 1 s within 0.6 s"):
        latch.wait_still(1.0, timeout=0.6)
    assert 0.6 <= time.monotonic() - start < 1.5
    feeder.join()
    with pytest.raises(NoStableWindowError, match="no telemetry received"):
        TelemetryLatch("cam-3").wait_still(1.0, timeout=0.1)


def test_wait_until_sees_every_new_sample() -> None:
    latch = TelemetryLatch("cam-1")
    latch.feed(at(0, pan=0.0))
    feeders: list[threading.Thread] = []

    def at_30(sample: Telemetry) -> bool:
        if not feeders:  # first call, under the latch's lock: the burst arrives while wait_until waits
            feeders.append(_feed_in_thread(latch, [(30.0, 0.0), (31.0, 0.0), (32.0, 0.0)], period_s=0.0))
        return sample.pan == 30.0

    assert latch.wait_until(at_30, timeout=2.0).pan == 30.0  # passed in a burst, need not be the latest
    feeders[0].join()
    assert latch.wait_until(lambda s: s.pan > 31.5, timeout=0.1).pan == 32.0  # already held
    expected = r"cam-1: arrival at pan 90° not met within 0.2 s \(last telemetry pan"
    with pytest.raises(MoveTimeoutError, match=expected):
        latch.wait_until(lambda s: s.pan == 90.0, timeout=0.2, what="arrival at pan 90°")


# --- payloads ----------------------------------------------------------------------------------------------


def test_parse_payload_defaults() -> None:
    payload = json.dumps({"pan": 12.5, "tilt": "-3", "zoom": 0.1, "timestamp": "2026-03-01T12:00:01.5Z"})
    sample, status = parse_payload(payload.encode(), PayloadFields(), received=T0)
    assert sample == Telemetry(12.5, -3.0, 0.1, seconds(1.5))
    assert status is None


def test_parse_payload_nested_fields_epoch_milliseconds_and_status() -> None:
    fields = PayloadFields(pan="ptz.x", tilt="ptz.y", zoom="ptz.z", timestamp="t", move_status="MoveStatus")
    payload = {"ptz": {"x": 1, "y": 2, "z": 0.5}, "t": T0.timestamp() * 1000,
               "MoveStatus": {"PanTilt": "IDLE", "Zoom": "IDLE"}}
    sample, status = parse_payload(json.dumps(payload).encode(), fields, received=seconds(9))
    assert sample == Telemetry(1.0, 2.0, 0.5, T0)
    assert parse_move_status(status) == "IDLE"


def test_parse_payload_without_timestamp_uses_the_receive_time() -> None:
    sample, _ = parse_payload(b'{"pan": 1, "tilt": 2, "zoom": 0}', PayloadFields(), received=seconds(7))
    assert sample.timestamp == seconds(7)
    naive, _ = parse_payload(b'{"pan": 1, "tilt": 2, "zoom": 0, "timestamp": "2026-03-01T12:00:00"}',
                             PayloadFields(), received=seconds(7))
    assert naive.timestamp == T0  # naive ISO 8601 is UTC


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"pan": 1, "tilt": 2}', "field 'zoom' missing"),
        (b'{"pan": "left", "tilt": 2, "zoom": 0}', "field 'pan' is not a number"),
        (b'{"pan": NaN, "tilt": 2, "zoom": 0}', "not finite"),
        (b'{"pan": 1, "tilt": 2, "zoom": 0, "timestamp": "yesterday"}', "not ISO 8601"),
    ],
)
def test_parse_payload_errors(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_payload(payload, PayloadFields(), received=T0)


# --- MQTT through a real broker ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real mosquitto on a free loopback port (anonymous); yields the port."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # Debian installs it in sbin
    executable = shutil.which("mosquitto", path=search)
    if executable is None:
        pytest.fail("mosquitto not found (Debian package 'mosquitto'): the MQTT tests run a real broker")
    port = free_port()
    folder = tmp_path_factory.mktemp("mosquitto")
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    with open(folder / "mosquitto.log", "wb") as log:
        process = subprocess.Popen([executable, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, 5.0, process)
    yield port
    process.terminate()
    process.wait(5)


class Publisher:
    """A paho client publishing JSON to the test broker."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: dict | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1).wait_for_publish(2.0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: int) -> Iterator[Publisher]:
    pub = Publisher(broker)
    yield pub
    pub.close()


@pytest.fixture
def mqtt_telemetry(broker: int, request: pytest.FixtureRequest) -> Iterator[MqttTelemetry]:
    topic = f"ptz/{request.node.name}/telemetry"
    source = MqttTelemetry(TelemetryLatch("site-a__cam-1"), "127.0.0.1", broker, topic)
    source.start(timeout=5.0)
    yield source
    source.stop()


@pytest.mark.integration
def test_mqtt_samples_reach_the_latch(mqtt_telemetry: MqttTelemetry, publisher: Publisher) -> None:
    latch = mqtt_telemetry.latch
    for step in range(3):
        publisher.send(mqtt_telemetry.topic, {"pan": 10.0 * step, "tilt": -5.0, "zoom": 0.0,
                                              "timestamp": seconds(step).isoformat()})
    publisher.send(mqtt_telemetry.topic, b"{broken")  # logged and ignored: the client keeps working
    publisher.send(mqtt_telemetry.topic, {"pan": 40.0, "tilt": -5.0, "zoom": 0.0,
                                          "timestamp": seconds(4).isoformat()})
    assert latch.wait_until(lambda s: s.pan == 40.0, timeout=3.0).timestamp == seconds(4)
    assert latch.nearest(seconds(1.2)) == Telemetry(10.0, -5.0, 0.0, seconds(1))
    assert latch.nearest(seconds(3.1)).pan == 40.0


@pytest.mark.integration
def test_mqtt_wait_still(mqtt_telemetry: MqttTelemetry, publisher: Publisher) -> None:
    latch = mqtt_telemetry.latch
    publisher.send(mqtt_telemetry.topic, {"pan": 1.0, "tilt": 2.0, "zoom": 0.0})  # receive time as timestamp
    assert latch.wait_still(0.3, timeout=3.0).pan == 1.0

    def keep_moving(stop: threading.Event) -> None:
        pan = 0.0
        while not stop.is_set():
            pan += 1.0
            publisher.send(mqtt_telemetry.topic, {"pan": pan, "tilt": 2.0, "zoom": 0.0})
            time.sleep(0.05)

    stop = threading.Event()
    mover = threading.Thread(target=keep_moving, args=(stop,), daemon=True)
    mover.start()
    start = time.monotonic()
    try:
        with pytest.raises(NoStableWindowError, match="site-a__cam-1: not still for 0.5 s within 0.8 s"):
            latch.wait_still(0.5, timeout=0.8)
        assert time.monotonic() - start < 1.5
    finally:
        stop.set()
        mover.join()


@pytest.mark.integration
def test_mqtt_move_status_and_conversion_from_the_generic_space(broker: int, publisher: Publisher) -> None:
    space = PositionSpace(degrees=False, pan_range_deg=(-180.0, 180.0), tilt_range_deg=(-90.0, 90.0))
    fields = PayloadFields(pan="Position.PanTilt.x", tilt="Position.PanTilt.y", zoom="Position.Zoom.x",
                           timestamp="UtcTime", move_status="MoveStatus")
    source = MqttTelemetry(TelemetryLatch("cam-2"), "127.0.0.1", broker, "ptz/cam-2/status", fields=fields,
                           to_degrees=space.from_camera)
    source.start(timeout=5.0)
    try:
        status = {"Position": {"PanTilt": {"x": 0.5, "y": -0.5}, "Zoom": {"x": 0.3}},
                  "MoveStatus": {"PanTilt": "MOVING", "Zoom": "IDLE"}, "UtcTime": now().isoformat()}
        publisher.send("ptz/cam-2/status", status)
        sample = source.latch.wait_until(lambda s: True, timeout=3.0)
        assert (sample.pan, sample.tilt, sample.zoom) == pytest.approx((90.0, -45.0, 0.3))
        with pytest.raises(NoStableWindowError):  # MOVING reported: not still, although nothing else arrives
            source.latch.wait_still(0.2, timeout=0.4)
    finally:
        source.stop()


@pytest.mark.integration
def test_mqtt_broker_down_fails_fast_naming_host_and_port() -> None:
    port = free_port()  # nothing listens there
    source = MqttTelemetry(TelemetryLatch("site-b__cam-9"), "127.0.0.1", port, "ptz/x")
    start = time.monotonic()
    expected = f"site-b__cam-9: MQTT broker 127.0.0.1:{port} unreachable: Connection refused"
    with pytest.raises(CameraUnreachableError, match=expected):
        source.start(timeout=3.0)
    assert time.monotonic() - start < 3.5
    source.stop()  # harmless


@pytest.mark.integration
def test_mqtt_stop_ends_the_network_thread(broker: int) -> None:
    before = set(threading.enumerate())
    source = MqttTelemetry(TelemetryLatch("cam-1"), "127.0.0.1", broker, "ptz/stop")
    source.start(timeout=5.0)
    assert set(threading.enumerate()) - before
    source.stop()
    source.stop()
    assert not {thread for thread in set(threading.enumerate()) - before if thread.is_alive()}


# --- polling -----------------------------------------------------------------------------------------------


def test_polling_feeds_the_latch() -> None:
    calls: list[float] = []

    def read_position() -> Telemetry:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise OSError("GetStatus timed out")  # one failure: logged, polling goes on
        return Telemetry(float(len(calls)), 0.0, 0.0, now())

    latch = TelemetryLatch("cam-1")
    poller = PollingTelemetry(latch, read_position, interval_s=0.02, source="ONVIF GetStatus at 127.0.0.1:80")
    poller.start(timeout=2.0)
    try:
        assert latch.wait_until(lambda s: s.pan >= 5.0, timeout=2.0).pan == 5.0
    finally:
        poller.stop()
    count = len(calls)
    time.sleep(0.1)
    assert len(calls) == count  # stopped
    assert latch.nearest(now()).pan == count


def test_polling_that_never_answers_raises_unreachable() -> None:
    def read_position() -> Telemetry:
        raise ConnectionRefusedError("connection refused by 10.0.0.5:80")

    poller = PollingTelemetry(TelemetryLatch("site-a__cam-7"), read_position, interval_s=0.05,
                              source="ONVIF GetStatus at 10.0.0.5:80")
    start = time.monotonic()
    with pytest.raises(CameraUnreachableError,
                       match=r"site-a__cam-7: no position from ONVIF GetStatus at 10.0.0.5:80 within 0.3 s "
                             r"\(last error: connection refused"):
        poller.start(timeout=0.3)
    assert time.monotonic() - start < 1.5
