"""Property tests of the stateful silver features: cutting a stream's events at any point and
resuming from the checkpoint gives the same rows, bit for bit, as one pass; OFI telescopes;
VWAP stays within the traded prices and imbalances within [-1, 1]."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.market.features import (
    FeatureParams,
    compute_symbol_day,
    state_from_table,
    state_to_table,
)
from pipeline_assets_tests.market_data.feature_reference import (
    Book,
    Tick,
    Trade,
    bronze_books,
    bronze_ticks,
    bronze_trades,
)

S = 1_000_000
T0 = 1_771_286_400 * S
PARAMS = FeatureParams(staleness_limit_s=45.0, depth_levels=2)

gaps = st.one_of(st.just(0), st.integers(1, 5 * S), st.integers(40 * S, 400 * S))
prices = st.integers(9_990, 10_010).map(lambda x: x / 100)
sizes = st.one_of(st.just(0.0), st.integers(1, 500).map(lambda x: x / 100))
levels = st.lists(st.tuples(st.integers(0, 3), sizes), max_size=3)


@st.composite
def streams(draw):
    n = draw(st.integers(1, 60))
    ts = T0
    books, trades, ticks = [], [], []
    for i in range(n):
        ts += draw(gaps)
        kind = draw(st.sampled_from(["book", "trade", "trade", "tick"]))
        if kind == "book":
            mid = draw(prices)
            bids = [
                (round(mid - 0.01 * (k + 1 + off), 2), s) for k, (off, s) in enumerate(draw(levels))
            ]
            asks = [
                (round(mid + 0.01 * (k + 1 + off), 2), s) for k, (off, s) in enumerate(draw(levels))
            ]
            books.append(Book(ts, bids, asks))
        elif kind == "trade":
            side = draw(st.sampled_from([None, None, "buy", "sell"]))
            trades.append(Trade(ts, draw(prices), draw(sizes), side, trade_id=f"t{i}"))
        else:
            bid = draw(prices)
            ticks.append(Tick(ts, bid, bid + 0.02, draw(prices), draw(st.integers(0, 10**6)) / 10))
    disconnects = sorted(draw(st.lists(st.integers(T0, ts + 100 * S), max_size=3)))
    return books, trades, ticks, disconnects


def _run(books, trades, ticks, disconnects, state, skip=(0, 0, 0)):
    # `skip`: rows of each channel before these (source ids continue across a cut).
    return compute_symbol_day(
        bronze_books(books, first_id=skip[0]),
        bronze_trades(trades, first_id=100_000 + skip[1]),
        bronze_ticks(ticks, first_id=200_000 + skip[2]),
        {"binance": np.array(disconnects, np.int64)},
        state,
        PARAMS,
    )


def _tables(day):
    return day.orderbook, day.trades, day.ticker


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_resuming_from_a_checkpoint_at_any_cut_equals_one_pass(stream, data) -> None:
    books, trades, ticks, disconnects = stream
    times = sorted({x.ts for x in (*books, *trades, *ticks)})
    cut = data.draw(st.sampled_from(times + [times[-1] + 1]))
    whole = _run(books, trades, ticks, disconnects, {})

    state: dict = {}
    first = _run(
        [b for b in books if b.ts < cut],
        [t for t in trades if t.ts < cut],
        [k for k in ticks if k.ts < cut],
        [d for d in disconnects if d < cut],
        state,
    )
    checkpoint = state_to_table(state)
    resumed_state = state_from_table(checkpoint)
    assert state_to_table(resumed_state).equals(checkpoint)
    second = _run(
        [b for b in books if b.ts >= cut],
        [t for t in trades if t.ts >= cut],
        [k for k in ticks if k.ts >= cut],
        [d for d in disconnects if d >= cut],
        resumed_state,
        skip=(first.orderbook.num_rows, first.trades.num_rows, first.ticker.num_rows),
    )
    for one, a, b in zip(_tables(whole), _tables(first), _tables(second)):
        assert pa.concat_tables([a, b]).equals(one)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(sizes, sizes), min_size=2, max_size=40))
def test_ofi_telescopes_when_prices_do_not_move(size_pairs) -> None:
    books = [Book(T0 + i * S, [(100.0, b)], [(100.1, a)]) for i, (b, a) in enumerate(size_pairs)]
    day = _run(books, [], [], [], {})
    ofi = day.orderbook["ofi"].to_pylist()
    assert ofi[0] is None and None not in ofi[1:]
    (b0, a0), (bn, an) = size_pairs[0], size_pairs[-1]
    assert abs(sum(ofi[1:]) - ((bn - b0) - (an - a0))) < 1e-9


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_vwap_within_traded_prices_and_imbalances_within_bounds(stream) -> None:
    books, trades, ticks, disconnects = stream
    day = _run(books, trades, ticks, disconnects, {})
    if trades:
        low, high = min(t.price for t in trades), max(t.price for t in trades)
        for column in ("vwap_1m", "vwap_5m"):
            for value in day.trades[column].to_pylist():
                assert value is None or low - 1e-9 <= value <= high + 1e-9
    for table, columns in (
        (day.trades, ("tfi_1m", "tfi_5m")),
        (day.orderbook, ("top_imbalance", "depth_imbalance")),
    ):
        for column in columns:
            values = table[column]
            assert not pc.any(pc.is_nan(values)).as_py()
            assert all(v is None or -1.0 <= v <= 1.0 for v in values.to_pylist())
