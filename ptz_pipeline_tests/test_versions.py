"""Versioned calibration: versions are added, never overwritten; an hour uses the versions valid at its start;
the switch is atomic (a storage error or a kill -9 between the files and the index keeps the previous one);
retention; the seed's unversioned files are version 0. The integration test re-scans a simulated camera's
reference after a drift step and backfills across the re-scan."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ptz_pipeline import versions
from ptz_pipeline.assets.common import CalibrationVersions
from ptz_pipeline.demo import calibrate_simulated
from ptz_pipeline.devices import load_devices
from ptz_pipeline.partitions import hour_key, hour_start
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.resources.storage import ObjectStorageResource, StorageError
from ptz_pipeline.sim.truth import true_drift
from ptz_pipeline_tests.test_pipeline import Pipeline, _camera, _write_devices

pytest_plugins = ["ptz_pipeline_tests.servers"]

T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)


class Clock:
    """versions.utc_now, stepped by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
        self.now = now
        monkeypatch.setattr(versions, "utc_now", lambda: self.now)


@pytest.fixture
def storage(tmp_path: Path) -> ObjectStorageResource:
    return ObjectStorageResource(url=str(tmp_path / "store"))


def write_version(
    storage: ObjectStorageResource, artefact: versions.Artefact, payload: bytes, keep: int = 0
) -> versions.Version:
    """One version of ``artefact`` of site-a/cam-1 holding ``data.bin``."""
    new = versions.begin_version(storage, "site-a", "cam-1", artefact)
    storage.put_bytes(f"{new.prefix}/data.bin", payload)
    return versions.commit_version(storage, "site-a", "cam-1", artefact, new, keep=keep, run_id="r")


def test_each_write_adds_a_version_and_keeps_the_old_ones(
    storage: ObjectStorageResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, T0)
    first = write_version(storage, "r_align", b"one")
    clock.now = T0 + timedelta(hours=2)
    second = write_version(storage, "r_align", b"two")
    assert (first.number, second.number) == (1, 2)
    assert first.prefix == "site-a/cam-1/r_align/v0001" and second.prefix == "site-a/cam-1/r_align/v0002"
    assert versions.list_versions(storage, "site-a", "cam-1", "r_align") == [first, second]
    assert storage.get_bytes(f"{first.prefix}/data.bin") == b"one"  # never overwritten
    assert versions.current(storage, "site-a", "cam-1", "r_align") == second
    assert second.valid_from == T0 + timedelta(hours=2) and second.provenance == {"run_id": "r"}


def test_an_hour_uses_the_newest_version_created_before_it_began(
    storage: ObjectStorageResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, T0 + timedelta(minutes=20))
    v1 = write_version(storage, "reference", b"1")
    clock.now = T0 + timedelta(hours=3)  # exactly the start of an hour: valid for that hour
    v2 = write_version(storage, "reference", b"2")
    listed = versions.list_versions(storage, "site-a", "cam-1", "reference")
    assert versions.valid_at(listed, T0 + timedelta(hours=1)) == (v1, False)
    assert versions.valid_at(listed, T0 + timedelta(hours=2)) == (v1, False)
    assert versions.valid_at(listed, T0 + timedelta(hours=3)) == (v2, False)
    # the hour during which v1 was created began before every version: the oldest, flagged
    assert versions.valid_at(listed, T0) == (v1, True)


def test_the_seeds_unversioned_files_are_version_0(
    storage: ObjectStorageResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes("site-a/cam-1/reference_scan/manifest.json", b"{}")
    [seed] = versions.list_versions(storage, "site-a", "cam-1", "reference")
    assert (seed.number, seed.valid_from, seed.prefix) == (0, None, "site-a/cam-1/reference_scan")
    Clock(monkeypatch, T0)
    v1 = write_version(storage, "reference", b"new")
    listed = versions.list_versions(storage, "site-a", "cam-1", "reference")
    assert listed == [seed, v1]
    assert versions.valid_at(listed, T0 - timedelta(days=300)) == (seed, False)  # valid since ever
    assert versions.valid_at(listed, T0 + timedelta(hours=1)) == (v1, False)
    assert storage.get_bytes("site-a/cam-1/reference_scan/manifest.json") == b"{}"


def test_calibration_versions_of_an_hour_and_the_note_when_none_is_older(
    storage: ObjectStorageResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    cam = load_devices(_write_devices(Path(storage.url).parent / "d.yaml", {"site-a": [_camera("cam-1", 1)]}))
    cam = cam.camera("site-a__cam-1")
    clock = Clock(monkeypatch, T0 + timedelta(minutes=30))
    write_version(storage, "intrinsics", b"i1")
    write_version(storage, "reference", b"r1")
    clock.now = T0 + timedelta(hours=5, minutes=10)
    write_version(storage, "reference", b"r2")
    write_version(storage, "r_align", b"a1")
    found = CalibrationVersions.read(storage, cam)
    _, reference, used = found.at(T0 + timedelta(hours=2))
    assert (reference.number, used.reference, used.intrinsics, used.r_align) == (1, 1, 1, 1)
    assert used.note == "r_align v1 became valid after the hour began (no earlier version)"
    _, reference, used = found.at(T0 + timedelta(hours=6))
    assert (reference.number, used.r_align, used.note) == (2, 1, None)
    _, _, used = found.at(T0)
    assert used.note.startswith("intrinsics v1, reference v1, r_align v1 became valid after the hour began")


class FailingIndex(ObjectStorageResource):
    """Storage whose writes of a version index fail (an endpoint that goes away mid-write)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(versions.INDEX):
            raise StorageError(f"put {key!r}: connection reset")
        super().put_bytes(key, data)


def test_a_storage_error_before_the_index_keeps_the_previous_version(
    storage: ObjectStorageResource, tmp_path: Path
) -> None:
    first = write_version(storage, "intrinsics", b"good")
    failing = FailingIndex(url=storage.url)
    with pytest.raises(StorageError, match="connection reset"):
        write_version(failing, "intrinsics", b"half")
    assert storage.exists("site-a/cam-1/intrinsics/v0002/data.bin")  # written, never listed
    assert versions.current(storage, "site-a", "cam-1", "intrinsics") == first
    retry = versions.begin_version(storage, "site-a", "cam-1", "intrinsics")  # same number, leftovers gone
    assert retry.number == 2 and not storage.exists("site-a/cam-1/intrinsics/v0002/data.bin")


WRITER = """
import sys, time
from ptz_pipeline import versions
from ptz_pipeline.resources.storage import ObjectStorageResource
storage = ObjectStorageResource(url=sys.argv[1])
new = versions.begin_version(storage, "site-a", "cam-1", "reference")
for i in range(3):
    storage.put_bytes(f"{new.prefix}/images/{i:03d}.jpg", b"x" * 100_000)
print("files written", flush=True)
time.sleep(60)
versions.commit_version(storage, "site-a", "cam-1", "reference", new)
"""


def test_kill_9_between_the_files_and_the_index_keeps_the_previous_version(
    storage: ObjectStorageResource,
) -> None:
    first = write_version(storage, "reference", b"good")
    repo = Path(__file__).parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, storage.url], stdout=subprocess.PIPE, text=True, cwd=repo
    )
    try:
        assert writer.stdout.readline().strip() == "files written"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        writer.kill()
    assert writer.returncode == -signal.SIGKILL
    assert versions.current(storage, "site-a", "cam-1", "reference") == first
    assert storage.exists("site-a/cam-1/reference_scan/v0002/images/000.jpg")  # the orphan, not listed
    retry = write_version(storage, "reference", b"again")
    assert retry.number == 2 and storage.list_keys(retry.prefix) == [f"{retry.prefix}/data.bin"]


def test_retention_keeps_the_newest_versions_and_the_seeds(storage: ObjectStorageResource) -> None:
    storage.put_bytes("site-a/cam-1/intrinsics/calibration.npz", b"seed")
    for payload in (b"1", b"2", b"3"):
        write_version(storage, "intrinsics", payload, keep=2)
    listed = versions.list_versions(storage, "site-a", "cam-1", "intrinsics")
    assert [v.number for v in listed] == [0, 2, 3]
    assert not storage.list_keys("site-a/cam-1/intrinsics/v0001")
    assert storage.get_bytes("site-a/cam-1/intrinsics/calibration.npz") == b"seed"


DRIFT_STEP_DEG = (0.4, -0.2, 0.0)
"""The mount's sudden move (yaw, pitch, roll degrees) between the first reference and the re-scan."""


@pytest.mark.integration
def test_backfill_across_a_reference_rescan_reproduces_the_rows_of_the_time(
    tmp_path: Path, slack_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hours before the re-scan keep using the first reference (their backfilled rows equal the rows written
    at the time); hours after it use the new one, which has absorbed the drift step."""
    now = datetime.now(UTC)
    h = [hour_key(now - timedelta(hours=n)) for n in (4, 3, 2)]  # two hours before the re-scan, one after
    clock = Clock(monkeypatch, hour_start(h[0]) - timedelta(hours=2))
    before = _write_devices(tmp_path / "before.yaml", {"site-a": [_camera("cam-1", 3)]})
    slack = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)
    p = Pipeline(tmp_path, before, slack)
    cam = p.fleet.camera("site-a__cam-1")
    assert calibrate_simulated(p.run, p.resources["storage"], cam)
    assert p.run_range("capture_queries", h[:2]).success
    assert p.run_range("estimate_offsets", h[:2]).success
    at_the_time = p.rows().set_index("partition_key")

    stepped = _camera("cam-1", 3)
    stepped["backend"]["drift_offset_deg"] = list(DRIFT_STEP_DEG)
    after = p.with_devices(_write_devices(tmp_path / "after.yaml", {"site-a": [stepped]}))
    clock.now = hour_start(h[2]) - timedelta(minutes=30)  # the re-scan, between h[1] and h[2]
    rescan = [dg.AssetKey("reference_scan"), dg.AssetKey("reference_features")]
    assert after.run("calibrate_camera", partition_key=cam.key, asset_selection=rescan).success
    assert after.run_range("capture_queries", h[2:]).success
    assert after.run_range("estimate_offsets", h).success  # the backfill, all three hours in one run

    rows = after.rows().set_index("partition_key")
    for hour, reference in zip(h, (1, 1, 2), strict=True):
        row = rows.loc[f"{cam.key}|{hour}"]
        assert row["success"], row["failure_logs"]
        assert (row["reference_version"], row["intrinsics_version"], row["r_align_version"]) == (
            reference,
            1,
            1,
        )
        assert pd.isna(row["version_note"])
        truth = true_drift(p.resources["storage"], after.fleet.camera(cam.key), hour_start(hour))
        est = (row["yaw_offset"], row["pitch_offset"], row["roll_offset"])
        assert max(abs(e - t) for e, t in zip(est, truth, strict=True)) < 0.05, (hour, est, truth)
        if reference == 1:  # the row written at the time, again
            old = at_the_time.loc[f"{cam.key}|{hour}"]
            assert est == pytest.approx(
                (old["yaw_offset"], old["pitch_offset"], old["roll_offset"]), abs=1e-9
            )
            assert row["run_id"] != old["run_id"]

    record = after.instance.get_latest_materialization_event(dg.AssetKey("reference_scan"))
    assert record.asset_materialization.metadata["version"].value == 2
    offsets = after.instance.fetch_materializations(dg.AssetKey("orientation_offsets"), limit=10).records
    used = {r.partition_key: r.asset_materialization.metadata["reference_version"].value for r in offsets}
    assert used[f"{cam.key}|{h[0]}"] == 1 and used[f"{cam.key}|{h[2]}"] == 2
