"""Sensors of the HQ export: the micro-batch sensor, and the failure alert.

`hq_microbatch` (every PIPELINE_HQ_MICROBATCH_MINUTES, default 5, allowed 5-15) keeps a watermark
cursor per source table: the newest time seen, and a fingerprint (row count, newest xmin) of each
hour window from `watermark - LATE_LOOKBACK` on. It requests one `hq_export_job` run per window
whose fingerprint changed (new, late, updated or deleted rows), plus, for the upsert datasets, the
windows holding other versions of the entities that changed (so a superseded version leaves its
old window in the same micro-batch). The run key is the window and its fingerprints, so a repeated
evaluation never launches the same run twice. Older late rows are for the daily reconciliation or
a UI backfill of their windows.

A table the cursor holds no watermark for (every table, when the cursor is empty: a new instance,
or the first daemon after `make demo`) starts from what the instance already holds: the newest
materialized window of its dataset is the watermark, and each materialized window's recorded
`source_fingerprint` stands for what the cursor would have seen, so only windows whose rows
changed since their export, or that were never exported, are requested. A dataset with no
materialization starts with the last two hours.

`hq_export_failure_alert` records every failed HQ export run as an observation on the dx assets
(visible in the UI on each asset's page, with the run id and error) and in the log.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import dagster as dg

from pipeline_assets.defs.hq_export import jobs
from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, SOURCE_FINGERPRINT
from pipeline_assets.defs.hq_export.partitions import hq_hourly_partitions
from pipeline_assets.lib.hq.datasets import DATASETS, SOURCE_SCHEMA, DatasetSpec
from pipeline_assets.lib.hq.extract import session_setup
from pipeline_assets.lib.hq.windows import (
    newest_time,
    window_activity,
    window_bounds,
    window_key,
    windows_of_other_versions,
)
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.source_postgres import SourcePostgres
from pipeline_assets.utils.materializations import latest_metadata_by_partition

HQ_MICROBATCH = "hq_microbatch"
HQ_EXPORT_FAILURE_ALERT = "hq_export_failure_alert"
LATE_LOOKBACK = dt.timedelta(hours=2)
MICROBATCH_MINUTES = Settings.from_env().hq_microbatch_minutes


def _load_cursor(cursor: str | None) -> dict[str, dict[str, Any]]:
    if not cursor:
        return {}
    loaded = json.loads(cursor)
    return loaded.get("tables", {}) if isinstance(loaded, dict) else {}


def lookback_start(watermark: dt.datetime | None, newest: dt.datetime) -> dt.datetime:
    """Where a look starts: LATE_LOOKBACK before the older of watermark and newest row, down to
    its window's start, so that every window looked at is fingerprinted whole (as the export
    records it), not from mid-window."""
    since = (min(watermark, newest) if watermark else newest) - LATE_LOOKBACK
    return window_bounds(window_key(since))[0]


# (dataset, newest source time) -> the cursor state of its table from what is materialized.
Seed = Callable[[DatasetSpec, dt.datetime], dict[str, Any]]


def seed_from_materializations(instance: dg.DagsterInstance) -> Seed:
    """A table's cursor state from the instance: the start of its dataset's newest materialized
    window as the watermark, and the `source_fingerprint` the latest materialization of each
    window from `min(watermark, newest) - LATE_LOOKBACK` on recorded ({} when none exists)."""

    def seed(spec: DatasetSpec, newest: dt.datetime) -> dict[str, Any]:
        asset_key = dg.AssetKey(spec.name)
        materialized = instance.get_materialized_partitions(asset_key)
        if not materialized:
            return {}
        front = window_bounds(max(materialized))[0]  # keys sort as their times
        since = lookback_start(front, newest)
        recent = [k for k in materialized if window_bounds(k)[1] > since]
        recorded = latest_metadata_by_partition(instance, asset_key, SOURCE_FINGERPRINT, recent)
        return {
            "watermark": front.isoformat(),
            # A window recorded empty has no activity to compare with; one recorded without a
            # fingerprint (exported by older code) is unknown and exported again.
            "windows": {
                k: [int(fp[0]), int(fp[1])]
                for k, fp in recorded.items()
                if isinstance(fp, list) and len(fp) == 2 and fp[0] > 0
            },
        }

    return seed


def plan_microbatch(
    conn: Any,
    previous: dict[str, dict[str, Any]],
    schema: str = SOURCE_SCHEMA,
    seed: Seed | None = None,
) -> tuple[dict[str, dict[str, list[int]]], dict[str, dict[str, Any]], list[str]]:
    """(windows to export -> fingerprints by table, new cursor state, notes) from the source.

    A table without a watermark in `previous` takes its state from `seed` when given.
    """
    state: dict[str, dict[str, Any]] = {}
    changed: dict[str, dict[str, list[int]]] = {}
    notes: list[str] = []
    for spec in DATASETS:
        before = previous.get(spec.table, {})
        newest = newest_time(conn, spec, schema=schema)
        if newest is None:
            state[spec.table] = before
            continue
        if not before.get("watermark") and seed is not None:
            before = seed(spec, newest)
            if before:
                notes.append(
                    f"{spec.table}: no cursor; compared with the exports recorded from "
                    f"{before['watermark']} back ({len(before['windows'])} windows with rows)"
                )
        watermark = (
            dt.datetime.fromisoformat(before["watermark"]) if before.get("watermark") else None
        )
        since = lookback_start(watermark, newest)
        seen = before.get("windows", {})
        activity = {
            k: list(v) for k, v in window_activity(conn, spec, since, schema=schema).items()
        }
        gone = [k for k in seen if k not in activity and window_bounds(k)[1] > since]
        fresh = [k for k, fp in activity.items() if seen.get(k) != fp] + gone
        if watermark is None:
            notes.append(
                f"{spec.table}: first look; exporting windows from {since:%Y-%m-%d %H:%M} UTC on "
                "(backfill older windows from the UI)"
            )
        fresh_set = set(fresh) | windows_of_other_versions(conn, spec, sorted(fresh), schema=schema)
        for key in fresh_set:
            changed.setdefault(key, {})[spec.table] = activity.get(key, [0, 0])
        new_mark = max(newest, watermark) if watermark else newest
        keep_from = new_mark - LATE_LOOKBACK
        state[spec.table] = {
            "watermark": new_mark.astimezone(dt.UTC).isoformat(),
            "windows": {k: v for k, v in activity.items() if window_bounds(k)[1] > keep_from},
        }
    return changed, state, notes


def _run_key(window: str, fingerprints: dict[str, list[int]]) -> str:
    digest = hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:16]
    return f"hq:{window}:{digest}"


@dg.sensor(
    name=HQ_MICROBATCH,
    job=jobs.hq_export_job,
    minimum_interval_seconds=MICROBATCH_MINUTES * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        f"Micro-batches (every {MICROBATCH_MINUTES} minutes): requests an hq_export_job run for "
        "each UTC hour window whose source rows changed since the last look (watermark cursor "
        "with a two-hour late-row lookback)."
    ),
)
def hq_microbatch(
    context: dg.SensorEvaluationContext, source_postgres: SourcePostgres
) -> dg.SensorResult:
    previous = _load_cursor(context.cursor)
    with source_postgres.connection() as conn:
        session_setup(conn)
        changed, state, notes = plan_microbatch(
            conn, previous, seed=seed_from_materializations(context.instance)
        )
    for note in notes:
        context.log.info(note)
    requests = []
    for window in sorted(changed):
        if not hq_hourly_partitions.has_partition_key(window):
            context.log.warning(
                f"rows in window {window} of {', '.join(sorted(changed[window]))} have no partition "
                "(before PIPELINE_HQ_START_DATE or in the future); they are not exported"
            )
            continue
        requests.append(
            dg.RunRequest(
                run_key=_run_key(window, changed[window]),
                partition_key=window,
                tags={"hq/changed_tables": ",".join(sorted(changed[window]))},
            )
        )
    cursor = json.dumps({"v": 1, "tables": state}, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason="no window has new or changed rows", cursor=cursor)
    context.log.info(f"requesting HQ export of {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _is_hq_run(run: dg.DagsterRun) -> bool:
    selection = run.asset_selection or set()
    return run.job_name == jobs.hq_export_job.name or bool(selection & set(HQ_ASSET_KEYS))


@dg.run_failure_sensor(
    name=HQ_EXPORT_FAILURE_ALERT,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Records each failed HQ export run (Postgres unreachable after its retries, a missing "
        "source column, a blocking check) as an observation on the dx assets, with the run and error."
    ),
)
def hq_export_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    if not _is_hq_run(run):
        return
    # The step's own error says what went wrong (unreachable source, missing column, a check).
    step_errors = [
        e.event_specific_data.error.message.strip()
        for e in context.get_step_failure_events()
        if getattr(e.event_specific_data, "error", None) is not None
    ]
    error = ("; ".join(step_errors) or context.failure_event.message or "run failed")[:2000]
    window = run.tags.get("dagster/partition") or (
        f"{run.tags.get('dagster/asset_partition_range_start')}..{run.tags.get('dagster/asset_partition_range_end')}"
    )
    context.log.error(f"HQ export run {run.run_id} failed for window {window}: {error}")
    for key in HQ_ASSET_KEYS:
        context.instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=key,
                metadata={
                    "alert": dg.MetadataValue.text("hq export run failed"),
                    "failed_run_id": dg.MetadataValue.dagster_run(run.run_id),
                    "window": dg.MetadataValue.text(window),
                    "error": dg.MetadataValue.text(error),
                },
            )
        )
