"""Iceberg table ``calibration_results``: one row per camera-hour drift estimate (degrees), idempotent writes.

The catalog is pyiceberg's catalog ``ptz`` when pyiceberg's own configuration defines it (``.pyiceberg.yaml``
or ``PYICEBERG_CATALOG__PTZ__...``: Glue, REST, SQL in production); otherwise a SQLite SqlCatalog under
``warehouse_dir``. dagster-iceberg is not used (its IO manager requires pyiceberg < 0.12).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    ListType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)
from pyiceberg.utils.config import Config

CATALOG_NAME = "ptz"
TABLE_NAME = "calibration_results"
COMMIT_RETRIES = 10
"""pyiceberg retries a commit that lost a race with another writer (a concurrent site run) this often."""

CALIBRATION_SCHEMA = Schema(
    NestedField(1, "deployment", StringType(), required=True),
    NestedField(2, "device_id", StringType(), required=True),
    NestedField(3, "timestamp", TimestamptzType(), required=True, doc="UTC hour of the query"),
    NestedField(4, "pitch_offset", DoubleType(), required=False, doc="degrees; null on failure"),
    NestedField(5, "yaw_offset", DoubleType(), required=False, doc="degrees; null on failure"),
    NestedField(6, "roll_offset", DoubleType(), required=False, doc="degrees; null on failure"),
    NestedField(7, "mode", StringType(), required=True, doc="active | passive"),
    NestedField(
        8,
        "capture_positions",
        ListType(
            20,
            StructType(
                NestedField(21, "pan", DoubleType(), required=False),
                NestedField(22, "tilt", DoubleType(), required=False),
                NestedField(23, "zoom", DoubleType(), required=False),
            ),
            element_required=False,
        ),
        required=False,
        doc="(pan deg, tilt deg, zoom 0..1) of each query frame",
    ),
    NestedField(9, "files_location", StringType(), required=False),
    NestedField(10, "success", BooleanType(), required=True),
    NestedField(11, "failure_logs", StringType(), required=False),
    NestedField(12, "sigma_yaw", DoubleType(), required=False, doc="1-sigma, degrees"),
    NestedField(13, "sigma_pitch", DoubleType(), required=False, doc="1-sigma, degrees"),
    NestedField(14, "sigma_roll", DoubleType(), required=False, doc="1-sigma, degrees"),
    NestedField(15, "inliers", IntegerType(), required=False),
    NestedField(16, "n_frames", IntegerType(), required=False),
    NestedField(17, "partition_key", StringType(), required=True, doc="Dagster partition key of the row"),
    NestedField(18, "run_id", StringType(), required=False, doc="Dagster run that wrote the row"),
    NestedField(19, "written_at", TimestamptzType(), required=True),
)

_OPTIONAL_SCHEMA = Schema(
    *(
        NestedField(f.field_id, f.name, f.field_type, required=False, doc=f.doc)
        for f in CALIBRATION_SCHEMA.fields
    )
)
COLUMNS: tuple[str, ...] = tuple(field.name for field in CALIBRATION_SCHEMA.fields)
"""Every column; a row passed to replace_rows has all of them except ``written_at`` (filled with now)."""
_REQUIRED_KEYS = frozenset(COLUMNS) - {"written_at"}
_NOT_NULL = frozenset(field.name for field in CALIBRATION_SCHEMA.fields if field.required)
_TIMESTAMPS = ("timestamp", "written_at")
_FLOATS = ("pitch_offset", "yaw_offset", "roll_offset", "sigma_yaw", "sigma_pitch", "sigma_roll")
_INTS = ("inliers", "n_frames")
_MODES = ("active", "passive")


def _utc(value: Any, what: str) -> datetime:
    """A timezone-aware datetime converted to UTC; ValueError for naive or non-datetime values."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _positions(value: Any, where: str) -> list[dict[str, float]] | None:
    """capture_positions as [{pan, tilt, zoom}] from dicts or (pan, tilt, zoom) sequences."""
    if value is None:
        return None
    positions = []
    for position in value:
        if isinstance(position, Mapping):
            pan, tilt, zoom = (position[name] for name in ("pan", "tilt", "zoom"))
        elif isinstance(position, Sequence) and len(position) == 3:
            pan, tilt, zoom = position
        else:
            raise ValueError(
                f"{where}: capture_positions entries must be {{pan, tilt, zoom}}, got {position!r}"
            )
        positions.append({"pan": float(pan), "tilt": float(tilt), "zoom": float(zoom)})
    return positions


def _optional_float(value: Any) -> float | None:
    """None for None or NaN, else a float."""
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def _validate_row(
    index: int, row: Mapping[str, Any], partition_keys: set[str], now: datetime
) -> dict[str, Any]:
    """One row checked and normalised (UTC datetimes, floats, positions as dicts)."""
    where = f"row {index} (partition_key={row.get('partition_key')!r})"
    missing = sorted(_REQUIRED_KEYS - row.keys())
    unknown = sorted(row.keys() - set(COLUMNS))
    if missing or unknown:
        problems = [
            f"missing column(s) {missing}" if missing else "",
            f"unknown column(s) {unknown}" if unknown else "",
        ]
        raise ValueError(f"{where}: {'; '.join(p for p in problems if p)}")
    clean = {"written_at": now, **row}
    nulls = sorted(name for name in _NOT_NULL if clean[name] is None)
    if nulls:
        raise ValueError(f"{where}: column(s) {nulls} must not be null")
    if clean["partition_key"] not in partition_keys:
        raise ValueError(f"{where}: partition_key is not among the partition_keys being replaced")
    if clean["mode"] not in _MODES:
        raise ValueError(f"{where}: mode must be one of {_MODES}, got {clean['mode']!r}")
    for name in _TIMESTAMPS:
        clean[name] = _utc(clean[name], f"{where}: {name}")
    try:
        for name in _FLOATS:
            clean[name] = _optional_float(clean[name])
        for name in _INTS:
            clean[name] = None if clean[name] is None else int(clean[name])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: column {name} must be a number or None, got {clean[name]!r}") from exc
    clean["success"] = bool(clean["success"])
    clean["capture_positions"] = _positions(clean["capture_positions"], where)
    return clean


class IcebergResource(dg.ConfigurableResource):
    """Table ``calibration_results`` in catalog ``ptz`` (pyiceberg's own configuration, else SQLite)."""

    warehouse_dir: str = Field(
        default=".ptz_data/iceberg",
        description="SQLite catalog and warehouse folder, used when pyiceberg configures no 'ptz' catalog.",
    )
    namespace: str = Field(default="ptz", description="Iceberg namespace of the results table.")

    @functools.cached_property
    def catalog(self) -> Catalog:
        """pyiceberg's configured ``ptz`` catalog, else SQLite at ``<warehouse_dir>/catalog.db``."""
        configured = Config().get_catalog_config(CATALOG_NAME)
        if configured:
            return load_catalog(CATALOG_NAME, **configured)
        warehouse = Path(self.warehouse_dir).expanduser().resolve()
        warehouse.mkdir(parents=True, exist_ok=True)
        return SqlCatalog(
            CATALOG_NAME, uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=warehouse.as_uri()
        )

    @property
    def identifier(self) -> tuple[str, str]:
        """(namespace, table name)."""
        return (self.namespace, TABLE_NAME)

    def ensure_table(self) -> Table:
        """Create the namespace and table if missing; add any of our columns an older table lacks."""
        self.catalog.create_namespace_if_not_exists(self.namespace)
        table = self.catalog.create_table_if_not_exists(
            self.identifier,
            schema=CALIBRATION_SCHEMA,
            properties={TableProperties.COMMIT_NUM_RETRIES: str(COMMIT_RETRIES)},
        )
        if set(COLUMNS) - set(table.schema().column_names):
            with table.update_schema() as update:
                update.union_by_name(_OPTIONAL_SCHEMA)  # v1/v2 tables cannot add required columns
        return table

    def replace_rows(self, partition_keys: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """In ONE Iceberg transaction, delete rows whose partition_key is in ``partition_keys``, append rows.

        Re-running with the same keys replaces, never duplicates. Every row's partition_key must be among
        ``partition_keys``. A commit that races another writer is retried by pyiceberg on fresh metadata.
        """
        keys = set(partition_keys)
        if not keys:
            if rows:
                raise ValueError("rows given but partition_keys is empty: nothing would be replaced")
            return
        now = datetime.now(UTC)
        clean = [_validate_row(i, row, keys, now) for i, row in enumerate(rows)]
        table = self.ensure_table()
        data = pa.Table.from_pylist(clean, schema=table.schema().as_arrow())
        # A first write deletes nothing: expected, not worth a warning.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Delete operation did not match any records")
            table.overwrite(data, overwrite_filter=In("partition_key", sorted(keys)))

    def read_rows(
        self,
        deployment: str | None = None,
        device_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Rows matching the filters, ``start <= timestamp < end`` (aware datetimes), by time."""
        conditions: list[BooleanExpression] = []
        if deployment is not None:
            conditions.append(EqualTo("deployment", deployment))
        if device_id is not None:
            conditions.append(EqualTo("device_id", device_id))
        if start is not None:
            conditions.append(GreaterThanOrEqual("timestamp", _utc(start, "start").isoformat()))
        if end is not None:
            conditions.append(LessThan("timestamp", _utc(end, "end").isoformat()))
        row_filter = functools.reduce(And, conditions, AlwaysTrue())
        frame = self.ensure_table().scan(row_filter=row_filter).to_pandas()
        return frame.sort_values(["timestamp", "deployment", "device_id"], ignore_index=True)
