"""Silver market features: stateful order book, trade and ticker features per UTC day.

One multi-asset computes the three silver assets from one read of the day's bronze files, symbol by
symbol (`lib.market.feature_days` does the work; this is the Dagster shell). Each day starts from
the state at the end of the previous day: computed earlier in the same run, or read from its
checkpoint `silver/_state/market_features/date=D/state.parquet`. A day whose previous day has
landed bronze but no checkpoint is refused, naming the day to materialize first; so is a run whose
last day would end in another state than the one the next, already computed day started from.
"""

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from upath import UPath

from contracts.core import arrow_schema
from pipeline_assets.defs.market_data.bronze import (
    BRONZE_CONNECTION_EVENTS,
    BRONZE_ORDERBOOK,
    BRONZE_TICKER,
    BRONZE_TRADES,
    GROUP,
    OWNERS,
)
from pipeline_assets.defs.market_data.features_checks import (
    CONTRACT_OF,
    SILVER_ORDERBOOK_FEATURES,
    SILVER_TICKER_FEATURES,
    SILVER_TRADE_FEATURES,
    feature_check_results,
    feature_check_specs,
)
from pipeline_assets.defs.market_data.partitions import market_daily_partitions
from pipeline_assets.lib.market.feature_days import (
    SILVER_SCHEMAS,
    FeatureDay,
    LakeFile,
    MissingStateError,
    StaleLaterDaysError,
    checkpoint_hashes,
    compute_features_day,
    link_in_run_starts,
    partition_written,
    previous_state,
    refuse_stale_later_days,
    write_checkpoint,
)
from pipeline_assets.lib.market.features import FeatureState, FeatureStateError
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.resources.market_features import MarketFeatureSettings
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema

# Silver asset -> the output name of `compute_features_day`.
SILVER_OUTPUTS: dict[str, str] = {
    SILVER_ORDERBOOK_FEATURES: "orderbook",
    SILVER_TRADE_FEATURES: "trades",
    SILVER_TICKER_FEATURES: "ticker",
}
SILVER_ASSET_KEYS = tuple(dg.AssetKey(name) for name in SILVER_OUTPUTS)
BRONZE_INPUTS = {"orderbook": BRONZE_ORDERBOOK, "trades": BRONZE_TRADES, "ticker": BRONZE_TICKER}

_STATE_NOTE = (
    " Stateful columns continue from the previous row of the same exchange and symbol, across "
    "days (through the end-of-day checkpoint); a disconnect or a gap longer than the staleness "
    "limit restarts them, and `state_reset` names the reason on the first row after it."
)
_DESCRIPTIONS = {
    SILVER_ORDERBOOK_FEATURES: (
        "Order book features, one row per bronze snapshot: best levels, mid, spread (bps), the "
        "size-weighted mid, top-of-book and depth imbalance, order flow imbalance (Cont, Kukanov "
        "& Stoikov 2014) and the mid's log return from the previous snapshot."
        + _STATE_NOTE
        + " Folders `silver/silver_orderbook_features/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
    SILVER_TRADE_FEATURES: (
        "Trade features, one row per bronze trade: the prevailing quote (as of the trade), the "
        "aggressor side from the feed or inferred by the quote rule or the tick rule (flagged in "
        "side_source), signed volume, and trade flow imbalance and VWAP over 1- and 5-minute "
        "windows."
        + _STATE_NOTE
        + " Folders `silver/silver_trade_features/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
    SILVER_TICKER_FEATURES: (
        "Ticker features, one row per bronze ticker update: its fields, mid, spread, and the "
        "changes since the stream's previous update."
        + _STATE_NOTE
        + " Folders `silver/silver_ticker_features/date=<UTC day>/symbol=<BASE-QUOTE>/`."
    ),
}


def _silver_out(asset: str) -> dg.AssetOut:
    model = CONTRACT_OF[asset]
    return dg.AssetOut(
        key=dg.AssetKey(asset),
        description=_DESCRIPTIONS[asset],
        metadata={
            "lake/layer": "silver",
            "lake/split_by": "symbol",
            "dagster/column_schema": column_schema(arrow_schema(model)),
            "contract": f"{model.contract.name} {model.contract.version}",
        },
        group_name=GROUP,
        owners=OWNERS,
        kinds={"parquet", "numpy"},
        is_required=True,
    )


def lake_base(io_manager: object) -> UPath:
    """The lake root the IO manager writes under (its custody root)."""
    return io_manager.factory.root  # type: ignore[attr-defined]


def _bronze_folder(io_manager: object, asset: str, day: dt.date) -> UPath:
    return io_manager.partition_folder(  # type: ignore[attr-defined]
        dg.AssetKey(asset), market_daily_partitions, day.isoformat(), {"lake/layer": "bronze"}
    )


@dg.multi_asset(
    name="silver_market_features",
    outs={asset: _silver_out(asset) for asset in SILVER_OUTPUTS},
    deps=[BRONZE_ORDERBOOK, BRONZE_TRADES, BRONZE_TICKER, BRONZE_CONNECTION_EVENTS],
    check_specs=feature_check_specs(list(SILVER_OUTPUTS)),
    partitions_def=market_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
    group_name=GROUP,
    required_resource_keys={"io_manager", "market_features"},
    description=(
        "Computes the three silver feature assets of each UTC day from its bronze files, symbol "
        "by symbol, starting from the previous day's end-of-day state, and checkpoints the state."
    ),
)
def silver_market_features(
    context: dg.AssetExecutionContext,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    started = utc_now()
    io_manager = context.resources.io_manager
    base = lake_base(io_manager)
    # Declared by key beside the IO manager (Dagster takes resource keys one way per asset).
    settings: MarketFeatureSettings = context.resources.market_features
    params = settings.params()
    days = [dt.date.fromisoformat(key) for key in sorted(context.partition_keys)]
    spill_dir = Path(tempfile.mkdtemp(prefix="silver-features-"))
    try:
        computed: list[FeatureDay] = []
        in_run: dict[dt.date, FeatureState] = {}
        for day in days:
            if not partition_written(_bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, day)):
                raise dg.Failure(
                    description=(
                        f"bronze for {day} is not landed ({_bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, day)} "
                        "does not exist): materialize the bronze assets for that day first"
                    )
                )
            before = day - dt.timedelta(days=1)
            try:
                start = previous_state(
                    base,
                    day,
                    params,
                    in_run=in_run,
                    bronze_landed=partition_written(
                        _bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, before)
                    ),
                )
            except (MissingStateError, FeatureStateError) as exc:
                raise dg.Failure(description=str(exc)) from exc
            feature_day = compute_features_day(
                day,
                {
                    name: _bronze_folder(io_manager, asset, day)
                    for name, asset in BRONZE_INPUTS.items()
                },
                _bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, day),
                start,
                params,
                spill_dir,
            )
            context.log.info(
                f"day {day}: {feature_day.rows} rows, state from {start.origin}, resets {feature_day.resets}"
            )
            computed.append(feature_day)
            in_run[day] = feature_day.state
        hashes = checkpoint_hashes(in_run, spill_dir)
        # A later day computed from the old state of the run's last day would silently go stale.
        try:
            refuse_stale_later_days(base, hashes)
        except StaleLaterDaysError as exc:
            raise dg.Failure(description=str(exc)) from exc
        link_in_run_starts(base, computed, hashes)

        factory = io_manager.factory

        def parents(files: list[LakeFile]) -> list:
            return [factory.file_parent(f.path, sha256=f.sha256) for f in files]

        metadata = {
            **run_metadata(
                context,
                started_utc=started,
                row_counts={
                    name: sum(d.rows[name] for d in computed) for name in SILVER_OUTPUTS.values()
                },
            ),
            "state_resets": dg.MetadataValue.json({d.day.isoformat(): d.resets for d in computed}),
            "state_origin": dg.MetadataValue.json({d.day.isoformat(): d.origin for d in computed}),
            "feature_params": dg.MetadataValue.json(params.as_params()),
        }
        for asset, output in SILVER_OUTPUTS.items():
            yield dg.Output(
                {
                    d.day.isoformat(): LakeOutput(
                        d.reader(output),
                        parents=parents(d.parents),
                        params={"day": d.day.isoformat(), **params.as_params()},
                        schema=SILVER_SCHEMAS[output],
                    )
                    for d in computed
                },
                output_name=asset,
                metadata={
                    **metadata,
                    "state_resets_total": dg.MetadataValue.int(
                        sum(d.resets[output] for d in computed)
                    ),
                },
            )
        # Checkpoints after the outputs: a run that fails writing them leaves no state ahead of them.
        for d in computed:
            write_checkpoint(
                base,
                d.day,
                d.state,
                params,
                factory=factory,
                parents=parents(d.parents),
                run_id=context.run.run_id,
            )
        for asset, output in SILVER_OUTPUTS.items():
            yield from feature_check_results(
                asset, {d.day: (lambda d=d, output=output: d.table(output)) for d in computed}
            )
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
