"""Grouped execution of camera x hour assets: Dagster mechanics in one place.

Why: one run per camera-hour costs 1-11 s of Dagster overhead and millions of runs a year, so hourly assets
run many partitions in ONE run (``BackfillPolicy.single_run()``, reading ``context.partition_keys``) and
automation requests one run per site (deployment) and hour, with explicit camera|hour keys (a partition
range would pull in every camera whose key sorts between its ends, other sites' included).

Inside such a run each camera-hour must still succeed or fail on its own: the asset is a one-spec
``multi_asset`` that yields one ``AssetMaterialization`` per key that succeeded, then its checks' results per
key, then raises ``dg.Failure`` naming the failed keys; only those show FAILED in the UI (logging without
raising would mark every key materialized).

Checks per partition: ``AssetCheckResult`` has no partition (Dagster 1.13 gives it the run's partition key,
none in a multi-partition run), so a grouped asset yields ``AssetCheckEvaluation``s with ``partition`` set,
linked to the key's materialisation of this run, plus the check's (valueless) output once, as Dagster does for
an ``AssetCheckResult``: without it each run logs "did not yield or return expected outputs".
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class PartitionCheck:
    """One partition key's result of a check of a grouped asset: passed, why in words (the UI shows it as
    the evaluation's description), metadata, severity."""

    check_name: str
    partition: str
    passed: bool
    description: str
    metadata: Mapping[str, object] = field(default_factory=dict)
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN


@dataclass
class GroupedOutcome:
    """What happened to each partition key of a grouped run: metadata for successes, reasons for failures,
    check results per key (failed keys' too)."""

    succeeded: dict[str, Mapping[str, object]]
    failed: dict[str, str]
    checks: list[PartitionCheck] = field(default_factory=list)

    @classmethod
    def empty(cls) -> GroupedOutcome:
        return cls({}, {})

    def report(
        self, asset_key: dg.AssetKey, context: dg.AssetExecutionContext | None = None
    ) -> Iterator[dg.AssetMaterialization | dg.Output | dg.AssetCheckEvaluation]:
        """Yield one materialization per succeeded key, then the check results (``context`` needed when
        there are any: :func:`check_events`), then raise a Failure naming the failed keys.

        Only the failed keys then show FAILED in the UI; logging without raising would mark every key
        materialized (see ARCHITECTURE.md).
        """
        for key, metadata in self.succeeded.items():
            yield dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=dict(metadata))
        if self.checks:
            if context is None:
                raise ValueError(f"{asset_key.to_user_string()}: check results need the asset's context")
            yield from check_events(context, asset_key, self.checks)
        if self.failed:
            total = len(self.failed) + len(self.succeeded)
            lines = [f"{key}: {reason}" for key, reason in sorted(self.failed.items())]
            raise dg.Failure(
                description=f"{len(self.failed)} of {total} partitions failed:\n" + "\n".join(lines),
                metadata={"failed_partitions": dg.MetadataValue.json(self.failed)},
            )


def _materializations_of_run(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, object]:
    """partition -> the target of its check evaluation: the key's materialisation by this run (yielded
    before), for the UI's link from the check result to it; keys this run did not materialise have none."""
    evaluation = importlib.import_module("dagster._core.definitions.asset_checks.asset_check_evaluation")
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=wanted), limit=len(wanted)
    ).records  # newest first: this run's, as one run at a time writes a key
    targets: dict[str, object] = {}
    for record in records:
        if record.run_id == context.run.run_id and record.partition_key not in targets:
            targets[record.partition_key] = evaluation.AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
    return targets


def check_events(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, checks: Sequence[PartitionCheck]
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """The events of per-partition check results in a grouped run: each selected check's output once (what
    Dagster yields for an ``AssetCheckResult``; it carries no value), then one ``AssetCheckEvaluation`` per
    result with its partition, description and the link to the key's materialisation by this run.

    ``AssetCheckEvaluationTargetMaterializationData`` (the link) is not public in Dagster 1.13; the
    test_grouped check test fails if that module moves.
    """
    selected = context.selected_asset_check_keys
    checks = [c for c in checks if dg.AssetCheckKey(asset_key, c.check_name) in selected]
    for name in sorted({c.check_name for c in checks}):
        key = dg.AssetCheckKey(asset_key, name)
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    targets = _materializations_of_run(context, asset_key, (c.partition for c in checks))
    for c in checks:
        yield dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=c.check_name,
            passed=c.passed,
            metadata=dict(c.metadata),
            target_materialization_data=targets.get(c.partition),
            severity=c.severity,
            description=c.description,
            blocking=False,
            partition=c.partition,
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
"""Every sensor-requested run's site, for the UI's run filter (no run-queue limit reads it)."""
CAPTURE_QUEUES = {"active": "ptz/capture-active", "passive": "ptz/capture-passive"}
"""Capture mode -> the run-queue tag key of its capture runs (value: the site)."""
ESTIMATE_QUEUE = "ptz/estimate"
"""Run-queue tag key of estimation runs (orientation_offsets; value: the site)."""
VIEW_QUEUE = "ptz/view"
"""Run-queue tag key of drift view runs (camera_drift, r_align_proposal; value: the site)."""
QUEUES = (*CAPTURE_QUEUES.values(), ESTIMATE_QUEUE, VIEW_QUEUE)
"""The run-queue tag keys: every instance profile allows one run per site under each key, independently, so
a passive capture that waits its hour for still cameras holds back neither the site's active capture nor its
estimation; capture keys also cap the fleet's capture runs (camera connections)."""


def site_tags(site: str, reason: str, queue: str) -> dict[str, str]:
    """The tags of a sensor-requested run of ``site``: the site under :data:`SITE_TAG` and under ``queue``
    (one of :data:`QUEUES`: the run-queue lane), why under ``ptz/reason``."""
    if queue not in QUEUES:
        raise ValueError(f"queue {queue!r}: expected one of {', '.join(QUEUES)} (the profiles' limits)")
    return {SITE_TAG: site, queue: site, "ptz/reason": reason}


def site_requests(
    context: dg.SensorEvaluationContext,
    asset_keys: dg.AssetKey | Sequence[dg.AssetKey],
    partition_keys: list[str],
    reason: str,
    queue: str,
) -> list[dg.RunRequest]:
    """One RunRequest per deployment covering exactly ``partition_keys`` (camera|hour, or camera keys) of
    ``asset_keys`` (one asset, or several with the same partitions), tagged by :func:`site_tags`."""
    by_site: dict[str, set[str]] = defaultdict(set)
    for key in partition_keys:
        camera = split_camera_hour(key)[0] if "|" in key else key
        by_site[split_camera_key(camera)[0]].add(key)
    assets = [asset_keys] if isinstance(asset_keys, dg.AssetKey) else list(asset_keys)
    return [
        explicit_keys_request(context, assets, sorted(keys), site_tags(site, reason, queue))
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
