"""``python -m ptz_pipeline.sim``: serve one simulated PTZ camera over ONVIF, RTSP and MQTT until stopped.

Prints one line ``ready camera=<key> onvif=<device service URL> rtsp=<URL> snapshot=<URL>
[mqtt=mqtt://<host>:<port>/<topic>]`` once every service answers (port 0 picks a free port; the line shows
the bound ones), exits 0 on SIGTERM/SIGINT after stopping ffmpeg and every thread, and 1 with a one-line
``error:`` message on stderr when it cannot start. The password is never printed; prefer
``--password-env NAME`` to ``--password`` (a command line is visible in ``ps``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ptz_pipeline.devices import CameraConfig, Deployment, DevicesConfigError, SimulatedBackend, load_devices
from ptz_pipeline.sim.server import SimulatorServer

PROG = "python -m ptz_pipeline.sim"


class StartupError(Exception):
    """The simulator cannot start; the message is shown as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--onvif-port", type=int, required=True, help="ONVIF HTTP port (0: a free port)")
    parser.add_argument("--rtsp-port", type=int, required=True, help="RTSP port (0: a free port)")
    parser.add_argument("--mqtt-host", help="MQTT broker for telemetry (default: no telemetry)")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="MQTT broker port (default 1883)")
    parser.add_argument("--user", required=True, help="ONVIF / HTTP user name")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="ONVIF / HTTP password (visible in ps; prefer --password-env)")
    secret.add_argument("--password-env", metavar="NAME", help="environment variable holding the password")
    parser.add_argument("--devices", metavar="FILE", help="devices.yaml with the simulated camera "
                        "(default: a 640x480 simulated camera sim__cam)")
    parser.add_argument("--camera", metavar="KEY", help="camera key <deployment>__<camera> in --devices "
                        "(default: its only simulated camera)")
    parser.add_argument("--profile-token", default="profile_1", help="the media profile's token")
    parser.add_argument("--generic-space", action="store_true",
                        help="ONVIF generic pan/tilt space -1..1 instead of degrees")
    parser.add_argument("--pan-range", type=float, nargs=2, default=(-180.0, 180.0), metavar=("MIN", "MAX"),
                        help="pan degrees spanned by the generic space's -1..1 (default -180 180)")
    parser.add_argument("--tilt-range", type=float, nargs=2, default=(-90.0, 90.0), metavar=("MIN", "MAX"),
                        help="tilt degrees spanned by the generic space's -1..1 (default -90 90)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S", help="RTSP stream delay, seconds")
    parser.add_argument("--timestamp-overlay", action="store_true",
                        help="burn the wall-clock time into the RTSP frames")
    parser.add_argument("--move-status", choices=("valid", "garbage"), default="valid",
                        help="garbage: ONVIF MoveStatus reads 'string' (like some cameras)")
    parser.add_argument("--slew", type=float, default=60.0, metavar="DEG_S", help="pan/tilt rate, degrees/s")
    parser.add_argument("--zoom-rate", type=float, default=0.5, metavar="PER_S", help="zoom rate, units/s")
    parser.add_argument("--fps", type=float, default=5.0, help="RTSP frames per second (default 5)")
    parser.add_argument("--telemetry-hz", type=float, default=10.0, help="MQTT telemetry rate (default 10)")
    return parser


def _camera(devices: str | None, key: str | None) -> CameraConfig:
    """The simulated camera to serve: ``key`` in ``devices`` or the default one."""
    if devices is None:
        if key is not None:
            raise StartupError("--camera needs --devices")
        backend = {"kind": "simulated"}
        return Deployment.model_validate(
            {"name": "sim", "cameras": [{"name": "cam", "ptz_stops": [[0, -15, 0]], "backend": backend}]}
        ).cameras[0]
    try:
        fleet = load_devices(devices)
    except DevicesConfigError as exc:
        raise StartupError(str(exc).replace("\n", "; ")) from None
    if key is not None:
        try:
            camera = fleet.camera(key)
        except KeyError as exc:
            raise StartupError(exc.args[0]) from None
        if not isinstance(camera.backend, SimulatedBackend):
            raise StartupError(f"camera {key} in {devices} is not simulated (backend kind "
                               f"{camera.backend.kind!r})")
        return camera
    simulated = [camera for camera in fleet.cameras() if isinstance(camera.backend, SimulatedBackend)]
    if len(simulated) != 1:
        keys = ", ".join(camera.key for camera in simulated) or "none"
        raise StartupError(f"{devices}: choose the camera with --camera (simulated cameras: {keys})")
    return simulated[0]


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    password = os.environ.get(args.password_env)
    if not password:
        raise StartupError(f"environment variable {args.password_env} (--password-env) is not set or empty")
    return password


def _start(args: argparse.Namespace) -> SimulatorServer:
    """Build and start the simulator (StartupError with a one-line message when it cannot)."""
    try:
        server = SimulatorServer(
            _camera(args.devices, args.camera), user=args.user, password=_password(args), host=args.host,
            onvif_port=args.onvif_port, rtsp_port=args.rtsp_port, mqtt_host=args.mqtt_host,
            mqtt_port=args.mqtt_port, generic_space=args.generic_space, pan_range_deg=tuple(args.pan_range),
            tilt_range_deg=tuple(args.tilt_range), latency_s=args.latency,
            timestamp_overlay=args.timestamp_overlay, move_status=args.move_status, slew_deg_s=args.slew,
            zoom_rate_s=args.zoom_rate, fps=args.fps, telemetry_hz=args.telemetry_hz,
            profile_token=args.profile_token,
        )
        server.start()
    except OSError as exc:  # a port in use, no panorama (FileNotFoundError), the broker (ConnectionError)
        raise StartupError(exc.strerror if exc.errno is not None and exc.strerror else str(exc)) from None
    except (ValueError, TypeError, RuntimeError) as exc:  # bad options, ffmpeg missing or failing
        raise StartupError(str(exc)) from None
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM/SIGINT; returns the exit status (0, or 1 when it cannot start)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in signals}
    try:
        try:
            server = _start(args)
        except StartupError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            mqtt = f" mqtt={server.telemetry_url}" if server.telemetry_url else ""
            print(f"ready camera={server.camera.key} onvif={server.onvif_url} rtsp={server.rtsp_url} "
                  f"snapshot={server.snapshot_url}{mqtt}", flush=True)
            stop.wait()
        finally:
            server.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
