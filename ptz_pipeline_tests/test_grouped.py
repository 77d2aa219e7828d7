"""Grouped execution mechanics: explicit camera|hour run requests (the one use of Dagster internals)."""

from __future__ import annotations

import dagster as dg
import pytest

from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.grouped import (
    SITE_TAG,
    GroupedOutcome,
    PartitionCheck,
    grouped_asset,
    keys_by_camera,
    requested_keys,
    site_requests,
)
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.settings import local_resources


def test_site_requests_cover_exactly_the_given_keys_one_run_per_site(tmp_path) -> None:
    """Non-contiguous keys of two sites: each request holds its site's keys and nothing in between."""
    defs = build_definitions(local_resources(str(tmp_path / "data")))
    keys = ["a__c1|2026-11-23-01:00", "a__c3|2026-11-23-01:00", "b__c2|2026-11-23-02:00"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(camera_partitions.name, ["a__c1", "a__c2", "a__c3", "b__c2"])
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        requests = site_requests(context, dg.AssetKey("query_scan"), keys, "test", "ptz/estimate")
        with pytest.raises(ValueError, match="ptz/deployment.*expected one of ptz/capture-active"):
            site_requests(context, dg.AssetKey("query_scan"), keys, "test", SITE_TAG)  # no lane
    assert {r.tags[SITE_TAG]: requested_keys(r) for r in requests} == {"a": keys[:2], "b": keys[2:]}
    assert [r.tags for r in requests] == [
        {SITE_TAG: site, "ptz/estimate": site, "ptz/reason": "test"} for site in ("a", "b")
    ]


def test_keys_by_camera_sorts_hours_per_camera() -> None:
    keys = ["a__c2|2026-11-23-02:00", "a__c1|2026-11-23-03:00", "a__c2|2026-11-23-01:00"]
    assert keys_by_camera(keys) == {
        "a__c1": ["2026-11-23-03:00"],
        "a__c2": ["2026-11-23-01:00", "2026-11-23-02:00"],
    }


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    """partition -> the run's check evaluation of it."""
    return {
        e.dagster_event.event_specific_data.partition: e.dagster_event.event_specific_data
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    }


def test_grouped_checks_are_yielded_per_partition_with_reasons_and_links(tmp_path) -> None:
    """Grouped runs over two keys, then three (c fails): each key's check evaluation is in the event log with
    its partition and reason, a materialised key's linked to its materialisation by that run, c's failed
    with the failure's reason; a run logs no "did not yield or return expected outputs"."""
    key = dg.AssetKey("grouped")
    partitions = dg.StaticPartitionsDefinition(["a", "b", "c"])
    spec = dg.AssetCheckSpec("within", asset=key, partitions_def=partitions)
    values = {"a": 1, "b": 9}

    @grouped_asset(key, partitions, [], "test asset", "test", check_specs=[spec])
    def grouped(context):
        outcome = GroupedOutcome.empty()
        for k in context.partition_keys:
            if k == "c":
                outcome.failed[k] = "camera unreachable"
                outcome.checks.append(PartitionCheck("within", k, False, "no estimate: camera unreachable"))
                continue
            outcome.succeeded[k] = {"v": values[k]}
            within = values[k] <= 5
            reason = f"{values[k]} {'within' if within else 'beyond'} the 5 threshold"
            outcome.checks.append(PartitionCheck("within", k, within, reason, {"v": values[k]}))
        yield from outcome.report(key, context)

    def run(last: str) -> dg.ExecuteInProcessResult:
        tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": last}
        return dg.materialize([grouped], instance=instance, tags=tags, raise_on_error=False)

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        ok, failed = run("b"), run("c")
        assert ok.success and not failed.success  # c failed
        for result in (ok, failed):
            messages = [e.message or "" for e in instance.all_logs(result.run_id)]
            assert not [m for m in messages if "did not yield" in m], messages
        evaluations = _check_evaluations(instance, failed.run_id)
        assert {p: (e.passed, e.description) for p, e in evaluations.items()} == {
            "a": (True, "1 within the 5 threshold"),
            "b": (False, "9 beyond the 5 threshold"),
            "c": (False, "no estimate: camera unreachable"),
        }
        for result in (ok, failed):
            materialized = {
                r.partition_key: r.storage_id
                for r in instance.fetch_materializations(key, limit=10).records
                if r.run_id == result.run_id
            }
            assert set(materialized) == {"a", "b"}
            for p, e in _check_evaluations(instance, result.run_id).items():
                target = e.target_materialization_data
                if p == "c":
                    assert target is None
                else:
                    assert target.storage_id == materialized[p] and target.run_id == result.run_id
        history = instance.event_log_storage.get_asset_check_execution_history(spec.key, limit=10)
        assert sorted(h.partition for h in history) == ["a", "a", "b", "b", "c"]
