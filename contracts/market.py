"""Market-data bronze contracts: the rows the bronze assets land from the collectors' SQLite files.

Each contract is the single source of truth for its dataset: `pipeline_assets.lib.market.bronze`
builds its tables with `arrow_schema(<contract>)`, the assets publish it as their column schema,
and the asset checks compare every written partition with it.

Bronze keeps what a collector recorded (the raw spellings, the raw payload text) beside the
normalized, typed columns, so every row can be traced to `source_file` and `source_id`. Each
daily partition (UTC event date) is rewritten whole when it is materialized again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from contracts.core import ContractInfo, ContractModel

_DEDUP_NOTE = (
    "Exact duplicates (the same normalized exchange, symbol, channel, event time and payload text, "
    "as two workers subscribed to one stream record them) are dropped, keeping the row first by "
    "(source_file, source_id); the materialization reports how many."
)


class _TickRow(ContractModel):
    """Columns every channel table shares: where the row came from and its normalized identity."""

    source_file: str = Field(
        ..., description="Name of the worker SQLite file the row was read from."
    )
    source_id: int = Field(
        ..., description="market_ticks.id in the worker file (a per-file sequence)."
    )
    exchange_raw: str = Field(
        ..., description="Exchange as the collector spelled it (market_ticks.exchange)."
    )
    symbol_raw: str = Field(
        ..., description="Exchange-native symbol as collected (market_ticks.symbol)."
    )
    exchange: str = Field(..., description="Normalized exchange: stripped, lowercase.")
    symbol: str = Field(..., description="Canonical symbol BASE-QUOTE, uppercase (BTC-USDT).")
    base_asset: str = Field(
        ..., description="Base asset, uppercase, aliases resolved (XBT -> BTC)."
    )
    quote_asset: str = Field(..., description="Quote asset, uppercase, aliases resolved.")
    event_ts_utc: dt.datetime = Field(
        ..., description="Exchange event time (market_ticks.event_ts_utc), UTC."
    )
    ingestion_ts_utc: dt.datetime = Field(
        ...,
        description="When the worker stored the row (market_ticks.ingestion_ts_utc), UTC; the staging watermark.",
    )


_PAYLOAD_DESCRIPTION = "The raw JSON payload text, unchanged."


class BookLevel(BaseModel):
    """One price level of an order book snapshot."""

    price: float = Field(..., description="Level price in the quote asset.")
    size: float = Field(..., description="Size resting at the level, in the base asset.")


class BronzeOrderbook(_TickRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="bronze_orderbook",
        version="1.0.0",
        title="Bronze order book snapshots",
        description=(
            "Order book snapshots, one row per market_ticks row of channel 'orderbook' whose event "
            "time falls on the partition's UTC day. " + _DEDUP_NOTE + " Primary key "
            "(source_file, source_id): snapshots carry no exchange id, and after de-duplication "
            "each remaining row is one source row."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    bids: list[BookLevel] = Field(
        ..., description="Bid levels of the snapshot as collected (best first): price, size."
    )
    asks: list[BookLevel] = Field(
        ..., description="Ask levels of the snapshot as collected (best first): price, size."
    )
    payload: str = Field(..., description=_PAYLOAD_DESCRIPTION)


class BronzeTrades(_TickRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="bronze_trades",
        version="1.0.0",
        title="Bronze trades",
        description=(
            "Trades, one row per market_ticks row of channel 'trades' whose event time falls on "
            "the partition's UTC day. " + _DEDUP_NOTE + " Primary key (exchange, symbol, "
            "trade_id): exchanges number trades uniquely per symbol, and the copies of one trade "
            "that two workers record are dropped as exact duplicates; a key that still repeats "
            "means two workers recorded one trade differently, or an exchange reused an id."
        ),
        write_semantics="append",
        primary_key=("exchange", "symbol", "trade_id"),
    )

    trade_id: str = Field(
        ..., description="Exchange trade id, as text (numeric ids are written in decimal)."
    )
    price: float = Field(..., description="Trade price in the quote asset.")
    size: float = Field(..., description="Trade size in the base asset.")
    side: str | None = Field(
        None, description="Aggressor side 'buy' or 'sell'; null when the exchange does not say."
    )
    payload: str = Field(..., description=_PAYLOAD_DESCRIPTION)


class BronzeTicker(_TickRow):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="bronze_ticker",
        version="1.0.0",
        title="Bronze ticker updates",
        description=(
            "Ticker updates, one row per market_ticks row of channel 'ticker' whose event time "
            "falls on the partition's UTC day. " + _DEDUP_NOTE + " Primary key (source_file, "
            "source_id): tickers carry no exchange id, and after de-duplication each remaining "
            "row is one source row."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    bid: float = Field(..., description="Best bid price.")
    ask: float = Field(..., description="Best ask price.")
    last: float = Field(..., description="Last traded price.")
    volume_24h: float = Field(
        ..., description="Rolling 24-hour volume in the base asset, as the exchange reports it."
    )
    payload: str = Field(..., description=_PAYLOAD_DESCRIPTION)


class BronzeQuarantine(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="bronze_quarantine",
        version="1.0.0",
        title="Bronze quarantine",
        description=(
            "Source rows of the partition's UTC day that could not be landed (bad JSON, a missing "
            "or mistyped field, an unknown channel, an unreadable symbol, exchange or timestamp), "
            "kept as stored with the reason, never dropped: market_ticks rows and connection_events "
            "rows alike. Primary key (source_file, source_table, source_id): one row per source row."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_table", "source_id"),
    )

    source_file: str = Field(
        ..., description="Name of the worker SQLite file the row was read from."
    )
    source_table: Literal["market_ticks", "connection_events"] = Field(
        ..., description="The table of the worker file the row is from."
    )
    source_id: int = Field(..., description="The row's id in that table.")
    channel: str | None = Field(
        None, description="market_ticks.channel as stored; null for a connection_events row."
    )
    exchange_raw: str | None = Field(None, description="The row's exchange as stored.")
    symbol_raw: str | None = Field(
        None, description="market_ticks.symbol as stored; null for a connection_events row."
    )
    event_ts_utc_raw: str | None = Field(
        None, description="The row's event_ts_utc as stored (text)."
    )
    reason: str = Field(
        ...,
        description="Why the row was quarantined: the field, what was expected and what was found.",
    )
    payload: str | None = Field(
        None,
        description=(
            "market_ticks.payload (or connection_events.details) as stored, unchanged (binary "
            "values decoded with escapes)."
        ),
    )


class BronzeConnectionEvents(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="bronze_connection_events",
        version="1.0.0",
        title="Bronze connection events",
        description=(
            "The collectors' connection events (connected, disconnected, resubscribed, error) whose "
            "event time falls on the partition's UTC day, from every worker file. A disconnect "
            "resets stateful features downstream. Primary key (source_file, source_id): one row "
            "per source row."
        ),
        write_semantics="append",
        primary_key=("source_file", "source_id"),
    )

    source_file: str = Field(
        ..., description="Name of the worker SQLite file the row was read from."
    )
    source_id: int = Field(..., description="connection_events.id in the worker file.")
    exchange: str = Field(..., description="Normalized exchange: stripped, lowercase.")
    worker_id: str = Field(..., description="The collector worker that recorded the event.")
    event_type: str = Field(
        ...,
        description="'connected', 'disconnected', 'resubscribed' or 'error', as the collector wrote it.",
    )
    event_ts_utc: dt.datetime = Field(..., description="When the event happened, UTC.")
    details: dict[str, Any] | None = Field(
        None,
        description="The event's details as the collector wrote them (a JSON object), or null.",
    )


CONTRACTS: tuple[type[ContractModel], ...] = (
    BronzeOrderbook,
    BronzeTrades,
    BronzeTicker,
    BronzeQuarantine,
    BronzeConnectionEvents,
)
