"""Partitions: camera (dynamic, synced from devices.yaml) x hour (UTC).

Camera keys are ``<deployment>__<camera>`` (see devices.camera_key). Multi-partition keys read
``<camera key>|<YYYY-MM-DD-HH:MM>`` (Dagster orders dimensions by name: camera, hour).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

CAMERA_DIM = "camera"
HOUR_DIM = "hour"
HOUR_FORMAT = "%Y-%m-%d-%H:%M"

camera_partitions = dg.DynamicPartitionsDefinition(name="cameras")
# end_offset=1: the current, still-running hour is a partition, so it can be captured live.
hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", end_offset=1)
camera_hour_partitions = dg.MultiPartitionsDefinition(
    {CAMERA_DIM: camera_partitions, HOUR_DIM: hourly_partitions}
)


def hour_key(t: datetime) -> str:
    """Hourly partition key of the hour containing ``t`` (UTC)."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0).strftime(HOUR_FORMAT)


def hour_start(key: str) -> datetime:
    """Start (UTC) of the hourly partition ``key``."""
    return datetime.strptime(key, HOUR_FORMAT).replace(tzinfo=UTC)


def is_within_hour(start: datetime, t: datetime) -> bool:
    """Whether ``t`` falls in the hour beginning at ``start``."""
    return start <= t < start + timedelta(hours=1)


def camera_hour_key(camera_key: str, hour: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({CAMERA_DIM: camera_key, HOUR_DIM: hour})


def camera_hour_range_tags(cameras: list[str], hours: list[str]) -> dict[str, str]:
    """Run tags covering ``cameras`` x ``hours`` as one range, first camera's first hour to the last camera's
    last hour. The range covers every camera whose key sorts between the two ends, so use it only for a
    fleet whose cameras are all wanted (the sensors use explicit keys instead)."""
    return {
        "dagster/asset_partition_range_start": f"{cameras[0]}|{hours[0]}",
        "dagster/asset_partition_range_end": f"{cameras[-1]}|{hours[-1]}",
    }


def camera_range_tags(cameras: list[str]) -> dict[str, str]:
    """Run tags covering the camera partitions from the first to the last of ``cameras`` (same caveat)."""
    return {
        "dagster/asset_partition_range_start": cameras[0],
        "dagster/asset_partition_range_end": cameras[-1],
    }


def camera_partition_changes(existing: set[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(camera keys to add in ``wanted`` order, keys to remove sorted) to make the partitions ``wanted``."""
    return [k for k in wanted if k not in existing], sorted(existing - set(wanted))


def split_camera_hour(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(camera key, hour key) of a camera x hour partition key."""
    mk = key if isinstance(key, dg.MultiPartitionKey) else None
    if mk is None:
        camera, _, hour = str(key).partition("|")
        if not hour:
            raise ValueError(f"not a camera|hour partition key: {key!r}")
        return camera, hour
    return mk.keys_by_dimension[CAMERA_DIM], mk.keys_by_dimension[HOUR_DIM]


def recent_hours(now: datetime, count: int) -> list[str]:
    """The ``count`` most recent complete hour keys before ``now`` (oldest first)."""
    last = hour_start(hour_key(now))
    return [hour_key(last - timedelta(hours=h)) for h in range(count, 0, -1)]
