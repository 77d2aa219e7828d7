"""A new R_align proposal is announced on Slack once: r_align_proposal materialised on a camera whose rows
show a simulated step of the mount posts camera, Δ ± σ, hours of evidence and how to apply it to the local
Slack imitation (real HTTP); re-proposing the same step posts nothing; a failed delivery is retried."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pytest

from geometry.alignment import save_r_align
from ptz_pipeline import proposals, scans, versions
from ptz_pipeline.assets.proposal import R_ALIGN_PROPOSAL, r_align_proposal
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.resources.slack import SlackResource
from ptz_pipeline.settings import local_resources
from ptz_pipeline_tests.rows import estimate_row

if TYPE_CHECKING:
    from ptz_pipeline_tests.servers import SlackServer

pytest_plugins = ["ptz_pipeline_tests.servers"]

STEP_DEG = (0.3, -0.05, 0.02)
"""The mount's true step (yaw, pitch, roll degrees) at hour 10 of 60; σ 0.002° per hour."""
KEY = "site-a__cam-1"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    fleet = [{"name": "site-a", "cameras": [{"name": "cam-1", "backend": {"kind": "simulated"}}]}]
    (tmp_path / "devices.yaml").write_text(json.dumps(fleet))
    resources = local_resources(str(tmp_path / "data"), str(tmp_path / "devices.yaml"))
    storage = resources["storage"]
    for artefact in ("r_align", "reference"):  # version 1 of each; R_align the identity (mount = world)
        new = versions.begin_version(storage, "site-a", "cam-1", artefact)
        if artefact == "r_align":
            buf = io.BytesIO()
            save_r_align(buf, np.eye(3))
            storage.put_bytes(scans.r_align_key("site-a", "cam-1", new.number), buf.getvalue())
        versions.commit_version(storage, "site-a", "cam-1", artefact, new)
    _rows(resources, 0, 60)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions(camera_partitions.name, [KEY])
        yield resources, instance


def _rows(resources: dict, first: int, last: int) -> None:
    """Hours ``first`` .. ``last`` - 1 of the 60 before now: drift 0 until hour 10, STEP_DEG after."""
    rng = np.random.default_rng(first)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=60)
    rows = []
    for h in range(first, last):
        t = start + timedelta(hours=h)
        angles = np.add(STEP_DEG if h >= 10 else (0.0, 0.0, 0.0), rng.normal(0, 0.002, 3))
        rows.append(estimate_row(KEY, t, angles, reference_version=1, r_align_version=1))
    resources["iceberg"].replace_rows([r.partition_key for r in rows], rows)


def _propose(resources: dict, instance: dg.DagsterInstance, slack: SlackResource) -> dict:
    result = dg.materialize(
        [r_align_proposal], instance=instance, resources={**resources, "slack": slack}, partition_key=KEY
    )
    assert result.success
    meta = (
        instance.fetch_materializations(R_ALIGN_PROPOSAL, limit=1).records[0].asset_materialization.metadata
    )
    return {k: v.value for k, v in meta.items()}


def _posted(server: SlackServer) -> list[str]:
    """Texts chat.postMessage accepted (the right token)."""
    return [
        r.body["text"]
        for r in server.requests
        if r.path == "/api/chat.postMessage" and r.headers.get("Authorization") == f"Bearer {server.token}"
    ]


def test_a_new_proposal_is_announced_once_with_its_numbers_and_how_to_apply_it(
    env, slack_server: SlackServer
) -> None:
    resources, instance = env
    wrong = SlackResource(access_token="xoxb-wrong", base_url=slack_server.base_url)
    right = SlackResource(access_token=slack_server.token, base_url=slack_server.base_url)

    meta = _propose(resources, instance, wrong)  # Slack refuses: not recorded, so retried
    assert meta["proposed"] is True and meta["slack"] == "failed", meta["reason"]
    assert not _posted(slack_server)

    meta = _propose(resources, instance, right)
    assert meta["slack"] == "slack"
    [text] = _posted(slack_server)
    assert "R_align proposal for site-a__cam-1" in text
    found = re.findall(r"(yaw|pitch|roll) ([+-][0-9.]+)° ± ([0-9.]+)°", text)
    assert [name for name, _, _ in found] == ["yaw", "pitch", "roll"]
    for (_, value, sigma), truth in zip(found, STEP_DEG, strict=True):
        assert abs(float(value) - truth) < 0.003 and 0 < float(sigma) < 0.003
    assert re.search(r"Evidence: 6 hours from \S+ to \S+", text)
    assert "Corrects R_align v1 (reference scan v1)" in text
    assert "r_align for site-a__cam-1" in text and "ops: {r_align: {config: {apply_proposal: true}}}" in text
    announced = proposals.read_announcement(resources["storage"], "site-a", "cam-1")
    assert announced is not None and announced.delivery == "slack" and announced.proposal.proposed

    _rows(resources, 60, 61)  # the next hour, the mount still where it settled: the same proposal
    meta = _propose(resources, instance, right)
    assert meta["proposed"] is True and meta["slack"] == "announced before"
    assert len(_posted(slack_server)) == 1


def _record(**changes: object) -> proposals.ProposalRecord:
    base = {
        "camera": KEY,
        "created": datetime(2026, 1, 1, tzinfo=UTC),
        "run_id": "r",
        "proposed": True,
        "reason": "settled",
        "r_align_version": 1,
        "reference_version": 1,
        "trend": "step",
        "hours_used": [datetime(2026, 1, 1, h, tzinfo=UTC) for h in range(6)],
        "delta_deg": (0.3, -0.05, 0.02),
        "delta_sigma_deg": (0.001, 0.001, 0.001),
        "spread_deg": 0.002,
        "R_align": None,
        "correction": None,
        "settings": {},
    }
    return proposals.ProposalRecord.model_validate(base | changes)


def test_same_proposal_means_same_versions_and_delta_within_sigma() -> None:
    a = _record()
    assert proposals.same_proposal(a, _record(delta_deg=(0.303, -0.05, 0.02)))  # 2.1 combined σ
    assert not proposals.same_proposal(a, _record(delta_deg=(0.31, -0.05, 0.02)))  # 7 σ: the mount moved
    assert not proposals.same_proposal(a, _record(r_align_version=2))  # made on the applied version
    assert not proposals.same_proposal(a, _record(reference_version=2))
    assert not proposals.same_proposal(a, _record(proposed=False))
    with pytest.raises(ValueError, match="no proposal to announce"):
        proposals.proposal_message(_record(proposed=False, delta_deg=None))
