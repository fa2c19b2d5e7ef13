"""The GEX sensor: pending import jobs become partitions of `gex_strikes` and get their runs.

Every 30 s it fails the abandoned jobs (pending without a staged file for longer than a download
can take: their enqueue was killed), lists the pending jobs of `gex_history.db`, adds the ones the
instance does not know as dynamic partitions (key: the job id), and requests one `gex_import_job`
run per pending job, keyed `gex-job-<id>` so a job is never requested twice.
"""

import dagster as dg

from pipeline_assets.defs.gex import jobs
from pipeline_assets.defs.gex.partitions import GEX_JOB_PARTITIONS_NAME, gex_job_partitions
from pipeline_assets.resources.gex_store import GexStore

GEX_PENDING_JOBS_SENSOR = "gex_pending_jobs"


@dg.sensor(
    name=GEX_PENDING_JOBS_SENSOR,
    job=jobs.gex_import_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns pending GEX import jobs into gex_strikes partitions and requests their runs.",
)
def gex_pending_jobs(context: dg.SensorEvaluationContext, gex_store: GexStore) -> dg.SensorResult:
    importer = gex_store.importer(log=context.log.warning)
    # A pending job whose enqueue died before its file was staged would wait forever: failed
    # here, with a last_error that says so, once it is older than any download can take.
    importer.fail_abandoned_jobs()
    pending = importer.pending_jobs()
    known = set(context.instance.get_dynamic_partitions(GEX_JOB_PARTITIONS_NAME))
    new_keys = [j.partition_key for j in pending if j.partition_key not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"gex-job-{j.id}",
                partition_key=j.partition_key,
                tags={"gex/ticker": j.ticker, "gex/endpoint": j.endpoint},
            )
            for j in pending
        ],
        dynamic_partitions_requests=[gex_job_partitions.build_add_request(new_keys)]
        if new_keys
        else [],
        skip_reason=None if pending else "no pending GEX import jobs",
    )
