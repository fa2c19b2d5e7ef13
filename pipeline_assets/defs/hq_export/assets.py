"""The HQ export: one multi-asset writes the five dx_*_v1 datasets and their dead letter per UTC hour.

For each window of the run and each dataset, `lib.hq.extract` COPYs the window's rows out of
Postgres (only contract columns, classified in SQL), retrying a lost connection from scratch, and
shapes them to contract v1 on local disk; the lake IO manager then streams them into
`hq/<dataset>/date=<YYYY-MM-DD>/hour=<HH>/org_id=<org>/data.parquet` (the UTC date and hour of
the window, as the contract recommends: by date and org_id) with a sidecar whose parent is the
query (redacted DSN, relation, bounds, row count, SHA256 of the rows). Rows that break the
contract go to `hq/dx_dead_letter/date=<…>/hour=<…>/dataset=<dataset>/`. All six are written
together (`can_subset=False`), so a window's dead letter always matches its datasets. This is the
Dagster shell; the logic is plain functions that tests and the benchmark call directly.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from contracts.core import arrow_schema
from contracts.custody import ParentRef
from contracts.hq import EXPORT_SCHEMA_VERSION, DxDeadLetter
from pipeline_assets.defs.hq_export.checks import DEAD_LETTER, hq_check_results, hq_check_specs
from pipeline_assets.defs.hq_export.partitions import hq_hourly_partitions
from pipeline_assets.lib.hq.datasets import DATASETS, SOURCE_SCHEMA, DatasetSpec
from pipeline_assets.lib.hq.extract import (
    DEAD_LETTER_SCHEMA,
    PreparedWindow,
    ReusedConnection,
    SourceReadError,
    SourceSchemaError,
    dead_letter_table,
    read_window,
    session_setup,
)
from pipeline_assets.lib.hq.lake_files import (
    PARTITION_LEVELS,
    dataset_files,
    remove_legacy_windows,
    window_files,
)
from pipeline_assets.lib.hq.windows import window_bounds, window_fingerprint
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.postgres import SourceUnavailableError
from pipeline_assets.lib.run_record import utc_iso, utc_now
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.source_postgres import SourcePostgres
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema

GROUP = "hq_export"
HQ_ROW_GROUP_SIZE = 64 * 1024
OWNERS = ["team:data-platform"]
# The contract's micro-batch cadence is 5 to 15 minutes: a dataset not exported for 15 minutes
# has missed its cadence (warn), for 30 minutes two batches in a row (fail). The dead letter is
# written by the same runs and has no cadence of its own.
HQ_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(minutes=30), warn_window=dt.timedelta(minutes=15)
)
HQ_DATASET_NAMES: tuple[str, ...] = tuple(spec.name for spec in DATASETS)
HQ_ASSET_NAMES: tuple[str, ...] = (*HQ_DATASET_NAMES, DEAD_LETTER)
HQ_ASSET_KEYS: tuple[dg.AssetKey, ...] = tuple(dg.AssetKey(name) for name in HQ_ASSET_NAMES)
# Per window, the source's (row count, newest xmin) taken before the read: what the micro-batch
# sensor compares with when its cursor is empty, so it exports only windows changed since.
SOURCE_FINGERPRINT = "source_fingerprint"

_DESCRIPTIONS = {
    "dx_operation_runs_v1": (
        "One row per operation invocation, from operation_runs, by UTC hour of created_at. "
        "Append-only; a window is rewritten whole from the source when exported again."
    ),
    "dx_operation_events_v1": (
        "Operation event log (requests, responses, retries, state changes, errors), from "
        "operation_events, by UTC hour of occurred_at; metadata_json as canonical JSON text with "
        "credential-looking keys redacted. One row per event_id and per (run_id, event_sequence)."
    ),
    "dx_company_entities_v1": (
        "Current canonical company state, one row per (org_id, entity_id): the highest valid "
        "record_version in the source, in the UTC hour of its updated_at. Versions written after "
        "a newer one go to the dead letter as stale_version."
    ),
    "dx_person_entities_v1": (
        "Current canonical person state, one row per (org_id, entity_id): the highest valid "
        "record_version in the source, in the UTC hour of its updated_at. Versions written after "
        "a newer one go to the dead letter as stale_version."
    ),
    "dx_entity_snapshots_v1": (
        "Historical canonical snapshots (append-only SCD), from entity_snapshots, by UTC hour of "
        "captured_at; unique per (org_id, entity_type, entity_id, record_version)."
    ),
    DEAD_LETTER: (
        "Source rows that break export contract v1 (no org_id, a null key, status or entity_type "
        "outside its set, a duplicate key or event, a stale record_version, ...), with the dataset, "
        "the source key, the reason and the batch window. Nothing is dropped silently. Folders "
        "`hq/dx_dead_letter/date=<YYYY-MM-DD>/hour=<HH>/dataset=<dataset>/`."
    ),
}


def _out(name: str) -> dg.AssetOut:
    model = (
        DxDeadLetter if name == DEAD_LETTER else next(s.model for s in DATASETS if s.name == name)
    )
    return dg.AssetOut(
        key=dg.AssetKey(name),
        description=_DESCRIPTIONS[name],
        metadata={
            "lake/layer": "hq",
            # date=<YYYY-MM-DD>/hour=<HH>/ of the window's start (UTC), then one folder per org
            # (dead letter: per dataset): the window is one folder, rewritten whole.
            "lake/partition_levels": list(PARTITION_LEVELS),
            "lake/split_by": "dataset" if name == DEAD_LETTER else "org_id",
            # Rows arrive grouped by org (dead letter: by dataset), so the writer finishes one
            # file before the next: one pending row group in all, however large the window and
            # however many orgs it has.
            "lake/row_group_size": HQ_ROW_GROUP_SIZE,
            "lake/split_grouped": True,
            "dagster/column_schema": column_schema(arrow_schema(model)),
            "contract": f"{model.contract.name} {model.contract.version}",
            "write_semantics": model.contract.write_semantics,
        },
        group_name=GROUP,
        owners=OWNERS,
        kinds={"parquet", "postgres"},
        is_required=True,
        freshness_policy=None if name == DEAD_LETTER else HQ_FRESHNESS,
    )


class HqExportConfig(dg.Config):
    source_schema: str = Field(
        SOURCE_SCHEMA, description="Postgres schema holding the operational source tables."
    )
    read_attempts: int = Field(
        5,
        description=(
            "Attempts per window and dataset when the connection fails or drops mid-stream; each "
            "attempt starts the window again, so no row is read twice."
        ),
    )


def _read_window(
    context: dg.AssetExecutionContext,
    source: SourcePostgres,
    connection: ReusedConnection,
    config: HqExportConfig,
    spec: DatasetSpec,
    key: str,
) -> tuple[PreparedWindow, ParentRef]:
    start, end = window_bounds(key)

    def on_retry(attempt: int, delay: float, error: str) -> None:
        context.log.warning(
            f"{spec.name} window {key}: read attempt {attempt}/{config.read_attempts} failed "
            f"({error}); retrying in {delay:.1f}s from the start of the window"
        )

    try:
        prepared, read = read_window(
            connection,
            spec,
            key,
            start,
            end,
            schema=config.source_schema,
            attempts=config.read_attempts,
            on_retry=on_retry,
        )
    except (SourceSchemaError, SourceReadError, SourceUnavailableError) as exc:
        raise dg.Failure(description=f"{spec.name} window {key}: {exc}") from exc
    parent = ParentRef(
        kind="query",
        path=f"{source.redacted_dsn()}#{config.source_schema}.{spec.table}",
        sha256=read.sha256,
        details={
            "query": read.query,
            "bounds": {"column": spec.time_column, "start": utc_iso(start), "end": utc_iso(end)},
            "row_count": read.rows,
            "encoding": "COPY csv of the classified window query, in key order",
            "attempts": read.attempts,
        },
    )
    return prepared, parent


def _source_fingerprint(
    connection: ReusedConnection, config: HqExportConfig, spec: DatasetSpec, key: str
) -> tuple[int, int] | None:
    """The window's source fingerprint, taken just before its read (a row written in between is
    exported and only makes the sensor export the window once more, never the reverse); None when
    the source cannot say: the read that follows retries and names the cause."""
    try:
        with connection() as conn:
            session_setup(conn)
            found = window_fingerprint(conn, spec, *window_bounds(key), schema=config.source_schema)
            conn.rollback()
    except (psycopg.Error, SourceUnavailableError):
        return None
    return found


def _dataset_metadata(
    context: dg.AssetExecutionContext,
    started: Any,
    spec: DatasetSpec,
    prepared: dict[str, PreparedWindow],
    parents: dict[str, ParentRef],
) -> dict[str, Any]:
    by_org: dict[str, int] = {}
    for window in prepared.values():
        for org, n in window.result.rows_by_org.items():
            by_org[org] = by_org.get(org, 0) + n
    dead: dict[str, int] = {}
    for window in prepared.values():
        for reason, n in window.result.dead_by_reason().items():
            dead[reason] = dead.get(reason, 0) + n
    keys = list(prepared)
    first, last = window_bounds(keys[0])[0], window_bounds(keys[-1])[1]
    metadata: dict[str, Any] = run_metadata(
        context,
        started_utc=started,
        row_counts={
            "exported": sum(w.result.rows for w in prepared.values()),
            "source": sum(p.details["row_count"] for p in parents.values()),
            "dead_letter": sum(dead.values()),
            **(
                {"superseded": sum(w.result.superseded for w in prepared.values())}
                if spec.upsert
                else {}
            ),
        },
        window={"first": utc_iso(first), "end": utc_iso(last), "column": spec.time_column},
        query_bounds={
            "relation": f"{parents[keys[0]].path.split('#')[-1]}",
            "start": utc_iso(first),
            "end": utc_iso(last),
        },
    )
    metadata["rows_by_org"] = dg.MetadataValue.json(dict(sorted(by_org.items())))
    metadata["dead_letter_by_reason"] = dg.MetadataValue.json(dead)
    metadata["export_schema_version"] = dg.MetadataValue.text(EXPORT_SCHEMA_VERSION)
    if len(keys) <= 24:
        metadata["rows_by_window_and_org"] = dg.MetadataValue.json(
            {k: dict(sorted(w.result.rows_by_org.items())) for k, w in prepared.items()}
        )
    return metadata


@dg.multi_asset(
    name="hq_export",
    outs={name: _out(name) for name in HQ_ASSET_NAMES},
    check_specs=hq_check_specs(HQ_ASSET_NAMES),
    partitions_def=hq_hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
    pool="source_postgres",
    group_name=GROUP,
    description=(
        "Exports UTC hour windows of the operational Postgres as the five dx_*_v1 datasets and "
        "their dead letter, with the blocking contract checks."
    ),
)
def hq_export(
    context: dg.AssetExecutionContext, config: HqExportConfig, source_postgres: SourcePostgres
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    started = utc_now()
    keys = list(context.partition_keys)
    single = len(keys) == 1
    dead_rows: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    window_parents: dict[str, list[ParentRef]] = {key: [] for key in keys}
    connection = ReusedConnection(source_postgres.connection)
    for spec in DATASETS:
        prepared: dict[str, PreparedWindow] = {}
        parents: dict[str, ParentRef] = {}
        fingerprints: dict[str, tuple[int, int] | None] = {}
        try:
            for key in keys:
                fingerprints[key] = _source_fingerprint(connection, config, spec, key)
                prepared[key], parents[key] = _read_window(
                    context, source_postgres, connection, config, spec, key
                )
        except BaseException:
            for window in prepared.values():
                window.remove()
            connection.close()
            raise
        if spec is DATASETS[-1]:
            connection.close()
        for key, window in prepared.items():
            dead_rows[key].extend(window.result.dead)
            window_parents[key].append(parents[key])
        context.log.info(
            f"{spec.name}: {sum(w.result.rows for w in prepared.values()):,} rows to export and "
            f"{sum(len(w.result.dead) for w in prepared.values()):,} to the dead letter from "
            f"{len(prepared)} window(s)"
            + (
                f", {sum(w.result.superseded for w in prepared.values()):,} superseded versions"
                if spec.upsert
                else ""
            )
        )
        outputs = {
            key: LakeOutput(
                window.batches(),
                parents=[parents[key]],
                params={"window": key, "export_schema_version": EXPORT_SCHEMA_VERSION},
                schema=spec.schema,
            )
            for key, window in prepared.items()
        }
        for key, fingerprint in fingerprints.items():
            if fingerprint is not None:
                context.add_asset_metadata(
                    {SOURCE_FINGERPRINT: dg.MetadataValue.json(list(fingerprint))},
                    asset_key=spec.name,
                    partition_key=key,
                )
        yield dg.Output(
            outputs[keys[0]] if single else outputs,
            output_name=spec.name,
            metadata=_dataset_metadata(context, started, spec, prepared, parents),
        )

    dead_outputs = {
        key: LakeOutput(
            dead_letter_table(dead_rows[key]),
            parents=window_parents[key],
            params={"window": key},
            schema=DEAD_LETTER_SCHEMA,
        )
        for key in keys
    }
    reasons: dict[str, int] = {}
    for rows in dead_rows.values():
        for row in rows:
            label = f"{row['dataset']}:{row['reason']}"
            reasons[label] = reasons.get(label, 0) + 1
    yield dg.Output(
        dead_outputs[keys[0]] if single else dead_outputs,
        output_name=DEAD_LETTER,
        metadata={
            **run_metadata(
                context, started_utc=started, row_counts={"dead_letter": sum(reasons.values())}
            ),
            "dead_letter_by_dataset_and_reason": dg.MetadataValue.json(
                dict(sorted(reasons.items()))
            ),
        },
    )

    lake_root = Settings.from_env().lake_path()
    for asset in HQ_ASSET_NAMES:
        # A lake written before the date level still holds these windows at window_start=<key>/:
        # now that they are rewritten, the old copies go, so no reader sees a window twice.
        for folder in remove_legacy_windows(lake_root, asset, keys):
            context.log.info(f"removed {folder}: the window's files from before the date level")
    files = {asset: window_files(lake_root, asset, keys) for asset in HQ_ASSET_NAMES}
    yield from hq_check_results(
        HQ_ASSET_NAMES, files, lambda asset: dataset_files(lake_root, asset)
    )
