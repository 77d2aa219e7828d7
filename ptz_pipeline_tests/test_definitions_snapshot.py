"""A snapshot of the definitions: a change to the asset graph, jobs, schedules or sensors shows in review.

On an intended change, regenerate with ``PTZ_UPDATE_SNAPSHOT=1 .venv/bin/pytest
ptz_pipeline_tests/test_definitions_snapshot.py`` and commit the JSON beside the code change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from ptz_pipeline.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dims = ", ".join(f"{d.name}: {_partitions(d.partitions_def)}" for d in partitions_def.partitions_defs)
        return f"multi({dims})"
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"dynamic({partitions_def.name})"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return f"time({partitions_def.cron_schedule}, start={partitions_def.start:%Y-%m-%d})"
    return type(partitions_def).__name__


def describe(definitions: dg.Definitions) -> dict:
    """Asset keys with deps, partitions, checks, group, kinds, owners, backfill policy; jobs; schedules;
    sensors; resource keys."""
    repo = definitions.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "checks": sorted(c.name for c in node.check_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "backfill_policy": str(node.backfill_policy.policy_type) if node.backfill_policy else None,
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": {s.name: s.cron_schedule for s in repo.schedule_defs},
        "sensors": {s.name: str(s.default_status) for s in repo.sensor_defs},
        "resources": sorted(repo.get_top_level_resources()),
    }


def test_definitions_match_the_snapshot() -> None:
    current = describe(defs)
    if os.environ.get("PTZ_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    if not SNAPSHOT.is_file():
        pytest.fail(f"no snapshot at {SNAPSHOT}; create it with PTZ_UPDATE_SNAPSHOT=1")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "the definitions changed: review the difference, then regenerate the snapshot (see the docstring)"
    )
