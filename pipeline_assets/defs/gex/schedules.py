"""The daily GEX retention pass (03:15 UTC), on by default while the daemon runs."""

import dagster as dg

from pipeline_assets.defs.gex import jobs

gex_retention_schedule = dg.ScheduleDefinition(
    name="gex_retention_schedule",
    job=jobs.gex_retention_job,
    cron_schedule="15 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs gex_retention_job every day at 03:15 UTC.",
)
