"""The staging export's micro-batch schedule: an incremental export every 15 minutes.

Each tick runs `staging_export_job` with `incremental: true` and `update_state: true` under the
state profile `micro_batch`, so consecutive runs export exactly the rows ingested in between.
It is off until switched on (Automation in the UI, or `dagster schedule start`), since each run
writes an export even when nothing new arrived.
"""

import dagster as dg

from pipeline_assets.defs.market_data import jobs

STAGING_MICRO_BATCH = "staging_export_micro_batch"
MICRO_BATCH_CRON = "*/15 * * * *"
MICRO_BATCH_STATE_KEY = "micro_batch"

MICRO_BATCH_RUN_CONFIG = {
    "ops": {
        "staging_export": {
            "config": {
                "incremental": True,
                "update_state": True,
                "state_key": MICRO_BATCH_STATE_KEY,
            }
        }
    }
}

staging_export_micro_batch = dg.ScheduleDefinition(
    name=STAGING_MICRO_BATCH,
    job=jobs.staging_export_job,
    cron_schedule=MICRO_BATCH_CRON,
    execution_timezone="UTC",
    run_config=MICRO_BATCH_RUN_CONFIG,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Every 15 minutes: an incremental staging export of the rows ingested since the last one "
        "(state profile `micro_batch`), updating the watermarks once the export is complete."
    ),
)
