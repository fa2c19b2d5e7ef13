"""Gold one-minute bars from the silver features of one symbol's day (plain numpy, no Dagster).

Per stream (exchange, symbol) and UTC minute with at least one order book snapshot or trade:
OHLC and volumes from the trades, book statistics from the snapshots. Sums run left to right in
event order (`np.add.reduceat`), so the same silver files always give the same bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.core import arrow_schema
from contracts.market_features import GoldBars1m

BARS_SCHEMA = arrow_schema(GoldBars1m)
MINUTE_US = 60_000_000


def _np(column: pa.ChunkedArray | pa.Array, dtype: type = float) -> np.ndarray:
    if dtype is float:
        return pc.fill_null(pc.cast(column, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False)


def _minutes(table: pa.Table) -> np.ndarray:
    us = pc.cast(pc.cast(table["event_ts_utc"], pa.timestamp("us", tz="UTC")), pa.int64())
    return _np(us, int) // MINUTE_US


def _reduce(ufunc: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return ufunc.reduceat(values, starts) if len(values) else np.empty(0)


def _groups(minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct minutes (input sorted), the first index of each, and the last."""
    if not len(minutes):
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, minutes[1:] != minutes[:-1]])
    ends = np.r_[starts[1:], len(minutes)] - 1
    return minutes[starts], starts, ends


def _stream_bars(
    exchange: str, symbol: str, books: pa.Table, trades: pa.Table
) -> dict[str, np.ndarray | list]:
    t_min = _minutes(trades)
    price, size = _np(trades["price"]), _np(trades["size"])
    is_buy = _np(pc.fill_null(pc.equal(trades["aggressor_side"], "buy"), False), bool)
    is_sell = _np(pc.fill_null(pc.equal(trades["aggressor_side"], "sell"), False), bool)
    t_keys, t_starts, t_ends = _groups(t_min)
    buy = _reduce(np.add, np.where(is_buy, size, 0.0), t_starts)
    sell = _reduce(np.add, np.where(is_sell, size, 0.0), t_starts)
    unknown = _reduce(np.add, np.where(~is_buy & ~is_sell, size, 0.0), t_starts)
    volume = buy + sell + unknown
    notional = _reduce(np.add, price * size, t_starts)
    t_resets = _reduce(
        np.add, _np(pc.is_valid(trades["state_reset"]), int).astype(np.int64), t_starts
    )

    b_min = _minutes(books)
    b_keys, b_starts, b_ends = _groups(b_min)
    ofi = np.nan_to_num(_np(books["ofi"]))
    spread = _np(books["spread"])
    has_spread = ~np.isnan(spread)
    ret = _np(books["mid_log_return"])
    has_ret = ~np.isnan(ret)
    mid = _np(books["mid"])
    spread_sum = _reduce(np.add, np.where(has_spread, spread, 0.0), b_starts)
    spread_n = _reduce(np.add, has_spread.astype(np.int64), b_starts)
    rv = _reduce(np.add, np.where(has_ret, ret * ret, 0.0), b_starts)
    rv_n = _reduce(np.add, has_ret.astype(np.int64), b_starts)
    idx = np.arange(len(mid))
    last_with_mid = np.maximum.accumulate(np.where(~np.isnan(mid), idx, -1)) if len(mid) else idx
    last_mid_idx = last_with_mid[b_ends] if len(b_ends) else b_ends
    b_resets = _reduce(
        np.add, _np(pc.is_valid(books["state_reset"]), int).astype(np.int64), b_starts
    )

    keys = np.union1d(t_keys, b_keys)
    ti = np.searchsorted(t_keys, keys)
    bi = np.searchsorted(b_keys, keys)
    has_t = (
        (ti < len(t_keys)) & (t_keys[np.minimum(ti, max(len(t_keys) - 1, 0))] == keys)
        if len(t_keys)
        else np.zeros(len(keys), bool)
    )
    has_b = (
        (bi < len(b_keys)) & (b_keys[np.minimum(bi, max(len(b_keys) - 1, 0))] == keys)
        if len(b_keys)
        else np.zeros(len(keys), bool)
    )
    n = len(keys)

    def pick(
        values: np.ndarray, index: np.ndarray, present: np.ndarray, fill: float = np.nan
    ) -> np.ndarray:
        out = np.full(n, fill, dtype=float)
        if len(values):
            out[present] = values[index[present]]
        return out

    def pick_int(values: np.ndarray, index: np.ndarray, present: np.ndarray) -> np.ndarray:
        out = np.zeros(n, np.int64)
        if len(values):
            out[present] = values[index[present]]
        return out

    vol = pick(volume, ti, has_t, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(
            vol > 0, pick(notional, ti, has_t, 0.0) / np.where(vol > 0, vol, 1.0), np.nan
        )
        tfi = np.where(
            vol > 0,
            (pick(buy, ti, has_t, 0.0) - pick(sell, ti, has_t, 0.0)) / np.where(vol > 0, vol, 1.0),
            np.nan,
        )
        spread_count = pick(spread_n.astype(float), bi, has_b, 0.0)
        mean_spread = np.where(
            spread_count > 0,
            pick(spread_sum, bi, has_b, 0.0) / np.where(spread_count > 0, spread_count, 1.0),
            np.nan,
        )
    last_mid = np.full(n, np.nan)
    if len(mid):
        chosen = np.where(has_b, last_mid_idx[np.minimum(bi, len(b_keys) - 1)], -1)
        ok = chosen >= 0
        last_mid[ok] = mid[chosen[ok]]
    rv_count = pick(rv_n.astype(float), bi, has_b, 0.0)
    realized = np.where(rv_count > 0, pick(rv, bi, has_b, 0.0), np.nan)
    count_t = pick_int(np.diff(np.r_[t_starts, len(t_min)]), ti, has_t)
    count_b = pick_int(np.diff(np.r_[b_starts, len(b_min)]), bi, has_b)
    return {
        "exchange": [exchange] * n,
        "symbol": [symbol] * n,
        "minute_start_utc": keys * MINUTE_US,
        "open": pick(price[t_starts] if len(t_starts) else np.empty(0), ti, has_t),
        "high": pick(_reduce(np.maximum, price, t_starts), ti, has_t),
        "low": pick(_reduce(np.minimum, price, t_starts), ti, has_t),
        "close": pick(price[t_ends] if len(t_ends) else np.empty(0), ti, has_t),
        "volume": vol,
        "buy_volume": pick(buy, ti, has_t, 0.0),
        "sell_volume": pick(sell, ti, has_t, 0.0),
        "unknown_volume": pick(unknown, ti, has_t, 0.0),
        "trade_count": count_t,
        "vwap": vwap,
        "tfi": np.clip(tfi, -1.0, 1.0),
        "ofi_sum": pick(_reduce(np.add, ofi, b_starts), bi, has_b, 0.0),
        "book_count": count_b,
        "mean_spread": mean_spread,
        "last_mid": last_mid,
        "realized_variance": realized,
        "state_resets": pick_int(t_resets, ti, has_t) + pick_int(b_resets, bi, has_b),
    }


def _rows_of(table: pa.Table, exchange: str) -> pa.Table:
    return table.filter(pc.equal(table["exchange"], exchange))


def bars_for_symbol(books: pa.Table, trades: pa.Table) -> pa.Table:
    """The bars of one symbol's silver order book and trade rows of a day (any exchanges),
    ordered by minute, then exchange."""
    exchanges = sorted(set(books["exchange"].to_pylist()) | set(trades["exchange"].to_pylist()))
    parts = []
    for exchange in exchanges:
        b, t = _rows_of(books, exchange), _rows_of(trades, exchange)
        symbol = (t["symbol"][0] if t.num_rows else b["symbol"][0]).as_py()
        cols = _stream_bars(exchange, symbol, b, t)
        arrays = []
        for f in BARS_SCHEMA:
            values = cols[f.name]
            if f.name == "minute_start_utc":
                arrays.append(pa.array(values, pa.int64()).cast(f.type))
            elif pa.types.is_floating(f.type):
                arr = np.asarray(values, float)
                mask = np.isnan(arr) if f.nullable else None
                arrays.append(
                    pa.array(
                        np.where(np.isnan(arr), 0.0, arr) if mask is not None else arr,
                        f.type,
                        mask=mask,
                    )
                )
            else:
                arrays.append(pa.array(values, f.type))
        parts.append(pa.Table.from_arrays(arrays, schema=BARS_SCHEMA))
    if not parts:
        return BARS_SCHEMA.empty_table()
    return (
        pa.concat_tables(parts)
        .sort_by([("minute_start_utc", "ascending"), ("exchange", "ascending")])
        .combine_chunks()
    )
