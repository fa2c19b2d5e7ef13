"""Bronze market data: the collectors' SQLite files landed as channel-separated Parquet, per UTC day.

One multi-asset reads every worker file once per day of its run and writes five assets from that
one read (`lib.market.bronze.land_bronze_day` does the work; this is the Dagster shell): the three
channel tables, the quarantine of rows that could not be landed, and the connection events. A
single-run backfill of a range writes every day of the range in one run.
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
    BronzeDay,
    WorkerFileError,
    land_bronze_day,
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

# Asset -> the table of `land_bronze_day` it writes.
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


def _land_day(
    context: dg.AssetExecutionContext, files: list[Path], day: str, config: BronzeConfig
) -> BronzeDay:
    try:
        landed = land_bronze_day(
            files, dt.date.fromisoformat(day), skip_unreadable=config.skip_unreadable_sources
        )
    except WorkerFileError as exc:
        raise dg.Failure(
            description=(
                f"day {day}: {exc}. Repair or remove the file, or run again with run config "
                "`skip_unreadable_sources: true` to land the other files without it."
            ),
            metadata={"source_file": dg.MetadataValue.path(str(exc.path))},
        ) from exc
    quarantined = landed.tables[QUARANTINE].num_rows
    duplicates = sum(landed.duplicates_dropped.values())
    message = (
        f"day {day}: {landed.ticks:,} ticks from {len(landed.sources)} files, "
        f"{quarantined:,} quarantined, {duplicates:,} duplicates dropped, "
        f"{landed.tables[CONNECTION_EVENTS].num_rows:,} connection events"
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
    days = [_land_day(context, files, key, config) for key in context.partition_keys]

    # Each file is hashed once per run; its parent entry per day names where that day's read stopped.
    factory = MetadataFactory(market_sources.root_path, code_version=CODE_VERSION)
    hashes: dict[str, str] = {}

    def parents(day: BronzeDay) -> list[ParentRef]:
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
        **{channel: sum(d.tables[channel].num_rows for d in days) for channel in CHANNELS},
        "connection_events": sum(d.tables[CONNECTION_EVENTS].num_rows for d in days),
        "quarantined": sum(d.tables[QUARANTINE].num_rows for d in days),
        "duplicates_dropped": sum(sum(d.duplicates_dropped.values()) for d in days),
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
                    day.tables[table],
                    parents=day_parents[day.day.isoformat()],
                    params={"day": day.day.isoformat()},
                )
                for day in days
            },
            output_name=asset,
            metadata=metadata,
        )
    yield from bronze_check_results(BRONZE_ASSET_TABLES, days, worker_paths)
