"""The daily reconciliation (contract: "once per day, off-peak"): `hq_reconciliation` at
PIPELINE_HQ_RECONCILIATION_HOUR (UTC, default 03:00) over the last
PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS days of windows (default 2), up to the scheduled hour."""

import datetime as dt

import dagster as dg

from pipeline_assets.defs.hq_export.reconciliation_checks import HQ_RECONCILIATION_CHECKS
from pipeline_assets.defs.hq_export.reconciliation_jobs import hq_reconciliation_job
from pipeline_assets.lib.settings import Settings

HQ_RECONCILIATION_DAILY = "hq_reconciliation_daily"
# Read once at import (the definitions loader imports this module): a schedule's cron is part of
# its definition, which exists before any resource does.
_SETTINGS = Settings.from_env()
RECONCILIATION_HOUR = _SETTINGS.hq_reconciliation_hour
LOOKBACK_DAYS = _SETTINGS.hq_reconciliation_lookback_days


def daily_run_config(scheduled: dt.datetime, lookback_days: int = LOOKBACK_DAYS) -> dict:
    """Run config of the reconciliation scheduled at `scheduled`: the days before it."""
    end = scheduled.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=lookback_days)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "ops": {
            HQ_RECONCILIATION_CHECKS: {
                "config": {"start_utc": start.strftime(iso), "end_utc": end.strftime(iso)}
            }
        }
    }


@dg.schedule(
    name=HQ_RECONCILIATION_DAILY,
    job=hq_reconciliation_job,
    cron_schedule=f"0 {RECONCILIATION_HOUR} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        f"Daily HQ reconciliation at {RECONCILIATION_HOUR:02d}:00 UTC over the last "
        f"{LOOKBACK_DAYS} days of hour windows; failing windows are healed by "
        "hq_reconciliation_heal."
    ),
)
def hq_reconciliation_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return dg.RunRequest(
        run_key=f"hq_reconciliation:{scheduled.astimezone(dt.UTC).isoformat()}",
        run_config=daily_run_config(scheduled),
        tags={"hq/reconciliation": "daily"},
    )
