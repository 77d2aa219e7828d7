"""Reading calibration_results as users do (the seed's ``query_calibration_results``): a pandas DataFrame
through pyiceberg, and the same question as Athena SQL, optionally run with dagster-aws's Athena client.

Times are timezone-aware; ``since <= timestamp < until`` (the hour a row belongs to, UTC).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pandas as pd
from dagster_aws.athena import AthenaClientResource
from dagster_aws.athena.resources import AthenaClient
from pydantic import Field
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)

from ptz_pipeline.resources.iceberg import TABLE_NAME, IcebergResource


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class ResultsQuery:
    """Which calibration_results rows a user asks for: a deployment, a camera, a time window, successes."""

    deployment: str | None = None
    device_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    success_only: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _utc(value, name))

    def row_filter(self) -> BooleanExpression:
        """The pyiceberg row filter."""
        conditions: list[BooleanExpression] = []
        if self.deployment is not None:
            conditions.append(EqualTo("deployment", self.deployment))
        if self.device_id is not None:
            conditions.append(EqualTo("device_id", self.device_id))
        if self.since is not None:
            conditions.append(GreaterThanOrEqual("timestamp", self.since.isoformat()))
        if self.until is not None:
            conditions.append(LessThan("timestamp", self.until.isoformat()))
        if self.success_only:
            conditions.append(EqualTo("success", True))
        return functools.reduce(And, conditions, AlwaysTrue())

    def athena_sql(self, database: str = "ptz", table: str = TABLE_NAME) -> str:
        """The same question as Athena (Trino) SQL over the Iceberg table in the Glue ``database``."""
        where = []
        if self.deployment is not None:
            where.append(f"deployment = {_sql_string(self.deployment)}")
        if self.device_id is not None:
            where.append(f"device_id = {_sql_string(self.device_id)}")
        if self.since is not None:
            where.append(f'"timestamp" >= from_iso8601_timestamp({_sql_string(self.since.isoformat())})')
        if self.until is not None:
            where.append(f'"timestamp" < from_iso8601_timestamp({_sql_string(self.until.isoformat())})')
        if self.success_only:
            where.append("success = true")
        clause = f"\nWHERE {' AND '.join(where)}" if where else ""
        return f'SELECT * FROM "{database}"."{table}"{clause}\nORDER BY "timestamp", deployment, device_id'


def query_calibration_results(
    deployment: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    success_only: bool = False,
    iceberg: IcebergResource | None = None,
) -> pd.DataFrame:
    """Rows of calibration_results matching the filters (the seed's meaning), sorted by time; the table of
    the configured deployment (ptz_pipeline.settings) unless ``iceberg`` is given."""
    if iceberg is None:
        from ptz_pipeline.settings import deployment_resources

        iceberg = deployment_resources()["iceberg"]
    query = ResultsQuery(deployment, device_id, since, until, success_only)
    frame = iceberg.ensure_table().scan(row_filter=query.row_filter()).to_pandas()
    return frame.sort_values(["timestamp", "deployment", "device_id"], ignore_index=True)


class AthenaResource(AthenaClientResource):
    """dagster-aws's Athena client resource with the region and endpoint it lacks (its client otherwise takes
    them from boto3's environment only); results land in the workgroup's output location."""

    region_name: str | None = Field(default=None, description="AWS region of Athena (None: boto3's).")
    endpoint_url: str | None = Field(default=None, description="Athena endpoint (None: AWS's, or boto3's).")

    def get_client(self) -> AthenaClient:
        """An AthenaClient on a boto3 client in ``region_name`` at ``endpoint_url``."""
        client = boto3.client(
            "athena",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
        )
        return AthenaClient(
            client=client,
            workgroup=self.workgroup,
            polling_interval=self.polling_interval,
            max_polls=self.max_polls,
        )


def run_athena(
    athena: AthenaClientResource, query: ResultsQuery, database: str = "ptz", fetch_results: bool = True
) -> list[tuple[str | None, ...]] | None:
    """Run the query's SQL on Athena (dagster-aws's client: workgroup, polling, failure as AthenaError);
    with ``fetch_results`` its rows as tuples of strings, read from the workgroup's S3 output location."""
    return athena.get_client().execute_query(query.athena_sql(database), fetch_results=fetch_results)
