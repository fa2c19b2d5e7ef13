"""The features watcher: recomputes silver and gold after bronze lands, keeping the state chain whole.

Every minute it reads the bronze materializations recorded since its cursor (an event storage id).
Each landed day D changes the state every later day starts from, so it requests one
`market_features_job` run over a range: from the earliest day that needs computing (D, or an
earlier day with bronze but no silver yet) through the last day whose silver already exists (it
would otherwise keep features computed from the old state), stopping before the first day without
bronze. The run is a single-run range, the same code as a backfill, so the watcher path writes the
same bytes as any other.

Days of the state chain must never be computed by two runs at once (each day starts from the
state the previous one left), so while a run that computes the silver features is queued or in
progress (a run of `market_features_job`, or any run selecting the silver assets, a UI backfill
say), the sensor skips, naming that run, and keeps its cursor: the landed days are requested once
that run has finished, from the silver it left.
"""

import datetime as dt

import dagster as dg

from pipeline_assets.defs.market_data import features_jobs
from pipeline_assets.defs.market_data.bronze import BRONZE_CONNECTION_EVENTS
from pipeline_assets.defs.market_data.features_checks import SILVER_ORDERBOOK_FEATURES
from pipeline_assets.defs.market_data.silver import SILVER_ASSET_KEYS

MARKET_FEATURES_WATCHER = "market_features_watcher"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Queued, launched and running: every status of a run that may still compute silver days.
UNFINISHED_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def features_range(
    touched: set[str], bronze_days: set[str], silver_days: set[str]
) -> tuple[str, str] | None:
    """(first, last) day of the features run that landed bronze days `touched` call for."""
    if not touched:
        return None
    first = min(touched | {d for d in bronze_days - silver_days if d < min(touched)})
    wanted_end = max(touched | {d for d in silver_days if d >= first})
    day, last = dt.date.fromisoformat(first), first
    while day.isoformat() <= wanted_end:
        if day.isoformat() not in bronze_days:
            break
        last = day.isoformat()
        day += dt.timedelta(days=1)
    return first, last


def features_run_in_progress(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """The oldest unfinished run that computes silver features (of the features job, or any run
    whose asset selection holds a silver asset), or None."""
    # Newest first, as the instance lists them.
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED_RUN_STATUSES))
    silver = set(SILVER_ASSET_KEYS)
    computing = [
        run
        for run in runs
        if run.job_name == features_jobs.market_features_job.name
        or (run.asset_selection is not None and run.asset_selection & silver)
    ]
    return computing[-1] if computing else None


def _materializations_after(instance: dg.DagsterInstance, asset: str, after: int | None) -> list:
    """Materialization records of `asset` with a storage id above `after`, oldest first."""
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after),
        limit=10_000,
        ascending=True,
    ).records


@dg.sensor(
    name=MARKET_FEATURES_WATCHER,
    job=features_jobs.market_features_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After bronze lands a day, requests one market_features_job run over that day and every "
        "later day whose silver exists (their state starts from it), as a single-run range."
    ),
)
def market_features_watcher(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    running = features_run_in_progress(context.instance)
    if running is not None:
        # The cursor stays: what landed meanwhile is requested after that run, from its silver.
        return dg.SensorResult(
            skip_reason=(
                f"run {running.run_id} ({running.job_name}, {running.status.value}) is computing "
                "silver features; the state chain admits one run at a time, so the days that "
                "landed are requested once it has finished"
            ),
            cursor=context.cursor,
        )
    after = int(context.cursor) if context.cursor else None
    records = _materializations_after(context.instance, BRONZE_CONNECTION_EVENTS, after)
    if not records:
        return dg.SensorResult(
            skip_reason="no bronze landed since the last look", cursor=context.cursor
        )
    newest = max(r.storage_id for r in records)
    # A day whose silver was materialized after its bronze (both in one run, say) is done already.
    silver_newest: dict[str, int] = {}
    for record in _materializations_after(context.instance, SILVER_ORDERBOOK_FEATURES, after):
        if record.partition_key:
            silver_newest[record.partition_key] = record.storage_id
    touched = {
        r.partition_key
        for r in records
        if r.partition_key and silver_newest.get(r.partition_key, -1) < r.storage_id
    }
    bronze_days = context.instance.get_materialized_partitions(
        dg.AssetKey(BRONZE_CONNECTION_EVENTS)
    )
    silver_days = context.instance.get_materialized_partitions(
        dg.AssetKey(SILVER_ORDERBOOK_FEATURES)
    )
    span = features_range(touched, bronze_days, silver_days)
    if span is None:
        return dg.SensorResult(
            skip_reason="every newly landed day already has newer silver features",
            cursor=str(newest),
        )
    first, last = span
    context.log.info(f"bronze landed {sorted(touched)}: requesting features for {first}..{last}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"features:{first}:{last}:{newest}",
                tags={
                    RANGE_START_TAG: first,
                    RANGE_END_TAG: last,
                    features_jobs.STATE_CHAIN_TAG: features_jobs.STATE_CHAIN_TAG_VALUE,
                },
            )
        ],
        cursor=str(newest),
    )
