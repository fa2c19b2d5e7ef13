"""The staging export's micro-batch schedule: an incremental export every
PIPELINE_STAGING_MICROBATCH_MINUTES (default 15; whole minutes dividing the hour).

Each tick runs `staging_export_job` with `incremental: true` and `update_state: true` under the
state profile `micro_batch`, so consecutive runs export exactly the rows ingested in between.
It is off until switched on (Automation in the UI, or `dagster schedule start`), since each run
writes an export even when nothing new arrived.
"""

import dagster as dg

from pipeline_assets.defs.market_data import jobs
from pipeline_assets.lib.settings import Settings

STAGING_MICRO_BATCH = "staging_export_micro_batch"
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


def micro_batch_cron(minutes: int) -> str:
    """The cron expression of a run every `minutes` (a divisor of 60), on the hour's multiples."""
    return "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"


def build_staging_micro_batch(minutes: int) -> dg.ScheduleDefinition:
    """The micro-batch schedule running every `minutes`."""
    return dg.ScheduleDefinition(
        name=STAGING_MICRO_BATCH,
        job=jobs.staging_export_job,
        cron_schedule=micro_batch_cron(minutes),
        execution_timezone="UTC",
        run_config=MICRO_BATCH_RUN_CONFIG,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Every {minutes} minutes (PIPELINE_STAGING_MICROBATCH_MINUTES): an incremental "
            "staging export of the rows ingested since the last one (state profile "
            "`micro_batch`), updating the watermarks once the export is complete."
        ),
    )


# Read when the definitions load (the loader imports this module then), like every setting.
staging_export_micro_batch = build_staging_micro_batch(
    Settings.from_env().staging_microbatch_minutes
)
