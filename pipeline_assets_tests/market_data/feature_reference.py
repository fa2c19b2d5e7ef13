"""An independent reference for the silver features: one plain Python loop over a stream's events,
written from the definitions in docs/market_data.md ("Silver and gold"), sharing no code with
`pipeline_assets.lib.market.features`. Also builders of bronze-shaped tables, and the resources
of a market lake, for tests."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline_assets.lib.market.bronze import (
    BRONZE_ORDERBOOK_SCHEMA,
    BRONZE_TICKER_SCHEMA,
    BRONZE_TRADES_SCHEMA,
)
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_features import MarketFeatureSettings
from pipeline_assets.resources.market_sources import MarketSources

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def market_resources(root, staleness_limit_s: float = 300.0) -> dict[str, object]:
    """The resources of the market assets over a data root `root` (a pathlib.Path)."""
    return {
        "io_manager": LakeIOManager(lake_root=str(root)),
        "market_sources": MarketSources(workers_dir=str(root / "source/workers")),
        "market_features": MarketFeatureSettings(staleness_limit_s=staleness_limit_s),
    }


def ts_of(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


@dataclass
class Book:
    ts: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


@dataclass
class Trade:
    ts: int
    price: float
    size: float
    side: str | None = None
    trade_id: str = ""


@dataclass
class Tick:
    ts: int
    bid: float
    ask: float
    last: float
    volume: float


def _common(i: int, ts: int, exchange: str, symbol: str, source_file: str) -> dict[str, Any]:
    base, quote = symbol.split("-")
    return {
        "source_file": source_file,
        "source_id": i + 1,
        "exchange_raw": exchange,
        "symbol_raw": symbol,
        "exchange": exchange,
        "symbol": symbol,
        "base_asset": base,
        "quote_asset": quote,
        "event_ts_utc": ts_of(ts),
        "ingestion_ts_utc": ts_of(ts),
        "payload": "{}",
    }


def _bronze(
    items: list, schema: pa.Schema, fields, exchange: str, symbol: str, file: str, first_id: int
) -> pa.Table:
    rows = [
        {**_common(first_id + i, item.ts, exchange, symbol, file), **fields(first_id + i, item)}
        for i, item in enumerate(items)
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def _book_fields(_: int, b: Book) -> dict[str, Any]:
    return {
        "bids": [{"price": p, "size": s} for p, s in b.bids],
        "asks": [{"price": p, "size": s} for p, s in b.asks],
    }


def _trade_fields(source_id: int, t: Trade) -> dict[str, Any]:
    return {
        "trade_id": t.trade_id or str(source_id),
        "price": t.price,
        "size": t.size,
        "side": t.side,
    }


def _tick_fields(_: int, k: Tick) -> dict[str, Any]:
    return {"bid": k.bid, "ask": k.ask, "last": k.last, "volume_24h": k.volume}


def bronze_books(
    books: list[Book],
    exchange: str = "binance",
    symbol: str = "BTC-USDT",
    file: str = "w.db",
    first_id: int = 0,
) -> pa.Table:
    return _bronze(books, BRONZE_ORDERBOOK_SCHEMA, _book_fields, exchange, symbol, file, first_id)


def bronze_trades(
    trades: list[Trade],
    exchange: str = "binance",
    symbol: str = "BTC-USDT",
    file: str = "w.db",
    first_id: int = 100_000,
) -> pa.Table:
    return _bronze(trades, BRONZE_TRADES_SCHEMA, _trade_fields, exchange, symbol, file, first_id)


def bronze_ticks(
    ticks: list[Tick],
    exchange: str = "binance",
    symbol: str = "BTC-USDT",
    file: str = "w.db",
    first_id: int = 200_000,
) -> pa.Table:
    return _bronze(ticks, BRONZE_TICKER_SCHEMA, _tick_fields, exchange, symbol, file, first_id)


def _div(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclass
class Reference:
    books: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)


def reference_features(
    books: list[Book],
    trades: list[Trade],
    ticks: list[Tick],
    disconnects: list[int],
    staleness_s: float,
    depth: int = 5,
    windows_s: tuple[int, ...] = (60, 300),
) -> Reference:
    """Features of one stream, computed event by event."""
    staleness = staleness_s * 1_000_000
    events = sorted(
        [(b.ts, 0, i) for i, b in enumerate(books)]
        + [(k.ts, 1, i) for i, k in enumerate(ticks)]
        + [(t.ts, 2, i) for i, t in enumerate(trades)]
    )
    out = Reference()
    last_ts: int | None = None
    seen = [False, False, False]
    pending: list[str | None] = [None, None, None]
    prev_book: dict[str, Any] | None = None
    quote: dict[str, Any] | None = None  # the last book, while no stream reset came after it
    prev_tick: Tick | None = None
    last_price: float | None = None
    tick_sign = 0
    segment: list[tuple[int, float, float, float]] = []  # trades since the trade channel's reset
    for ts, channel, i in events:
        reason = None
        if last_ts is None:
            reason = "no_prior_state"
        elif any(last_ts < d <= ts for d in disconnects):
            reason = "disconnect"
        elif ts - last_ts > staleness:
            reason = "stale_gap"
        if reason is not None:
            pending = [reason, reason, reason]
            quote = None
        last_ts = ts
        row_reason = pending[channel] if seen[channel] else "no_prior_state"
        seen[channel] = True
        pending[channel] = None

        if channel == 0:
            b = books[i]
            bid = b.bids[0] if b.bids else None
            ask = b.asks[0] if b.asks else None
            row: dict[str, Any] = {"state_reset": row_reason}
            two = bid is not None and ask is not None
            if two:
                mid = (bid[0] + ask[0]) / 2
                spread = ask[0] - bid[0]
                row.update(mid=mid, spread=spread, spread_bps=_div(spread * 10_000, mid))
                row["weighted_mid"] = _div(bid[1] * ask[0] + ask[1] * bid[0], bid[1] + ask[1])
                ti = _div(bid[1] - ask[1], bid[1] + ask[1])
                row["top_imbalance"] = ti
                row["book_status"] = (
                    "crossed" if bid[0] > ask[0] else "locked" if bid[0] == ask[0] else "ok"
                )
            else:
                row.update(
                    mid=None, spread=None, spread_bps=None, weighted_mid=None, top_imbalance=None
                )
                row["book_status"] = "empty" if bid is None and ask is None else "one_sided"
            bd = sum(s for _, s in b.bids[:depth])
            ad = sum(s for _, s in b.asks[:depth])
            row["depth_imbalance"] = _div(bd - ad, bd + ad)
            row["best_bid"] = bid[0] if bid else None
            row["best_ask"] = ask[0] if ask else None
            row["ofi"] = None
            row["mid_log_return"] = None
            if row_reason is None and two and prev_book is not None and prev_book["two"]:
                pb, pa_ = prev_book["bid"], prev_book["ask"]
                e = 0.0
                if bid[0] >= pb[0]:
                    e += bid[1]
                if bid[0] <= pb[0]:
                    e -= pb[1]
                if ask[0] <= pa_[0]:
                    e -= ask[1]
                if ask[0] >= pa_[0]:
                    e += pa_[1]
                row["ofi"] = e
                pm = (pb[0] + pa_[0]) / 2
                if row["mid"] > 0 and pm > 0:
                    row["mid_log_return"] = math.log(row["mid"] / pm)
            prev_book = {"two": two, "bid": bid, "ask": ask}
            quote = {"ts": ts, "bid": bid, "ask": ask}
            out.books.append(row)
        elif channel == 1:
            k = ticks[i]
            row = {"state_reset": row_reason, "mid": (k.bid + k.ask) / 2, "spread": k.ask - k.bid}
            if row_reason is None and prev_tick is not None:
                row["last_change"] = k.last - prev_tick.last
                row["volume_24h_change"] = k.volume - prev_tick.volume
                row["seconds_since_previous"] = (k.ts - prev_tick.ts) / 1_000_000
            else:
                row["last_change"] = row["volume_24h_change"] = row["seconds_since_previous"] = None
            prev_tick = k
            out.ticks.append(row)
        else:
            t = trades[i]
            if row_reason is not None:
                last_price, tick_sign, segment = None, 0, []
            if last_price is not None and t.price != last_price:
                tick_sign = _sign(t.price - last_price)
            last_price = t.price
            q = quote
            usable = (
                q is not None
                and q["bid"] is not None
                and q["ask"] is not None
                and ts - q["ts"] <= staleness
            )
            row = {"state_reset": row_reason}
            if usable:
                qmid = (q["bid"][0] + q["ask"][0]) / 2
                row.update(
                    quote_bid=q["bid"][0],
                    quote_ask=q["ask"][0],
                    quote_mid=qmid,
                    quote_age_ms=(ts - q["ts"]) / 1000,
                )
            else:
                qmid = None
                row.update(quote_bid=None, quote_ask=None, quote_mid=None, quote_age_ms=None)
            if t.side in ("buy", "sell"):
                side, source = t.side, "feed"
            elif qmid is not None and t.price != qmid:
                side, source = ("buy" if t.price > qmid else "sell"), "quote_rule"
            elif tick_sign != 0:
                side, source = ("buy" if tick_sign > 0 else "sell"), "tick_rule"
            else:
                side, source = None, "unknown"
            signed = t.size if side == "buy" else -t.size if side == "sell" else 0.0
            row.update(aggressor_side=side, side_source=source, signed_volume=signed)
            segment.append((ts, t.price, t.size, signed))
            for w in windows_s:
                inside = [x for x in segment if x[0] > ts - w * 1_000_000]
                volume = sum(x[2] for x in inside)
                label = f"{w // 60}m"
                row[f"vwap_{label}"] = _div(sum(x[1] * x[2] for x in inside), volume)
                row[f"tfi_{label}"] = _div(sum(x[3] for x in inside), volume)
            out.trades.append(row)
    return out
