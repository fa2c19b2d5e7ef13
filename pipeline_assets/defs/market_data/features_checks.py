"""Asset checks of the silver features and gold bars: each tests one property of every day a run wrote.

As for bronze (see `checks.py`), the checks are `check_specs` of the asset and are evaluated in its
step, on the very rows written (the spilled day, memory-mapped), with one result per run holding
each day's figures and naming the failing days. Schema, keys and the event date block; the value
checks (spread sign, imbalance bounds, OHLC, volume identity) block too: a failing one means the
feature code is wrong, not the market.
"""

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.core import ContractModel, key_duplicates, schema_violations
from contracts.market_features import (
    GoldBars1m,
    SilverOrderbookFeatures,
    SilverTickerFeatures,
    SilverTradeFeatures,
)
from pipeline_assets.defs.market_data.checks import (
    EVENT_DATE_MATCHES_PARTITION,
    NO_DUPLICATE_KEYS,
    SCHEMA_MATCHES_CONTRACT,
)

SILVER_ORDERBOOK_FEATURES = "silver_orderbook_features"
SILVER_TRADE_FEATURES = "silver_trade_features"
SILVER_TICKER_FEATURES = "silver_ticker_features"
GOLD_BARS_1M = "gold_bars_1m"

SPREAD_NOT_NEGATIVE_UNLESS_CROSSED = "spread_not_negative_unless_crossed"
IMBALANCES_WITHIN_BOUNDS = "imbalances_within_bounds"
OHLC_CONSISTENT = "ohlc_consistent"
VOLUME_EQUALS_BUY_SELL_UNKNOWN = "volume_equals_buy_sell_unknown"
VWAP_WITHIN_PRICE_RANGE = "vwap_within_price_range"

CONTRACT_OF: dict[str, type[ContractModel]] = {
    SILVER_ORDERBOOK_FEATURES: SilverOrderbookFeatures,
    SILVER_TRADE_FEATURES: SilverTradeFeatures,
    SILVER_TICKER_FEATURES: SilverTickerFeatures,
    GOLD_BARS_1M: GoldBars1m,
}
_TIME_COLUMN = {GOLD_BARS_1M: "minute_start_utc"}
_IMBALANCE_COLUMNS = {
    SILVER_ORDERBOOK_FEATURES: ("top_imbalance", "depth_imbalance"),
    SILVER_TRADE_FEATURES: ("tfi_1m", "tfi_5m"),
    GOLD_BARS_1M: ("tfi",),
}

_DESCRIPTIONS = {
    SCHEMA_MATCHES_CONTRACT: "Passes when the columns written (names, types, nullability) are exactly the contract's.",
    NO_DUPLICATE_KEYS: "Passes when the contract's primary key is unique within each day written.",
    EVENT_DATE_MATCHES_PARTITION: (
        "Passes when every row's time (event_ts_utc, or minute_start_utc for bars) falls on its "
        "partition's UTC date."
    ),
    SPREAD_NOT_NEGATIVE_UNLESS_CROSSED: (
        "Passes when every snapshot with a negative spread has book_status 'crossed' (and no "
        "'crossed' snapshot has a spread of 0 or more)."
    ),
    IMBALANCES_WITHIN_BOUNDS: "Passes when every non-null imbalance value is within [-1, 1].",
    OHLC_CONSISTENT: "Passes when every bar with trades has low <= open, close <= high.",
    VOLUME_EQUALS_BUY_SELL_UNKNOWN: (
        "Passes when every bar's volume equals buy_volume + sell_volume + unknown_volume exactly "
        "(volume is defined as that sum)."
    ),
    VWAP_WITHIN_PRICE_RANGE: (
        "Passes when every bar's vwap lies within [low, high] (up to 1e-9 relative rounding)."
    ),
}

CHECKS_BY_ASSET: dict[str, tuple[str, ...]] = {
    SILVER_ORDERBOOK_FEATURES: (
        SCHEMA_MATCHES_CONTRACT,
        NO_DUPLICATE_KEYS,
        EVENT_DATE_MATCHES_PARTITION,
        SPREAD_NOT_NEGATIVE_UNLESS_CROSSED,
        IMBALANCES_WITHIN_BOUNDS,
    ),
    SILVER_TRADE_FEATURES: (
        SCHEMA_MATCHES_CONTRACT,
        NO_DUPLICATE_KEYS,
        EVENT_DATE_MATCHES_PARTITION,
        IMBALANCES_WITHIN_BOUNDS,
    ),
    SILVER_TICKER_FEATURES: (
        SCHEMA_MATCHES_CONTRACT,
        NO_DUPLICATE_KEYS,
        EVENT_DATE_MATCHES_PARTITION,
    ),
    GOLD_BARS_1M: (
        SCHEMA_MATCHES_CONTRACT,
        NO_DUPLICATE_KEYS,
        EVENT_DATE_MATCHES_PARTITION,
        OHLC_CONSISTENT,
        VOLUME_EQUALS_BUY_SELL_UNKNOWN,
        VWAP_WITHIN_PRICE_RANGE,
        IMBALANCES_WITHIN_BOUNDS,
    ),
}


def feature_check_specs(assets: Sequence[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=_DESCRIPTIONS[name], blocking=True)
        for asset in assets
        for name in CHECKS_BY_ASSET[asset]
    ]


# --- one property each: (passed, figures) -----------------------------------------------------

Evaluator = Callable[[str, pa.Table, dt.date], tuple[bool, dict[str, Any]]]


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def _schema(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    problems = schema_violations(table.schema, CONTRACT_OF[asset])
    return not problems, {"violations": problems}


def _keys(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    key = list(CONTRACT_OF[asset].contract.primary_key)
    dupes = key_duplicates(table, key, limit=5)
    figures: dict[str, Any] = {"rows": table.num_rows, "primary_key": key}
    if dupes:
        figures["duplicate_keys"] = [{k: str(v) for k, v in d.items()} for d in dupes]
    return not dupes, figures


def _event_date(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    dates = pc.cast(table[_TIME_COLUMN.get(asset, "event_ts_utc")], pa.date32())
    elsewhere = table.num_rows - _count(pc.equal(dates, pa.scalar(day, pa.date32())))
    return elsewhere == 0, {"rows": table.num_rows, "rows_on_other_dates": elsewhere}


def _spread(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    crossed = pc.equal(table["book_status"], "crossed")
    negative = pc.less(table["spread"], 0.0)
    bad = _count(pc.and_(negative, pc.invert(crossed))) + _count(
        pc.and_(crossed, pc.greater_equal(table["spread"], 0.0))
    )
    return bad == 0, {
        "negative_spreads": _count(negative),
        "crossed_snapshots": _count(crossed),
        "violations": bad,
    }


def _imbalances(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    figures: dict[str, Any] = {}
    for column in _IMBALANCE_COLUMNS[asset]:
        values = table[column]
        outside = _count(pc.or_(pc.less(values, -1.0), pc.greater(values, 1.0)))
        figures[column] = {"outside": outside, "nulls": values.null_count}
    return all(f["outside"] == 0 for f in figures.values()), figures


def _ohlc(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    low, high = table["low"], table["high"]
    bad = pc.or_(
        pc.or_(pc.greater(low, table["open"]), pc.greater(low, table["close"])),
        pc.or_(pc.greater(table["open"], high), pc.greater(table["close"], high)),
    )
    count = _count(bad)
    return count == 0, {"bars": table.num_rows, "inconsistent_bars": count}


def _volume(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    total = pc.add(pc.add(table["buy_volume"], table["sell_volume"]), table["unknown_volume"])
    count = _count(pc.not_equal(table["volume"], total))
    return count == 0, {"bars": table.num_rows, "mismatched_bars": count}


def _vwap(asset: str, table: pa.Table, day: dt.date) -> tuple[bool, dict[str, Any]]:
    vwap, low, high = (
        np.asarray(pc.fill_null(table[c], np.nan).to_numpy(zero_copy_only=False), float)
        for c in ("vwap", "low", "high")
    )
    tol = 1e-9 * np.abs(np.nan_to_num(high))
    with np.errstate(invalid="ignore"):
        bad = (vwap < low - tol) | (vwap > high + tol)
    count = int(np.count_nonzero(bad))
    return count == 0, {"bars": table.num_rows, "vwap_outside_range": count}


_EVALUATORS: dict[str, Evaluator] = {
    SCHEMA_MATCHES_CONTRACT: _schema,
    NO_DUPLICATE_KEYS: _keys,
    EVENT_DATE_MATCHES_PARTITION: _event_date,
    SPREAD_NOT_NEGATIVE_UNLESS_CROSSED: _spread,
    IMBALANCES_WITHIN_BOUNDS: _imbalances,
    OHLC_CONSISTENT: _ohlc,
    VOLUME_EQUALS_BUY_SELL_UNKNOWN: _volume,
    VWAP_WITHIN_PRICE_RANGE: _vwap,
}


def feature_check_results(
    asset: str, tables_by_day: Mapping[dt.date, Callable[[], pa.Table]]
) -> Iterator[dg.AssetCheckResult]:
    """One result per check of `asset`, over every day of the run (each day's table is loaded
    once, through the given callable)."""
    figures: dict[str, dict[str, Any]] = {name: {} for name in CHECKS_BY_ASSET[asset]}
    failed: dict[str, list[str]] = {name: [] for name in CHECKS_BY_ASSET[asset]}
    for day, load in tables_by_day.items():
        table = load()
        for name in CHECKS_BY_ASSET[asset]:
            passed, day_figures = _EVALUATORS[name](asset, table, day)
            figures[name][day.isoformat()] = {"passed": passed, **day_figures}
            if not passed:
                failed[name].append(day.isoformat())
    for name in CHECKS_BY_ASSET[asset]:
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=not failed[name],
            # What the UI shows beside a failure: each failing day with its figures.
            description="; ".join(
                f"{name} failed on {day}: "
                + json.dumps(
                    {k: v for k, v in figures[name][day].items() if k != "passed"}, default=str
                )
                for day in failed[name]
            )[:2000]
            or None,
            metadata={
                "days_checked": dg.MetadataValue.int(len(tables_by_day)),
                "failed_days": dg.MetadataValue.json(failed[name]),
                "by_day": dg.MetadataValue.json(figures[name]),
            },
        )
