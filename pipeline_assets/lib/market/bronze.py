"""Bronze reading: one UTC day of the collectors' SQLite files as channel-separated Arrow tables.

A collector may be writing to its file while this reads it, and the read must neither block the
collector nor change the file:

- The file is opened with a `file:...?mode=ro` URI, so this connection can never write to it.
  Collectors run in WAL mode: a read-only connection there takes no lock that blocks the writer
  and sees the last committed state. (It needs the `-shm` index next to the file, which SQLite
  creates when the folder is writable; it never checkpoints or removes the `-wal` file.)
  In rollback-journal mode a reader holds a shared lock while a statement runs, which delays the
  writer's commit; so rows are read in short keyset pages (`id > last ORDER BY id LIMIT n`), each
  its own statement, and the lock is released between pages.
- The highest id is fixed when the read starts, so the result is the file as of that moment:
  rows a collector commits during the read (higher ids) are left for the next read.
- A busy timeout covers the moment a rollback-journal writer holds its exclusive commit lock.
- On a WAL-mode file that no collector has open, the read-only connection may leave an empty
  `-wal` and a `-shm` beside it (it may not remove them); SQLite reuses them, and they belong to
  the normal set of a WAL-mode database.

Each row is normalized (exchange lowercase, `BASE-QUOTE` symbol) and its JSON payload parsed into
typed columns. A row that cannot be (bad JSON, a missing or mistyped field, an unknown channel,
an unreadable symbol or timestamp) goes to a `rejects` table with the reason, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline_assets.lib.market.symbols import SymbolError, normalize_exchange, normalize_symbol

CHANNELS = ("orderbook", "trades", "ticker")
REJECTS = "rejects"
READ_PAGE_ROWS = 5_000
DEFAULT_BUSY_TIMEOUT_S = 30.0

TS_TYPE = pa.timestamp("us", tz="UTC")
LEVEL_TYPE = pa.struct([("price", pa.float64()), ("size", pa.float64())])
LEVELS_TYPE = pa.list_(LEVEL_TYPE)


def _field(name: str, type_: pa.DataType, description: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"description": description.encode()})


_COMMON_FIELDS = (
    _field("source_file", pa.string(), "Name of the worker SQLite file the row was read from."),
    _field("source_id", pa.int64(), "market_ticks.id in the worker file (a per-file sequence)."),
    _field(
        "exchange_raw", pa.string(), "Exchange as the collector spelled it (market_ticks.exchange)."
    ),
    _field("symbol_raw", pa.string(), "Exchange-native symbol as collected (market_ticks.symbol)."),
    _field("exchange", pa.string(), "Normalized exchange: stripped, lowercase."),
    _field("symbol", pa.string(), "Canonical symbol BASE-QUOTE, uppercase (BTC-USDT)."),
    _field("base_asset", pa.string(), "Base asset, uppercase, aliases resolved (XBT -> BTC)."),
    _field("quote_asset", pa.string(), "Quote asset, uppercase, aliases resolved."),
    _field("event_ts_utc", TS_TYPE, "Exchange event time (market_ticks.event_ts_utc), UTC."),
    _field(
        "ingestion_ts_utc",
        TS_TYPE,
        "When the worker stored the row (market_ticks.ingestion_ts_utc), UTC; the staging watermark.",
    ),
)
_PAYLOAD_FIELD = _field("payload", pa.string(), "The raw JSON payload text, unchanged.")

BRONZE_ORDERBOOK_SCHEMA = pa.schema(
    [
        *_COMMON_FIELDS,
        _field(
            "bids",
            LEVELS_TYPE,
            "Bid levels of the snapshot as collected (best first): price, size.",
        ),
        _field(
            "asks",
            LEVELS_TYPE,
            "Ask levels of the snapshot as collected (best first): price, size.",
        ),
        _PAYLOAD_FIELD,
    ],
    metadata={
        b"description": b"Order book snapshots, one row per market_ticks row of channel 'orderbook'."
    },
)
BRONZE_TRADES_SCHEMA = pa.schema(
    [
        *_COMMON_FIELDS,
        _field(
            "trade_id",
            pa.string(),
            "Exchange trade id, as text (numeric ids are written in decimal).",
        ),
        _field("price", pa.float64(), "Trade price in the quote asset."),
        _field("size", pa.float64(), "Trade size in the base asset."),
        _field(
            "side",
            pa.string(),
            "Aggressor side 'buy' or 'sell'; null when the exchange does not say.",
            nullable=True,
        ),
        _PAYLOAD_FIELD,
    ],
    metadata={b"description": b"Trades, one row per market_ticks row of channel 'trades'."},
)
BRONZE_TICKER_SCHEMA = pa.schema(
    [
        *_COMMON_FIELDS,
        _field("bid", pa.float64(), "Best bid price."),
        _field("ask", pa.float64(), "Best ask price."),
        _field("last", pa.float64(), "Last traded price."),
        _field(
            "volume_24h",
            pa.float64(),
            "Rolling 24-hour volume in the base asset, as the exchange reports it.",
        ),
        _PAYLOAD_FIELD,
    ],
    metadata={b"description": b"Ticker updates, one row per market_ticks row of channel 'ticker'."},
)
BRONZE_REJECTS_SCHEMA = pa.schema(
    [
        _field("source_file", pa.string(), "Name of the worker SQLite file the row was read from."),
        _field("source_id", pa.int64(), "market_ticks.id in the worker file."),
        _field("channel", pa.string(), "market_ticks.channel as stored."),
        _field("exchange_raw", pa.string(), "market_ticks.exchange as stored.", nullable=True),
        _field("symbol_raw", pa.string(), "market_ticks.symbol as stored.", nullable=True),
        _field(
            "event_ts_utc_raw",
            pa.string(),
            "market_ticks.event_ts_utc as stored (text).",
            nullable=True,
        ),
        _field(
            "reason",
            pa.string(),
            "Why the row was rejected: the field, what was expected and what was found.",
        ),
        _field(
            "payload",
            pa.string(),
            "The raw payload text, unchanged (binary payloads decoded with escapes).",
            nullable=True,
        ),
    ],
    metadata={
        b"description": b"market_ticks rows of the day that could not be parsed, with the reason."
    },
)

BRONZE_SCHEMAS: dict[str, pa.Schema] = {
    "orderbook": BRONZE_ORDERBOOK_SCHEMA,
    "trades": BRONZE_TRADES_SCHEMA,
    "ticker": BRONZE_TICKER_SCHEMA,
    REJECTS: BRONZE_REJECTS_SCHEMA,
}

SORT_KEYS = [
    ("event_ts_utc", "ascending"),
    ("exchange", "ascending"),
    ("symbol", "ascending"),
    ("source_file", "ascending"),
    ("source_id", "ascending"),
]
REJECT_SORT_KEYS = [("source_file", "ascending"), ("source_id", "ascending")]

_MARKET_TICKS_COLUMNS = (
    "id",
    "exchange",
    "symbol",
    "channel",
    "event_ts_utc",
    "ingestion_ts_utc",
    "payload",
)


class PayloadError(ValueError):
    """A payload that does not match its channel's shape; the message names the field."""


# ---------------------------------------------------------------------------------------------
# Payload parsing (pure; one function per channel)
# ---------------------------------------------------------------------------------------------

_NUMBER_TEXT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, field: str) -> float:
    """A finite JSON number, or a decimal number as text (exchanges such as Binance send prices as strings)."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{field}: expected a number, got {_describe(value)}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise PayloadError(
                f"{field}: expected a finite number, got an integer too large"
            ) from None
    elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        number = float(value)
    else:
        raise PayloadError(f"{field}: expected a number, got {_describe(value)}")
    if not math.isfinite(number):
        raise PayloadError(f"{field}: expected a finite number, got {_describe(value)}")
    return number


def _required(obj: dict[str, Any], field: str, expected: str) -> Any:
    if field not in obj:
        raise PayloadError(f"{field}: missing (expected {expected})")
    return obj[field]


def _levels(obj: dict[str, Any], field: str) -> list[dict[str, float]]:
    value = _required(obj, field, "a list of [price, size] levels")
    if not isinstance(value, list):
        raise PayloadError(
            f"{field}: expected a list of [price, size] levels, got {_describe(value)}"
        )
    levels = []
    for i, level in enumerate(value):
        if not isinstance(level, list) or len(level) < 2:
            raise PayloadError(f"{field}[{i}]: expected [price, size], got {_describe(level)}")
        levels.append(
            {
                "price": _number(level[0], f"{field}[{i}].price"),
                "size": _number(level[1], f"{field}[{i}].size"),
            }
        )
    return levels


def _parse_orderbook(obj: dict[str, Any]) -> dict[str, Any]:
    return {"bids": _levels(obj, "bids"), "asks": _levels(obj, "asks")}


def _parse_trades(obj: dict[str, Any]) -> dict[str, Any]:
    trade_id = _required(obj, "trade_id", "a non-empty string or an integer")
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        trade_id = str(trade_id)
    if not isinstance(trade_id, str) or not trade_id:
        raise PayloadError(
            f"trade_id: expected a non-empty string or an integer, got {_describe(trade_id)}"
        )
    side = obj.get("side")
    if side not in ("buy", "sell", None):
        raise PayloadError(f"side: expected 'buy', 'sell' or null, got {_describe(side)}")
    return {
        "trade_id": trade_id,
        "price": _number(_required(obj, "price", "a number"), "price"),
        "size": _number(_required(obj, "size", "a number"), "size"),
        "side": side,
    }


def _parse_ticker(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        name: _number(_required(obj, name, "a number"), name)
        for name in ("bid", "ask", "last", "volume_24h")
    }


_PARSERS = {"orderbook": _parse_orderbook, "trades": _parse_trades, "ticker": _parse_ticker}


def parse_payload(channel: str, payload: str) -> dict[str, Any]:
    """The typed fields of one payload of `channel`, or `PayloadError` naming the field at fault.

    Orderbook: bids, asks (lists of {price, size}); trades: trade_id, price, size, side (a missing
    side is null); ticker: bid, ask, last, volume_24h. Extra keys are ignored; numbers may be JSON
    numbers or decimal text; NaN and infinities are refused.
    """
    parser = _PARSERS.get(channel)
    if parser is None:
        raise PayloadError(f"channel: expected one of {', '.join(CHANNELS)}, got {channel!r}")
    try:
        obj = _DECODER.decode(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise PayloadError(
            f"payload: expected valid JSON, got text that is not ({detail})"
        ) from None
    if not isinstance(obj, dict):
        raise PayloadError(
            f"payload: expected a JSON object, got {type(obj).__name__} {_describe(obj)}"
        )
    return parser(obj)


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------

_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)", re.ASCII
)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
TS_EXAMPLE = "2026-02-19T10:30:00.123456Z"


def parse_utc_ts(text: Any, field: str) -> int:
    """Microseconds since the epoch of a collector timestamp (UTC ISO-8601 text ending in Z)."""
    match = _TS_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise PayloadError(
            f"{field}: expected UTC ISO-8601 text like {TS_EXAMPLE!r}, got {_describe_raw(text)}"
        )
    y, mo, d, h, mi, s, frac = match.groups()
    try:
        days = dt.date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
        if int(h) > 23 or int(mi) > 59 or int(s) > 59:
            raise ValueError("time of day out of range")
    except ValueError as exc:
        raise PayloadError(
            f"{field}: expected a valid UTC date and time, got {text!r} ({exc})"
        ) from None
    micros = int((frac or "").ljust(6, "0"))
    return ((days * 24 + int(h)) * 60 + int(mi)) * 60_000_000 + int(s) * 1_000_000 + micros


def _describe_raw(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_text(value: Any) -> str | None:
    """SQLite columns are loosely typed: show whatever a column holds as text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


# ---------------------------------------------------------------------------------------------
# Reading a worker file
# ---------------------------------------------------------------------------------------------


def _connect_read_only(db_path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    if not db_path.is_file():
        raise FileNotFoundError(f"worker file {db_path} does not exist")
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.Error as exc:
        conn.close()
        raise sqlite3.OperationalError(
            f"cannot read worker file {db_path} read-only ({exc}); if it is in WAL mode, its "
            "folder must be writable so that SQLite can create the shared-memory index beside it"
        ) from exc
    if "market_ticks" not in tables:
        conn.close()
        raise ValueError(
            f"worker file {db_path}: expected a table market_ticks, found {sorted(tables)}"
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(market_ticks)")}
    missing = [c for c in _MARKET_TICKS_COLUMNS if c not in columns]
    if missing:
        conn.close()
        raise ValueError(
            f"worker file {db_path}: market_ticks lacks the columns {missing} of the collector schema"
        )
    return conn


def _day_bounds(day: dt.date) -> tuple[str, str]:
    # Collector timestamps are 'YYYY-MM-DDT...Z' text, so the day is a range of text prefixes.
    return day.isoformat(), (day + dt.timedelta(days=1)).isoformat()


def _fetch_day_rows(conn: sqlite3.Connection, day: dt.date, page_rows: int) -> list[tuple]:
    lower, upper = _day_bounds(day)
    min_id, max_id = conn.execute("SELECT min(id), max(id) FROM market_ticks").fetchone()
    rows: list[tuple] = []
    if max_id is None:
        return rows
    last_id = min_id - 1
    while True:
        # Each page is its own statement (autocommit), so no read lock is held between pages;
        # `id` is the rowid, so every page starts where the previous one ended.
        page = conn.execute(
            "SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload "
            "FROM market_ticks WHERE id > ? AND id <= ? "
            "AND event_ts_utc >= ? AND event_ts_utc < ? ORDER BY id LIMIT ?",
            (last_id, max_id, lower, upper, page_rows),
        ).fetchall()
        rows.extend(page)
        if len(page) < page_rows:
            return rows
        last_id = page[-1][0]


class _Builder:
    """Column lists for the three channel tables and the rejects table of one file."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[str, list]] = {
            name: {f.name: [] for f in schema} for name, schema in BRONZE_SCHEMAS.items()
        }

    def add(self, table: str, values: dict[str, Any]) -> None:
        for name, column in self.columns[table].items():
            column.append(values[name])

    def tables(self) -> dict[str, pa.Table]:
        return {
            name: pa.Table.from_pydict(self.columns[name], schema=schema)
            for name, schema in BRONZE_SCHEMAS.items()
        }


def read_worker_day(
    db_path: Path,
    day: dt.date,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    page_rows: int = READ_PAGE_ROWS,
) -> dict[str, pa.Table]:
    """The market_ticks of one worker file whose event time falls on `day` (UTC), by channel.

    Returns tables 'orderbook', 'trades', 'ticker' (schemas `BRONZE_*_SCHEMA`) and 'rejects'
    (`BRONZE_REJECTS_SCHEMA`), sorted by (event_ts_utc, exchange, symbol, source_file, source_id)
    and rejects by source_id. The file is opened read-only and never changed.
    """
    db_path = Path(db_path)
    source_file = db_path.name
    conn = _connect_read_only(db_path, busy_timeout_s)
    try:
        rows = _fetch_day_rows(conn, day, page_rows)
    finally:
        conn.close()

    builder = _Builder()
    names: dict[tuple[Any, Any], tuple[str, str, str, str] | str] = {}
    for (
        source_id,
        exchange_raw,
        symbol_raw,
        channel_raw,
        event_raw,
        ingest_raw,
        payload_raw,
    ) in rows:
        exchange_text, symbol_text = _as_text(exchange_raw), _as_text(symbol_raw)
        payload_text = _as_text(payload_raw)
        channel = _as_text(channel_raw) or ""
        try:
            if channel not in CHANNELS:
                raise PayloadError(
                    f"channel: expected one of {', '.join(CHANNELS)}, got {channel!r}"
                )
            key = (exchange_raw, symbol_raw)
            if key not in names:
                names[key] = _normalize_names(exchange_text, symbol_text)
            normalized = names[key]
            if isinstance(normalized, str):
                raise PayloadError(normalized)
            event_us = parse_utc_ts(event_raw, "event_ts_utc")
            ingest_us = parse_utc_ts(ingest_raw, "ingestion_ts_utc")
            if not isinstance(payload_raw, str):
                raise PayloadError(
                    f"payload: expected JSON text, got a SQLite {type(payload_raw).__name__} value"
                )
            fields = parse_payload(channel, payload_raw)
        except PayloadError as exc:
            builder.add(
                REJECTS,
                {
                    "source_file": source_file,
                    "source_id": source_id,
                    "channel": channel,
                    "exchange_raw": exchange_text,
                    "symbol_raw": symbol_text,
                    "event_ts_utc_raw": _as_text(event_raw),
                    "reason": str(exc),
                    "payload": payload_text,
                },
            )
            continue
        exchange, symbol, base, quote = normalized
        builder.add(
            channel,
            {
                "source_file": source_file,
                "source_id": source_id,
                "exchange_raw": exchange_text,
                "symbol_raw": symbol_text,
                "exchange": exchange,
                "symbol": symbol,
                "base_asset": base,
                "quote_asset": quote,
                "event_ts_utc": event_us,
                "ingestion_ts_utc": ingest_us,
                "payload": payload_raw,
                **fields,
            },
        )
    return _sorted(builder.tables())


def _normalize_names(
    exchange_raw: str | None, symbol_raw: str | None
) -> tuple[str, str, str, str] | str:
    """(exchange, symbol, base, quote), or the reject reason naming the field at fault."""
    try:
        exchange = normalize_exchange(exchange_raw)  # type: ignore[arg-type]
    except SymbolError as exc:
        return f"exchange: {exc}"
    try:
        return (exchange, *normalize_symbol(exchange_raw, symbol_raw))  # type: ignore[arg-type]
    except SymbolError as exc:
        return f"symbol: {exc}"


def _sorted(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    return {
        name: table.sort_by(REJECT_SORT_KEYS if name == REJECTS else SORT_KEYS)
        for name, table in tables.items()
    }


def read_bronze_day(
    db_paths: Sequence[Path],
    day: dt.date,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
) -> dict[str, pa.Table]:
    """One UTC day across all worker files: `read_worker_day` of each, concatenated and sorted.

    The order of `db_paths` does not matter: rows are sorted by (event_ts_utc, exchange, symbol,
    source_file, source_id), rejects by (source_file, source_id). File names must be distinct,
    since `source_file` identifies a row's origin.
    """
    paths = [Path(p) for p in db_paths]
    names = [p.name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"worker files must have distinct names (source_file); repeated: {duplicates}"
        )
    parts = [
        read_worker_day(p, day, busy_timeout_s=busy_timeout_s)
        for p in sorted(paths, key=lambda p: p.name)
    ]
    combined = {
        name: pa.concat_tables([part[name] for part in parts]) if parts else schema.empty_table()
        for name, schema in BRONZE_SCHEMAS.items()
    }
    return _sorted({name: table.combine_chunks() for name, table in combined.items()})
