"""Bronze market data: the collectors' SQLite files landed as channel-separated Parquet, per UTC day.

One multi-asset reads every worker file once per day of its run and writes five assets from that
one read (`lib.market.bronze_stream.BronzeSpill.land_day` does the work; this is the Dagster
shell): the three channel tables, the quarantine of rows that could not be landed, and the
connection events. A single-run backfill of a range writes every day of the range in one run.
Days are landed one after the other into an on-disk spill, and each output of each day reaches
the lake IO manager as a record-batch stream, so memory does not grow with a day's size or the
range's length.
"""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from contracts.core import ContractModel, arrow_schema
from contracts.custody import ParentRef
from pipeline_assets.defs.market_data.checks import bronze_check_results, bronze_check_specs
from pipeline_assets.defs.market_data.partitions import market_daily_partitions
from pipeline_assets.lib.custody import MetadataFactory
from pipeline_assets.lib.market.bronze import (
    CHANNELS,
    CONNECTION_EVENTS,
    LANDED_CONTRACTS,
    QUARANTINE,
    TIMESTAMP_NOT_ISO8601,
    WorkerFileError,
)
from pipeline_assets.lib.market.bronze_stream import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    DEFAULT_MAX_INGESTION_LAG_S,
    DEFAULT_MEMORY_LIMIT_MB,
    OUTPUT_ROW_GROUP_SIZE,
    TABLE_SCHEMAS,
    BronzeDayStore,
    BronzeSpill,
)
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.lib.versions import CODE_VERSION
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema

BRONZE_ORDERBOOK = "bronze_orderbook"
BRONZE_TRADES = "bronze_trades"
BRONZE_TICKER = "bronze_ticker"
BRONZE_QUARANTINE = "bronze_quarantine"
BRONZE_CONNECTION_EVENTS = "bronze_connection_events"

# Asset -> the table of a landed day (`BronzeDayStore.tables`) it writes.
BRONZE_ASSET_TABLES: dict[str, str] = {
    BRONZE_ORDERBOOK: "orderbook",
    BRONZE_TRADES: "trades",
    BRONZE_TICKER: "ticker",
    BRONZE_QUARANTINE: QUARANTINE,
    BRONZE_CONNECTION_EVENTS: CONNECTION_EVENTS,
}
BRONZE_ASSET_KEYS: tuple[dg.AssetKey, ...] = tuple(
    dg.AssetKey(name) for name in BRONZE_ASSET_TABLES
)

GROUP = "market_data"
OWNERS = ["team:market-data"]

_DESCRIPTIONS = {
    BRONZE_ORDERBOOK: (
        "Order book snapshots as the collectors recorded them: one row per snapshot, bids and asks "
        "as typed (price, size) levels, best first, beside the raw payload. Exchange and symbol "
        "are normalized (binance, BTC-USDT); exact duplicates recorded by two workers are dropped. "
        "Folders `bronze/bronze_orderbook/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
    BRONZE_TRADES: (
        "Trades as the collectors recorded them: one row per trade with trade id, price, size and "
        "aggressor side (null when the exchange does not say), beside the raw payload. Exchange "
        "and symbol are normalized; exact duplicates recorded by two workers are dropped. "
        "Folders `bronze/bronze_trades/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
    BRONZE_TICKER: (
        "Ticker updates as the collectors recorded them: best bid, best ask, last price and "
        "rolling 24-hour volume, beside the raw payload. Exchange and symbol are normalized; exact "
        "duplicates recorded by two workers are dropped. "
        "Folders `bronze/bronze_ticker/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
    BRONZE_QUARANTINE: (
        "Source rows of the day that could not be landed (bad JSON, a missing or mistyped field, "
        "an unknown channel, an unreadable symbol, exchange or timestamp), kept exactly as stored "
        "with the reason, never dropped. Look here when a channel has fewer rows than expected. "
        "One file per day: `bronze/bronze_quarantine/date=<UTC day>/`."
    ),
    BRONZE_CONNECTION_EVENTS: (
        "The collectors' connection events (connected, disconnected, resubscribed, error) of the "
        "day from every worker, exchange normalized. Stateful features reset at a disconnect. "
        "One file per day: `bronze/bronze_connection_events/date=<UTC day>/`."
    ),
}
_SPLIT_BY_SYMBOL = {BRONZE_ORDERBOOK, BRONZE_TRADES, BRONZE_TICKER}


def _bronze_out(asset: str) -> dg.AssetOut:
    model: type[ContractModel] = LANDED_CONTRACTS[BRONZE_ASSET_TABLES[asset]]
    metadata: dict[str, object] = {
        "lake/layer": "bronze",
        "dagster/column_schema": column_schema(arrow_schema(model)),
        "contract": f"{model.contract.name} {model.contract.version}",
    }
    if asset in _SPLIT_BY_SYMBOL:
        metadata["lake/split_by"] = "symbol"
        # Each day streams symbol by symbol, so the IO manager holds one pending row group.
        metadata["lake/split_grouped"] = True
        metadata["lake/row_group_size"] = OUTPUT_ROW_GROUP_SIZE
    return dg.AssetOut(
        key=dg.AssetKey(asset),
        description=_DESCRIPTIONS[asset],
        metadata=metadata,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"parquet", "sqlite"},
        is_required=True,
    )


class BronzeConfig(dg.Config):
    skip_unreadable_sources: bool = Field(
        False,
        description=(
            "Land the readable worker files when some are not (not SQLite, a table missing, "
            "truncated), naming the skipped ones in the metadata (`skipped_sources`), instead of "
            "failing the run."
        ),
    )
    max_ingestion_lag_s: float | None = Field(
        DEFAULT_MAX_INGESTION_LAG_S,
        description=(
            "How long after its event a row may have been stored. A day's read covers only the "
            "ids ingested from the day's start (less `max_clock_skew_s`) to its end plus this "
            "lag, found by binary search on the id; null reads each file whole."
        ),
    )
    max_clock_skew_s: float = Field(
        DEFAULT_MAX_CLOCK_SKEW_S,
        description="How far an event time may lie after its ingestion time (collector clocks).",
    )
    spill_memory_limit_mb: int = Field(
        DEFAULT_MEMORY_LIMIT_MB,
        description=(
            "Memory the spill's DuckDB may use (the page parse, the sort of the quarantine and "
            "connection events, the key checks) before it spills to disk. The channels are "
            "sorted in bounded groups outside DuckDB."
        ),
    )
    spill_dir: str | None = Field(
        None,
        description=(
            "Folder for the run's temporary spill (about the size of the run's days, removed at "
            "the end of the run); default: the system's temporary folder."
        ),
    )


def _log_swept(context: dg.AssetExecutionContext, spill: BronzeSpill) -> None:
    """Name the spill folders of killed runs this run removed, and what they held: disk space
    that comes back, and a sign that earlier runs were killed."""
    for swept in spill.swept:
        context.log.warning(
            f"removed the spill folder {swept.path} of a killed run ({swept.size_bytes:,} bytes)"
        )
    context.log.info(
        f"spill folder {spill.folder}; {len(spill.swept)} stale spill folder(s) removed from "
        f"{spill.folder.parent}"
    )


def _land_day(
    context: dg.AssetExecutionContext,
    spill: BronzeSpill,
    files: list[Path],
    day: str,
    config: BronzeConfig,
) -> BronzeDayStore:
    try:
        landed = spill.land_day(
            files,
            dt.date.fromisoformat(day),
            skip_unreadable=config.skip_unreadable_sources,
            max_clock_skew_s=config.max_clock_skew_s,
            max_ingestion_lag_s=config.max_ingestion_lag_s,
        )
    except WorkerFileError as exc:
        raise dg.Failure(
            description=(
                f"day {day}: {exc}. Repair or remove the file, or run again with run config "
                "`skip_unreadable_sources: true` to land the other files without it."
            ),
            metadata={"source_file": dg.MetadataValue.path(str(exc.path))},
        ) from exc
    quarantined = landed.rows[QUARANTINE]
    duplicates = sum(landed.duplicates_dropped.values())
    message = (
        f"day {day}: {landed.ticks:,} ticks from {len(landed.sources)} files, "
        f"{quarantined:,} quarantined, {duplicates:,} duplicates dropped, "
        f"{landed.rows[CONNECTION_EVENTS]:,} connection events"
    )
    if landed.skipped:
        message += f"; skipped unreadable {', '.join(sorted(landed.skipped))}"
        context.log.warning(message)
    else:
        context.log.info(message)
    if not landed.sources:
        raise dg.Failure(
            description=f"day {day}: no worker file could be read; skipped: {dict(landed.skipped)}"
        )
    return landed


@dg.multi_asset(
    name="bronze_market_data",
    outs={asset: _bronze_out(asset) for asset in BRONZE_ASSET_TABLES},
    check_specs=bronze_check_specs(BRONZE_ASSET_TABLES),
    partitions_def=market_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
    group_name=GROUP,
    description="Lands the collectors' SQLite files as the five bronze market-data assets, per UTC day.",
)
def bronze_market_data(
    context: dg.AssetExecutionContext, config: BronzeConfig, market_sources: MarketSources
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    started = utc_now()
    files = market_sources.worker_files()
    if not files:
        raise dg.Failure(
            description=(
                f"no worker files match {market_sources.input_glob}; check PIPELINE_DATA_ROOT, or "
                "write demo sources with `make demo`"
            )
        )
    worker_paths = {p.name: p for p in files}
    with BronzeSpill(
        spill_dir=config.spill_dir, memory_limit_mb=config.spill_memory_limit_mb
    ) as spill:
        _log_swept(context, spill)
        days = [_land_day(context, spill, files, key, config) for key in context.partition_keys]
        yield from _outputs_and_checks(context, market_sources, files, worker_paths, days, started)


def _outputs_and_checks(
    context: dg.AssetExecutionContext,
    market_sources: MarketSources,
    files: list[Path],
    worker_paths: dict[str, Path],
    days: list[BronzeDayStore],
    started: dt.datetime,
) -> Iterator[dg.Output | dg.AssetCheckResult]:

    # Each file is hashed once per run; its parent entry per day names where that day's read stopped.
    factory = MetadataFactory(market_sources.root_path, code_version=CODE_VERSION)
    hashes: dict[str, str] = {}

    def parents(day: BronzeDayStore) -> list[ParentRef]:
        refs = []
        for source in day.sources:
            ref = factory.file_parent(
                worker_paths[source.file],
                sha256=hashes.get(source.file),
                market_ticks_max_id=source.market_ticks_max_id,
                connection_events_max_id=source.connection_events_max_id,
            )
            hashes[source.file] = ref.sha256 or ""
            refs.append(ref)
        return refs

    day_parents = {day.day.isoformat(): parents(day) for day in days}
    read_files = sorted({s.file for day in days for s in day.sources})
    skipped = sorted({(name, reason) for day in days for name, reason in day.skipped.items()})
    totals = {
        **{channel: sum(d.rows[channel] for d in days) for channel in CHANNELS},
        "connection_events": sum(d.rows[CONNECTION_EVENTS] for d in days),
        "quarantined": sum(d.rows[QUARANTINE] for d in days),
        "duplicates_dropped": sum(sum(d.duplicates_dropped.values()) for d in days),
        # Of the quarantined: rows with a timestamp not in ISO-8601 form (every_row_has_an_event_date
        # names those whose event time has no date at all).
        TIMESTAMP_NOT_ISO8601: sum(
            count
            for d in days
            for count, _ in d.quarantined_with_reason(TIMESTAMP_NOT_ISO8601).values()
        ),
    }
    # The ids each file was read up to: rows past them are for the watcher's next run.
    watermarks: dict[str, dict[str, int]] = {}
    for source in (s for day in days for s in day.sources):
        marks = watermarks.setdefault(source.file, {})
        for name in ("market_ticks_max_id", "connection_events_max_id"):
            marks[name] = max(marks.get(name, 0), getattr(source, name) or 0)
    metadata = {
        **run_metadata(
            context,
            started_utc=started,
            source_files=[str(worker_paths[name]) for name in read_files],
            input_glob=market_sources.input_glob,
            row_counts=totals,
            watermarks=watermarks,
        ),
        "skipped_sources": dg.MetadataValue.json(
            [{"file": name, "reason": reason} for name, reason in skipped]
        ),
    }

    for asset, table in BRONZE_ASSET_TABLES.items():
        yield dg.Output(
            {
                day.day.isoformat(): LakeOutput(
                    day.reader(table),
                    parents=day_parents[day.day.isoformat()],
                    params={"day": day.day.isoformat()},
                    schema=TABLE_SCHEMAS[table],
                )
                for day in days
            },
            output_name=asset,
            metadata=metadata,
        )
    yield from bronze_check_results(BRONZE_ASSET_TABLES, days, worker_paths)
