"""Schedules: the daily Excel/Parquet report of yesterday's offsets.

Hourly capture is a sensor (sensors.hourly_active_capture): it requests one run per site covering explicit
camera|hour keys, a form schedules cannot launch.
"""

from __future__ import annotations

import dagster as dg

from ptz_pipeline.jobs import report_job

daily_report_schedule = dg.build_schedule_from_partitioned_job(report_job, hour_of_day=0, minute_of_hour=30)
