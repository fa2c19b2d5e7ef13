"""Staging export contracts: the run metadata file of `spec/staging-run-contract.md` and the rows
the exporter writes.

`StagingExportRunMetadata` is `<export_base>_metadata.json`, one per export run, with every field
the spec requires under the spec's names (`contract_name` `staging_export_run_metadata`, version
`1.0.0`). Two optional fields extend it, as the compatibility policy allows for minor additions:
`skipped_sources` (worker files left out with `skip_unreadable_sources`) and
`row_counts.rejected` (rows written to the rejects output instead of the export).

The spec's validation rules compare fields with each other, which a JSON Schema cannot say; they
are the blocking asset checks of `staging_export` (see `pipeline_assets.lib.market.staging_export`,
`VALIDATION_RULES`).

The row contracts fix the columns of the exported tables in every output format (SQLite tables,
CSV files, JSON Lines files): the raw collector fields beside the normalized exchange, symbol and
assets. Timestamps are the collector's UTC ISO-8601 text, unchanged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.core import ContractInfo, ContractModel

RUN_METADATA_NAME = "staging_export_run_metadata"
RUN_METADATA_VERSION = "1.0.0"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mode(_Part):
    """How the run chose its lower bounds."""

    incremental: bool = Field(..., description="Whether incremental mode was enabled.")


class Window(_Part):
    """The configured export window."""

    hours: float = Field(..., gt=0, description="Configured export window in hours.")
    default_start_utc: dt.datetime = Field(
        ..., description="Default lower bound from the configured hour window (end_utc - hours)."
    )
    end_utc: dt.datetime = Field(..., description="Upper bound of the extracted data window.")


class TableBounds(_Part):
    """Effective bounds of one source query (the upper bound is inclusive)."""

    lower_utc: dt.datetime = Field(..., description="Effective lower bound of the query.")
    lower_inclusive: bool = Field(
        ...,
        description=(
            "Whether the lower bound is inclusive: true for the window's default start, false "
            "for a stored watermark (rows at the watermark were exported before)."
        ),
    )
    upper_utc: dt.datetime = Field(
        ..., description="Effective upper bound of the query (inclusive)."
    )


class EventBounds(TableBounds):
    """Effective bounds of the connection_events query, and whether events were exported."""

    included: bool = Field(
        ..., description="Whether connection events were included in the export."
    )


class QueryBounds(_Part):
    """Effective bounds of both source queries: market_ticks on ingestion_ts_utc,
    connection_events on event_ts_utc."""

    market_ticks: TableBounds = Field(..., description="Bounds on market_ticks.ingestion_ts_utc.")
    connection_events: EventBounds = Field(
        ..., description="Bounds on connection_events.event_ts_utc."
    )


class Source(_Part):
    """The worker files read."""

    input_glob: str = Field(..., description="Source DB glob pattern.")
    worker_db_count: int = Field(..., ge=0, description="Number of source DB files used.")
    worker_db_files: list[str] = Field(..., description="Explicit source DB file list.")


class Options(_Part):
    """Output options of the run."""

    output_format: Literal["sqlite", "csv", "json"] = Field(
        ..., description="`sqlite` (one file, one table each), `csv` or `json` (JSON Lines) files."
    )
    include_connection_events: bool = Field(
        ..., description="Whether connection events are exported."
    )
    chunk_size: int = Field(..., ge=1, description="Rows read and written per chunk (streaming).")


class Filters(_Part):
    """Filters applied to the exported rows, in normalized form."""

    exchanges: list[str] = Field(
        ..., description="Normalized exchange filters (lowercase); empty: all."
    )
    assets: list[str] = Field(
        ..., description="Normalized asset filters (uppercase base assets); empty: all."
    )


class UniqueSet(_Part):
    """Distinct normalized exchanges and base assets of a set of rows."""

    exchanges: list[str] = Field(..., description="Unique exchanges (lowercase), sorted.")
    assets: list[str] = Field(..., description="Unique base assets (uppercase), sorted.")


class Uniques(_Part):
    """What the source window held, and what was exported after the filters."""

    source: UniqueSet = Field(
        ..., description="Unique exchanges and assets found in the source window."
    )
    exported: UniqueSet = Field(
        ..., description="Unique exchanges and assets in the exported result."
    )


class WatermarkPair(_Part):
    """The two watermarks: market_ticks by ingestion time, connection_events by event time."""

    market_ticks_ingestion_ts_utc: dt.datetime | None = Field(
        ..., description="Market ticks watermark (ingestion_ts_utc); null when none."
    )
    connection_events_event_ts_utc: dt.datetime | None = Field(
        ..., description="Connection events watermark (event_ts_utc); null when none."
    )


class Watermarks(_Part):
    """Watermarks before the run, of the exported rows, and after the run."""

    previous: WatermarkPair = Field(
        ..., description="Watermarks loaded from the state before the run."
    )
    exported_max: WatermarkPair = Field(
        ..., description="Maximum timestamps in the exported result."
    )
    new: WatermarkPair = Field(
        ...,
        description=(
            "Resulting watermarks after the run: the later of previous and exported_max (stored "
            "only when state.updated is true)."
        ),
    )


class StateInfo(_Part):
    """The exporter state file and what the run did with it."""

    path: str = Field(..., description="State file path used by the exporter.")
    key: str = Field(..., description="State profile key used for this run.")
    update_requested: bool = Field(..., description="Whether a state update was requested.")
    updated: bool = Field(..., description="Whether the state file was updated.")


class RowCounts(_Part):
    """Rows exported per table."""

    market_ticks: int = Field(..., ge=0, description="Number of exported market rows.")
    connection_events: int = Field(..., ge=0, description="Number of exported event rows.")
    rejected: int = Field(
        0,
        ge=0,
        description=(
            "Source rows in the window that could not be normalized (exchange, symbol or "
            "timestamp unreadable), written to the rejects output with the reason (extension)."
        ),
    )


class SkippedSource(_Part):
    """A worker file left out of the run because it could not be read."""

    file: str = Field(..., description="The worker file.")
    reason: str = Field(..., description="Why it could not be read.")


class StagingExportRunMetadata(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name=RUN_METADATA_NAME,
        version=RUN_METADATA_VERSION,
        title="Staging export run metadata",
        description=(
            "The metadata file `<export_base>_metadata.json` the staging exporter writes for each "
            "export run, for auditability, reproducibility and downstream validation "
            "(spec/staging-run-contract.md). Validation rules, checked by the asset's blocking "
            "checks: run_started_utc <= run_finished_utc; window.default_start_utc <= "
            "window.end_utc; each query's lower_utc <= upper_utc; source.worker_db_count == "
            "len(source.worker_db_files); row counts >= 0."
        ),
    )

    contract_name: Literal["staging_export_run_metadata"] = Field(
        RUN_METADATA_NAME, description="Fixed value `staging_export_run_metadata`."
    )
    contract_version: Literal["1.0.0"] = Field(
        RUN_METADATA_VERSION, description="Contract version, currently `1.0.0`."
    )
    run_id: str = Field(
        ..., min_length=1, description="Unique run identifier derived from the export base name."
    )
    run_started_utc: dt.datetime = Field(..., description="UTC timestamp when the run started.")
    run_finished_utc: dt.datetime = Field(..., description="UTC timestamp when the run finished.")
    mode: Mode = Field(..., description="Run mode.")
    window: Window = Field(..., description="The configured window.")
    query_bounds: QueryBounds = Field(..., description="Effective bounds of the source queries.")
    source: Source = Field(..., description="The source worker files.")
    options: Options = Field(..., description="Output options.")
    filters: Filters = Field(..., description="Normalized filters.")
    uniques: Uniques = Field(..., description="Unique exchanges and assets in source and export.")
    watermarks: Watermarks = Field(..., description="Watermarks before, exported and after.")
    state: StateInfo = Field(..., description="The state file and profile.")
    row_counts: RowCounts = Field(..., description="Exported rows per table.")
    output_files: list[str] = Field(..., description="Data output files created by this run.")
    skipped_sources: list[SkippedSource] = Field(
        default_factory=list,
        description="Worker files skipped as unreadable (only with skip_unreadable_sources; extension).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_identity(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {
                "contract_name": RUN_METADATA_NAME,
                "contract_version": RUN_METADATA_VERSION,
                **data,
            }
        return data


_SOURCE_FILE = "Name of the worker SQLite file the row was read from."


class StagingMarketTick(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="staging_market_tick",
        version="1.0.0",
        title="Staging export: market tick row",
        description=(
            "One market_ticks row of a worker file whose ingestion time lies in the run's query "
            "bounds and that passed the filters: the collector's raw fields beside the normalized "
            "exchange, symbol and assets. Table `market_ticks` of the SQLite output, file "
            "`<export_base>_market_ticks.csv` / `.jsonl` otherwise."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    source_file: str = Field(..., description=_SOURCE_FILE)
    source_id: int = Field(..., description="market_ticks.id in the worker file.")
    exchange_raw: str = Field(..., description="Exchange as the collector spelled it.")
    symbol_raw: str = Field(..., description="Exchange-native symbol as collected.")
    channel: str = Field(..., description="Channel as collected: orderbook, trades or ticker.")
    event_ts_utc: str = Field(..., description="Exchange event time, UTC ISO-8601 text as stored.")
    ingestion_ts_utc: str = Field(
        ...,
        description="When the worker stored the row, UTC ISO-8601 text as stored (the watermark).",
    )
    payload: str = Field(..., description="The raw JSON payload text, unchanged.")
    exchange: str = Field(..., description="Normalized exchange: stripped, lowercase.")
    symbol: str = Field(..., description="Canonical symbol BASE-QUOTE, uppercase (BTC-USDT).")
    base_asset: str = Field(..., description="Base asset, uppercase, aliases resolved.")
    quote_asset: str = Field(..., description="Quote asset, uppercase, aliases resolved.")


class StagingConnectionEvent(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="staging_connection_event",
        version="1.0.0",
        title="Staging export: connection event row",
        description=(
            "One connection_events row of a worker file whose event time lies in the run's query "
            "bounds and whose exchange passed the exchange filter (events carry no symbol, so the "
            "asset filter does not apply). Table `connection_events` of the SQLite output, file "
            "`<export_base>_connection_events.csv` / `.jsonl` otherwise."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    source_file: str = Field(..., description=_SOURCE_FILE)
    source_id: int = Field(..., description="connection_events.id in the worker file.")
    exchange_raw: str = Field(..., description="Exchange as the collector spelled it.")
    worker_id: str = Field(..., description="Worker that recorded the event.")
    event_type: str = Field(..., description="connected, disconnected, resubscribed or error.")
    event_ts_utc: str = Field(
        ..., description="Event time, UTC ISO-8601 text as stored (the watermark)."
    )
    details: str | None = Field(None, description="Details JSON text as stored, or null.")
    exchange: str = Field(..., description="Normalized exchange: stripped, lowercase.")


class StagingReject(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="staging_reject",
        version="1.0.0",
        title="Staging export: rejected source row",
        description=(
            "A source row inside the query bounds that could not be exported: its exchange or "
            "symbol cannot be normalized, a timestamp is not the collectors' UTC text, or a "
            "required field is NULL. Kept with the reason and the row as stored (JSON). Table "
            "`rejects` of the SQLite output, file `<export_base>_rejects.csv` / `.jsonl` otherwise "
            "(written only when a row is rejected)."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_table", "source_id"),
    )

    source_file: str = Field(..., description=_SOURCE_FILE)
    source_table: Literal["market_ticks", "connection_events"] = Field(
        ..., description="Table of the worker file the row is from."
    )
    source_id: int = Field(..., description="id of the row in that table.")
    reason: str = Field(
        ..., description="Why it was rejected, naming the field and what was expected."
    )
    raw_row: str = Field(..., description="The row as stored, as a JSON object of its columns.")


CONTRACTS: tuple[type[ContractModel], ...] = (
    StagingExportRunMetadata,
    StagingMarketTick,
    StagingConnectionEvent,
    StagingReject,
)
