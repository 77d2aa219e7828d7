"""Iceberg table ``calibration_results``: one row per camera-hour drift estimate (degrees), idempotent writes.

The catalog is, in this order: the resource's ``catalog_properties`` (production: Glue, from
ptz_pipeline.settings), pyiceberg's catalog ``ptz`` when pyiceberg's own configuration defines it
(``.pyiceberg.yaml`` or ``PYICEBERG_CATALOG__PTZ__...``), else a SQLite SqlCatalog under ``warehouse_dir``.
The table is partitioned by ``day(timestamp)`` and ``deployment``; a table made before (unpartitioned) gets
that spec on open, its data files untouched (Iceberg reads each file under the spec it was written with).
dagster-iceberg is not used (its IO manager requires pyiceberg < 0.12).
"""

from __future__ import annotations

import functools
import random
import time
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import AwareDatetime, Field
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError, ValidationException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.transforms import DayTransform, IdentityTransform, Transform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)
from pyiceberg.utils.config import Config

from ptz_pipeline.results import CapturePosition, ResultRow

CATALOG_NAME = "ptz"
TABLE_NAME = "calibration_results"
COMMIT_RETRIES = 10
"""pyiceberg retries a commit that lost a race with another writer (a concurrent site run) this often."""
REPLACE_ATTEMPTS = 8
"""replace_rows re-plans a conflicting replacement (CommitFailedException after pyiceberg's own retries, or
ValidationException: a concurrent writer rewrote a data file this one deletes from) at most this often."""
REPLACE_BACKOFF_S = 0.05
"""First wait (seconds) between replace attempts; doubled each attempt, with jitter."""
METADATA_VERSIONS_KEPT = 100
"""Table metadata files kept besides the current one: each commit writes one, and Iceberg deletes the oldest
beyond this many after a commit (an hourly fleet commits ~24 x sites a day)."""
TABLE_PROPERTIES = {
    TableProperties.COMMIT_NUM_RETRIES: str(COMMIT_RETRIES),
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
    TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: str(METADATA_VERSIONS_KEPT),
}
"""calibration_results' table properties, set on creation and on an older table when opened."""

_SCALARS: dict[type, type[IcebergType]] = {
    str: StringType,
    float: DoubleType,
    int: IntegerType,
    bool: BooleanType,
    AwareDatetime: TimestamptzType,
}
_NESTED_ID = len(ResultRow.model_fields) + 1
"""First id of capture_positions' element and fields: after every top-level column, as Iceberg assigns them
to a new table (top-level ids keep their field order; columns added to ResultRow go at its end)."""
_POSITIONS = ListType(
    _NESTED_ID,
    StructType(
        *(
            NestedField(_NESTED_ID + 1 + i, name, DoubleType(), required=False)
            for i, name in enumerate(CapturePosition.model_fields)
        )
    ),
    element_required=False,
)


def _iceberg_type(annotation: Any) -> IcebergType:
    """Iceberg type of a ResultRow field annotation (Optional unwrapped)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _iceberg_type(args[0])
    if typing.get_origin(annotation) is list:
        return _POSITIONS
    if typing.get_origin(annotation) is Literal:
        return StringType()
    return _SCALARS[annotation]()


def _schema(required: bool) -> Schema:
    """calibration_results' schema from ResultRow (field ids 1.. in field order; non-nullable fields required
    when ``required``, else every column optional, the form an existing table can be evolved with)."""
    return Schema(
        *(
            NestedField(
                i,
                name,
                _iceberg_type(field.annotation),
                required=required and type(None) not in typing.get_args(field.annotation),
                doc=field.description,
            )
            for i, (name, field) in enumerate(ResultRow.model_fields.items(), start=1)
        )
    )


CALIBRATION_SCHEMA = _schema(required=True)
_OPTIONAL_SCHEMA = _schema(required=False)

PARTITIONING: tuple[tuple[str, Transform[Any, Any], str], ...] = (
    ("timestamp", DayTransform(), "timestamp_day"),
    ("deployment", IdentityTransform(), "deployment"),
)
"""(source column, transform, partition field name): the table's partition spec, in order. A day's rows of a
site are one partition: a re-run's replacement and a day's compaction touch only that site-day's files."""
_PARTITION_FIELD_ID = 1000
"""Iceberg's first partition field id (partition ids are assigned from 1000 on)."""


def _partition_spec(schema: Schema) -> PartitionSpec:
    """PARTITIONING as the spec of a new table with ``schema``."""
    return PartitionSpec(
        *(
            PartitionField(schema.find_field(source).field_id, _PARTITION_FIELD_ID + i, transform, name)
            for i, (source, transform, name) in enumerate(PARTITIONING)
        )
    )


def _missing_partition_fields(table: Table) -> list[tuple[str, Transform[Any, Any], str]]:
    """The PARTITIONING fields the table's current spec lacks (by source column and transform)."""
    schema = table.schema()
    have = {(schema.find_column_name(f.source_id), str(f.transform)) for f in table.spec().fields}
    return [field for field in PARTITIONING if (field[0], str(field[1])) not in have]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SitePartition:
    """One partition of the table: a UTC day (Iceberg's day transform: days since 1970-01-01) of a site."""

    day: int
    deployment: str

    def row_filter(self) -> BooleanExpression:
        """Exactly this partition's rows (and, projected on the spec, exactly its files)."""
        start = _EPOCH + timedelta(days=self.day)
        return And(
            EqualTo("deployment", self.deployment),
            And(
                GreaterThanOrEqual("timestamp", start.isoformat()),
                LessThan("timestamp", (start + timedelta(days=1)).isoformat()),
            ),
        )

    def __str__(self) -> str:
        return f"{(_EPOCH + timedelta(days=self.day)):%Y-%m-%d}/{self.deployment}"


@dataclass(frozen=True)
class CompactionResult:
    """What :meth:`IcebergResource.compact` did: data files of the current snapshot before and after, the
    partitions rewritten and those skipped because a writer changed them meanwhile (next run retries)."""

    files_before: int
    files_after: int
    compacted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExpiryResult:
    """What :meth:`IcebergResource.expire_snapshots` did: snapshots expired and kept, and the files (data,
    manifests, manifest lists) only the expired snapshots referenced, deleted."""

    expired: int
    kept: int
    files_deleted: int


def _snapshot_files(table: Table, snapshot: Snapshot) -> set[str]:
    """Paths a snapshot reads: its manifest list, its manifests and their live data files."""
    paths = {snapshot.manifest_list}
    for manifest in snapshot.manifests(table.io):
        paths.add(manifest.manifest_path)
        paths.update(
            e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
        )
    return paths


def _utc(value: datetime, what: str) -> datetime:
    """A timezone-aware datetime converted to UTC; ValueError for naive or non-datetime values."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


class IcebergResource(dg.ConfigurableResource):
    """Table ``calibration_results`` in catalog ``ptz`` (pyiceberg's own configuration, else SQLite)."""

    warehouse_dir: str = Field(
        default=".ptz_data/iceberg",
        description="SQLite catalog and warehouse folder, used when pyiceberg configures no 'ptz' catalog.",
    )
    namespace: str = Field(
        default="ptz", description="Iceberg namespace of the results table (Glue: the database Athena names)."
    )
    catalog_properties: dict[str, str] = Field(
        default_factory=dict,
        description="pyiceberg catalog properties (e.g. type=glue, glue.region, warehouse=s3://...); when "
        "given they win over pyiceberg's own configuration and the SQLite default.",
    )

    @functools.cached_property
    def catalog(self) -> Catalog:
        """``catalog_properties``, else pyiceberg's configured ``ptz`` catalog, else SQLite at
        ``<warehouse_dir>/catalog.db``."""
        configured = self.catalog_properties or Config().get_catalog_config(CATALOG_NAME)
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
        """Create the namespace and table if missing; add any of our columns an older table lacks and evolve
        an older table's partition spec to PARTITIONING (metadata only: no data file is rewritten).

        The table is looked up before it is created: pyiceberg's create_table_if_not_exists writes a new
        metadata file before it finds the table exists, leaving an orphan in the warehouse on every call.
        """
        self.catalog.create_namespace_if_not_exists(self.namespace)
        try:
            table = (
                self.catalog.load_table(self.identifier)
                if self.catalog.table_exists(self.identifier)
                else self.catalog.create_table(
                    self.identifier,
                    schema=CALIBRATION_SCHEMA,
                    partition_spec=_partition_spec(CALIBRATION_SCHEMA),
                    properties=TABLE_PROPERTIES,
                )
            )
        except TableAlreadyExistsError:  # another writer created it between the check and the create
            table = self.catalog.load_table(self.identifier)
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            try:
                return self._evolve(table)
            except CommitFailedException:  # another writer evolved it first: look again on its metadata
                if attempt == REPLACE_ATTEMPTS:
                    raise
                table = self.catalog.load_table(self.identifier)
        raise AssertionError("unreachable")

    @staticmethod
    def _evolve(table: Table) -> Table:
        """Add the columns, partition fields and TABLE_PROPERTIES ``table`` lacks (each change one commit,
        none if current)."""
        if set(ResultRow.model_fields) - set(table.schema().column_names):
            with table.update_schema() as update:
                update.union_by_name(_OPTIONAL_SCHEMA)  # v1/v2 tables cannot add required columns
        if missing := _missing_partition_fields(table):
            with table.update_spec() as spec:
                for source, transform, name in missing:
                    spec.add_field(source, transform, name)
        if any(table.properties.get(key) != value for key, value in TABLE_PROPERTIES.items()):
            with table.transaction() as transaction:
                transaction.set_properties(TABLE_PROPERTIES)
        return table

    def replace_rows(
        self, partition_keys: Sequence[str], rows: Sequence[ResultRow | Mapping[str, Any]]
    ) -> None:
        """In ONE Iceberg transaction, delete rows whose partition_key is in ``partition_keys``, append rows.

        Re-running with the same keys replaces, never duplicates. Every row's partition_key must be among
        ``partition_keys``. A commit that races another writer (another site's run) is retried by pyiceberg
        on fresh metadata; a conflict it gives up on (CommitFailedException, ValidationException) is
        re-planned on the table's new state here, up to REPLACE_ATTEMPTS times.
        """
        keys = set(partition_keys)
        if not keys:
            if rows:
                raise ValueError("rows given but partition_keys is empty: nothing would be replaced")
            return
        clean = [ResultRow.parse(row, f"row {i}") for i, row in enumerate(rows)]
        outside = [row.partition_key for row in clean if row.partition_key not in keys]
        if outside:
            raise ValueError(f"rows with partition_key(s) {outside} are not among the keys replaced")
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            table = self.ensure_table()
            data = pa.Table.from_pylist([row.record() for row in clean], schema=table.schema().as_arrow())
            try:
                # A first write deletes nothing: expected, not worth a warning.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                    table.overwrite(data, overwrite_filter=In("partition_key", sorted(keys)))
                return
            except (CommitFailedException, ValidationException) as exc:
                if attempt == REPLACE_ATTEMPTS:
                    raise
                wait = REPLACE_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(1.0, 1.5)
                dg.get_dagster_logger("ptz_pipeline.iceberg").warning(
                    f"replace of {len(keys)} partition(s) conflicted with another writer "
                    f"({type(exc).__name__}: {exc}); attempt {attempt + 1}/{REPLACE_ATTEMPTS} in {wait:.2f} s"
                )
                time.sleep(wait)

    def read_partitions(self, partition_keys: Sequence[str]) -> dict[str, ResultRow]:
        """partition_key -> the stored row, for each of ``partition_keys`` that has one (the rows a
        :meth:`replace_rows` of those keys would replace)."""
        if not partition_keys:
            return {}
        scan = self.ensure_table().scan(row_filter=In("partition_key", sorted(set(partition_keys))))
        records = scan.to_arrow().to_pylist()
        return {
            r["partition_key"]: ResultRow.parse({c: r.get(c) for c in ResultRow.model_fields})
            for r in records
        }

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

    def _site_partition(self, table: Table, task: FileScanTask) -> SitePartition | None:
        """The current-spec partition of a data file, None for a file written under an older spec."""
        spec = table.spec()
        if task.file.spec_id != spec.spec_id:
            return None
        names = [f.name for f in spec.fields]
        values = task.file.partition
        return SitePartition(values[names.index("timestamp_day")], values[names.index("deployment")])

    def _partitions_needing_compaction(self, table: Table, min_files: int) -> list[SitePartition]:
        """Partitions with at least ``min_files`` data files, and every partition that has rows in a file of
        an older spec (rewritten into the current layout)."""
        tasks = list(table.scan().plan_files())
        counts: dict[SitePartition, int] = {}
        old = []
        for task in tasks:
            if (partition := self._site_partition(table, task)) is None:
                old.append(task)
            else:
                counts[partition] = counts.get(partition, 0) + 1
        wanted = {p for p, n in counts.items() if n >= min_files}
        if old:
            from pyiceberg.io.pyarrow import ArrowScan

            keys = ArrowScan(
                table.metadata, table.io, table.schema().select("timestamp", "deployment"), AlwaysTrue()
            ).to_table(old)
            pairs = zip(keys["timestamp"].to_pylist(), keys["deployment"].to_pylist(), strict=True)
            wanted |= {SitePartition((t - _EPOCH).days, d) for t, d in pairs}
        return sorted(wanted, key=lambda p: (p.day, p.deployment))

    def compact_partition(
        self, partition: SitePartition, min_files: int = 2, table: Table | None = None
    ) -> Literal["compacted", "unneeded", "conflict"]:
        """Rewrite one partition's data files as one file with the same rows, in ONE Iceberg transaction (an
        overwrite under the partition's filter). ``table``: the state it plans from (default: the current
        one). ``unneeded`` (nothing done): fewer than ``min_files`` files, all of the current spec;
        ``conflict`` (nothing done): a writer added or replaced rows of the partition meanwhile (pyiceberg's
        serializable validation). No row is lost or doubled either way."""
        table = table or self.ensure_table()
        row_filter = partition.row_filter()
        tasks = list(table.scan(row_filter=row_filter).plan_files())
        current = all(task.file.spec_id == table.spec().spec_id for task in tasks)
        if not tasks or (current and len(tasks) < min_files):
            return "unneeded"
        rows = table.scan(row_filter=row_filter).to_arrow()
        try:
            table.overwrite(rows, overwrite_filter=row_filter)
        except (CommitFailedException, ValidationException) as exc:
            dg.get_dagster_logger("ptz_pipeline.iceberg").warning(
                f"compaction of {partition} skipped (a writer changed it): {type(exc).__name__}: {exc}"
            )
            return "conflict"
        return "compacted"

    def compact(self, min_files: int = 2, until: datetime | None = None) -> CompactionResult:
        """Compact small data files: every partition with at least ``min_files`` files (hourly writes leave
        one per site-hour) or with rows in files of an older spec is rewritten (:meth:`compact_partition`),
        one transaction per partition; the rows read are the same before and after. ``until`` (aware): only
        the days that ended by then (the day being written is left alone); None: every day."""
        if min_files < 2:
            raise ValueError(f"min_files must be at least 2, got {min_files}")
        last_day = None if until is None else (_utc(until, "until") - _EPOCH).days - 1
        table = self.ensure_table()
        before = sum(1 for _ in table.scan().plan_files())
        done: dict[str, list[str]] = {"compacted": [], "unneeded": [], "conflict": []}
        for partition in self._partitions_needing_compaction(table, min_files):
            if last_day is not None and partition.day > last_day:
                continue
            done[self.compact_partition(partition, min_files)].append(str(partition))
        after = sum(1 for _ in self.ensure_table().scan().plan_files())
        return CompactionResult(before, after, compacted=done["compacted"], skipped=done["conflict"])

    def expire_snapshots(self, older_than: datetime, keep_last: int) -> ExpiryResult:
        """Expire snapshots taken before ``older_than`` (aware datetime), always keeping the newest
        ``keep_last`` (>= 1), the current one and any branch or tag head; then delete the files only the
        expired snapshots referenced (pyiceberg's expiry removes metadata only)."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        cutoff_ms = int(_utc(older_than, "older_than").timestamp() * 1000)
        table = self.ensure_table()
        snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
        protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
        keep = {s.snapshot_id for s in snapshots[:keep_last]} | protected
        expired = [s for s in snapshots if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]
        if not expired:
            return ExpiryResult(expired=0, kept=len(snapshots), files_deleted=0)
        candidates = set().union(*(_snapshot_files(table, s) for s in expired))
        table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in expired]).commit()
        table = self.catalog.load_table(self.identifier)
        still_used = set().union(*(_snapshot_files(table, s) for s in table.metadata.snapshots))
        unused = sorted(candidates - still_used)
        for path in unused:
            table.io.delete(path)
        return ExpiryResult(
            expired=len(expired), kept=len(table.metadata.snapshots), files_deleted=len(unused)
        )
