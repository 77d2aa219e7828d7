"""Schedules: the daily Excel/Parquet report of yesterday's offsets.

Hourly capture is a sensor (sensors.hourly_active_capture): it requests one run per site covering explicit
camera|hour keys, a form schedules cannot launch.
"""

from datetime import timedelta

import dagster as dg

from ptz_pipeline.jobs import report_job


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
