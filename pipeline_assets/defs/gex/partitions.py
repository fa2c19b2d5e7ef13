"""Partitions of `gex_strikes`: one dynamic partition per import job (key: the job id)."""

import dagster as dg

GEX_JOB_PARTITIONS_NAME = "gex_import_jobs"

gex_job_partitions = dg.DynamicPartitionsDefinition(name=GEX_JOB_PARTITIONS_NAME)
