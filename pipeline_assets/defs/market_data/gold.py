"""Gold one-minute bars per stream, from the silver trade and order book features of each UTC day.

A bar needs nothing outside its own day (the one cross-minute quantity, each snapshot's mid
return, is already in silver), so days are independent: the asset reads each day's silver files
one symbol at a time (`lib.market.feature_days.compute_bars_day`). A day whose bars were made
from the same silver files, parameters and code version (their sidecars say so) is not computed
again: its files are kept, and the reasons are in the metadata (`days_completed_earlier`, and
`completed_earlier` on each kept day). Each computed day's bars are spilled to a temporary Arrow
IPC file, so a range run holds no day's bars in memory; each day's materialization carries its
own `rows_bars`.
"""

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from contracts.core import arrow_schema
from contracts.market_features import GoldBars1m
from pipeline_assets.defs.market_data.bronze import GROUP, OWNERS
from pipeline_assets.defs.market_data.features_checks import (
    GOLD_BARS_1M,
    SILVER_ORDERBOOK_FEATURES,
    SILVER_TRADE_FEATURES,
    feature_check_results,
    feature_check_specs,
)
from pipeline_assets.defs.market_data.partitions import market_daily_partitions, market_day_folder
from pipeline_assets.lib.custody import read_sidecar
from pipeline_assets.lib.market.bars import BARS_SCHEMA
from pipeline_assets.lib.market.feature_days import (
    completed_bars_reason,
    compute_bars_day,
    partition_symbol_files,
    partition_written,
    read_bars_day,
)
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.resources.lake_io_manager import CompletedPartition
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema


def _silver_folder(io_manager: object, asset: str, day: dt.date):
    return market_day_folder(io_manager, asset, day, "silver")


def _gold_folder(io_manager: object, day: dt.date):
    return market_day_folder(io_manager, GOLD_BARS_1M, day, "gold")


class GoldBarsConfig(dg.Config):
    recompute: bool = Field(
        False,
        description=(
            "Compute every day of the run, even one whose bars were made from the same silver "
            "files, parameters and code version (kept as they are by default)."
        ),
    )


@dg.asset(
    name=GOLD_BARS_1M,
    deps=[SILVER_ORDERBOOK_FEATURES, SILVER_TRADE_FEATURES],
    check_specs=feature_check_specs([GOLD_BARS_1M]),
    partitions_def=market_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    owners=OWNERS,
    kinds={"parquet", "numpy"},
    required_resource_keys={"io_manager"},
    metadata={
        "lake/layer": "gold",
        "lake/split_by": "symbol",
        # The rows come symbol by symbol: one symbol file is open at a time.
        "lake/split_grouped": True,
        "dagster/column_schema": column_schema(arrow_schema(GoldBars1m)),
        "contract": f"{GoldBars1m.contract.name} {GoldBars1m.contract.version}",
    },
    description=(
        "One-minute bars per exchange and symbol: OHLC, volume split into buy, sell and unknown "
        "aggressor, trade count, VWAP, normalized trade flow imbalance, summed order flow "
        "imbalance, mean spread, last mid and realized variance of mid log returns. A row for "
        "every minute with a snapshot or a trade; a minute without trades has zero volumes and "
        "null OHLC, VWAP and TFI. Folders `gold/gold_bars_1m/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
)
def gold_bars_1m(
    context: dg.AssetExecutionContext, config: GoldBarsConfig
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    started = utc_now()
    io_manager = context.resources.io_manager
    factory = io_manager.factory
    days = [dt.date.fromisoformat(key) for key in sorted(context.partition_keys)]
    spill_dir = Path(tempfile.mkdtemp(prefix="gold-bars-"))
    try:
        yield from _gold_days(context, config, io_manager, factory, started, days, spill_dir)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def _gold_days(
    context: dg.AssetExecutionContext,
    config: GoldBarsConfig,
    io_manager: object,
    factory: object,
    started: dt.datetime,
    days: list[dt.date],
    spill_dir: Path,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The run's days: kept, or computed into spill files; then the output and the checks."""
    computed = {}
    completed: dict[dt.date, str] = {}
    for day in days:
        folders = [
            _silver_folder(io_manager, a, day)
            for a in (SILVER_ORDERBOOK_FEATURES, SILVER_TRADE_FEATURES)
        ]
        missing = [str(f) for f in folders if not partition_written(f)]
        if missing:
            raise dg.Failure(
                description=f"silver features for {day} are missing ({', '.join(missing)}): materialize them first"
            )
        reason = (
            None
            if config.recompute
            else completed_bars_reason(day, *folders, _gold_folder(io_manager, day), factory)
        )
        if reason is not None:
            context.log.info(f"day {day}: not computed again: {reason}")
            completed[day] = reason
            continue
        # Each day's bars go to a spill file: a range run holds no day's bars in memory.
        computed[day] = compute_bars_day(day, *folders, spill_dir)
    outputs: dict[str, LakeOutput | CompletedPartition] = {
        day.isoformat(): CompletedPartition(reason) for day, reason in completed.items()
    }
    rows_by_day = {day: bars.rows for day, bars in computed.items()}
    for day, bars in computed.items():
        parents = [factory.file_parent(f.path, sha256=f.sha256) for f in bars.parents]
        if not parents:
            # A day without silver rows: its empty markers stand in as the parents.
            parents = [
                factory.file_parent(_silver_folder(io_manager, a, day) / "_empty.json")
                for a in (SILVER_ORDERBOOK_FEATURES, SILVER_TRADE_FEATURES)
            ]
        outputs[day.isoformat()] = LakeOutput(
            bars.reader(), parents=parents, params={"day": day.isoformat()}, schema=BARS_SCHEMA
        )
    for day in completed:
        rows_by_day[day] = sum(
            read_sidecar(f.path).rows or 0
            for f in partition_symbol_files(_gold_folder(io_manager, day)).values()
        )
    metadata = run_metadata(
        context, started_utc=started, row_counts={"bars": sum(rows_by_day.values())}
    )
    metadata["days_completed_earlier"] = dg.MetadataValue.json(
        {day.isoformat(): reason for day, reason in completed.items()}
    )
    for day, rows in rows_by_day.items():
        # The day's own count on its partition (the output metadata holds the run's total).
        context.add_asset_metadata(
            {"rows_bars": dg.MetadataValue.int(rows)}, partition_key=day.isoformat()
        )
    yield dg.Output({key: outputs[key] for key in sorted(outputs)}, metadata=metadata)
    tables = {day: (lambda b=b: b.table()) for day, b in computed.items()}
    # A kept day's checks run on its files as they are.
    tables |= {day: (lambda d=day: read_bars_day(_gold_folder(io_manager, d))) for day in completed}
    yield from feature_check_results(GOLD_BARS_1M, dict(sorted(tables.items())))
