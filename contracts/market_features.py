"""Market-data silver and gold contracts: stateful microstructure features and one-minute bars.

`pipeline_assets.lib.market.features` builds the silver tables and `lib.market.bars` the gold bars
with `arrow_schema(<contract>)`; the assets publish them as column schemas and the asset checks
compare every written partition with them. `MarketFeatureState` is the end-of-day checkpoint that
carries each stream's state (last book, last ticker, the trades of the rolling windows) from one
day to the next.

A stream is one (exchange, symbol) pair. Every stateful column is computed from the previous
event of the same stream and channel; a disconnect of the exchange, or a gap longer than the
staleness limit, restarts the state, and the first row after it names the reason in
`state_reset`. docs/market_data.md ("Silver and gold") defines every feature.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from pydantic import Field

from contracts.core import ContractInfo, ContractModel

_STATE_RESET = (
    "Why the stream's state restarted at this row, or null when it continues from the previous "
    "row: 'no_prior_state' (first row of the stream in the checkpoint chain), 'disconnect' (the "
    "exchange's connection dropped since the previous row), 'stale_gap' (the previous row is "
    "older than the staleness limit). Columns that need the previous row are null on such rows."
)
_PARTITION_NOTE = (
    "Partitioned by the UTC date of event_ts_utc; files split by symbol, rows in event order "
    "(event_ts_utc, exchange, source_file, source_id)."
)


class _StreamRow(ContractModel):
    exchange: str = Field(..., description="Normalized exchange (lowercase).")
    symbol: str = Field(..., description="Canonical symbol BASE-QUOTE.")
    event_ts_utc: dt.datetime = Field(..., description="Exchange event time, UTC.")
    source_file: str = Field(
        ..., description="Worker file of the bronze row this row derives from."
    )
    source_id: int = Field(..., description="market_ticks.id of the bronze row in that file.")
    state_reset: str | None = Field(None, description=_STATE_RESET)


class SilverOrderbookFeatures(_StreamRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="silver_orderbook_features",
        version="1.0.0",
        title="Silver order book features",
        description=(
            "One row per bronze order book snapshot: top of book, mid, spread, the size-weighted "
            "mid, imbalances, and the order flow imbalance (Cont, Kukanov & Stoikov 2014) from the "
            "previous snapshot of the same stream. " + _PARTITION_NOTE
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    book_status: str = Field(
        ...,
        description=(
            "'ok' (best bid < best ask), 'locked' (equal), 'crossed' (best bid > best ask), "
            "'one_sided' (one side empty) or 'empty' (both sides empty)."
        ),
    )
    best_bid: float | None = Field(None, description="Best bid price; null when there are no bids.")
    best_bid_size: float | None = Field(None, description="Size at the best bid.")
    best_ask: float | None = Field(None, description="Best ask price; null when there are no asks.")
    best_ask_size: float | None = Field(None, description="Size at the best ask.")
    mid: float | None = Field(
        None, description="(best_bid + best_ask) / 2; null unless both sides exist."
    )
    spread: float | None = Field(
        None, description="best_ask - best_bid; negative only when book_status is 'crossed'."
    )
    spread_bps: float | None = Field(None, description="spread / mid * 10,000.")
    weighted_mid: float | None = Field(
        None,
        description=(
            "Size-weighted mid (best_bid_size * best_ask + best_ask_size * best_bid) / "
            "(best_bid_size + best_ask_size); null when both sizes are zero. Not Stoikov's micro-price."
        ),
    )
    top_imbalance: float | None = Field(
        None,
        description="(best_bid_size - best_ask_size) / (best_bid_size + best_ask_size), in [-1, 1].",
    )
    depth_imbalance: float | None = Field(
        None,
        description=(
            "(bid size - ask size) / (bid size + ask size) summed over the first N levels of each "
            "side (N = depth_levels, in the sidecar's params), in [-1, 1]; null when both sums are 0."
        ),
    )
    ofi: float | None = Field(
        None,
        description=(
            "Order flow imbalance of this snapshot against the previous snapshot of the stream "
            "(Cont, Kukanov & Stoikov 2014, best levels); null on a reset row or when either "
            "snapshot lacks a side."
        ),
    )
    mid_log_return: float | None = Field(
        None,
        description="ln(mid / previous mid of the stream); null on a reset row or without mids.",
    )


class SilverTradeFeatures(_StreamRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="silver_trade_features",
        version="1.0.0",
        title="Silver trade features",
        description=(
            "One row per bronze trade: the prevailing quote of its stream (as of the trade), the "
            "aggressor side (from the feed, or inferred and flagged), signed volume, and trade "
            "flow imbalance and VWAP over rolling windows. " + _PARTITION_NOTE
        ),
        write_semantics="append",
        primary_key=("exchange", "symbol", "trade_id"),
    )

    trade_id: str = Field(..., description="Exchange trade id.")
    price: float = Field(..., description="Trade price.")
    size: float = Field(..., description="Trade size in the base asset.")
    quote_bid: float | None = Field(
        None,
        description=(
            "Best bid of the last snapshot of the stream at or before the trade, if it is within "
            "the staleness limit and no disconnect came between; else null."
        ),
    )
    quote_ask: float | None = Field(None, description="Best ask of that snapshot.")
    quote_mid: float | None = Field(None, description="Mid of that snapshot.")
    quote_age_ms: float | None = Field(
        None, description="Trade time minus the snapshot's time, ms."
    )
    aggressor_side: str | None = Field(
        None, description="'buy' or 'sell'; null when neither the feed nor a rule can tell."
    )
    side_source: str = Field(
        ...,
        description=(
            "'feed' (the exchange said), 'quote_rule' (price above or below quote_mid), "
            "'tick_rule' (at the mid or without a quote: the sign of the last price change), "
            "'unknown'."
        ),
    )
    signed_volume: float = Field(
        ..., description="size for a buy, -size for a sell, 0 when the side is unknown."
    )
    tfi_1m: float | None = Field(
        None,
        description=(
            "Trade flow imbalance over (t - 60 s, t]: sum(signed_volume) / sum(size) of the "
            "stream's trades since its last reset, in [-1, 1]."
        ),
    )
    tfi_5m: float | None = Field(None, description="As tfi_1m over (t - 300 s, t].")
    vwap_1m: float | None = Field(
        None, description="sum(price * size) / sum(size) over the same trades as tfi_1m."
    )
    vwap_5m: float | None = Field(None, description="As vwap_1m over (t - 300 s, t].")


class SilverTickerFeatures(_StreamRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="silver_ticker_features",
        version="1.0.0",
        title="Silver ticker features",
        description=(
            "One row per bronze ticker update: its fields, the derived mid and spread, and the "
            "changes since the previous update of the stream. " + _PARTITION_NOTE
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    bid: float = Field(..., description="Best bid.")
    ask: float = Field(..., description="Best ask.")
    last: float = Field(..., description="Last traded price.")
    volume_24h: float = Field(..., description="Rolling 24-hour volume, base asset.")
    mid: float = Field(..., description="(bid + ask) / 2.")
    spread: float = Field(..., description="ask - bid (negative when the ticker is crossed).")
    spread_bps: float | None = Field(None, description="spread / mid * 10,000; null when mid is 0.")
    last_change: float | None = Field(
        None, description="last - previous last of the stream; null on a reset row."
    )
    last_log_return: float | None = Field(
        None, description="ln(last / previous last); null on a reset row or a price <= 0."
    )
    volume_24h_change: float | None = Field(
        None, description="volume_24h - previous volume_24h; null on a reset row."
    )
    seconds_since_previous: float | None = Field(
        None, description="Seconds since the previous update of the stream; null on a reset row."
    )


class GoldBars1m(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="gold_bars_1m",
        version="1.0.0",
        title="Gold one-minute bars",
        description=(
            "One row per stream and UTC minute in which the stream had at least one order book "
            "snapshot or trade. Price and volume columns come from silver_trade_features, book "
            "columns from silver_orderbook_features. A minute with snapshots but no trades has "
            "trade_count 0, zero volumes and null open, high, low, close, vwap and tfi. "
            "Partitioned by the UTC date of minute_start_utc; files split by symbol."
        ),
        write_semantics="append",
        primary_key=("exchange", "symbol", "minute_start_utc"),
    )

    exchange: str = Field(..., description="Normalized exchange.")
    symbol: str = Field(..., description="Canonical symbol BASE-QUOTE.")
    minute_start_utc: dt.datetime = Field(..., description="Start of the minute, UTC.")
    open: float | None = Field(None, description="Price of the minute's first trade.")
    high: float | None = Field(None, description="Highest trade price.")
    low: float | None = Field(None, description="Lowest trade price.")
    close: float | None = Field(None, description="Price of the minute's last trade.")
    volume: float = Field(..., description="Sum of trade sizes (0 without trades).")
    buy_volume: float = Field(..., description="Volume of trades whose aggressor was a buyer.")
    sell_volume: float = Field(..., description="Volume of trades whose aggressor was a seller.")
    unknown_volume: float = Field(
        ..., description="Volume of trades of unknown side: volume - buy_volume - sell_volume."
    )
    trade_count: int = Field(..., description="Number of trades.")
    vwap: float | None = Field(None, description="sum(price * size) / volume; null without trades.")
    tfi: float | None = Field(
        None, description="(buy_volume - sell_volume) / volume, in [-1, 1]; null without trades."
    )
    ofi_sum: float = Field(
        ..., description="Sum of the minute's non-null silver ofi values (0 when there are none)."
    )
    book_count: int = Field(..., description="Number of order book snapshots in the minute.")
    mean_spread: float | None = Field(
        None, description="Mean of the snapshots' spread; null without a two-sided snapshot."
    )
    last_mid: float | None = Field(None, description="Mid of the minute's last two-sided snapshot.")
    realized_variance: float | None = Field(
        None,
        description=(
            "Sum of squared silver mid_log_return of the minute's snapshots (each return from the "
            "previous snapshot of the stream, which may be in the previous minute); null when "
            "none has a return."
        ),
    )
    state_resets: int = Field(
        ..., description="Snapshots and trades of the minute whose state_reset is not null."
    )


class MarketFeatureState(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="market_feature_state",
        version="1.0.0",
        title="Market feature state checkpoint",
        description=(
            "The state of every stream at the end of one UTC day, as the silver features of the "
            "next day start from it: one row per (exchange, symbol, channel, item, seq). Channel "
            "'stream', item 'last': the stream's last event (in_segment: a disconnect came after "
            "it). Channels 'orderbook', 'ticker', 'trades', item 'last' (the channel's last row) "
            "or 'pending' (no row yet, a reset pending). Item 'window_trade': a trade the rolling "
            "windows may still need. Written beside the silver partitions at "
            "silver/_state/market_features/date=D/state.parquet with a sidecar."
        ),
        write_semantics="document",
        primary_key=("exchange", "symbol", "channel", "item", "seq"),
    )

    exchange: str = Field(..., description="Normalized exchange.")
    symbol: str = Field(..., description="Canonical symbol.")
    channel: str = Field(..., description="'stream', 'orderbook', 'trades' or 'ticker'.")
    item: str = Field(..., description="'last', 'pending' or 'window_trade'.")
    seq: int = Field(
        ..., description="Order of the item within its channel (window trades in time order)."
    )
    event_ts_us: int = Field(
        ..., description="Event time of the item, microseconds since the epoch (-1: none)."
    )
    in_segment: bool = Field(
        ...,
        description=(
            "Window trades: whether the trade is after the trade channel's last reset; the "
            "stream row: whether a disconnect is pending."
        ),
    )
    values: list[float | None] = Field(
        ...,
        description=(
            "The item's numbers (null for NaN). Channel rows start with the reset code pending "
            "since the row (0 none, 1 no_prior_state, 2 disconnect, 3 stale_gap), then: "
            "orderbook [best bid, bid size, best ask, ask size, mid]; trades [price, last nonzero "
            "tick sign]; ticker [last, volume_24h]. window_trade: [price * size, size, signed "
            "volume]."
        ),
    )


CONTRACTS: tuple[type[ContractModel], ...] = (
    SilverOrderbookFeatures,
    SilverTradeFeatures,
    SilverTickerFeatures,
    GoldBars1m,
    MarketFeatureState,
)
