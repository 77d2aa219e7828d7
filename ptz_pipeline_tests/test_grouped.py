"""Grouped execution mechanics: explicit camera|hour run requests (the one use of Dagster internals)."""

from __future__ import annotations

import dagster as dg

from ptz_pipeline.definitions import build_definitions
from ptz_pipeline.grouped import SITE_TAG, keys_by_camera, requested_keys, site_requests
from ptz_pipeline.partitions import camera_partitions
from ptz_pipeline.settings import local_resources


def test_site_requests_cover_exactly_the_given_keys_one_run_per_site(tmp_path) -> None:
    """Non-contiguous keys of two sites: each request holds its site's keys and nothing in between."""
    defs = build_definitions(local_resources(str(tmp_path / "data")))
    keys = ["a__c1|2026-11-23-01:00", "a__c3|2026-11-23-01:00", "b__c2|2026-11-23-02:00"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(camera_partitions.name, ["a__c1", "a__c2", "a__c3", "b__c2"])
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        requests = site_requests(context, dg.AssetKey("query_scan"), keys, "test")
    assert {r.tags[SITE_TAG]: requested_keys(r) for r in requests} == {"a": keys[:2], "b": keys[2:]}
    assert all(r.tags["ptz/reason"] == "test" for r in requests)


def test_keys_by_camera_sorts_hours_per_camera() -> None:
    keys = ["a__c2|2026-11-23-02:00", "a__c1|2026-11-23-03:00", "a__c2|2026-11-23-01:00"]
    assert keys_by_camera(keys) == {
        "a__c1": ["2026-11-23-03:00"],
        "a__c2": ["2026-11-23-01:00", "2026-11-23-02:00"],
    }
