"""The web UI as a user sees it: dagster-webserver on a loopback port over a demo instance, driven by Debian's
chromium through Playwright (no browser download). Screenshots go to $PTZ_UI_ARTIFACTS (default: the test's
temporary folder); they are test artefacts, never committed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptz_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
FLEET = """
- name: site-a
  cameras:
    - name: cam-1
      mode: active
      ptz_stops: [[0, -15, 0.0], [60, -15, 0.0]]
      reference: {horizontal_stops: 6, vertical_stops: 1, pan_max: 300, tilt_min: -15, tilt_max: -15}
      offset_threshold_deg: 0.3
      backend: {kind: simulated, image_width: 320, image_height: 240, drift_amplitude_deg: [0.6, 0.2, 0.1],
                drift_period_hours: 6, seed: 1}
- name: site-b
  cameras:
    - name: cam-2
      mode: active
      ptz_stops: [[0, -15, 0.0]]
      reference: {horizontal_stops: 6, vertical_stops: 1, pan_max: 300, tilt_min: -15, tilt_max: -15}
      backend: {kind: simulated, image_width: 320, image_height: 240, fail: unreachable}
"""


LOCATION = "__repository__@ptz_pipeline.definitions"
"""workspace.yaml's repository and code location as the UI's addresses name them."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo (3 hours; site-b's camera unreachable) on a fresh instance: the folder of devices.yaml and the
    demo's instance and data."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "devices.yaml").write_text(FLEET)
    demo = [sys.executable, "-m", "ptz_pipeline.demo", "--hours", "3", "--home", str(tmp / "demo")]
    done = subprocess.run([*demo, "--devices", str(tmp / "devices.yaml")], cwd=REPO_ROOT, capture_output=True)
    assert done.returncode == 1, done.stdout.decode()[-2000:]  # the unreachable camera's hours fail
    return tmp


@pytest.fixture(scope="module")
def webserver(demo_home: Path) -> Iterator[str]:
    """dagster-webserver over the demo's instance on a free loopback port."""
    tmp = demo_home
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / "demo" / "dagster_home"),
        "PTZ_DATA_DIR": str(tmp / "demo" / "data"),
        "PTZ_DEVICES": str(tmp / "devices.yaml"),
    }
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        [*command, "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dagster-webserver did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(webserver: str, tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    artefacts = Path(os.environ.get("PTZ_UI_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    artefacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})

        def visit(path: str, name: str) -> str:
            """Open ``path``, dismiss the first-visit dialog, save a screenshot; the page's main text."""
            tab.goto(webserver + path, wait_until="networkidle", timeout=90_000)
            skip = tab.get_by_role("button", name="Skip")
            if skip.count():
                skip.click()
            tab.wait_for_timeout(1500)
            tab.screenshot(path=str(artefacts / f"{name}.png"))
            return tab.inner_text("body")

        yield visit
        browser.close()


def test_lineage_connects_the_groups_and_the_drift_view_to_the_estimates(page) -> None:
    assert {"calibration", "monitoring", "reports"} <= set(page("/asset-groups", "lineage").split())
    upstream = page("/assets/camera_drift?view=lineage", "camera_drift_lineage")
    assert "orientation_offsets" in upstream and "camera_drift" in upstream


def test_partitions_show_estimated_and_failed_camera_hours(page) -> None:
    text = page("/assets/orientation_offsets?view=partitions", "orientation_offsets_partitions")
    assert "Materialized (3)" in text and "Failed (3)" in text
    assert "site-a__cam-1" in text and "site-b__cam-2" in text


def test_the_offset_check_shows_a_failure_and_its_reason(page) -> None:
    text = page("/assets/orientation_offsets?view=checks", "orientation_offsets_checks")
    assert "offset_within_threshold" in text and "Failed" in text
    assert "Execution failed" not in text and "did not yield" not in text
    detail = page(
        "/assets/orientation_offsets?view=checks&checkDetail=offset_within_threshold", "offset_check_detail"
    )
    # the latest evaluation's reason in words: a site-b hour has no estimate (unreachable), a site-a hour is
    # beyond or within cam-1's 0.3° (the check's own description says "offset_threshold_deg (0.5° default)")
    reasons = ("no estimate: site-b__cam-2 hour", "beyond the 0.3° threshold", "within the 0.3° threshold (")
    assert any(reason in detail for reason in reasons), detail[-3000:]
    assert "Partition" in detail
    # an estimate's evaluation links its hour's materialisation; a failed estimate has none to link (which
    # of the run's evaluations is the latest depends on the order they were written)
    assert "no estimate: " in detail or "Target materialization" in detail


def _runs(demo_home: Path, job: str) -> list:
    """The demo instance's runs of ``job``."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(demo_home / "demo" / "dagster_home")) as instance:
        return instance.get_runs(dg.RunsFilter(job_name=job))


def test_the_demos_runs_are_on_their_job_page(page, demo_home: Path) -> None:
    """Runs created through the instance (the code location's origin) are listed on their job's page."""
    [run] = _runs(demo_home, "estimate_offsets")
    text = page(f"/locations/{LOCATION}/jobs/estimate_offsets/runs", "estimate_offsets_runs")
    assert run.run_id[:8] in text, text[-2000:]
    page("/overview/timeline", "timeline")  # a screenshot for the reader: the demo's runs per job


def test_one_cameras_drift_series_is_readable(page) -> None:
    text = page("/assets/camera_drift?view=partitions&partition=site-a__cam-1", "camera_drift_cam1")
    assert "Materialized (2)" in text
    overview = page("/assets/camera_drift", "camera_drift_overview")
    assert "trend" in overview and "last_24_hours" in overview


def test_the_failed_run_is_listed(page) -> None:
    assert "Failure" in page("/runs", "runs")
