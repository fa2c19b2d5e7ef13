"""Silver features equal an independent plain-loop reference on small hand-built streams, bad
input included (crossed, one-sided and empty books, zero sizes, trades before any quote, equal
timestamps, a stream appearing mid-day, disconnects and stale gaps), with nulls, never NaN."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline_assets.lib.market.features import (
    FeatureParams,
    advance_idle_streams,
    compute_symbol_day,
)
from pipeline_assets_tests.market_data.feature_reference import (
    Book,
    Tick,
    Trade,
    bronze_books,
    bronze_ticks,
    bronze_trades,
    reference_features,
)

S = 1_000_000
T0 = 1_771_286_400 * S  # 2026-02-17T00:00:00Z
STALENESS_S = 30.0

BOOKS = [
    Book(T0 + 1 * S, [(100.0, 2.0), (99.5, 1.0)], [(100.5, 1.0), (101.0, 3.0)]),
    Book(T0 + 2 * S, [(100.0, 3.0), (99.5, 1.0)], [(100.5, 1.0), (101.0, 3.0)]),  # bid size up
    Book(T0 + 3 * S, [(100.5, 1.0)], [(100.5, 2.0)]),  # locked, bid price up
    Book(T0 + 4 * S, [(101.0, 1.0)], [(100.8, 1.0)]),  # crossed
    Book(T0 + 5 * S, [(100.0, 0.0)], [(100.4, 0.0)]),  # zero sizes
    Book(T0 + 6 * S, [], [(100.4, 1.0)]),  # one-sided
    Book(T0 + 7 * S, [], []),  # empty
    Book(T0 + 8 * S, [(100.1, 1.0)], [(100.3, 2.0)]),
    Book(T0 + 8 * S, [(100.2, 1.0)], [(100.3, 2.0)]),  # same timestamp as the previous one
    Book(T0 + 60 * S, [(100.2, 1.5)], [(100.4, 2.0)]),  # after a stale gap (> 30 s)
    Book(T0 + 70 * S, [(100.2, 1.5)], [(100.4, 2.5)]),  # after a disconnect at 65 s
    Book(T0 + 71 * S, [(100.1, 1.5)], [(100.3, 2.5)]),
]
TRADES = [
    Trade(T0 + 0 * S, 100.2, 0.5),  # before any quote: no side can be told
    Trade(T0 + 1 * S, 100.4, 0.2),  # at the same time as a book: the book comes first
    Trade(T0 + 2 * S, 100.25, 0.3),  # at the mid -> tick rule (down)
    Trade(T0 + 2 * S + 1, 100.25, 0.1),  # at the mid, no change -> last nonzero tick
    Trade(T0 + 3 * S, 100.6, 0.0, side="buy"),  # zero size, side from the feed
    Trade(T0 + 8 * S, 100.1, 1.0, side="sell"),
    Trade(T0 + 62 * S, 100.3, 0.7),  # quote rule against the 60 s book
    Trade(T0 + 66 * S, 100.3, 0.4),  # after the disconnect: no quote, tick rule has no history
    Trade(T0 + 71 * S, 100.2, 0.9),
    Trade(T0 + 140 * S, 100.4, 0.2),  # stale gap again
]
TICKS = [
    Tick(T0 + 1 * S, 100.0, 100.5, 100.2, 1000.0),
    Tick(T0 + 9 * S, 100.1, 100.3, 100.1, 1001.5),
    Tick(T0 + 61 * S, 100.2, 100.4, 100.3, 1002.0),
]
DISCONNECTS = [T0 + 65 * S]


def _compute(books=BOOKS, trades=TRADES, ticks=TICKS, disconnects=DISCONNECTS, state=None):
    return compute_symbol_day(
        bronze_books(books),
        bronze_trades(trades),
        bronze_ticks(ticks),
        {"binance": np.array(disconnects, np.int64)},
        {} if state is None else state,
        FeatureParams(staleness_limit_s=STALENESS_S),
    )


def _assert_rows(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for i, (got, want) in enumerate(zip(actual, expected)):
        for name, value in want.items():
            if name not in got:
                continue
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (
                    i,
                    name,
                    got[name],
                    value,
                )
            else:
                assert got[name] == value, (i, name, got[name], value)


@pytest.fixture(scope="module")
def computed():
    return _compute(), reference_features(BOOKS, TRADES, TICKS, DISCONNECTS, STALENESS_S)


def test_order_book_features_equal_the_reference(computed) -> None:
    day, ref = computed
    _assert_rows(day.orderbook.to_pylist(), ref.books)


def test_trade_features_equal_the_reference(computed) -> None:
    day, ref = computed
    _assert_rows(day.trades.to_pylist(), ref.trades)


def test_ticker_features_equal_the_reference(computed) -> None:
    day, ref = computed
    _assert_rows(day.ticker.to_pylist(), ref.ticks)


def test_bad_books_have_defined_results(computed) -> None:
    rows = computed[0].orderbook.to_pylist()
    assert [r["book_status"] for r in rows[2:7]] == [
        "locked",
        "crossed",
        "ok",
        "one_sided",
        "empty",
    ]
    assert rows[2]["spread"] == 0.0 and rows[3]["spread"] < 0
    # Zero sizes: a mid and spread, but no weighted mid or imbalance (0/0 is null, not NaN).
    assert rows[4]["mid"] == pytest.approx(100.2) and rows[4]["weighted_mid"] is None
    assert rows[4]["top_imbalance"] is None and rows[4]["depth_imbalance"] is None
    # One-sided and empty books: no mid; the next two-sided book has no OFI against them.
    assert rows[5]["mid"] is None and rows[6]["best_bid"] is None and rows[7]["ofi"] is None
    assert rows[8]["ofi"] is not None  # two books at the same time still chain in bronze order


def test_resets_name_their_reason_on_the_first_row_after_them(computed) -> None:
    day = computed[0]
    assert day.orderbook["state_reset"].to_pylist()[0] == "no_prior_state"
    assert day.orderbook["state_reset"].to_pylist()[9:11] == ["stale_gap", "disconnect"]
    assert day.trades["state_reset"].to_pylist() == [
        "no_prior_state",
        None,
        None,
        None,
        None,
        None,
        "stale_gap",
        "disconnect",
        None,
        "stale_gap",
    ]
    assert day.resets == {"orderbook": 3, "trades": 4, "ticker": 2}


def test_trades_before_any_quote_and_after_a_disconnect_have_no_quote(computed) -> None:
    rows = computed[0].trades.to_pylist()
    assert rows[0]["quote_mid"] is None and rows[0]["side_source"] == "unknown"
    assert rows[0]["aggressor_side"] is None and rows[0]["signed_volume"] == 0.0
    assert rows[1]["quote_mid"] == pytest.approx(100.25) and rows[1]["side_source"] == "quote_rule"
    assert [r["side_source"] for r in rows[2:5]] == ["tick_rule", "tick_rule", "feed"]
    assert rows[7]["quote_mid"] is None and rows[7]["side_source"] == "unknown"


def test_no_float_column_holds_nan(computed) -> None:
    day = computed[0]
    for table in (day.orderbook, day.trades, day.ticker):
        for name, column in zip(table.column_names, table.columns):
            if pa.types.is_floating(column.type):
                assert not pc.any(pc.is_nan(column)).as_py(), name


def test_a_stream_appearing_mid_day_starts_with_no_prior_state() -> None:
    late = [
        Book(T0 + 3600 * S, [(50.0, 1.0)], [(50.5, 1.0)]),
        Book(T0 + 3601 * S, [(50.0, 2.0)], [(50.5, 1.0)]),
    ]
    books = pa.concat_tables(
        [bronze_books(BOOKS), bronze_books(late, exchange="coinbase", first_id=500)]
    )
    books = books.sort_by([("event_ts_utc", "ascending"), ("exchange", "ascending")])
    state: dict = {}
    day = compute_symbol_day(
        books,
        bronze_trades([]),
        bronze_ticks([]),
        {},
        state,
        FeatureParams(staleness_limit_s=STALENESS_S),
    )
    rows = [r for r in day.orderbook.to_pylist() if r["exchange"] == "coinbase"]
    assert [r["state_reset"] for r in rows] == ["no_prior_state", None]
    assert rows[1]["ofi"] == pytest.approx(1.0)
    assert set(state) == {("binance", "BTC-USDT"), ("coinbase", "BTC-USDT")}
    # Output rows keep the bronze order.
    assert day.orderbook["source_id"].to_pylist() == books["source_id"].to_pylist()


def test_rolling_windows_forget_trades_older_than_the_window() -> None:
    trades = [
        Trade(T0 + k * 20 * S, 100.0 + k, 1.0, side="buy" if k % 2 else "sell") for k in range(20)
    ]
    day = _compute(books=[], trades=trades, ticks=[], disconnects=[])
    ref = reference_features([], trades, [], [], 1000.0)
    day = compute_symbol_day(
        bronze_books([]),
        bronze_trades(trades),
        bronze_ticks([]),
        {},
        {},
        FeatureParams(staleness_limit_s=1000.0),
    )
    _assert_rows(day.trades.to_pylist(), ref.trades)
    last = day.trades.to_pylist()[-1]
    # (t - 60 s, t] holds the last three trades: 117 (sell), 118 (buy), 119 (sell)... by parity.
    assert last["vwap_1m"] == pytest.approx((117 + 118 + 119) / 3)
    assert not math.isnan(last["tfi_5m"])


def test_a_disconnect_on_a_day_without_rows_resets_the_stream_on_its_next_row() -> None:
    params = FeatureParams(staleness_limit_s=10 * 86_400.0)  # only the disconnect can reset
    day = 86_400 * S
    quote = ([(1.0, 1.0)], [(1.1, 1.0)])
    state: dict = {}
    compute_symbol_day(
        bronze_books([Book(T0 + S, *quote)]), bronze_trades([]), bronze_ticks([]), {}, state, params
    )
    # Day 2: no rows of the stream, one disconnect of its exchange.
    advance_idle_streams(state, set(), {"binance": np.array([T0 + day], np.int64)})
    assert state[("binance", "BTC-USDT")].pending_disconnect
    out = compute_symbol_day(
        bronze_books([Book(T0 + 2 * day, *quote)], first_id=9),
        bronze_trades([]),
        bronze_ticks([]),
        {},
        state,
        params,
    )
    assert out.orderbook["state_reset"].to_pylist() == ["disconnect"]
    assert not state[("binance", "BTC-USDT")].pending_disconnect
