"""devices.yaml: model, camera keys, and error messages that name the file and the exact field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptz_pipeline.devices import (
    ClusterAccess,
    DevicesConfigError,
    OnvifBackend,
    SimulatedBackend,
    camera_key,
    load_devices,
    split_camera_key,
)

VALID = """\
- name: "site-a"
  cluster: "kube-a"
  cameras:
    - name: "cam-1"
      mode: active
      ptz_stops: [[0, -10, 0.0], [40, -15, 0.5]]
      zoom_focal_ratio: [[0.0, 1.0], [1.0, 3.0]]
      reference:
        {horizontal_stops: 8, vertical_stops: 2, pan_min: 0, pan_max: 315, tilt_min: -20, tilt_max: -5}
      backend:
        kind: simulated
        hfov_deg: 60.0
        image_width: 640
        image_height: 480
        mount_ypr_deg: [25.0, 1.5, -0.8]
        drift_amplitude_deg: [0.8, 0.3, 0.2]
        drift_period_hours: 12.0
        seed: 1
        home: [270, -15, 0.0]
    - name: "cam-2"
      mode: passive
      stabilize_time: 20
      timeout: 600
      offset_threshold_deg: 0.3
      backend: {kind: simulated, fail: textureless}
- name: "site-b.north"
  cameras:
    - name: "onvifcam-1"
      mode: passive
      backend:
        kind: onvif
        host: 10.0.0.5
        username_env: CAM_USER
        password_env: CAM_PASS
        rtsp_url: rtsp://10.0.0.5:554/stream1
        mqtt_host: broker.local
        mqtt_topic: cameras/onvifcam-1/telemetry
"""


def test_valid_file_loads_with_keys_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(VALID)
    fleet = load_devices(path)
    assert [c.key for c in fleet.cameras()] == ["site-a__cam-1", "site-a__cam-2", "site-b.north__onvifcam-1"]
    assert [c.deployment for c in fleet.cameras()] == ["site-a", "site-a", "site-b.north"]
    cam1 = fleet.camera("site-a__cam-1")
    assert cam1.ptz_stops == [(0.0, -10.0, 0.0), (40.0, -15.0, 0.5)]
    assert isinstance(cam1.backend, SimulatedBackend)
    assert cam1.backend.drift_amplitude_deg == (0.8, 0.3, 0.2)
    assert cam1.backend.home == (270.0, -15.0, 0.0)
    assert cam1.backend.drift_offset_deg == (0.0, 0.0, 0.0)  # default
    assert cam1.zoom_focal_ratio == [(0.0, 1.0), (1.0, 3.0)]
    cam2 = fleet.camera("site-a__cam-2")
    assert (cam2.mode, cam2.stabilize_time, cam2.timeout, cam2.offset_threshold_deg) == (
        "passive",
        20,
        600,
        0.3,
    )
    assert cam2.backend.fail == "textureless"
    assert cam2.zoom_focal_ratio == [(0.0, 1.0)]  # default: a fixed-focal camera
    onvif = fleet.camera("site-b.north__onvifcam-1").backend
    assert isinstance(onvif, OnvifBackend)
    assert (onvif.port, onvif.mqtt_port) == (80, 1883)
    assert fleet.deployments[0].cluster == ClusterAccess(context="kube-a")
    assert fleet.deployments[1].cluster is None
    assert load_devices(VALID) == fleet  # text and file give the same fleet
    with pytest.raises(KeyError, match="no camera 'site-a__cam-9'"):
        fleet.camera("site-a__cam-9")


def test_yaml_anchors_share_settings() -> None:
    """Merge keys let many cameras share one backend; a camera still overrides what it sets itself."""
    text = """\
- name: site-a
  cameras:
    - &base
      name: cam-1
      mode: passive
      backend: {kind: simulated, hfov_deg: 50.0}
    - <<: *base
      name: cam-2
"""
    fleet = load_devices(text)
    assert [c.key for c in fleet.cameras()] == ["site-a__cam-1", "site-a__cam-2"]
    assert fleet.camera("site-a__cam-2").backend.hfov_deg == 50.0


def test_reference_grid_stops() -> None:
    grid = load_devices(VALID).camera("site-a__cam-1").reference
    stops = grid.stops()
    assert len(stops) == 16
    assert stops[:2] == [(0.0, -20.0, 0.0), (45.0, -20.0, 0.0)]
    assert stops[7] == (315.0, -20.0, 0.0)
    assert stops[-1] == (315.0, -5.0, 0.0)


def test_simulated_backend_renders_the_packaged_panorama_by_default() -> None:
    """A user's clone has no ../shared: the simulator's world ships inside the package, with its licence."""
    backend = load_devices(VALID).camera("site-a__cam-1").backend
    assert isinstance(backend, SimulatedBackend) and backend.panorama is None
    assert backend.panorama_path.is_file()
    assert "CC BY-SA 3.0" in (backend.panorama_path.parent / "SOURCE.txt").read_text()
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        _ = backend.model_copy(update={"panorama": "nowhere.jpg"}).panorama_path


def test_onvif_credentials_come_from_named_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = load_devices(VALID).camera("site-b.north__onvifcam-1").backend
    assert isinstance(backend, OnvifBackend)
    monkeypatch.delenv("CAM_USER", raising=False)
    monkeypatch.setenv("CAM_PASS", "s3cret")
    with pytest.raises(DevicesConfigError, match="CAM_USER not set"):
        backend.credentials()
    monkeypatch.setenv("CAM_USER", "admin")
    assert backend.credentials() == ("admin", "s3cret")


def replace(old: str, new: str) -> str:
    """VALID with one (unique) snippet replaced."""
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            replace("[40, -15, 0.5]", "[400, -15, 0.5]"),
            "devices.yaml: [0].cameras[0].ptz_stops[1]: pan must be within [-360, 360] degrees, got 400.0",
        ),
        (
            replace("[40, -15, 0.5]", "[40, -95, 0.5]"),
            "devices.yaml: [0].cameras[0].ptz_stops[1]: tilt must be within [-90, 90] degrees",
        ),
        (
            replace("[40, -15, 0.5]", "[40, -15, 1.5]"),
            "devices.yaml: [0].cameras[0].ptz_stops[1]: zoom must be within [0, 1]",
        ),
        (
            replace("[40, -15, 0.5]", "[40, -15]"),
            "devices.yaml: [0].cameras[0].ptz_stops[1]: a PTZ stop must be [pan deg, tilt deg, zoom 0..1], "
            "got [40, -15]",
        ),
        (replace('name: "cam-2"', 'name: "Cam 2"'), "devices.yaml: [0].cameras[1].name: camera name 'Cam 2'"),
        (replace('name: "cam-2"', 'name: "cam__2"'), "[0].cameras[1].name: camera name 'cam__2' must not"),
        (replace('name: "site-b.north"', 'name: "site_"'), "devices.yaml: [1].name: deployment name 'site_'"),
        (replace('name: "site-b.north"', 'name: ".."'), "devices.yaml: [1].name: deployment name '..'"),
        (replace("hfov_deg: 60.0", "hfov_deg: 190"), "devices.yaml: [0].cameras[0].backend.hfov_deg: "),
        (replace("seed: 1", "seed: 1\n        sede: 2"), "[0].cameras[0].backend.sede: Extra inputs"),
        (
            replace("kind: onvif", "kind: hikvision"),
            "devices.yaml: [1].cameras[0].backend: Input tag 'hikvision'",
        ),
        (
            replace("password_env: CAM_PASS", "password_env: hunter2!"),
            "devices.yaml: [1].cameras[0].backend.password_env: must be the NAME of an environment variable",
        ),
        (
            replace("rtsp://10.0.0.5:554", "rtsp://admin:pw@10.0.0.5:554"),
            "devices.yaml: [1].cameras[0].backend.rtsp_url: must not contain credentials",
        ),
        (
            replace("home: [270, -15, 0.0]", "home: [270, -15, 2.0]"),
            "devices.yaml: [0].cameras[0].backend.home: zoom must be within [0, 1]",
        ),
        (
            replace("[[0.0, 1.0], [1.0, 3.0]]", "[[0.0, 1.0], [0.0, 3.0]]"),
            "devices.yaml: [0].cameras[0].zoom_focal_ratio: zoom must increase strictly",
        ),
        (
            replace("[[0.0, 1.0], [1.0, 3.0]]", "[[0.0, 1.0], [1.0, 0.5]]"),
            "devices.yaml: [0].cameras[0].zoom_focal_ratio: zoom must increase strictly and focal_px must be",
        ),
        (replace("mode: active", "mode: sometimes"), "devices.yaml: [0].cameras[0].mode: Input should be"),
        (
            replace("timeout: 600", "timeout: 10"),
            "devices.yaml: [0].cameras[1]: timeout (10.0 s) must be at least stabilize_time (20.0 s)",
        ),
        (
            replace("pan_min: 0, pan_max: 315", "pan_min: 200, pan_max: 100"),
            "devices.yaml: [0].cameras[0].reference: pan_min (200.0) must not exceed pan_max (100.0)",
        ),
        (
            replace('    - name: "onvifcam-1"', '    - name: "cam-1"'),
            "",  # same camera name in another deployment is fine: keys differ
        ),
        (
            replace('- name: "site-b.north"', '- name: "site-a"'),
            "devices.yaml: [1].name: duplicate deployment 'site-a' (first at [0].name)",
        ),
        (
            replace('    - name: "cam-2"', '    - name: "cam-1"'),
            "devices.yaml: [0].cameras[1].name: duplicate camera key 'site-a__cam-1' "
            "(first at [0].cameras[0].name)",
        ),
        ('- name: "site-x"\n  cameras: []\n', "devices.yaml: [0].cameras: List should have at least 1 item"),
        ("name: site-a\n", "devices.yaml: (top level): Input should be a valid list"),
        ("[]\n", "devices.yaml: the list of deployments is empty"),
        ("\n# nothing here\n", "devices.yaml: file is empty"),
    ],
)
def test_errors_name_the_file_and_field(text: str, message: str) -> None:
    if not message:
        load_devices(text)
        return
    with pytest.raises(DevicesConfigError) as info:
        load_devices(text)
    assert message in str(info.value)


def test_yaml_errors_give_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    text = replace("      mode: passive\n      stabilize_time", "      mode: passive\n    stabilize_time")
    path.write_text(text)
    line = text.splitlines().index("    stabilize_time: 20") + 1  # mis-indented by two: column 5
    with pytest.raises(DevicesConfigError, match=rf"^{path}: invalid YAML at line {line}, column 5: "):
        load_devices(path)
    with pytest.raises(DevicesConfigError, match=r"invalid YAML at line 3, column 3: duplicate key 'name'"):
        load_devices("- name: a\n  cameras: []\n  name: b\n")


def test_several_errors_are_all_reported() -> None:
    text = replace("hfov_deg: 60.0", "hfov_deg: -1").replace("seed: 1\n", "seed: one\n")
    with pytest.raises(DevicesConfigError) as info:
        load_devices(text)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "[0].cameras[0].backend.hfov_deg",
        "[0].cameras[0].backend.seed",
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(DevicesConfigError, match="cannot read devices file"):
        load_devices(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("deployment", "camera"), [("site-a", "cam-1"), ("gan-shomron-dell", "onvifcam-1"), ("a.b", "c_d")]
)
def test_camera_key_round_trip(deployment: str, camera: str) -> None:
    key = camera_key(deployment, camera)
    assert key == f"{deployment}__{camera}"
    assert split_camera_key(key) == (deployment, camera)


@pytest.mark.parametrize(
    "key", ["site-a", "a__b__c", "a___b", "a_____b", "Site__cam", "a__", "__b", "a b__c", "a|b__c"]
)
def test_split_rejects_ambiguous_or_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError, match="camera key|name"):
        split_camera_key(key)


@pytest.mark.parametrize(
    ("deployment", "camera"), [("a_", "b"), ("a", "_b"), ("a__x", "b"), ("a", "b,c"), ("", "b")]
)
def test_camera_key_rejects_names_that_would_not_split_back(deployment: str, camera: str) -> None:
    with pytest.raises(ValueError, match="name"):
        camera_key(deployment, camera)


SEED_MINIMAL = """
- name: gan-shomron-dell
  cameras:
    - name: onvifcam-1
"""


def test_the_seeds_minimal_file_loads_and_fails_on_use_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployments and camera names only: loads (passive mode, the seed's default); the connection details
    come from PTZ_SECRETS when the camera is used, and a camera with none fails naming what to provide."""
    cam = load_devices(SEED_MINIMAL).camera("gan-shomron-dell__onvifcam-1")
    assert cam.mode == "passive" and cam.backend is None
    monkeypatch.delenv("PTZ_SECRETS", raising=False)
    with pytest.raises(DevicesConfigError, match="PTZ_SECRETS is not set .*'gan-shomron-dell/onvifcam-1'"):
        cam.connection()
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"gan-shomron-dell/other": {"host": "10.0.0.9"}}))
    monkeypatch.setenv("PTZ_SECRETS", str(secrets))
    with pytest.raises(DevicesConfigError, match="no entry 'gan-shomron-dell/onvifcam-1'"):
        cam.connection()
    entry = {
        "host": "10.0.0.5",
        "port": 8080,
        "username": "admin",
        "password": "s3cret",
        "telemetry": "onvif",
    }
    secrets.write_text(json.dumps({"gan-shomron-dell/onvifcam-1": entry}))
    backend = cam.connection()
    assert isinstance(backend, OnvifBackend) and (backend.host, backend.port) == ("10.0.0.5", 8080)
    assert backend.credentials() == ("admin", "s3cret")
    assert "s3cret" not in repr(backend)
    secrets.write_text(json.dumps({"gan-shomron-dell/onvifcam-1": {"host": "10.0.0.5", "port": "eighty"}}))
    with pytest.raises(DevicesConfigError, match="gan-shomron-dell/onvifcam-1: port: Input should be"):
        cam.connection()


def test_cluster_access_and_active_stops_default_to_the_reference_grid() -> None:
    text = """
- name: site
  cluster: {context: prod, namespace: cams, target: service/onvif-1, ports: [[18080, 80], [18554, 554]]}
  cameras:
    - name: cam
      mode: active
      reference: {horizontal_stops: 3, vertical_stops: 1, pan_max: 90, tilt_min: -10, tilt_max: -10}
      backend: {kind: onvif, host: 127.0.0.1, port: 18080, telemetry: mqtt, mqtt_host: 127.0.0.1}
"""
    cam = load_devices(text).camera("site__cam")
    assert cam.cluster == ClusterAccess(
        context="prod", namespace="cams", target="service/onvif-1", ports=[(18080, 80), (18554, 554)]
    )
    assert cam.query_stops == [(0.0, -10.0, 0.0), (45.0, -10.0, 0.0), (90.0, -10.0, 0.0)]
    with pytest.raises(DevicesConfigError, match="telemetry: mqtt needs mqtt_host"):
        load_devices(text.replace(", mqtt_host: 127.0.0.1", ""))


def test_report_setting_is_per_deployment_and_defaults_to_all() -> None:
    text = """
- name: loud
  cameras: [{name: cam}]
- name: quiet
  report: alerts
  cameras: [{name: cam}]
"""
    fleet = load_devices(text)
    assert fleet.camera("loud__cam").report == "all"
    assert fleet.camera("quiet__cam").report == "alerts"
    with pytest.raises(DevicesConfigError, match="report"):
        load_devices(text.replace("report: alerts", "report: sometimes"))


def test_intrinsics_method_and_zoom_levels_are_validated_naming_the_field() -> None:
    text = """
- name: site
  cameras:
    - {name: board}
    - name: self
      intrinsics: self
      zoom_focal_ratio: [[0.0, 1.0], [1.0, 4.0]]
      reference: {horizontal_stops: 8, vertical_stops: 3, pan_min: 0, pan_max: 315, tilt_min: -30,
                  tilt_max: -10, zoom_levels: [0.5, 1.0]}
"""
    fleet = load_devices(text)
    assert fleet.camera("site__board").intrinsics == "chessboard"
    cam = fleet.camera("site__self")
    assert cam.intrinsics == "self"
    stops = cam.reference_stops()
    assert stops[:24] == cam.reference.stops() and len(stops) == 24 + 2 * 4
    # 2 x 2 stops around the grid's centre stop (180°, -20°), a quarter of the 45° pan step / nominal ratio
    ratio_half = 2.5  # the table's ratio at zoom 0.5
    s = 45.0 / 4 / ratio_half
    assert np.array(stops[24:28]) == pytest.approx(np.array([(180 - s, -20 - s, 0.5), (180 + s, -20 - s, 0.5),
                                          (180 - s, -20 + s, 0.5), (180 + s, -20 + s, 0.5)]))  # fmt: skip
    assert cam.query_stops == cam.reference.stops()  # the zoom stops are for calibration only
    with pytest.raises(
        DevicesConfigError, match=r"cameras\[1\]\.intrinsics: Input should be 'chessboard' or"
    ):
        load_devices(text.replace("intrinsics: self", "intrinsics: selfcal"))
    with pytest.raises(DevicesConfigError, match="zoom_levels needs intrinsics: self"):
        load_devices(text.replace("intrinsics: self", "intrinsics: chessboard"))
    with pytest.raises(DevicesConfigError, match="zoom_levels must increase"):
        load_devices(text.replace("[0.5, 1.0]", "[1.0, 0.5]"))


def test_simulated_lens_with_an_exponential_zoom_curve_and_distortion_per_zoom() -> None:
    spec = SimulatedBackend(
        kind="simulated", zoom_max_ratio=10.0, zoom_curve="exponential", dist_at_max_zoom=(0.01, 0.0)
    )
    f0 = spec.intrinsics.fx
    for zoom in (0.0, 0.3, 0.5, 1.0):
        assert spec.zoom_model.focal(zoom) == pytest.approx(f0 * 10.0**zoom)
    assert spec.zoom_model.distortion(0.5)[:2] == pytest.approx([(-0.08 + 0.01) / 2, 0.01])
    assert SimulatedBackend(kind="simulated", zoom_max_ratio=10.0).zoom_model.focal(0.5) == pytest.approx(
        5.5 * f0
    )
