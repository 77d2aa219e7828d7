"""Helpers shared by the asset families: per-camera artefacts in storage and grouped (multi-key) outcomes."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dagster as dg

from geometry.camera import Intrinsics, ZoomModel, load_calibration
from geometry.offsets import FrameObservation
from ptz_pipeline import scans
from ptz_pipeline.devices import CameraConfig
from ptz_pipeline.partitions import camera_hour_partitions, split_camera_hour
from ptz_pipeline.resources.storage import ObjectStorageResource


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
        materialized (see DESIGN.md).
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


def grouped_hourly_asset(
    key: dg.AssetKey,
    deps: list,
    description: str,
    check_specs: list[dg.AssetCheckSpec] | None = None,
):
    """Decorator for a camera x hour asset that runs many partitions in one run (BackfillPolicy.single_run)
    and reports each partition itself (GroupedOutcome): one camera's failure fails only its own keys."""
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(
                key,
                partitions_def=camera_hour_partitions,
                group_name="monitoring",
                deps=deps,
                skippable=True,
                description=description,
            )
        ],
        check_specs=check_specs,
        partitions_def=camera_hour_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=True,
    )


def load_intrinsics(storage: ObjectStorageResource, camera: CameraConfig) -> tuple[Intrinsics, ZoomModel]:
    """The camera_intrinsics artefacts: intrinsics at zoom 0 and the zoom -> focal model."""
    key = scans.calibration_key(camera.deployment, camera.name)
    if not storage.exists(key):
        raise FileNotFoundError(
            f"{camera.key}: no intrinsics at {storage.uri(key)}; materialize camera_intrinsics"
        )
    with io.BytesIO(storage.get_bytes(key)) as buf:
        intr, _ = load_calibration(buf)
    return intr, ZoomModel.from_dict(storage.get_json(scans.zoom_model_key(camera.deployment, camera.name)))


def load_reference_observations(
    storage: ObjectStorageResource,
    camera: CameraConfig,
    base: Intrinsics,
    zoom_model: ZoomModel,
    with_images: bool = False,
) -> list[FrameObservation]:
    """Reference frames with their stored features and telemetry (and grey images with ``with_images``),
    loaded once per camera per run."""
    prefix = scans.reference_prefix(camera.deployment, camera.name)
    manifest = scans.read_manifest(storage, prefix)
    if manifest is None:
        raise FileNotFoundError(f"{camera.key}: no reference scan at {storage.uri(prefix)}")
    return scans.scan_observations(storage, prefix, manifest, base, zoom_model, with_images=with_images)
