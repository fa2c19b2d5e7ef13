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
A row whose event time has no date at all (an epoch number, '19/02/2026 10:30:00', empty text)
belongs to the day of its ingestion time (`DAY_TICKS_SQL`), where it is rejected with reason
`timestamp_not_iso8601`: no date is guessed.

`land_bronze_day` is the day as bronze lands it, built in memory: across all worker files, with
exact duplicates recorded by two workers dropped (and counted), the day's connection events, and
the rejected rows of both tables as the quarantine. It is the reference: the assets build the
same day in bounded memory with `bronze_stream.BronzeSpill`, which hands every row its
vectorized parse cannot vouch for to `land_tick_rows` here, and writes the same bytes (tests
compare the two). The schemas are the contracts in `contracts.market`; the `BRONZE_*_SCHEMA`
names are their Arrow schemas.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from contracts.core import ContractModel, arrow_schema
from contracts.market import (
    BronzeConnectionEvents,
    BronzeOrderbook,
    BronzeQuarantine,
    BronzeTicker,
    BronzeTrades,
)
from pipeline_assets.lib.market.symbols import SymbolError, normalize_exchange, normalize_symbol

CHANNELS = ("orderbook", "trades", "ticker")
REJECTS = "rejects"
QUARANTINE = "quarantine"
CONNECTION_EVENTS = "connection_events"
READ_PAGE_ROWS = 5_000
DEFAULT_BUSY_TIMEOUT_S = 30.0

BRONZE_ORDERBOOK_SCHEMA = arrow_schema(BronzeOrderbook)
BRONZE_TRADES_SCHEMA = arrow_schema(BronzeTrades)
BRONZE_TICKER_SCHEMA = arrow_schema(BronzeTicker)
BRONZE_QUARANTINE_SCHEMA = arrow_schema(BronzeQuarantine)
# read_worker_day's rejects are the market_ticks part of the quarantine.
BRONZE_REJECTS_SCHEMA = BRONZE_QUARANTINE_SCHEMA
BRONZE_CONNECTION_EVENTS_SCHEMA = arrow_schema(BronzeConnectionEvents)

TS_TYPE = BRONZE_TRADES_SCHEMA.field("event_ts_utc").type
LEVELS_TYPE = BRONZE_ORDERBOOK_SCHEMA.field("bids").type
LEVEL_TYPE = LEVELS_TYPE.value_type

BRONZE_SCHEMAS: dict[str, pa.Schema] = {
    "orderbook": BRONZE_ORDERBOOK_SCHEMA,
    "trades": BRONZE_TRADES_SCHEMA,
    "ticker": BRONZE_TICKER_SCHEMA,
    REJECTS: BRONZE_REJECTS_SCHEMA,
}

# The contract of each table `land_bronze_day` returns.
LANDED_CONTRACTS: dict[str, type[ContractModel]] = {
    "orderbook": BronzeOrderbook,
    "trades": BronzeTrades,
    "ticker": BronzeTicker,
    QUARANTINE: BronzeQuarantine,
    CONNECTION_EVENTS: BronzeConnectionEvents,
}

SORT_KEYS = [
    ("event_ts_utc", "ascending"),
    ("exchange", "ascending"),
    ("symbol", "ascending"),
    ("source_file", "ascending"),
    ("source_id", "ascending"),
]
REJECT_SORT_KEYS = [
    ("source_file", "ascending"),
    ("source_table", "ascending"),
    ("source_id", "ascending"),
]
EVENT_SORT_KEYS = [
    ("event_ts_utc", "ascending"),
    ("exchange", "ascending"),
    ("source_file", "ascending"),
    ("source_id", "ascending"),
]
# What makes two market_ticks rows the same recorded event (the channel is the table).
DUPLICATE_KEY = ("exchange", "symbol", "event_ts_utc", "payload")

_MARKET_TICKS_COLUMNS = (
    "id",
    "exchange",
    "symbol",
    "channel",
    "event_ts_utc",
    "ingestion_ts_utc",
    "payload",
)
_CONNECTION_EVENTS_COLUMNS = (
    "id",
    "exchange",
    "worker_id",
    "event_type",
    "event_ts_utc",
    "details",
)


class WorkerFileError(ValueError):
    """A worker file that cannot be read as a collector file: not SQLite, a table or column
    missing, truncated or corrupt. The message names the file; `path` holds it."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = Path(path)


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
# The reason code a quarantined row's reason starts with when a timestamp is not in the
# collectors' ISO-8601 form (another layout, an epoch number, empty text, NULL).
TIMESTAMP_NOT_ISO8601 = "timestamp_not_iso8601"
# How the reason of a market_ticks row whose event time has no date at all begins (such a row is
# quarantined on its ingestion date: see `DAY_TICKS_SQL`).
NO_EVENT_DATE = f"{TIMESTAMP_NOT_ISO8601}: event_ts_utc has no date"
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def has_date(value: Any) -> bool:
    """Whether a stored timestamp starts with a YYYY-MM-DD date (SQLite's GLOB in `_dated`)."""
    return isinstance(value, str) and _DATE_PREFIX.match(value) is not None


def parse_utc_ts(text: Any, field: str) -> int:
    """Microseconds since the epoch of a collector timestamp (UTC ISO-8601 text ending in Z)."""
    match = _TS_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise PayloadError(
            f"{TIMESTAMP_NOT_ISO8601}: {field}: expected UTC ISO-8601 text like {TS_EXAMPLE!r}, "
            f"got {_describe_raw(text)}"
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


def is_transient(exc: sqlite3.Error) -> bool:
    """A lock or busy error: the file is fine, a writer holds it; retry rather than reject."""
    # A writer holding its lock past the busy timeout is not the file's fault: fail, never skip.
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@contextlib.contextmanager
def _file_errors(db_path: Path) -> Iterator[None]:
    """Turn SQLite's errors about a file's content into a `WorkerFileError` naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        if is_transient(exc):
            raise
        raise WorkerFileError(
            db_path,
            f"cannot read worker file {db_path} ({exc}); expected an intact collector SQLite file",
        ) from exc


def check_worker_tables(
    conn: sqlite3.Connection, db_path: Path, tables: Mapping[str, Sequence[str]]
) -> None:
    """Raise a `WorkerFileError` naming the file unless it holds `tables` with their columns."""
    found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, wanted in tables.items():
        if table not in found:
            raise WorkerFileError(
                db_path, f"worker file {db_path}: expected a table {table}, found {sorted(found)}"
            )
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise WorkerFileError(
                db_path,
                f"worker file {db_path}: table {table} lacks the columns {missing} of the "
                "collector schema",
            )


def _connect_read_only(
    db_path: Path,
    busy_timeout_s: float,
    tables: Mapping[str, Sequence[str]] | None = None,
) -> sqlite3.Connection:
    """A read-only connection to a worker file that holds `tables` with at least their columns."""
    tables = {"market_ticks": _MARKET_TICKS_COLUMNS} if tables is None else tables
    if not db_path.is_file():
        raise FileNotFoundError(f"worker file {db_path} does not exist")
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        check_worker_tables(conn, db_path, tables)
    except WorkerFileError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        if is_transient(exc):
            raise
        hint = (
            "; if it is in WAL mode, its folder must be writable so that SQLite can create the "
            "shared-memory index beside it"
            if "unable to open" in str(exc).lower()
            else "; expected a collector SQLite file"
        )
        raise WorkerFileError(
            db_path, f"cannot read worker file {db_path} read-only ({exc}){hint}"
        ) from exc
    return conn


def _day_bounds(day: dt.date) -> tuple[str, str]:
    # Collector timestamps are 'YYYY-MM-DDT...Z' text, so the day is a range of text prefixes.
    return day.isoformat(), (day + dt.timedelta(days=1)).isoformat()


def _dated(column: str) -> str:
    # Text that starts with a YYYY-MM-DD prefix: it lies in exactly one day's text range.
    return f"(typeof({column}) = 'text' AND {column} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*')"


# Which market_ticks rows belong to a day (parameters: the day's bounds from `_day_bounds`, as
# :lower and :upper). A row whose event time has a date belongs to that date. A row whose event
# time has none (another layout such as '19/02/2026 10:30:00', an epoch number, empty text) can
# never be landed, and guessing its date (dd/mm or mm/dd?) would be wrong somewhere; it belongs
# to the date of its ingestion time, or when that has none either, to the ingestion date of the
# nearest row stored before it (after it, if none is before), so that it is quarantined in
# exactly one day, the same one at every run. The reading path and the row-count check share it.
_NEIGHBOUR_INGESTION = (
    "coalesce("
    "(SELECT p.ingestion_ts_utc FROM market_ticks p WHERE p.id < market_ticks.id "
    f"AND {_dated('p.ingestion_ts_utc')} ORDER BY p.id DESC LIMIT 1), "
    "(SELECT n.ingestion_ts_utc FROM market_ticks n WHERE n.id > market_ticks.id "
    f"AND {_dated('n.ingestion_ts_utc')} ORDER BY n.id LIMIT 1))"
)
DAY_TICKS_SQL = (
    f"((event_ts_utc >= :lower AND event_ts_utc < :upper AND {_dated('event_ts_utc')}) "
    f"OR (NOT {_dated('event_ts_utc')} AND ("
    f"({_dated('ingestion_ts_utc')} AND ingestion_ts_utc >= :lower AND ingestion_ts_utc < :upper) "
    f"OR (NOT {_dated('ingestion_ts_utc')} AND {_NEIGHBOUR_INGESTION} >= :lower "
    f"AND {_NEIGHBOUR_INGESTION} < :upper))))"
)
# The same for connection_events, which have no ingestion time: a row whose event time has no
# date belongs to the date of the nearest dated event stored before it (after it, if none is).
_NEIGHBOUR_EVENT = (
    "coalesce("
    "(SELECT p.event_ts_utc FROM connection_events p WHERE p.id < connection_events.id "
    f"AND {_dated('p.event_ts_utc')} ORDER BY p.id DESC LIMIT 1), "
    "(SELECT n.event_ts_utc FROM connection_events n WHERE n.id > connection_events.id "
    f"AND {_dated('n.event_ts_utc')} ORDER BY n.id LIMIT 1))"
)
DAY_EVENTS_SQL = (
    f"((event_ts_utc >= :lower AND event_ts_utc < :upper AND {_dated('event_ts_utc')}) "
    f"OR (NOT {_dated('event_ts_utc')} AND {_NEIGHBOUR_EVENT} >= :lower "
    f"AND {_NEIGHBOUR_EVENT} < :upper))"
)


def _fetch_day_rows(
    conn: sqlite3.Connection, day: dt.date, page_rows: int
) -> tuple[list[tuple], int | None]:
    """The day's market_ticks rows, and the highest id when the read started (None: no rows)."""
    lower, upper = _day_bounds(day)
    min_id, max_id = conn.execute("SELECT min(id), max(id) FROM market_ticks").fetchone()
    rows: list[tuple] = []
    if max_id is None:
        return rows, None
    last_id = min_id - 1
    while True:
        # Each page is its own statement (autocommit), so no read lock is held between pages;
        # `id` is the rowid, so every page starts where the previous one ended.
        page = conn.execute(
            "SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload "
            f"FROM market_ticks WHERE id > :last AND id <= :max AND {DAY_TICKS_SQL} "
            "ORDER BY id LIMIT :rows",
            {"last": last_id, "max": max_id, "lower": lower, "upper": upper, "rows": page_rows},
        ).fetchall()
        rows.extend(page)
        if len(page) < page_rows:
            return rows, max_id
        last_id = page[-1][0]


class _Builder:
    """Column lists for a set of tables, filled row by row."""

    def __init__(self, schemas: Mapping[str, pa.Schema] = BRONZE_SCHEMAS) -> None:
        self.schemas = dict(schemas)
        self.columns: dict[str, dict[str, list]] = {
            name: {f.name: [] for f in schema} for name, schema in self.schemas.items()
        }

    def add(self, table: str, values: dict[str, Any]) -> None:
        for name, column in self.columns[table].items():
            column.append(values[name])

    def tables(self) -> dict[str, pa.Table]:
        return {
            name: pa.Table.from_pydict(self.columns[name], schema=schema)
            for name, schema in self.schemas.items()
        }


def _ticks_of_day(
    conn: sqlite3.Connection, source_file: str, day: dt.date, page_rows: int
) -> tuple[dict[str, pa.Table], int | None]:
    rows, max_id = _fetch_day_rows(conn, day, page_rows)
    builder = _Builder()
    land_tick_rows(rows, source_file, builder, {})
    return _sorted(builder.tables()), max_id


def land_tick_rows(
    rows: Iterable[tuple],
    source_file: str,
    builder: _Builder,
    names: dict[tuple[Any, Any], tuple[str, str, str, str] | str],
) -> None:
    """Parse market_ticks rows (id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc,
    payload) one by one into `builder`'s channel tables, or its rejects with the reason.

    This is the definition of what a row becomes; `names` caches normalized (exchange, symbol).
    """
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
            if not has_date(event_raw):
                raise PayloadError(
                    f"{NO_EVENT_DATE} (got {_describe_raw(event_raw)}; expected UTC ISO-8601 "
                    f"text like {TS_EXAMPLE!r}), so it is quarantined on its ingestion date "
                    "(without one, on that of the row stored before it)"
                )
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
                    "source_table": "market_ticks",
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
    and rejects by source_id. The file is opened read-only and never changed. A file that is not
    a readable collector file raises `WorkerFileError` naming it.
    """
    db_path = Path(db_path)
    conn = _connect_read_only(db_path, busy_timeout_s)
    try:
        with _file_errors(db_path):
            tables, _ = _ticks_of_day(conn, db_path.name, day, page_rows)
    finally:
        conn.close()
    return tables


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


def _check_distinct_names(paths: Sequence[Path]) -> None:
    names = [p.name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"worker files must have distinct names (source_file); repeated: {duplicates}"
        )


def read_bronze_day(
    db_paths: Sequence[Path],
    day: dt.date,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
) -> dict[str, pa.Table]:
    """One UTC day across all worker files: `read_worker_day` of each, concatenated and sorted.

    The order of `db_paths` does not matter: rows are sorted by (event_ts_utc, exchange, symbol,
    source_file, source_id), rejects by (source_file, source_id). File names must be distinct,
    since `source_file` identifies a row's origin. Duplicates are kept; `land_bronze_day` drops them.
    """
    paths = [Path(p) for p in db_paths]
    _check_distinct_names(paths)
    parts = [
        read_worker_day(p, day, busy_timeout_s=busy_timeout_s)
        for p in sorted(paths, key=lambda p: p.name)
    ]
    combined = {
        name: pa.concat_tables([part[name] for part in parts]) if parts else schema.empty_table()
        for name, schema in BRONZE_SCHEMAS.items()
    }
    return _sorted({name: table.combine_chunks() for name, table in combined.items()})


# ---------------------------------------------------------------------------------------------
# Connection events
# ---------------------------------------------------------------------------------------------

_EVENT_SCHEMAS = {
    CONNECTION_EVENTS: BRONZE_CONNECTION_EVENTS_SCHEMA,
    REJECTS: BRONZE_REJECTS_SCHEMA,
}


def _required_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{field}: expected non-empty text, got {_describe_raw(value)}")
    return value


def _details(value: Any) -> str | None:
    """The details text as stored when it is a JSON object (or NULL); else a PayloadError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(
            f"details: expected JSON text or NULL, got a SQLite {type(value).__name__} value"
        )
    try:
        obj = _DECODER.decode(value)
    except (ValueError, RecursionError):
        raise PayloadError(
            "details: expected a JSON object or NULL, got text that is not JSON"
        ) from None
    if not isinstance(obj, dict):
        raise PayloadError(
            f"details: expected a JSON object or NULL, got {type(obj).__name__} {_describe(obj)}"
        )
    return value


def _event_time(event_raw: Any) -> int:
    if not has_date(event_raw):
        raise PayloadError(
            f"{NO_EVENT_DATE} (got {_describe_raw(event_raw)}; expected UTC ISO-8601 text like "
            f"{TS_EXAMPLE!r}), so it is quarantined on the date of the event stored before it"
        )
    return parse_utc_ts(event_raw, "event_ts_utc")


def _events_of_day(
    conn: sqlite3.Connection, source_file: str, day: dt.date
) -> tuple[dict[str, pa.Table], int | None]:
    """The day's connection_events as the bronze table and rejects; and the highest id read."""
    lower, upper = _day_bounds(day)
    (max_id,) = conn.execute("SELECT max(id) FROM connection_events").fetchone()
    builder = _Builder(_EVENT_SCHEMAS)
    if max_id is not None:
        # A few rows a day per exchange: one short statement is enough.
        rows = conn.execute(
            "SELECT id, exchange, worker_id, event_type, event_ts_utc, details "
            f"FROM connection_events WHERE id <= :max AND {DAY_EVENTS_SQL} ORDER BY id",
            {"max": max_id, "lower": lower, "upper": upper},
        ).fetchall()
    else:
        rows = []
    for source_id, exchange_raw, worker_raw, type_raw, event_raw, details_raw in rows:
        try:
            try:
                exchange = normalize_exchange(exchange_raw)
            except SymbolError as exc:
                raise PayloadError(f"exchange: {exc}") from None
            values = {
                "source_file": source_file,
                "source_id": source_id,
                "exchange": exchange,
                "worker_id": _required_text(worker_raw, "worker_id"),
                "event_type": _required_text(type_raw, "event_type"),
                "event_ts_utc": _event_time(event_raw),
                "details": _details(details_raw),
            }
        except PayloadError as exc:
            builder.add(
                REJECTS,
                {
                    "source_file": source_file,
                    "source_table": "connection_events",
                    "source_id": source_id,
                    "channel": None,
                    "exchange_raw": _as_text(exchange_raw),
                    "symbol_raw": None,
                    "event_ts_utc_raw": _as_text(event_raw),
                    "reason": str(exc),
                    "payload": _as_text(details_raw),
                },
            )
            continue
        builder.add(CONNECTION_EVENTS, values)
    return builder.tables(), max_id


# ---------------------------------------------------------------------------------------------
# Landing a day: what the bronze assets write
# ---------------------------------------------------------------------------------------------


def drop_exact_duplicates(table: pa.Table) -> tuple[pa.Table, int]:
    """Rows of one channel table without exact duplicates, and how many were dropped.

    Two rows are duplicates when exchange, symbol, event_ts_utc and payload text are equal (as when
    two workers record one stream); the row first by (source_file, source_id) is kept. The result
    is in `SORT_KEYS` order.
    """
    if table.num_rows == 0:
        return table, 0
    ordered = table.sort_by([("source_file", "ascending"), ("source_id", "ascending")])
    ordered = ordered.append_column("__row", pa.array(range(ordered.num_rows), pa.int64()))
    first = ordered.group_by(list(DUPLICATE_KEY), use_threads=False).aggregate([("__row", "min")])
    keep = pc.sort_indices(first.column("__row_min"))
    kept = ordered.take(pc.take(first.column("__row_min"), keep)).drop_columns(["__row"])
    return kept.sort_by(SORT_KEYS).combine_chunks(), table.num_rows - kept.num_rows


@dataclass(frozen=True)
class SourceRead:
    """One worker file as a day's read saw it: the highest id of each table when it was read
    (None: the table was empty). Counting the source again up to these ids gives the same rows,
    however much a collector has written since."""

    file: str
    market_ticks_max_id: int | None
    connection_events_max_id: int | None


@dataclass(frozen=True)
class BronzeDay:
    """One UTC day of the collector files, as the bronze assets write it.

    `tables` holds 'orderbook', 'trades', 'ticker' (de-duplicated), 'quarantine' and
    'connection_events', each with its contract's schema (`LANDED_CONTRACTS`).
    """

    day: dt.date
    tables: Mapping[str, pa.Table]
    duplicates_dropped: Mapping[str, int]
    sources: tuple[SourceRead, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def ticks(self) -> int:
        return sum(self.tables[c].num_rows for c in CHANNELS)


def land_bronze_day(
    db_paths: Sequence[Path],
    day: dt.date,
    *,
    skip_unreadable: bool = False,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    page_rows: int = READ_PAGE_ROWS,
) -> BronzeDay:
    """One UTC day across all worker files, as bronze lands it.

    A file that is not a readable collector file (not SQLite, a table missing, truncated) raises
    `WorkerFileError` naming it; with `skip_unreadable` it is left out and named in `skipped`
    with the reason. File names must be distinct; their order does not matter.
    """
    paths = sorted((Path(p) for p in db_paths), key=lambda p: p.name)
    _check_distinct_names(paths)
    tick_parts: list[dict[str, pa.Table]] = []
    event_parts: list[dict[str, pa.Table]] = []
    sources: list[SourceRead] = []
    skipped: dict[str, str] = {}
    tables_needed = {
        "market_ticks": _MARKET_TICKS_COLUMNS,
        "connection_events": _CONNECTION_EVENTS_COLUMNS,
    }
    for path in paths:
        try:
            try:
                conn = _connect_read_only(path, busy_timeout_s, tables_needed)
            except FileNotFoundError as exc:
                raise WorkerFileError(path, str(exc)) from exc
            try:
                with _file_errors(path):
                    ticks, ticks_max = _ticks_of_day(conn, path.name, day, page_rows)
                    events, events_max = _events_of_day(conn, path.name, day)
            finally:
                conn.close()
        except WorkerFileError as exc:
            if not skip_unreadable:
                raise
            skipped[path.name] = str(exc)
            continue
        tick_parts.append(ticks)
        event_parts.append(events)
        sources.append(SourceRead(path.name, ticks_max, events_max))

    def combined(parts: list[dict[str, pa.Table]], name: str, schema: pa.Schema) -> pa.Table:
        return pa.concat_tables([p[name] for p in parts]) if parts else schema.empty_table()

    tables: dict[str, pa.Table] = {}
    duplicates: dict[str, int] = {}
    for channel in CHANNELS:
        tables[channel], duplicates[channel] = drop_exact_duplicates(
            combined(tick_parts, channel, BRONZE_SCHEMAS[channel])
        )
    quarantine = pa.concat_tables(
        [
            combined(tick_parts, REJECTS, BRONZE_QUARANTINE_SCHEMA),
            combined(event_parts, REJECTS, BRONZE_QUARANTINE_SCHEMA),
        ]
    )
    tables[QUARANTINE] = quarantine.sort_by(REJECT_SORT_KEYS).combine_chunks()
    tables[CONNECTION_EVENTS] = (
        combined(event_parts, CONNECTION_EVENTS, BRONZE_CONNECTION_EVENTS_SCHEMA)
        .sort_by(EVENT_SORT_KEYS)
        .combine_chunks()
    )
    return BronzeDay(day, tables, duplicates, tuple(sources), skipped)
