"""Silver market features: stateful microstructure features of one UTC day, from its bronze rows
and the state at the end of the previous day. Plain functions (numpy and pyarrow), no Dagster:
every run path (one day, a range in one run, the watcher) calls `compute_symbol_day` the same way.

A *stream* is one (exchange, symbol). Its events of the three channels are ordered by event time,
then channel (order book, ticker, trades), then bronze order (source_file, source_id). The
stream's state restarts (a *stream reset*) at an event when

- the stream has no earlier event in the checkpoint chain (`no_prior_state`),
- a `disconnected` connection event of the exchange has a time in (previous event, this event]
  (`disconnect`), or
- the previous event of the stream is more than `staleness_limit_s` older (`stale_gap`).

Each channel then ignores its rows before the reset: the first row of a channel at or after a
stream reset carries the reason in `state_reset`, and the features that need the previous row of
the channel (OFI, mid return, tick rule, rolling windows, ticker changes) start again there.

Rolling-window sums are computed so that they do not depend on where the event sequence is cut
into days: each window W sums block-relative prefix sums over blocks of W aligned to the epoch,
and the checkpoint keeps every trade since the start of the previous block. Resuming from a
checkpoint at any point therefore gives the same bits as one pass
(`pipeline_assets_tests/market_data/test_silver_state_properties.py`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.core import arrow_schema
from contracts.market_features import (
    MarketFeatureState,
    SilverOrderbookFeatures,
    SilverTickerFeatures,
    SilverTradeFeatures,
)

ORDERBOOK_SCHEMA = arrow_schema(SilverOrderbookFeatures)
TRADES_SCHEMA = arrow_schema(SilverTradeFeatures)
TICKER_SCHEMA = arrow_schema(SilverTickerFeatures)
STATE_SCHEMA = arrow_schema(MarketFeatureState)

US = 1_000_000
WINDOWS_S: tuple[int, ...] = (60, 300)  # tfi_1m/vwap_1m, tfi_5m/vwap_5m
DEFAULT_STALENESS_LIMIT_S = 300.0
DEFAULT_DEPTH_LEVELS = 5

# Reset reasons, by code (0: the state continues).
RESET_REASONS = (None, "no_prior_state", "disconnect", "stale_gap")
NO_PRIOR, DISCONNECT, STALE = 1, 2, 3
BOOK, TICKER, TRADES = 0, 1, 2  # channel rank at equal event times
CHANNEL_NAMES = ("orderbook", "ticker", "trades")


class FeatureStateError(ValueError):
    """A checkpoint that cannot be used: wrong parameters, or not a feature-state table."""


@dataclass(frozen=True)
class FeatureParams:
    staleness_limit_s: float = DEFAULT_STALENESS_LIMIT_S
    depth_levels: int = DEFAULT_DEPTH_LEVELS

    def __post_init__(self) -> None:
        if not (self.staleness_limit_s > 0 and math.isfinite(self.staleness_limit_s)):
            raise ValueError(f"staleness_limit_s={self.staleness_limit_s}: expected a number > 0")
        if self.depth_levels < 1:
            raise ValueError(f"depth_levels={self.depth_levels}: expected an integer >= 1")

    @property
    def staleness_us(self) -> int:
        return round(self.staleness_limit_s * US)

    def as_params(self) -> dict[str, object]:
        return {
            "staleness_limit_s": self.staleness_limit_s,
            "depth_levels": self.depth_levels,
            "windows_s": list(WINDOWS_S),
        }


@dataclass
class StreamState:
    """One stream's state between two events (at a day's end: the checkpoint)."""

    last_ts: int | None = None  # last event of any channel
    pending_disconnect: bool = False  # a disconnect after last_ts
    # Per channel: time of its last row, the reset code pending since it (0: none).
    channel_ts: list[int | None] = field(default_factory=lambda: [None, None, None])
    channel_pending: list[int] = field(default_factory=lambda: [0, 0, 0])
    book: tuple[float, float, float, float, float] | None = (
        None  # bid, bid size, ask, ask size, mid
    )
    ticker: tuple[float, float] | None = None  # last, volume_24h
    last_price: float | None = None
    tick_sign: float = 0.0  # last nonzero price change sign in the current segment
    # Trades the rolling windows may still need: time, price, size, signed volume, in segment.
    window_ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    window_values: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    window_in_segment: np.ndarray = field(default_factory=lambda: np.empty(0, bool))


FeatureState = dict[tuple[str, str], StreamState]


# ---------------------------------------------------------------------------------------------
# Small vectorized helpers
# ---------------------------------------------------------------------------------------------


def _floats(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return pc.fill_null(pc.cast(array, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _ts_us(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.cast(pc.cast(array, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(
        zero_copy_only=False
    )


def _nullable(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """float64 values with nulls where `valid` is false (or the value is not finite)."""
    mask = ~(valid & np.isfinite(values))
    return pa.array(np.where(mask, 0.0, values), pa.float64(), mask=mask)


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of values[offsets[i]:offsets[i+1]] for each i, added left to right; 0 when empty."""
    n = len(offsets) - 1
    if n == 0:
        return np.empty(0)
    padded = np.append(values, 0.0)
    starts = np.minimum(offsets[:-1], len(values))
    sums = np.add.reduceat(padded, starts)
    sums[offsets[1:] == offsets[:-1]] = 0.0
    return sums


def _side_levels(levels: pa.ChunkedArray | pa.Array, depth: int) -> tuple[np.ndarray, ...]:
    """Best price, best size (NaN when the side is empty) and the size summed over `depth` levels."""
    arr = levels.combine_chunks() if isinstance(levels, pa.ChunkedArray) else levels
    if len(arr) == 0:
        empty = np.empty(0)
        return empty, empty, empty, np.empty(0, bool)
    arr = pc.fill_null(arr, pa.scalar([], arr.type))
    offsets = arr.offsets.to_numpy() - arr.offsets[0].as_py()
    flat = arr.values.slice(arr.offsets[0].as_py(), offsets[-1])
    prices = _floats(flat.field("price"))
    sizes = _floats(flat.field("size"))
    lengths = np.diff(offsets)
    has = lengths > 0
    first = np.minimum(offsets[:-1], max(len(prices) - 1, 0))
    best = np.where(has, prices[first] if len(prices) else np.nan, np.nan)
    best_size = np.where(has, sizes[first] if len(sizes) else np.nan, np.nan)
    # Sizes beyond the first `depth` levels of their row count as 0 (adding 0.0 changes no sum).
    level = np.arange(len(sizes)) - np.repeat(offsets[:-1], lengths)
    depth_sum = _segment_sums(np.where(level < depth, sizes, 0.0), offsets)
    return best, best_size, depth_sum, has


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = den != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan), ok


# ---------------------------------------------------------------------------------------------
# Stream resets
# ---------------------------------------------------------------------------------------------


@dataclass
class _Merged:
    ts: np.ndarray  # event times in stream order
    code: np.ndarray  # reset code of each merged event
    positions: list[np.ndarray]  # per channel: merged position of each of its rows
    resets_upto: np.ndarray  # number of stream resets at merged positions <= p
    last_reset: np.ndarray  # merged position of the latest reset <= p (-1: none)


def _merge(
    ts_by_channel: Sequence[np.ndarray],
    state: StreamState,
    disconnects: np.ndarray,
    staleness_us: int,
) -> _Merged:
    all_ts = np.concatenate(ts_by_channel)
    rank = np.concatenate([np.full(len(t), c, np.int8) for c, t in enumerate(ts_by_channel)])
    local = np.concatenate([np.arange(len(t)) for t in ts_by_channel])
    order = np.lexsort((local, rank, all_ts))
    m_ts = all_ts[order]
    n = len(m_ts)
    positions_all = np.empty(n, np.int64)
    positions_all[order] = np.arange(n)
    positions, start = [], 0
    for t in ts_by_channel:
        positions.append(positions_all[start : start + len(t)])
        start += len(t)
    code = np.zeros(n, np.int8)
    if n:
        prev = np.empty(n, np.int64)
        prev[1:] = m_ts[:-1]
        first_prev = state.last_ts if state.last_ts is not None else np.iinfo(np.int64).min
        prev[0] = first_prev
        d_after = np.searchsorted(disconnects, m_ts, side="right")
        d_before = np.searchsorted(disconnects, prev, side="right")
        disconnected = d_after > d_before
        disconnected[0] |= state.pending_disconnect
        stale = (m_ts - prev) > staleness_us
        if state.last_ts is None:
            stale[0] = False
        code[stale] = STALE
        code[disconnected] = DISCONNECT
        if state.last_ts is None:
            code[0] = NO_PRIOR
    is_reset = code > 0
    resets_upto = np.cumsum(is_reset)
    last_reset = (
        np.maximum.accumulate(np.where(is_reset, np.arange(n), -1)) if n else np.empty(0, np.int64)
    )
    return _Merged(m_ts, code, positions, resets_upto, last_reset)


def _channel_resets(merged: _Merged, channel: int, state: StreamState) -> np.ndarray:
    """Reset code of each row of a channel (0: continues from the channel's previous row)."""
    pos = merged.positions[channel]
    n = len(pos)
    codes = np.zeros(n, np.int8)
    if n == 0:
        return codes
    upto = merged.resets_upto[pos]
    before = np.empty(n, np.int64)
    before[0] = 0
    before[1:] = upto[:-1]
    new_reset = upto > before
    latest = merged.last_reset[pos]
    codes[new_reset] = merged.code[latest[new_reset]]
    if not new_reset[0]:
        if state.channel_ts[channel] is None:
            codes[0] = NO_PRIOR
        elif state.channel_pending[channel]:
            codes[0] = state.channel_pending[channel]
    elif state.channel_ts[channel] is None:
        codes[0] = NO_PRIOR
    return codes


def _reset_column(codes: np.ndarray) -> pa.Array:
    names = np.array(RESET_REASONS, dtype=object)
    return pa.array(names[codes], pa.string())


def _prev(values: np.ndarray, first: float) -> np.ndarray:
    out = np.empty_like(values)
    if len(values):
        out[0] = first
        out[1:] = values[:-1]
    return out


# ---------------------------------------------------------------------------------------------
# Rolling windows, independent of where the sequence is cut
# ---------------------------------------------------------------------------------------------


def _block_prefix(
    ts: np.ndarray, values: np.ndarray, window_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of values restarting at each block of `window_us` aligned to the epoch, and
    the index where each row's block starts."""
    block = ts // window_us
    starts = (
        np.flatnonzero(np.r_[True, block[1:] != block[:-1]]) if len(ts) else np.empty(0, np.int64)
    )
    prefix = np.empty_like(values)
    bounds = np.r_[starts, len(ts)]
    for s, e in itertools.pairwise(bounds):
        prefix[s:e] = np.cumsum(values[s:e], axis=0)
    block_start = np.repeat(starts, np.diff(bounds))
    return prefix, block_start


def window_sums(
    ts: np.ndarray, values: np.ndarray, segment_start: np.ndarray, window_us: int
) -> np.ndarray:
    """Sums of `values` rows over (t - W, t] and at or after the row's segment start, per row.

    `values` is 2-D (rows x quantities). Each sum is built from prefix sums within epoch-aligned
    blocks of W (a window spans at most the row's block and the one before), so it depends only
    on the rows of those blocks, not on where the sequence started.
    """
    n = len(ts)
    if n == 0:
        return np.empty((0, values.shape[1]))
    prefix, block_start = _block_prefix(ts, values, window_us)
    lo = np.maximum(np.searchsorted(ts, ts - window_us, side="right"), segment_start)
    idx = np.arange(n)
    zero = np.zeros(values.shape[1])
    # Rows lo..i; C[k] is the prefix within k's block.
    same_block = lo >= block_start
    before_lo = lo - 1
    lo_block_start = block_start[np.minimum(lo, n - 1)]
    sub_same = np.where(
        (same_block & (lo > block_start))[:, None], prefix[np.maximum(before_lo, 0)], zero
    )
    result_same = prefix[idx] - sub_same
    # lo in the previous block: prefix[i] + (total of previous block - prefix[lo - 1] there).
    prev_total = prefix[np.maximum(block_start - 1, 0)]
    sub_prev = np.where((lo > lo_block_start)[:, None], prefix[np.maximum(before_lo, 0)], zero)
    result_prev = prefix[idx] + (prev_total - sub_prev)
    return np.where(same_block[:, None], result_same, result_prev)


def _history_bound(last_ts: int) -> int:
    return min((last_ts // (w * US) - 1) * (w * US) for w in WINDOWS_S)


# ---------------------------------------------------------------------------------------------
# One stream's day
# ---------------------------------------------------------------------------------------------


@dataclass
class StreamInput:
    book_ts: np.ndarray
    bids: pa.Array
    asks: pa.Array
    trade_ts: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray  # +1 buy, -1 sell, 0 not given
    ticker_ts: np.ndarray
    ticker: dict[str, np.ndarray]


@dataclass
class StreamOutput:
    book: dict[str, pa.Array]
    trades: dict[str, pa.Array]
    ticker: dict[str, pa.Array]
    state: StreamState
    resets: dict[str, int]


def compute_stream(
    inp: StreamInput, state: StreamState, disconnects: np.ndarray, params: FeatureParams
) -> StreamOutput:
    """The silver columns of one stream's rows of one day, and the stream's state after them."""
    merged = _merge(
        [inp.book_ts, inp.ticker_ts, inp.trade_ts], state, disconnects, params.staleness_us
    )
    new = StreamState(
        last_ts=state.last_ts,
        pending_disconnect=state.pending_disconnect,
        channel_ts=list(state.channel_ts),
        channel_pending=list(state.channel_pending),
        book=state.book,
        ticker=state.ticker,
        last_price=state.last_price,
        tick_sign=state.tick_sign,
        window_ts=state.window_ts,
        window_values=state.window_values,
        window_in_segment=state.window_in_segment,
    )
    book_cols, book_codes = _book_features(inp, merged, state, new, params)
    ticker_cols, ticker_codes = _ticker_features(inp, merged, state, new)
    trade_cols, trade_codes = _trade_features(inp, merged, state, new, params)

    # Stream-level state: the last event, disconnects after it, resets pending per channel.
    if len(merged.ts):
        new.last_ts = int(merged.ts[-1])
        new.pending_disconnect = bool(
            np.searchsorted(disconnects, new.last_ts, side="right") < len(disconnects)
        )
    else:
        after = state.last_ts if state.last_ts is not None else np.iinfo(np.int64).min
        new.pending_disconnect = state.pending_disconnect or bool(
            np.searchsorted(disconnects, after, side="right") < len(disconnects)
        )
    n = len(merged.ts)
    for channel in range(3):
        pos = merged.positions[channel]
        if len(pos):
            last_pos = int(pos[-1])
            later = merged.last_reset[n - 1] if n else -1
            new.channel_pending[channel] = int(merged.code[later]) if later > last_pos else 0
        elif n and merged.resets_upto[-1] > 0:
            new.channel_pending[channel] = int(merged.code[merged.last_reset[n - 1]])
    resets = {
        "orderbook": int(np.count_nonzero(book_codes)),
        "trades": int(np.count_nonzero(trade_codes)),
        "ticker": int(np.count_nonzero(ticker_codes)),
    }
    return StreamOutput(book_cols, trade_cols, ticker_cols, new, resets)


def _book_features(
    inp: StreamInput, merged: _Merged, state: StreamState, new: StreamState, params: FeatureParams
):
    n = len(inp.book_ts)
    codes = _channel_resets(merged, BOOK, state)
    bid, bid_size, bid_depth, has_bid = _side_levels(inp.bids, params.depth_levels)
    ask, ask_size, ask_depth, has_ask = _side_levels(inp.asks, params.depth_levels)
    two_sided = has_bid & has_ask
    mid = (bid + ask) / 2.0
    spread = ask - bid
    spread_bps, bps_ok = _ratio(spread * 10_000.0, mid)
    weighted_mid, wm_ok = _ratio(bid_size * ask + ask_size * bid, bid_size + ask_size)
    top_imbalance, top_ok = _ratio(bid_size - ask_size, bid_size + ask_size)
    depth_imbalance, depth_ok = _ratio(bid_depth - ask_depth, bid_depth + ask_depth)
    status = np.full(n, "ok", dtype=object)
    status[two_sided & (bid == ask)] = "locked"
    status[two_sided & (bid > ask)] = "crossed"
    status[has_bid ^ has_ask] = "one_sided"
    status[~has_bid & ~has_ask] = "empty"

    prev_book = state.book if state.book is not None else (np.nan,) * 5
    p_bid, p_bsz, p_ask, p_asz, p_mid = (
        _prev(x, prev_book[k]) for k, x in enumerate((bid, bid_size, ask, ask_size, mid))
    )
    continues = codes == 0
    prev_two_sided = (
        _prev(
            two_sided.astype(float),
            1.0
            if state.book is not None
            and not math.isnan(prev_book[0])
            and not math.isnan(prev_book[2])
            else 0.0,
        )
        > 0
    )
    ofi_ok = continues & two_sided & prev_two_sided
    ofi = (
        np.where(bid >= p_bid, bid_size, 0.0)
        - np.where(bid <= p_bid, p_bsz, 0.0)
        - np.where(ask <= p_ask, ask_size, 0.0)
        + np.where(ask >= p_ask, p_asz, 0.0)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.log(mid / p_mid)
    ret_ok = continues & two_sided & prev_two_sided & (mid > 0) & (p_mid > 0)
    if n:
        new.book = (
            float(bid[-1]),
            float(bid_size[-1]),
            float(ask[-1]),
            float(ask_size[-1]),
            float(mid[-1]),
        )
        new.channel_ts[BOOK] = int(inp.book_ts[-1])
    cols = {
        "state_reset": _reset_column(codes),
        "book_status": pa.array(status, pa.string()),
        "best_bid": _nullable(bid, has_bid),
        "best_bid_size": _nullable(bid_size, has_bid),
        "best_ask": _nullable(ask, has_ask),
        "best_ask_size": _nullable(ask_size, has_ask),
        "mid": _nullable(mid, two_sided),
        "spread": _nullable(spread, two_sided),
        "spread_bps": _nullable(spread_bps, two_sided & bps_ok),
        "weighted_mid": _nullable(weighted_mid, two_sided & wm_ok),
        "top_imbalance": _nullable(np.clip(top_imbalance, -1.0, 1.0), two_sided & top_ok),
        "depth_imbalance": _nullable(np.clip(depth_imbalance, -1.0, 1.0), depth_ok),
        "ofi": _nullable(ofi, ofi_ok),
        "mid_log_return": _nullable(ret, ret_ok),
    }
    return cols, codes


def _ticker_features(inp: StreamInput, merged: _Merged, state: StreamState, new: StreamState):
    codes = _channel_resets(merged, TICKER, state)
    t = inp.ticker
    n = len(inp.ticker_ts)
    bid, ask, last, volume = t["bid"], t["ask"], t["last"], t["volume_24h"]
    mid = (bid + ask) / 2.0
    spread = ask - bid
    spread_bps, bps_ok = _ratio(spread * 10_000.0, mid)
    prev = state.ticker if state.ticker is not None else (np.nan, np.nan)
    p_last, p_volume = _prev(last, prev[0]), _prev(volume, prev[1])
    prev_ts = _prev(inp.ticker_ts.astype(float), float(state.channel_ts[TICKER] or 0))
    continues = codes == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ret = np.log(last / p_last)
    if n:
        new.ticker = (float(last[-1]), float(volume[-1]))
        new.channel_ts[TICKER] = int(inp.ticker_ts[-1])
    cols = {
        "state_reset": _reset_column(codes),
        "bid": pa.array(bid, pa.float64()),
        "ask": pa.array(ask, pa.float64()),
        "last": pa.array(last, pa.float64()),
        "volume_24h": pa.array(volume, pa.float64()),
        "mid": pa.array(mid, pa.float64()),
        "spread": pa.array(spread, pa.float64()),
        "spread_bps": _nullable(spread_bps, bps_ok),
        "last_change": _nullable(last - p_last, continues),
        "last_log_return": _nullable(log_ret, continues & (last > 0) & (p_last > 0)),
        "volume_24h_change": _nullable(volume - p_volume, continues),
        "seconds_since_previous": _nullable((inp.ticker_ts - prev_ts) / US, continues),
    }
    return cols, codes


def _trade_features(
    inp: StreamInput, merged: _Merged, state: StreamState, new: StreamState, params: FeatureParams
):
    codes = _channel_resets(merged, TRADES, state)
    n = len(inp.trade_ts)
    ts, price, size = inp.trade_ts, inp.price, inp.size
    idx = np.arange(n)

    # The prevailing quote: the stream's last book before the trade in stream order, if no stream
    # reset came between and it is no older than the staleness limit.
    book_pos = merged.positions[BOOK]
    trade_pos = merged.positions[TRADES]
    j = np.searchsorted(book_pos, trade_pos) - 1
    bid = _side_levels(inp.bids, 1)[0]
    ask = _side_levels(inp.asks, 1)[0]
    sb = state.book if state.book is not None else (np.nan,) * 5
    q_bid = np.where(j >= 0, bid[np.maximum(j, 0)] if len(bid) else np.nan, sb[0])
    q_ask = np.where(j >= 0, ask[np.maximum(j, 0)] if len(ask) else np.nan, sb[2])
    q_ts = np.where(
        j >= 0,
        inp.book_ts[np.maximum(j, 0)] if len(inp.book_ts) else 0,
        state.channel_ts[BOOK] or 0,
    )
    resets_at_trade = merged.resets_upto[trade_pos] if n else np.empty(0, np.int64)
    resets_at_book = np.where(
        j >= 0, merged.resets_upto[book_pos[np.maximum(j, 0)]] if len(book_pos) else 0, 0
    )
    no_reset_between = resets_at_trade == resets_at_book
    from_state = j < 0
    state_quote_ok = state.book is not None and state.channel_pending[BOOK] == 0
    quote_ok = (
        no_reset_between
        & np.where(from_state, state_quote_ok, True)
        & np.isfinite(q_bid)
        & np.isfinite(q_ask)
        & ((ts - q_ts) <= params.staleness_us)
    )
    q_mid = (q_bid + q_ask) / 2.0

    # Segments: a trade with a reset code starts one.
    continues = codes == 0
    seg_start = np.maximum.accumulate(np.where(~continues, idx, 0)) if n else np.empty(0, np.int64)
    carried = (seg_start == 0) & (continues[0] if n else False)

    # Tick rule: sign of the last nonzero price change within the segment.
    p_price = _prev(price, state.last_price if state.last_price is not None else np.nan)
    change = np.where(continues, np.sign(price - p_price), 0.0)
    change = np.nan_to_num(change)
    last_change = (
        np.maximum.accumulate(np.where(change != 0, idx, -1)) if n else np.empty(0, np.int64)
    )
    in_seg = last_change >= seg_start
    tick = np.where(
        in_seg,
        change[np.maximum(last_change, 0)] if n else 0.0,
        np.where(carried, state.tick_sign, 0.0),
    )

    feed = inp.side
    quote_sign = np.where(
        quote_ok & (price > q_mid), 1.0, np.where(quote_ok & (price < q_mid), -1.0, 0.0)
    )
    sign = np.where(feed != 0, feed, np.where(quote_sign != 0, quote_sign, tick))
    source = np.where(
        feed != 0,
        "feed",
        np.where(quote_sign != 0, "quote_rule", np.where(tick != 0, "tick_rule", "unknown")),
    ).astype(object)
    side = np.where(sign > 0, "buy", np.where(sign < 0, "sell", None)).astype(object)
    signed = size * sign

    # Rolling windows over the state's window trades followed by today's.
    h = len(state.window_ts)
    all_ts = np.concatenate([state.window_ts, ts])
    values = np.concatenate(
        [
            state.window_values,
            np.column_stack([price * size, size, signed]) if n else np.empty((0, 3)),
        ]
    )
    first_in_seg = int(np.argmax(state.window_in_segment)) if state.window_in_segment.any() else h
    all_seg = np.concatenate(
        [np.zeros(h, np.int64), np.where(carried, first_in_seg, seg_start + h)]
    )
    window_cols = {}
    for w in WINDOWS_S:
        sums = window_sums(all_ts, values, all_seg, w * US)[h:]
        vwap, ok = _ratio(sums[:, 0], sums[:, 1])
        tfi, _ = _ratio(sums[:, 2], sums[:, 1])
        label = f"{w // 60}m"
        window_cols[f"tfi_{label}"] = _nullable(np.clip(tfi, -1.0, 1.0), ok)
        window_cols[f"vwap_{label}"] = _nullable(vwap, ok)

    if n:
        new.channel_ts[TRADES] = int(ts[-1])
        new.last_price = float(price[-1])
        new.tick_sign = float(tick[-1])
        bound = _history_bound(int(ts[-1]))
        keep = all_ts >= bound
        last_seg = int(all_seg[-1])
        new.window_ts = all_ts[keep]
        new.window_values = values[keep]
        new.window_in_segment = (np.arange(len(all_ts)) >= last_seg)[keep]
    cols = {
        "state_reset": _reset_column(codes),
        "quote_bid": _nullable(q_bid, quote_ok),
        "quote_ask": _nullable(q_ask, quote_ok),
        "quote_mid": _nullable(q_mid, quote_ok),
        "quote_age_ms": _nullable((ts - q_ts) / 1000.0, quote_ok),
        "aggressor_side": pa.array(side, pa.string()),
        "side_source": pa.array(source, pa.string()),
        "signed_volume": pa.array(signed + 0.0, pa.float64()),
        **window_cols,
    }
    return cols, codes


# ---------------------------------------------------------------------------------------------
# A symbol's day: the bronze tables of one symbol (every exchange), in bronze order
# ---------------------------------------------------------------------------------------------

_COMMON = ("exchange", "symbol", "event_ts_utc", "source_file", "source_id")


@dataclass
class SymbolDay:
    orderbook: pa.Table
    trades: pa.Table
    ticker: pa.Table
    resets: dict[str, int]
    streams: set[tuple[str, str]]


def disconnect_times(connection_events: pa.Table) -> dict[str, np.ndarray]:
    """Sorted disconnect times (microseconds) per exchange."""
    if connection_events.num_rows == 0:
        return {}
    events = connection_events.filter(pc.equal(connection_events["event_type"], "disconnected"))
    out: dict[str, list[int]] = {}
    for exchange, ts in zip(events["exchange"].to_pylist(), _ts_us(events["event_ts_utc"])):
        out.setdefault(exchange, []).append(int(ts))
    return {k: np.sort(np.array(v, np.int64)) for k, v in out.items()}


def _stream_rows(table: pa.Table) -> dict[tuple[str, str], np.ndarray]:
    """Row indices of each (exchange, symbol) stream of a table."""
    if table.num_rows == 0:
        return {}
    out = {}
    for exchange in sorted(set(pc.unique(table["exchange"]).to_pylist())):
        on_exchange = pc.equal(table["exchange"], exchange)
        for symbol in sorted(set(pc.unique(table.filter(on_exchange)["symbol"]).to_pylist())):
            mask = pc.and_(on_exchange, pc.equal(table["symbol"], symbol))
            out[(exchange, symbol)] = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    return out


def _rows(table: pa.Table, columns: list[str], rows: np.ndarray) -> pa.Table:
    """The given rows of the columns a stream needs (no copy when they are all of the table's)."""
    selected = table.select(columns)
    return selected if len(rows) == table.num_rows else selected.take(pa.array(rows))


def _scatter(parts: list[tuple[np.ndarray, pa.Array]], n: int, type_: pa.DataType) -> pa.Array:
    if not parts:
        return pa.array([], type_) if n == 0 else pa.nulls(n, type_)
    indices = np.concatenate([i for i, _ in parts])
    values = pa.concat_arrays([a.cast(type_) for _, a in parts])
    if len(parts) == 1:
        return values  # one stream: its rows are all of the table's, in order
    order = np.argsort(indices, kind="stable")
    return values.take(pa.array(order))


def _assemble(
    bronze: pa.Table, schema: pa.Schema, parts: dict[str, list[tuple[np.ndarray, pa.Array]]]
) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in bronze.column_names and f.name not in parts:
            columns.append(bronze[f.name].combine_chunks().cast(f.type))
        else:
            columns.append(_scatter(parts.get(f.name, []), bronze.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _empty_stream_input() -> dict:
    empty_levels = pa.array(
        [], pa.list_(pa.struct([("price", pa.float64()), ("size", pa.float64())]))
    )
    return {
        "book_ts": np.empty(0, np.int64),
        "bids": empty_levels,
        "asks": empty_levels,
        "trade_ts": np.empty(0, np.int64),
        "price": np.empty(0),
        "size": np.empty(0),
        "side": np.empty(0),
        "ticker_ts": np.empty(0, np.int64),
        "ticker": {k: np.empty(0) for k in ("bid", "ask", "last", "volume_24h")},
    }


def compute_symbol_day(
    orderbook: pa.Table,
    trades: pa.Table,
    ticker: pa.Table,
    disconnects: Mapping[str, np.ndarray],
    state: FeatureState,
    params: FeatureParams,
) -> SymbolDay:
    """Silver rows for one symbol's bronze rows of a day (any exchanges), in bronze order.

    `state` is updated in place with the state of each stream after the day's rows.
    """
    book_rows, trade_rows, ticker_rows = (
        _stream_rows(orderbook),
        _stream_rows(trades),
        _stream_rows(ticker),
    )
    streams = sorted(set(book_rows) | set(trade_rows) | set(ticker_rows))
    parts: dict[str, dict[str, list]] = {"book": {}, "trades": {}, "ticker": {}}
    resets = {"orderbook": 0, "trades": 0, "ticker": 0}
    for stream in streams:
        inp = _empty_stream_input()
        b, t, k = (
            rows.get(stream, np.empty(0, np.int64)) for rows in (book_rows, trade_rows, ticker_rows)
        )
        if len(b):
            sub = _rows(orderbook, ["event_ts_utc", "bids", "asks"], b)
            inp.update(
                book_ts=_ts_us(sub["event_ts_utc"]),
                bids=sub["bids"].combine_chunks(),
                asks=sub["asks"].combine_chunks(),
            )
        if len(t):
            sub = _rows(trades, ["event_ts_utc", "price", "size", "side"], t)
            buy = pc.fill_null(pc.equal(sub["side"], "buy"), False).to_numpy(zero_copy_only=False)
            sell = pc.fill_null(pc.equal(sub["side"], "sell"), False).to_numpy(zero_copy_only=False)
            inp.update(
                trade_ts=_ts_us(sub["event_ts_utc"]),
                price=_floats(sub["price"]),
                size=_floats(sub["size"]),
                side=np.where(buy, 1.0, np.where(sell, -1.0, 0.0)),
            )
        if len(k):
            sub = _rows(ticker, ["event_ts_utc", "bid", "ask", "last", "volume_24h"], k)
            inp.update(
                ticker_ts=_ts_us(sub["event_ts_utc"]),
                ticker={c: _floats(sub[c]) for c in ("bid", "ask", "last", "volume_24h")},
            )
        before = state.get(stream, StreamState())
        out = compute_stream(
            StreamInput(**inp), before, disconnects.get(stream[0], np.empty(0, np.int64)), params
        )
        state[stream] = out.state
        for name, rows, cols in (
            ("book", b, out.book),
            ("trades", t, out.trades),
            ("ticker", k, out.ticker),
        ):
            for col, arr in cols.items():
                parts[name].setdefault(col, []).append((rows, arr))
        for channel, count in out.resets.items():
            resets[channel] += count
    return SymbolDay(
        orderbook=_assemble(orderbook, ORDERBOOK_SCHEMA, parts["book"]),
        trades=_assemble(trades, TRADES_SCHEMA, parts["trades"]),
        ticker=_assemble(ticker, TICKER_SCHEMA, parts["ticker"]),
        resets=resets,
        streams=set(streams),
    )


def advance_idle_streams(
    state: FeatureState, seen: set[tuple[str, str]], disconnects: Mapping[str, np.ndarray]
) -> None:
    """Carry the streams that had no rows today: a disconnect today after their last event is pending."""
    for stream, st in state.items():
        if stream in seen:
            continue
        times = disconnects.get(stream[0])
        if times is None or not len(times):
            continue
        after = st.last_ts if st.last_ts is not None else np.iinfo(np.int64).min
        if np.searchsorted(times, after, side="right") < len(times):
            state[stream] = replace(st, pending_disconnect=True)


# ---------------------------------------------------------------------------------------------
# The checkpoint: FeatureState <-> a MarketFeatureState table
# ---------------------------------------------------------------------------------------------


def _none_if_nan(values: Sequence[float]) -> list[float | None]:
    return [
        None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)
        for v in values
    ]


def state_to_table(state: FeatureState) -> pa.Table:
    """The checkpoint rows of a state, in a fixed order (the same state gives the same bytes)."""
    rows: dict[str, list] = {f.name: [] for f in STATE_SCHEMA}

    def add(
        stream: tuple[str, str],
        channel: str,
        item: str,
        seq: int,
        ts: int | None,
        in_segment: bool,
        values: Sequence[float | None],
    ) -> None:
        for name, value in zip(
            ("exchange", "symbol", "channel", "item", "seq", "event_ts_us", "in_segment", "values"),
            (
                stream[0],
                stream[1],
                channel,
                item,
                seq,
                ts if ts is not None else -1,
                in_segment,
                _none_if_nan(values),
            ),
        ):
            rows[name].append(value)

    for stream in sorted(state):
        st = state[stream]
        add(stream, "stream", "last", 0, st.last_ts, st.pending_disconnect, [])
        for c, name in enumerate(CHANNEL_NAMES):
            values: list[float | None] = [float(st.channel_pending[c])]
            if c == BOOK and st.book is not None:
                values += list(st.book)
            elif c == TICKER and st.ticker is not None:
                values += list(st.ticker)
            elif c == TRADES and st.last_price is not None:
                values += [st.last_price, st.tick_sign]
            if st.channel_ts[c] is not None:
                add(stream, name, "last", 0, st.channel_ts[c], False, values)
            elif st.channel_pending[c]:
                add(stream, name, "pending", 0, None, False, values)
        for i, (ts, vals, seg) in enumerate(
            zip(st.window_ts, st.window_values, st.window_in_segment)
        ):
            add(stream, "trades", "window_trade", i, int(ts), bool(seg), list(vals))
    return pa.Table.from_pydict(rows, schema=STATE_SCHEMA)


def state_from_table(table: pa.Table) -> FeatureState:
    """Inverse of `state_to_table`."""
    state: FeatureState = {}
    windows: dict[tuple[str, str], list[tuple[int, list, bool]]] = {}
    for row in table.to_pylist():
        stream = (row["exchange"], row["symbol"])
        st = state.setdefault(stream, StreamState())
        ts = None if row["event_ts_us"] == -1 else row["event_ts_us"]
        values = [np.nan if v is None else v for v in row["values"]]
        if row["channel"] == "stream":
            st.last_ts, st.pending_disconnect = ts, row["in_segment"]
        elif row["item"] == "window_trade":
            windows.setdefault(stream, []).append((ts, values, row["in_segment"]))
        elif row["item"] in ("last", "pending"):
            c = CHANNEL_NAMES.index(row["channel"])
            st.channel_ts[c] = ts
            st.channel_pending[c] = int(values[0])
            rest = values[1:]
            if c == BOOK and rest:
                st.book = tuple(rest)  # type: ignore[assignment]
            elif c == TICKER and rest:
                st.ticker = tuple(rest)  # type: ignore[assignment]
            elif c == TRADES and rest:
                st.last_price, st.tick_sign = rest[0], rest[1]
        else:
            raise FeatureStateError(f"checkpoint row of unknown item {row['item']!r}")
    for stream, items in windows.items():
        st = state[stream]
        st.window_ts = np.array([t for t, _, _ in items], np.int64)
        st.window_values = np.array([v for _, v, _ in items], float).reshape(-1, 3)
        st.window_in_segment = np.array([s for _, _, s in items], bool)
    return state
