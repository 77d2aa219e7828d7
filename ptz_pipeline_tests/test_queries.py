"""What users read: query_calibration_results over Iceberg; the same question as Athena SQL (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from dagster_aws.athena import AthenaClientResource

from ptz_pipeline.queries import AthenaResource, ResultsQuery, query_calibration_results, run_athena
from ptz_pipeline.resources.iceberg import IcebergResource
from ptz_pipeline.results import ResultRow

pytest_plugins = ["ptz_pipeline_tests.servers"]

HOUR = datetime(2026, 11, 23, 1, tzinfo=UTC)


def _row(deployment: str, device: str, hour: datetime, success: bool = True) -> ResultRow:
    return ResultRow(
        deployment=deployment,
        device_id=device,
        timestamp=hour,
        yaw_offset=0.1 if success else None,
        pitch_offset=0.2 if success else None,
        roll_offset=0.3 if success else None,
        mode="active",
        success=success,
        failure_logs=None if success else "camera unreachable",
        partition_key=f"{deployment}__{device}|{hour:%Y-%m-%d-%H:%M}",
    )


@pytest.fixture
def iceberg(tmp_path, monkeypatch: pytest.MonkeyPatch) -> IcebergResource:
    monkeypatch.setenv("HOME", str(tmp_path))  # no developer's ~/.pyiceberg.yaml
    resource = IcebergResource(warehouse_dir=str(tmp_path / "warehouse"))
    rows = [
        _row("site-a", "cam-1", HOUR),
        _row("site-a", "cam-1", HOUR + timedelta(hours=1), success=False),
        _row("site-a", "cam-2", HOUR + timedelta(hours=2)),
        _row("site-b", "cam-1", HOUR + timedelta(hours=1)),
    ]
    resource.replace_rows([r.partition_key for r in rows], rows)
    return resource


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["site-a__cam-1|01", "site-a__cam-1|02", "site-b__cam-1|02", "site-a__cam-2|03"]),
        ({"deployment": "site-a", "device_id": "cam-1"}, ["site-a__cam-1|01", "site-a__cam-1|02"]),
        ({"deployment": "site-a", "success_only": True}, ["site-a__cam-1|01", "site-a__cam-2|03"]),
        ({"since": HOUR + timedelta(hours=1), "until": HOUR + timedelta(hours=2)},
         ["site-a__cam-1|02", "site-b__cam-1|02"]),
    ],
)  # fmt: skip
def test_query_calibration_results_has_the_seeds_meaning(
    iceberg: IcebergResource, filters: dict, expected: list[str]
) -> None:
    frame = query_calibration_results(**filters, iceberg=iceberg)
    got = [
        f"{d}__{c}|{t:%H}" for d, c, t in zip(frame.deployment, frame.device_id, frame.timestamp, strict=True)
    ]
    assert got == expected


def test_athena_sql_quotes_values_and_reserved_names() -> None:
    sql = ResultsQuery("o'brien", "cam-1", HOUR, HOUR + timedelta(days=1), success_only=True).athena_sql()
    assert sql == (
        'SELECT * FROM "ptz"."calibration_results"\n'
        "WHERE deployment = 'o''brien' AND device_id = 'cam-1' AND "
        "\"timestamp\" >= from_iso8601_timestamp('2026-11-23T01:00:00+00:00') AND "
        "\"timestamp\" < from_iso8601_timestamp('2026-11-24T01:00:00+00:00') AND success = true\n"
        'ORDER BY "timestamp", deployment, device_id'
    )
    with pytest.raises(ValueError, match="since must be a timezone-aware datetime"):
        ResultsQuery(since=datetime(2026, 11, 23))


def test_athena_query_runs_through_dagster_aws_on_motos_server(moto_s3) -> None:
    """dagster-aws's Athena client submits our SQL to the workgroup and polls it to SUCCEEDED (moto runs no
    SQL: the test checks the query Athena received, not its rows)."""
    query = ResultsQuery(deployment="site-a", success_only=True)
    athena = AthenaClientResource(workgroup="primary", polling_interval=0, max_polls=5)
    assert run_athena(athena, query, database="ptz", fetch_results=False) is None
    client = boto3.client("athena")
    [execution_id] = client.list_query_executions(WorkGroup="primary")["QueryExecutionIds"]
    execution = client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["Query"] == query.athena_sql("ptz")
    assert execution["Status"]["State"] == "SUCCEEDED"


def test_athena_region_endpoint_and_workgroup_come_from_the_settings(
    moto_s3, monkeypatch: pytest.MonkeyPatch, unreachable_url: str
) -> None:
    """settings.athena_resource(): PTZ_ATHENA_WORKGROUP in PTZ_AWS_REGION at AWS_ENDPOINT_URL; the query
    lands in that region's workgroup (boto3's own region setting removed), and a wrong endpoint fails."""
    from ptz_pipeline import settings

    client = boto3.client("athena", region_name="eu-central-1")
    client.create_work_group(
        Name="ptz",
        Configuration={
            "ResultConfiguration": {"OutputLocation": "s3://camera-calibration-monitoring/athena/"}
        },
    )
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("PTZ_AWS_REGION", "eu-central-1")
    monkeypatch.setenv("PTZ_ATHENA_WORKGROUP", "ptz")
    athena = settings.athena_resource().model_copy(update={"polling_interval": 0, "max_polls": 5})
    query = ResultsQuery(device_id="cam-1")
    assert run_athena(athena, query, fetch_results=False) is None
    [execution_id] = client.list_query_executions(WorkGroup="ptz")["QueryExecutionIds"]
    assert client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Query"] == (
        query.athena_sql("ptz")
    )
    assert client.list_query_executions(WorkGroup="primary")["QueryExecutionIds"] == []
    nowhere = AthenaResource(workgroup="ptz", region_name="eu-central-1", endpoint_url=unreachable_url)
    with pytest.raises(EndpointConnectionError, match="Could not connect"):
        run_athena(nowhere.model_copy(update={"max_polls": 1}), query, fetch_results=False)
