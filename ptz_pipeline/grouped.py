"""Grouped execution of camera x hour assets: Dagster mechanics in one place.

Why: one run per camera-hour costs 1-11 s of Dagster overhead and millions of runs a year, so hourly assets
run many partitions in ONE run (``BackfillPolicy.single_run()``, reading ``context.partition_keys``) and
automation requests one run per site (deployment) and hour, with explicit camera|hour keys (a partition
range would pull in every camera whose key sorts between its ends, other sites' included).

Inside such a run each camera-hour must still succeed or fail on its own: the asset is a one-spec
``multi_asset`` that yields one ``AssetMaterialization`` (and one partitioned check evaluation) per key that
succeeded, then raises ``dg.Failure`` naming the failed keys; only those show FAILED in the UI (logging
without raising would mark every key materialized).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from ptz_pipeline.devices import split_camera_key
from ptz_pipeline.partitions import camera_hour_partitions, split_camera_hour


def keys_by_camera(partition_keys: list[str]) -> dict[str, list[str]]:
    """camera key -> sorted hour keys of a grouped run's camera x hour partition keys."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for key in partition_keys:
        camera, hour = split_camera_hour(key)
        grouped[camera].append(hour)
    return {camera: sorted(hours) for camera, hours in sorted(grouped.items())}


@dataclass
class GroupedOutcome:
    """What happened to each partition key of a grouped run: metadata for successes, reasons for failures."""

    succeeded: dict[str, Mapping[str, object]]
    failed: dict[str, str]

    @classmethod
    def empty(cls) -> GroupedOutcome:
        return cls({}, {})

    def report(self, asset_key: dg.AssetKey) -> Iterator[dg.AssetMaterialization]:
        """Yield one materialization per succeeded key, then raise a Failure naming the failed keys.

        Only the failed keys then show FAILED in the UI; logging without raising would mark every key
        materialized (see ARCHITECTURE.md).
        """
        for key, metadata in self.succeeded.items():
            yield dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=dict(metadata))
        if self.failed:
            total = len(self.failed) + len(self.succeeded)
            lines = [f"{key}: {reason}" for key, reason in sorted(self.failed.items())]
            raise dg.Failure(
                description=f"{len(self.failed)} of {total} partitions failed:\n" + "\n".join(lines),
                metadata={"failed_partitions": dg.MetadataValue.json(self.failed)},
            )


def grouped_asset(
    key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition,
    deps: list,
    description: str,
    group_name: str,
    check_specs: list[dg.AssetCheckSpec] | None = None,
    kinds: set[str] | None = None,
):
    """Decorator for an asset that runs many partitions in one run (BackfillPolicy.single_run) and reports
    each partition itself (GroupedOutcome): one camera's failure fails only its own keys."""
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                partitions_def=partitions_def,
                group_name=group_name,
                deps=deps,
                skippable=True,
                description=description,
                kinds=kinds,
            )
        ],
        check_specs=check_specs,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=True,
    )


def grouped_hourly_asset(
    key: dg.AssetKey, deps: list, description: str, check_specs: list[dg.AssetCheckSpec] | None = None
):
    """:func:`grouped_asset` over camera x hour partitions in the monitoring group."""
    return grouped_asset(key, camera_hour_partitions, deps, description, "monitoring", check_specs)


SITE_TAG = "ptz/deployment"


def site_requests(
    context: dg.SensorEvaluationContext,
    asset_keys: dg.AssetKey | Sequence[dg.AssetKey],
    partition_keys: list[str],
    reason: str,
) -> list[dg.RunRequest]:
    """One RunRequest per deployment covering exactly ``partition_keys`` (camera|hour, or camera keys) of
    ``asset_keys`` (one asset, or several with the same partitions)."""
    by_site: dict[str, set[str]] = defaultdict(set)
    for key in partition_keys:
        camera = split_camera_hour(key)[0] if "|" in key else key
        by_site[split_camera_key(camera)[0]].add(key)
    assets = [asset_keys] if isinstance(asset_keys, dg.AssetKey) else list(asset_keys)
    return [
        explicit_keys_request(context, assets, sorted(keys), {SITE_TAG: site, "ptz/reason": reason})
        for site, keys in sorted(by_site.items())
    ]


def explicit_keys_request(
    context: dg.SensorEvaluationContext,
    asset_keys: Sequence[dg.AssetKey],
    partition_keys: list[str],
    tags: dict,
) -> dg.RunRequest:
    """A RunRequest covering exactly ``partition_keys`` of each of ``asset_keys``: Dagster launches it as a
    one-run backfill (the assets use BackfillPolicy.single_run()).

    Dagster 1.13 has no public way to build the AssetGraphSubset that ``RunRequest.for_asset_graph_subset``
    takes, so this one function reaches into ``dagster._core`` (test_grouped.py fails if that changes).
    """
    graph_subset = importlib.import_module("dagster._core.definitions.assets.graph.asset_graph_subset")
    events = importlib.import_module("dagster._core.definitions.events")
    subset = graph_subset.AssetGraphSubset.from_asset_partition_set(
        {events.AssetKeyPartitionKey(asset, k) for asset in asset_keys for k in partition_keys},
        context.repository_def.asset_graph,
    )
    return dg.RunRequest.for_asset_graph_subset(subset, tags=tags)


def requested_keys(request: dg.RunRequest) -> list[str]:
    """The partition keys a request built by :func:`site_requests` covers, over all its assets (for tests and
    logs)."""
    return sorted({str(ap.partition_key) for ap in request.asset_graph_subset.iterate_asset_partitions()})


def requested_assets(request: dg.RunRequest) -> list[dg.AssetKey]:
    """The assets a request built by :func:`site_requests` covers."""
    return sorted({ap.asset_key for ap in request.asset_graph_subset.iterate_asset_partitions()})
