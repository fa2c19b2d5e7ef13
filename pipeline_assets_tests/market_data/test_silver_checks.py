"""Each silver and gold check fails on a table that breaks its one property, names the day, and
passes on the table without the fault."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from contracts.core import arrow_schema
from contracts.market_features import GoldBars1m, SilverOrderbookFeatures
from pipeline_assets.defs.market_data.features_checks import (
    EVENT_DATE_MATCHES_PARTITION,
    GOLD_BARS_1M,
    IMBALANCES_WITHIN_BOUNDS,
    NO_DUPLICATE_KEYS,
    OHLC_CONSISTENT,
    SCHEMA_MATCHES_CONTRACT,
    SILVER_ORDERBOOK_FEATURES,
    SPREAD_NOT_NEGATIVE_UNLESS_CROSSED,
    VOLUME_EQUALS_BUY_SELL_UNKNOWN,
    VWAP_WITHIN_PRICE_RANGE,
    feature_check_results,
)

DAY = dt.date(2026, 2, 17)
TS = dt.datetime(2026, 2, 17, 12, tzinfo=dt.UTC)


def _book(**overrides) -> dict:
    row = {name: None for name in arrow_schema(SilverOrderbookFeatures).names}
    row.update(
        exchange="binance",
        symbol="BTC-USDT",
        event_ts_utc=TS,
        source_file="w.db",
        source_id=1,
        book_status="ok",
        spread=0.1,
        top_imbalance=0.2,
        depth_imbalance=-0.3,
    )
    row.update(overrides)
    return row


def _bar(**overrides) -> dict:
    row = {name: None for name in arrow_schema(GoldBars1m).names}
    row.update(
        exchange="binance",
        symbol="BTC-USDT",
        minute_start_utc=TS,
        open=10.0,
        high=12.0,
        low=9.0,
        close=11.0,
        volume=3.0,
        buy_volume=1.0,
        sell_volume=1.5,
        unknown_volume=0.5,
        trade_count=3,
        vwap=10.5,
        tfi=-0.1,
        ofi_sum=0.0,
        book_count=0,
        state_resets=0,
    )
    row.update(overrides)
    return row


def _results(asset: str, rows: list[dict], model) -> dict[str, object]:
    table = pa.Table.from_pylist(rows, schema=arrow_schema(model))
    return {r.check_name: r for r in feature_check_results(asset, {DAY: lambda: table})}


def _only_failing(results: dict, name: str) -> None:
    assert not results[name].passed and results[name].metadata["failed_days"].value == [
        DAY.isoformat()
    ]
    assert all(r.passed for n, r in results.items() if n != name), [
        n for n, r in results.items() if not r.passed
    ]


def test_good_tables_pass_every_check() -> None:
    assert all(
        r.passed
        for r in _results(SILVER_ORDERBOOK_FEATURES, [_book()], SilverOrderbookFeatures).values()
    )
    assert all(r.passed for r in _results(GOLD_BARS_1M, [_bar()], GoldBars1m).values())


def test_a_negative_spread_without_a_crossed_book_fails() -> None:
    _only_failing(
        _results(SILVER_ORDERBOOK_FEATURES, [_book(spread=-0.1)], SilverOrderbookFeatures),
        SPREAD_NOT_NEGATIVE_UNLESS_CROSSED,
    )
    assert _results(
        SILVER_ORDERBOOK_FEATURES,
        [_book(spread=-0.1, book_status="crossed")],
        SilverOrderbookFeatures,
    )[SPREAD_NOT_NEGATIVE_UNLESS_CROSSED].passed


def test_an_imbalance_outside_minus_one_one_fails() -> None:
    _only_failing(
        _results(SILVER_ORDERBOOK_FEATURES, [_book(depth_imbalance=1.01)], SilverOrderbookFeatures),
        IMBALANCES_WITHIN_BOUNDS,
    )


def test_a_repeated_key_fails() -> None:
    _only_failing(
        _results(SILVER_ORDERBOOK_FEATURES, [_book(), _book()], SilverOrderbookFeatures),
        NO_DUPLICATE_KEYS,
    )


def test_a_row_of_another_day_fails() -> None:
    _only_failing(
        _results(
            SILVER_ORDERBOOK_FEATURES,
            [_book(event_ts_utc=TS + dt.timedelta(days=1))],
            SilverOrderbookFeatures,
        ),
        EVENT_DATE_MATCHES_PARTITION,
    )


def test_a_missing_column_fails_the_schema_check() -> None:
    table = pa.Table.from_pylist(
        [_book()], schema=arrow_schema(SilverOrderbookFeatures)
    ).drop_columns(["ofi"])
    results = {
        r.check_name: r
        for r in feature_check_results(SILVER_ORDERBOOK_FEATURES, {DAY: lambda: table})
    }
    assert not results[SCHEMA_MATCHES_CONTRACT].passed


def test_bar_checks_fail_on_their_property() -> None:
    _only_failing(_results(GOLD_BARS_1M, [_bar(open=12.5)], GoldBars1m), OHLC_CONSISTENT)
    _only_failing(
        _results(GOLD_BARS_1M, [_bar(volume=3.5)], GoldBars1m), VOLUME_EQUALS_BUY_SELL_UNKNOWN
    )
    _only_failing(_results(GOLD_BARS_1M, [_bar(vwap=13.0)], GoldBars1m), VWAP_WITHIN_PRICE_RANGE)
    _only_failing(_results(GOLD_BARS_1M, [_bar(tfi=-1.5)], GoldBars1m), IMBALANCES_WITHIN_BOUNDS)
