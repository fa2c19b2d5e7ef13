"""Silver market features: stateful order book, trade and ticker features per UTC day.

One multi-asset computes the three silver assets from one read of the day's bronze files, symbol by
symbol (`lib.market.feature_days` does the work; this is the Dagster shell). Each day starts from
the state at the end of the previous day: computed earlier in the same run, or read from its
checkpoint `silver/_state/market_features/date=D/state.parquet`. A day whose previous day has
landed bronze but no checkpoint is refused, naming the day to materialize first; so is a run whose
last day would end in another state than the one the next, already computed day started from.
A day whose checkpoint and silver files an earlier run made from the same bronze files, starting
checkpoint, parameters and code version is kept, not computed again (`days_completed_earlier`;
run config `recompute: true` computes it anyway). Each day's materialization carries that day's
own figures (`state_resets_total`, `rows_<output>`, `state_origin`).
"""

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field
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
from pipeline_assets.defs.market_data.partitions import market_daily_partitions, market_day_folder
from pipeline_assets.lib.market.feature_days import (
    SILVER_SCHEMAS,
    CompletedFeatureDay,
    FeatureDay,
    LakeFile,
    MissingStateError,
    StaleLaterDaysError,
    checkpoint_path,
    checkpoint_sha256,
    completed_features_day,
    compute_features_day,
    link_in_run_starts,
    partition_written,
    previous_state,
    read_symbol_partition,
    refuse_stale_later_days,
    write_checkpoint,
)
from pipeline_assets.lib.market.features import FeatureState, FeatureStateError
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.resources.lake_io_manager import CompletedPartition
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
            # The rows come symbol by symbol: one symbol file is open at a time.
            "lake/split_grouped": True,
            "dagster/column_schema": column_schema(arrow_schema(model)),
            "contract": f"{model.contract.name} {model.contract.version}",
        },
        group_name=GROUP,
        owners=OWNERS,
        kinds={"parquet", "numpy"},
        is_required=True,
    )


def day_metadata(day: FeatureDay | CompletedFeatureDay, output: str) -> dict[str, dg.MetadataValue]:
    """One day's own figures for the materialization of that day's partition of `output`."""
    return {
        # Plain numbers, so the UI plots them partition by partition.
        "state_resets_total": dg.MetadataValue.int(day.resets[output]),
        **{f"rows_{name}": dg.MetadataValue.int(rows) for name, rows in day.rows.items()},
        "state_resets": dg.MetadataValue.json(day.resets),
        "state_origin": dg.MetadataValue.text(day.origin),
    }


def lake_base(io_manager: object) -> UPath:
    """The lake root the IO manager writes under (its custody root)."""
    return io_manager.factory.root  # type: ignore[attr-defined]


def _bronze_folder(io_manager: object, asset: str, day: dt.date) -> UPath:
    return market_day_folder(io_manager, asset, day, "bronze")


def _silver_folder(io_manager: object, asset: str, day: dt.date) -> UPath:
    return market_day_folder(io_manager, asset, day, "silver")


class SilverFeaturesConfig(dg.Config):
    recompute: bool = Field(
        False,
        description=(
            "Compute every day of the run, even one whose silver files and checkpoint were made "
            "from the same bronze files, starting state, parameters and code version (kept as "
            "they are by default)."
        ),
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
    context: dg.AssetExecutionContext, config: SilverFeaturesConfig
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    started = utc_now()
    io_manager = context.resources.io_manager
    base = lake_base(io_manager)
    factory = io_manager.factory
    # Declared by key beside the IO manager (Dagster takes resource keys one way per asset).
    settings: MarketFeatureSettings = context.resources.market_features
    params = settings.params()
    days = [dt.date.fromisoformat(key) for key in sorted(context.partition_keys)]
    spill_dir = Path(tempfile.mkdtemp(prefix="silver-features-"))
    try:
        computed: list[FeatureDay] = []
        completed: dict[dt.date, CompletedFeatureDay] = {}
        # Each run day's checkpoint SHA256, known before anything is written.
        hashes: dict[dt.date, str] = {}
        # Only the state the next day starts from stays in memory; earlier ones are spilled.
        previous: dict[dt.date, FeatureState] = {}
        for day in days:
            events_folder = _bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, day)
            if not partition_written(events_folder):
                raise dg.Failure(
                    description=(
                        f"bronze for {day} is not landed ({events_folder} does not exist): "
                        "materialize the bronze assets for that day first"
                    )
                )
            before = day - dt.timedelta(days=1)
            try:
                start = previous_state(
                    base,
                    day,
                    params,
                    in_run=previous,
                    bronze_landed=partition_written(
                        _bronze_folder(io_manager, BRONZE_CONNECTION_EVENTS, before)
                    ),
                )
            except (MissingStateError, FeatureStateError) as exc:
                raise dg.Failure(description=str(exc)) from exc
            bronze_folders = {
                name: _bronze_folder(io_manager, asset, day)
                for name, asset in BRONZE_INPUTS.items()
            }
            if not config.recompute:
                start_file = (
                    LakeFile(checkpoint_path(base, before), hashes[before])
                    if start.origin == "this_run"
                    else start.file
                )
                kept = completed_features_day(
                    base,
                    day,
                    bronze_folders,
                    events_folder,
                    start_file,
                    {
                        output: _silver_folder(io_manager, asset, day)
                        for asset, output in SILVER_OUTPUTS.items()
                    },
                    params,
                    factory,
                )
                if kept is not None:
                    context.log.info(f"day {day}: not computed again: {kept.reason}")
                    completed[day] = kept
                    hashes[day] = kept.checkpoint_sha256
                    previous = {}  # the next day reads this day's checkpoint
                    continue
            feature_day = compute_features_day(
                day, bronze_folders, events_folder, start, params, spill_dir
            )
            context.log.info(
                f"day {day}: {feature_day.rows} rows, state from {start.origin}, resets {feature_day.resets}"
            )
            previous = {day: feature_day.state}
            hashes[day] = checkpoint_sha256(
                feature_day.spill_state(spill_dir), spill_dir / f"{day.isoformat()}-state.parquet"
            )
            computed.append(feature_day)
        # A later day computed from the old state of the run's last day would silently go stale.
        try:
            refuse_stale_later_days(base, hashes)
        except StaleLaterDaysError as exc:
            raise dg.Failure(description=str(exc)) from exc
        link_in_run_starts(base, computed, hashes)

        def parents(files: list[LakeFile]) -> list:
            return [factory.file_parent(f.path, sha256=f.sha256) for f in files]

        by_day: dict[dt.date, FeatureDay | CompletedFeatureDay] = {
            **{d.day: d for d in computed},
            **completed,
        }
        # Output metadata lands on every partition's materialization of a range run, so it holds
        # what describes the whole run; each day's own figures (what the UI plots per partition)
        # are added per partition below and take precedence.
        metadata = {
            **run_metadata(
                context,
                started_utc=started,
                row_counts={
                    name: sum(d.rows[name] for d in by_day.values())
                    for name in SILVER_OUTPUTS.values()
                },
            ),
            "run_state_resets": dg.MetadataValue.json(
                {day.isoformat(): by_day[day].resets for day in sorted(by_day)}
            ),
            "days_completed_earlier": dg.MetadataValue.json(
                {day.isoformat(): d.reason for day, d in sorted(completed.items())}
            ),
            "feature_params": dg.MetadataValue.json(params.as_params()),
        }
        for asset, output in SILVER_OUTPUTS.items():
            outputs: dict[str, LakeOutput | CompletedPartition] = {}
            for d in computed:
                outputs[d.day.isoformat()] = LakeOutput(
                    d.reader(output),
                    parents=parents(d.parents),
                    params={"day": d.day.isoformat(), **params.as_params()},
                    schema=SILVER_SCHEMAS[output],
                )
            for day, kept in completed.items():
                outputs[day.isoformat()] = (
                    # An empty partition has no file to keep: its marker is written again.
                    LakeOutput(
                        SILVER_SCHEMAS[output].empty_table(),
                        parents=parents(kept.parents),
                        params={"day": day.isoformat(), **params.as_params()},
                        schema=SILVER_SCHEMAS[output],
                    )
                    if kept.empty[output]
                    else CompletedPartition(kept.reason)
                )
            for day, d in by_day.items():
                context.add_asset_metadata(
                    day_metadata(d, output), asset_key=asset, partition_key=day.isoformat()
                )
            yield dg.Output(
                {key: outputs[key] for key in sorted(outputs)},
                output_name=asset,
                metadata=metadata,
            )
        # Checkpoints after the outputs: a run that fails writing them leaves no state ahead of them.
        for d in computed:
            write_checkpoint(
                base,
                d.day,
                d.checkpoint_table(),
                params,
                factory=factory,
                parents=parents(d.parents),
                run_id=context.run.run_id,
            )
        for asset, output in SILVER_OUTPUTS.items():
            tables = {d.day: (lambda d=d, output=output: d.table(output)) for d in computed}
            # A kept day's checks run on its files as they are.
            tables |= {
                day: (
                    lambda day=day, asset=asset, output=output: read_symbol_partition(
                        _silver_folder(io_manager, asset, day), SILVER_SCHEMAS[output]
                    )
                )
                for day in completed
            }
            yield from feature_check_results(asset, dict(sorted(tables.items())))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
