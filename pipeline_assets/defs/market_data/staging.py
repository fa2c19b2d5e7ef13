"""The staging export: the collectors' worker files as one export run (SQLite, CSV or JSON Lines)
with its run metadata file, under `staging/` (spec/staging-run-contract.md).

`lib.market.staging_export` does the work (bounds, streaming read, outputs, state); this is the
Dagster shell: run config with the contract's option names, the contract's rules as blocking
checks on the metadata file before the exporter's commit point, and the run metadata in the UI.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from pipeline_assets.defs.market_data.staging_checks import (
    all_passed,
    staging_check_results,
    staging_check_specs,
)
from pipeline_assets.lib.market.bronze import WorkerFileError
from pipeline_assets.lib.market.staging_export import (
    CONNECTION_EVENT_SCHEMA,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_STATE_KEY,
    MARKET_TICK_SCHEMA,
    ExportResult,
    StagingExportError,
    export_options,
    relative_path,
    run_staging_export,
)
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.lib.settings import STAGING_DIR
from pipeline_assets.resources.market_sources import WORKER_FILE_PATTERN, MarketSources
from pipeline_assets.utils.file_links import file_links
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema

STAGING_EXPORT = "staging_export"
GROUP = "market_data"
OWNERS = ["team:market-data"]
# The micro-batch schedule exports every 15 minutes by default (PIPELINE_STAGING_MICROBATCH_MINUTES):
# two missed default batches warn. The contract's
# default export covers the last 24 hours, so an export older than that leaves rows that no
# default export reaches: fail.
STAGING_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=24), warn_window=dt.timedelta(minutes=30)
)


class StagingExportConfig(dg.Config):
    """The exporter's options, named as in the run contract."""

    hours: float = Field(24.0, description="Export window in hours, ending at end_utc.")
    end_utc: str | None = Field(
        None,
        description="Upper bound of the window, ISO-8601 UTC (2026-02-19T00:00:00Z); unset: now.",
    )
    incremental: bool = Field(
        False,
        description=(
            "Start after the watermarks stored under state_key (exclusive) instead of at the "
            "window's start (inclusive), when the profile has them."
        ),
    )
    output_format: str = Field("sqlite", description="sqlite, csv or json (JSON Lines).")
    include_connection_events: bool = Field(True, description="Export connection_events too.")
    chunk_size: int = Field(
        DEFAULT_CHUNK_SIZE, description="Rows read and written at a time (memory holds one chunk)."
    )
    exchanges: list[str] = Field(
        default_factory=list, description="Exchanges to export (any case); empty: all."
    )
    assets: list[str] = Field(
        default_factory=list, description="Base assets to export (BTC, eth); empty: all."
    )
    state_key: str = Field(
        DEFAULT_STATE_KEY, description="Profile of the state file holding this run's watermarks."
    )
    update_state: bool = Field(
        False, description="Store the new watermarks under state_key once the export is complete."
    )
    skip_unreadable_sources: bool = Field(
        False,
        description=(
            "Export the readable worker files when some are not (not SQLite, a table missing, "
            "truncated), naming the skipped ones in the metadata, instead of failing."
        ),
    )


@dg.asset(
    name=STAGING_EXPORT,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sqlite", "csv", "json"},
    check_specs=staging_check_specs(STAGING_EXPORT),
    freshness_policy=STAGING_FRESHNESS,
    description=(
        "One export of the collectors' worker files: market ticks (by ingestion time) and "
        "connection events (by event time) of a window or, incrementally, since the stored "
        "watermarks; raw fields beside the normalized exchange, BASE-QUOTE symbol and assets. "
        "Files `staging/staging_export_<YYYYMMDD_HHMMSS>_<label>.*` and "
        "`<export_base>_metadata.json` (contract staging_export_run_metadata 1.0.0); watermarks in "
        "`staging/staging_export_state.json`, one profile per state_key."
    ),
    metadata={
        "dagster/column_schema": column_schema(MARKET_TICK_SCHEMA),
        "contract": "staging_export_run_metadata 1.0.0",
        "connection_events_columns": column_schema(CONNECTION_EVENT_SCHEMA),
    },
)
def staging_export(
    context: dg.AssetExecutionContext, config: StagingExportConfig, market_sources: MarketSources
) -> dg.MaterializeResult:
    started = utc_now()
    root = market_sources.root_path
    files = market_sources.worker_files()
    if not files:
        raise dg.Failure(
            description=(
                f"no worker files match {market_sources.input_glob}; check PIPELINE_DATA_ROOT, or "
                "write demo sources with `make demo`"
            )
        )
    try:
        options = export_options(**config.model_dump())
    except StagingExportError as exc:
        raise dg.Failure(description=f"run config: {exc}") from exc

    checks: list[dg.AssetCheckResult] = []

    def evaluate(result: ExportResult) -> bool:
        checks.extend(staging_check_results(STAGING_EXPORT, result.metadata_path))
        return all_passed(checks)

    try:
        result = run_staging_export(
            options,
            worker_files=files,
            input_glob=f"{relative_path(market_sources.workers_path, root)}/{WORKER_FILE_PATTERN}",
            data_root=root,
            staging_dir=root / STAGING_DIR,
            started=started,
            before_commit=evaluate,
            run_id_for_custody=context.run.run_id,
            log=context.log.warning,
        )
    except WorkerFileError as exc:
        raise dg.Failure(
            description=(
                f"{exc}. Repair or remove the file, or run again with run config "
                "`skip_unreadable_sources: true` to export the other files without it."
            ),
            metadata={"source_file": dg.MetadataValue.path(str(exc.path))},
        ) from exc
    except StagingExportError as exc:
        raise dg.Failure(description=str(exc)) from exc

    doc = result.metadata
    counts = doc["row_counts"]
    context.log.info(
        f"{result.run_id}: {counts['market_ticks']:,} market ticks, "
        f"{counts['connection_events']:,} connection events, {counts['rejected']:,} rejected; "
        f"state {'updated' if result.committed and options.update_state else 'unchanged'}"
        + ("" if result.committed else " (a check failed: the export was removed)")
    )
    metadata = {
        **run_metadata(
            context,
            started_utc=started,
            source_files=doc["source"]["worker_db_files"],
            input_glob=doc["source"]["input_glob"],
            row_counts=counts,
            window=doc["window"],
            query_bounds=doc["query_bounds"],
            watermarks=doc["watermarks"],
            output_files=doc["output_files"],
            finished=True,
        ),
        "dagster/row_count": dg.MetadataValue.int(
            counts["market_ticks"] + counts["connection_events"]
        ),
        "export_run_id": dg.MetadataValue.text(result.run_id),
        "metadata_file": dg.MetadataValue.path(relative_path(result.metadata_path, root)),
        "mode": dg.MetadataValue.json(doc["mode"]),
        "options": dg.MetadataValue.json(doc["options"]),
        "filters": dg.MetadataValue.json(doc["filters"]),
        "uniques": dg.MetadataValue.json(doc["uniques"]),
        "state": dg.MetadataValue.json(
            {**doc["state"], "updated": result.committed and options.update_state}
        ),
        "skipped_sources": dg.MetadataValue.json(doc["skipped_sources"]),
        "committed": dg.MetadataValue.bool(result.committed),
    }
    if result.committed:
        metadata.update(
            file_links(
                doc["output_files"],
                root,
                heading=(
                    f"**{counts['market_ticks']:,} market ticks** and "
                    f"{counts['connection_events']:,} connection events exported "
                    f"({counts['rejected']:,} rejected)."
                ),
            )
        )
    newest = (doc["watermarks"].get("new") or {}).get("market_ticks_ingestion_ts_utc")
    finished = doc.get("run_finished_utc")
    if newest and finished:
        # How far the newest exported tick trails the export: the UI plots it run after run.
        lag = dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(newest)
        metadata["export_lag_s"] = dg.MetadataValue.float(round(lag.total_seconds(), 3))
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
