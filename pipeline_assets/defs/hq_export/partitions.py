"""The HQ export's windows: UTC hours of each dataset's time column (created_at, occurred_at,
captured_at, updated_at).

An hour suits the contract's 5-15 minute micro-batches: the sensor re-exports the current hour
(and any recent hour that changed) every few minutes, each run rewriting whole hours from the
source, so a replay is idempotent; an hour keeps files per org of a sensible size, and a year is
8,760 partitions, which the UI and backfills handle without strain (15-minute windows would be
35,040 and four times the files).
"""

import dagster as dg

from pipeline_assets.lib.settings import Settings

# Read once at import (the definitions loader imports this module): partitions belong to the
# asset definitions, which exist before any resource does.
HQ_START_DATE = Settings.from_env().hq_start_date

# end_offset=1: the current hour exists while it fills, so micro-batches can export it.
hq_hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=f"{HQ_START_DATE.isoformat()}-00:00", end_offset=1
)
