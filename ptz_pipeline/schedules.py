"""Schedules: the daily Excel/Parquet report of yesterday's offsets, the daily Iceberg maintenance.

Hourly capture is a sensor (sensors.hourly_active_capture): it requests one run per site covering explicit
camera|hour keys, a form schedules cannot launch.
"""

from datetime import timedelta

import dagster as dg

from ptz_pipeline.jobs import maintenance_job, report_job


@dg.schedule(
    cron_schedule="30 0 * * *",
    job=report_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """At 00:30 UTC, export the day that just ended (UTC)."""
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"report-{day}", partition_key=day)


iceberg_maintenance_schedule = dg.ScheduleDefinition(
    name="iceberg_maintenance_schedule",
    cron_schedule="15 2 * * *",
    job=maintenance_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 02:15 UTC: compact yesterday's hourly files and expire old snapshots (after the report).",
)
