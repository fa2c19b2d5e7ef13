"""The staging exporter: collector worker files to one export (SQLite, CSV or JSON Lines) plus its
run metadata file, with watermarks for incremental runs (spec/staging-run-contract.md).

What one run does, in order, holding a lock on the staging folder:

1. **Recover.** A previous run that was killed before it committed left a journal naming the files
   it had put in place; they are removed (together with hidden temporaries), so no half-finished
   export survives and the state still points where it did.
2. **Bounds.** The window is `[end_utc - hours, end_utc]`. In incremental mode with a stored
   watermark, a query's lower bound is that watermark, exclusive; otherwise the window's default
   start, inclusive. Upper bounds are `end_utc`, inclusive. `market_ticks` are bounded on
   `ingestion_ts_utc`, `connection_events` on `event_ts_utc`.
3. **Read and write, streaming.** Every worker file is read read-only (`mode=ro`, `query_only`,
   never locking a WAL-mode writer) in keyset pages of `chunk_size` rows by id, each page its own
   statement, up to the highest id present when the file was opened. Each page becomes an Arrow
   batch (read straight into Arrow by the ADBC SQLite driver; a page holding a value that is not
   text is read again with Python's sqlite3, which decides exactly as before): exchange and
   symbol are normalized once per distinct spelling (`lib.market.symbols`),
   the filters applied, and the rows appended to the outputs' hidden temporary files. Memory holds
   one page, whatever the size of the source. A tick whose ingestion time is not in the
   collectors' shape is in no text range: it belongs to the window of the nearest row stored
   before it with one (after it, for a file's first rows) and is rejected there
   (`_UndatedPlacement`), found by a search confined to the ids the window read leaves out.
4. **Put in place.** The journal is written, then every output is renamed to its canonical name,
   then its chain-of-custody sidecar, then `<export_base>_metadata.json`.
5. **Commit.** With `update_state`, the state file's profile for `state_key` gets the new
   watermarks and, per worker file, how far the search for ticks without a shaped ingestion
   time got (atomically); this is the commit point. The journal is removed.

A run that fails (or is killed) before the commit leaves the state untouched and, once the next
run has recovered, no file of its own; rerunning exports the same rows.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pydantic import ValidationError

from contracts.core import arrow_schema
from contracts.custody import ParentRef
from contracts.staging import (
    StagingConnectionEvent,
    StagingExportRunMetadata,
    StagingMarketTick,
    StagingReject,
)
from pipeline_assets.lib.custody import MetadataFactory, sidecar_path, write_sidecar
from pipeline_assets.lib.files import (
    as_upath,
    exclusive_file_lock,
    sha256_file,
    temp_path_for,
    write_bytes_atomic,
)
from pipeline_assets.lib.market.bronze import WorkerFileError, check_worker_tables, is_transient
from pipeline_assets.lib.market.symbols import (
    SymbolError,
    normalize_asset_filter,
    normalize_exchange,
    normalize_exchange_filter,
    normalize_symbol,
)
from pipeline_assets.lib.versions import CODE_VERSION

OUTPUT_FORMATS = ("sqlite", "csv", "json")
DEFAULT_HOURS = 24.0
DEFAULT_CHUNK_SIZE = 50_000
DEFAULT_STATE_KEY = "default"
EXPORT_PREFIX = "staging_export_"
STATE_FILE_NAME = "staging_export_state.json"
LOCK_FILE_NAME = ".staging_export.lock"
JOURNAL_FILE_NAME = ".staging_export.pending.json"
METADATA_SUFFIX = "_metadata.json"
TRANSFORMATION_NAME = "staging_export"
DEFAULT_BUSY_TIMEOUT_S = 30.0
DEFAULT_LOCK_TIMEOUT_S = 600.0

MARKET_TICKS = "market_ticks"
CONNECTION_EVENTS = "connection_events"
REJECTS = "rejects"

MARKET_TICK_SCHEMA = arrow_schema(StagingMarketTick)
CONNECTION_EVENT_SCHEMA = arrow_schema(StagingConnectionEvent)
REJECT_SCHEMA = arrow_schema(StagingReject)
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    MARKET_TICKS: MARKET_TICK_SCHEMA,
    CONNECTION_EVENTS: CONNECTION_EVENT_SCHEMA,
    REJECTS: REJECT_SCHEMA,
}
_EXTENSIONS = {"sqlite": ".sqlite", "csv": ".csv", "json": ".jsonl"}

# The collectors' timestamp text (DESIGN.md): microseconds and a Z. Bounds are compared as text,
# which orders such text chronologically; a row in another spelling is rejected, naming it.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
TS_EXAMPLE = "2026-02-19T10:30:00.123456Z"
# How the reason of a row whose timestamp is not in the collectors' ISO-8601 shape begins (the
# code bronze's quarantine uses too).
TIMESTAMP_NOT_ISO8601 = "timestamp_not_iso8601"
# The collectors' shape as a SQLite GLOB ('.' is literal there) and as the same test in Python.
# A market_ticks row whose ingestion time is not text in this shape (another layout such as
# '19/02/2026 10:30', an epoch number, empty text) has no place in the text order the windows
# select by: it is placed by the rows stored next to it (`_UndatedPlacement`).
_SHAPE_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    ".[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)
_SHAPE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _shaped_sql(column: str) -> str:
    return f"(typeof({column}) = 'text' AND {column} GLOB '{_SHAPE_GLOB}')"


def is_shaped(value: Any) -> bool:
    """Whether a stored timestamp is text in the collectors' shape (the SQL test `_shaped_sql`)."""
    return isinstance(value, str) and _SHAPE_RE.fullmatch(value) is not None


_STATE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_TICK_COLUMNS = (
    "id",
    "exchange",
    "symbol",
    "channel",
    "event_ts_utc",
    "ingestion_ts_utc",
    "payload",
)
_EVENT_COLUMNS = ("id", "exchange", "worker_id", "event_type", "event_ts_utc", "details")


@dataclass(frozen=True)
class _TimedTable:
    """A collector table as the windows select it: by the text of one time column, whose rows
    without such text are placed by `_UndatedPlacement`."""

    table: str
    columns: tuple[str, ...]
    ts_column: str

    @property
    def ts_index(self) -> int:
        return self.columns.index(self.ts_column)


_TIMED_TABLES = {
    MARKET_TICKS: _TimedTable(MARKET_TICKS, _TICK_COLUMNS, "ingestion_ts_utc"),
    CONNECTION_EVENTS: _TimedTable(CONNECTION_EVENTS, _EVENT_COLUMNS, "event_ts_utc"),
}


class StagingExportError(ValueError):
    """A configuration, state file or source the exporter cannot use; the message says what and
    what was expected."""


# ---------------------------------------------------------------------------------------------
# Options, window and bounds (pure)
# ---------------------------------------------------------------------------------------------


def parse_utc(value: str | dt.datetime, name: str = "end_utc") -> dt.datetime:
    """A UTC datetime from ISO-8601 text (`2026-02-19T10:30:00Z`; no zone means UTC)."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise StagingExportError(
                f"{name}={value!r}: expected an ISO-8601 UTC time such as {TS_EXAMPLE!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def format_ts(moment: dt.datetime) -> str:
    """A UTC time as the collectors write it (`2026-02-19T10:30:00.123456Z`)."""
    return moment.astimezone(dt.UTC).strftime(TS_FORMAT)


def parse_ts(text: str) -> dt.datetime:
    """A collector timestamp text as a UTC datetime."""
    return dt.datetime.strptime(text, TS_FORMAT).replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ExportOptions:
    """The run options, with the contract's names; build them with `export_options`."""

    hours: float = DEFAULT_HOURS
    end_utc: dt.datetime | None = None
    incremental: bool = False
    output_format: str = "sqlite"
    include_connection_events: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    exchanges: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    state_key: str = DEFAULT_STATE_KEY
    update_state: bool = False
    skip_unreadable_sources: bool = False


def export_options(
    *,
    hours: float = DEFAULT_HOURS,
    end_utc: str | dt.datetime | None = None,
    incremental: bool = False,
    output_format: str = "sqlite",
    include_connection_events: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exchanges: Sequence[str] | str | None = None,
    assets: Sequence[str] | str | None = None,
    state_key: str = DEFAULT_STATE_KEY,
    update_state: bool = False,
    skip_unreadable_sources: bool = False,
) -> ExportOptions:
    """Validated options with normalized filters; a bad value raises `StagingExportError` naming it."""
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours):
        raise StagingExportError(f"hours={hours!r}: expected a finite number of hours > 0")
    if hours <= 0:
        raise StagingExportError(f"hours={hours!r}: expected a number of hours > 0")
    if output_format not in OUTPUT_FORMATS:
        raise StagingExportError(
            f"output_format={output_format!r}: expected one of {', '.join(OUTPUT_FORMATS)}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise StagingExportError(f"chunk_size={chunk_size!r}: expected a whole number >= 1")
    if not isinstance(state_key, str) or not _STATE_KEY_RE.fullmatch(state_key):
        raise StagingExportError(
            f"state_key={state_key!r}: expected 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    try:
        exchange_filter = normalize_exchange_filter(exchanges)
        asset_filter = normalize_asset_filter(assets)
    except SymbolError as exc:
        raise StagingExportError(f"filters: {exc}") from None
    return ExportOptions(
        hours=float(hours),
        end_utc=None if end_utc in (None, "") else parse_utc(end_utc),  # type: ignore[arg-type]
        incremental=bool(incremental),
        output_format=output_format,
        include_connection_events=bool(include_connection_events),
        chunk_size=chunk_size,
        exchanges=tuple(exchange_filter),
        assets=tuple(asset_filter),
        state_key=state_key,
        update_state=bool(update_state),
        skip_unreadable_sources=bool(skip_unreadable_sources),
    )


@dataclass(frozen=True)
class Bounds:
    """One source query's bounds: `lower < ts` (or `<=` when inclusive) and `ts <= upper`."""

    lower_utc: dt.datetime
    lower_inclusive: bool
    upper_utc: dt.datetime

    def contains(self, moment: dt.datetime) -> bool:
        above = moment >= self.lower_utc if self.lower_inclusive else moment > self.lower_utc
        return above and moment <= self.upper_utc

    def as_dict(self) -> dict[str, Any]:
        return {
            "lower_utc": self.lower_utc,
            "lower_inclusive": self.lower_inclusive,
            "upper_utc": self.upper_utc,
        }


def export_window(hours: float, end_utc: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(default_start_utc, end_utc): the window of `hours` ending at `end_utc`."""
    return end_utc - dt.timedelta(hours=hours), end_utc


def query_bounds(
    default_start: dt.datetime,
    end_utc: dt.datetime,
    watermark: dt.datetime | None,
    *,
    incremental: bool,
    table: str = MARKET_TICKS,
) -> Bounds:
    """The contract's bounds: after the stored watermark (exclusive) in incremental mode when
    there is one; otherwise from the window's default start (inclusive). Up to end_utc inclusive.

    A watermark later than end_utc (end_utc moved back by hand) is refused: the bounds would be
    inverted and the run would export nothing while claiming to be incremental.
    """
    if incremental and watermark is not None:
        if watermark > end_utc:
            raise StagingExportError(
                f"{table}: the stored watermark {format_ts(watermark)} is after end_utc "
                f"{format_ts(end_utc)}; choose a later end_utc, another state_key, or "
                "incremental: false"
            )
        return Bounds(watermark, False, end_utc)
    return Bounds(default_start, True, end_utc)


def new_watermark(
    previous: dt.datetime | None, exported_max: dt.datetime | None
) -> dt.datetime | None:
    """The watermark after a run: the later of the stored one and the exported maximum."""
    candidates = [m for m in (previous, exported_max) if m is not None]
    return max(candidates) if candidates else None


def export_label(options: ExportOptions) -> str:
    """The `<label>` of the export base name: `incremental_<state_key>` or `last_<hours>h`."""
    if options.incremental:
        return f"incremental_{options.state_key}"
    return f"last_{options.hours:g}h"


def export_base_name(started: dt.datetime, label: str) -> str:
    return f"{EXPORT_PREFIX}{started.astimezone(dt.UTC).strftime('%Y%m%d_%H%M%S')}_{label}"


# ---------------------------------------------------------------------------------------------
# State file
# ---------------------------------------------------------------------------------------------

_STATE_FIELDS = {
    MARKET_TICKS: "market_ticks_ingestion_ts_utc",
    CONNECTION_EVENTS: "connection_events_event_ts_utc",
}


def read_state(path: Path) -> dict[str, Any]:
    """The state file's content (`{"profiles": {key: {...}}}`); a missing file is empty."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"profiles": {}}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StagingExportError(
            f'state file {path}: not valid JSON ({exc}); expected {{"profiles": {{...}}}}; '
            "restore it or move it away to start over"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
        raise StagingExportError(f"state file {path}: expected an object with a 'profiles' object")
    return raw


def stored_watermarks(state: dict[str, Any], key: str, path: Path) -> dict[str, dt.datetime | None]:
    """The profile's two watermarks (None where the profile or the value is missing)."""
    profile = state["profiles"].get(key) or {}
    marks: dict[str, dt.datetime | None] = {}
    for table, name in _STATE_FIELDS.items():
        value = profile.get(name)
        if value is None:
            marks[table] = None
            continue
        try:
            marks[table] = parse_utc(value, name)
        except StagingExportError as exc:
            raise StagingExportError(f"state file {path}, profile {key!r}: {exc}") from None
    return marks


# Per worker file, how far the profile's runs have looked for rows without a collector time
# (market_ticks' ingestion time, connection_events' event time): `read_upto`, the highest id a run
# read; `settled_upto`, the highest id up to which every such row has been rejected or belongs to
# a window before the runs'. One field per table.
UNDATED_STATE_FIELD = "market_ticks_undated"
UNDATED_STATE_FIELDS = {
    MARKET_TICKS: UNDATED_STATE_FIELD,
    CONNECTION_EVENTS: "connection_events_undated",
}


@dataclass(frozen=True)
class UndatedProgress:
    """One worker file's entry of `UNDATED_STATE_FIELD`."""

    read_upto: int
    settled_upto: int


def stored_undated_progress(
    state: dict[str, Any], key: str, path: Path, table: str = MARKET_TICKS
) -> dict[str, UndatedProgress]:
    """The profile's progress for `table` per worker file name (empty when it has none)."""
    state_field = UNDATED_STATE_FIELDS[table]
    raw = (state["profiles"].get(key) or {}).get(state_field) or {}
    progress: dict[str, UndatedProgress] = {}
    try:
        for name, entry in raw.items():
            progress[name] = UndatedProgress(int(entry["read_upto"]), int(entry["settled_upto"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise StagingExportError(
            f"state file {path}, profile {key!r}: {state_field} must map worker file "
            'names to {"read_upto": id, "settled_upto": id}; remove the field to start over'
        ) from None
    return progress


def _write_state(path: Path, key: str, profile: dict[str, Any]) -> None:
    state = read_state(path)
    state["profiles"][key] = profile
    write_bytes_atomic(
        as_upath(path), (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
    )


# ---------------------------------------------------------------------------------------------
# Reading worker files
# ---------------------------------------------------------------------------------------------


def _header_check(path: Path) -> None:
    """Refuse a file that is not SQLite or is shorter than its header says (truncated)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise WorkerFileError(path, f"cannot read worker file {path} ({exc})") from exc
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise WorkerFileError(
            path, f"worker file {path} is not a SQLite database (expected a collector SQLite file)"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    change_counter = int.from_bytes(header[24:28], "big")
    if pages and valid_for == change_counter and size < pages * page_size:
        raise WorkerFileError(
            path,
            f"worker file {path} is truncated: {size} bytes, its header says {pages} pages of "
            f"{page_size} bytes (expected an intact collector SQLite file)",
        )


def _connect_read_only(
    path: Path, tables: dict[str, Sequence[str]], busy_timeout_s: float
) -> sqlite3.Connection:
    """A read-only connection that can never write or lock out a WAL-mode writer."""
    if not path.is_file():
        raise WorkerFileError(path, f"worker file {path} does not exist")
    _header_check(path)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=busy_timeout_s,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise WorkerFileError(path, f"cannot open worker file {path} read-only ({exc})") from exc
    try:
        conn.execute("PRAGMA query_only = ON")
        check_worker_tables(conn, path, tables)
    except WorkerFileError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        if is_transient(exc):
            raise
        raise WorkerFileError(
            path,
            f"cannot read worker file {path} ({exc}); expected an intact collector SQLite file",
        ) from exc
    return conn


def _pages(
    conn: sqlite3.Connection,
    path: Path,
    table: str,
    columns: Sequence[str],
    ts_column: str,
    bounds: Bounds,
    chunk_size: int,
    max_id: int | None,
    after: int = -(2**63),
) -> Iterator[list[tuple]]:
    """Rows of `table` in the bounds with id <= max_id, `chunk_size` at a time, in id order.

    Each page is one short statement (`id > last ... LIMIT n`), so a rollback-journal writer is
    never held off for longer than a page, and a WAL-mode writer never at all.
    """
    if max_id is None:
        return
    lower_op = ">=" if bounds.lower_inclusive else ">"
    sql = (
        f"SELECT {', '.join(columns)} FROM {table} WHERE id > ? AND id <= ? "
        f"AND {ts_column} {lower_op} ? AND {ts_column} <= ? ORDER BY id LIMIT ?"
    )
    lower, upper = format_ts(bounds.lower_utc), format_ts(bounds.upper_utc)
    last = after
    while True:
        try:
            page = conn.execute(sql, (last, max_id, lower, upper, chunk_size)).fetchall()
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise
            raise WorkerFileError(
                path,
                f"cannot read {table} of worker file {path} ({exc}); expected an intact collector SQLite file",
            ) from exc
        if page:
            yield page
        if len(page) < chunk_size:
            return
        last = page[-1][0]


class _ArrowTickPages:
    """A file's market_ticks in the bounds, in keyset pages read straight into Arrow by the ADBC
    SQLite driver (read-only through `mode=ro`, each page its own statement), which costs a fifth
    of the CPU of building Python rows.

    SQLite columns are loosely typed and ADBC converts what they hold (an integer in a text column
    arrives as text), so each row says whether all its columns hold text; a page where one does
    not, or that ADBC cannot read, is read again with Python's sqlite3 and takes the exact path
    (`_pages`), as every page did before. So both give the same rows and values.
    """

    _SQL = (
        "SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload, "
        "(typeof(exchange) = 'text' AND typeof(symbol) = 'text' AND typeof(channel) = 'text' "
        "AND typeof(event_ts_utc) = 'text' AND typeof(ingestion_ts_utc) = 'text' "
        "AND typeof(payload) = 'text') AS all_text "
        "FROM market_ticks WHERE id > ? AND id <= ? AND ingestion_ts_utc {lower_op} ? "
        "AND ingestion_ts_utc <= ? ORDER BY id LIMIT ?"
    )

    def __init__(self, path: Path, conn: sqlite3.Connection, busy_timeout_s: float) -> None:
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        self.path = path
        self.conn = conn
        self.errors: tuple[type[Exception], ...] = (adbc_sqlite.Error,)
        self.adbc = self.cursor = None
        try:
            self.adbc = adbc_sqlite.connect(f"{path.resolve().as_uri()}?mode=ro", autocommit=True)
            self.cursor = self.adbc.cursor()
            self.cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        except self.errors:
            self.close()  # every page then takes the exact path

    def close(self) -> None:
        if self.cursor is not None:
            with contextlib.suppress(Exception):
                self.cursor.close()
        if self.adbc is not None:
            with contextlib.suppress(Exception):
                self.adbc.close()
        self.adbc = self.cursor = None

    def read(
        self, bounds: Bounds, chunk_size: int, max_id: int | None
    ) -> Iterator[pa.Table | list[tuple]]:
        if max_id is None:
            return
        sql = self._SQL.format(lower_op=">=" if bounds.lower_inclusive else ">")
        lower, upper = format_ts(bounds.lower_utc), format_ts(bounds.upper_utc)
        last = -(2**63)
        while True:
            params = (last, max_id, lower, upper, chunk_size)
            table = None
            if self.cursor is not None:
                try:
                    self.cursor.execute(sql, params)
                    table = self.cursor.fetch_arrow_table()
                except self.errors:
                    table = None
            page = None if table is None or table.num_rows == 0 else _text_page(table)
            if page is None:
                # Nothing, or not all text: Python's sqlite3 reads the page and decides, exactly.
                rows = next(
                    _pages(
                        self.conn,
                        self.path,
                        MARKET_TICKS,
                        _TICK_COLUMNS,
                        "ingestion_ts_utc",
                        bounds,
                        chunk_size,
                        max_id,
                        after=last,
                    ),
                    [],
                )
                if rows:
                    yield rows
                if len(rows) < chunk_size:
                    return
                last = rows[-1][0]
                continue
            yield page
            if page.num_rows < chunk_size:
                return
            last = page.column("id")[-1].as_py()


_RAW_TICK_SCHEMA = pa.schema(
    [("id", pa.int64())] + [(name, pa.string()) for name in _TICK_COLUMNS[1:]]
)


def _text_page(table: pa.Table) -> pa.Table | None:
    """ADBC's page as the raw tick columns, or None unless every value is valid UTF-8 text."""
    flags = table.column("all_text")
    if flags.null_count or not pc.all(pc.equal(flags, 1)).as_py():
        return None
    try:
        columns = []
        for f in _RAW_TICK_SCHEMA:
            column = table.column(f.name)
            if column.type != f.type:
                column = column.cast(f.type)  # binary -> string validates the UTF-8
            columns.append(column)
        page = pa.Table.from_arrays(columns, schema=_RAW_TICK_SCHEMA).combine_chunks()
        page.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if any(column.null_count for column in page.columns):
        return None
    return page


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _text_array(values: Sequence[Any]) -> pa.Array:
    # SQLite columns are loosely typed: a column declared TEXT may hold a number or a blob.
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([_as_text(v) for v in values], pa.string())


def _int_array(values: Sequence[Any]) -> pa.Array:
    return pa.array(values, pa.int64())


# ---------------------------------------------------------------------------------------------
# Normalizing a page
# ---------------------------------------------------------------------------------------------

_KEY_SEPARATOR = "\x1f"


class _Names:
    """Normalized names per distinct raw (exchange, symbol) spelling, computed once each."""

    def __init__(self) -> None:
        self.cache: dict[
            str, tuple[str | None, str | None, str | None, str | None, str | None]
        ] = {}

    def lookup(
        self, key: str, with_symbol: bool
    ) -> tuple[str | None, str | None, str | None, str | None, str | None]:
        """(exchange, symbol, base, quote, reject reason)."""
        hit = self.cache.get(key)
        if hit is None:
            exchange_raw, _, symbol_raw = key.partition(_KEY_SEPARATOR)
            try:
                exchange = normalize_exchange(exchange_raw)
            except SymbolError as exc:
                hit = (None, None, None, None, f"exchange: {exc}")
            else:
                if not with_symbol:
                    hit = (exchange, None, None, None, None)
                else:
                    try:
                        hit = (exchange, *normalize_symbol(exchange_raw, symbol_raw), None)
                    except SymbolError as exc:
                        hit = (None, None, None, None, f"symbol: {exc}")
            self.cache[key] = hit
        return hit


def _normalize_names(
    names: _Names, exchange_raw: pa.Array, symbol_raw: pa.Array | None
) -> tuple[list[pa.Array], pa.Array, list[str | None]]:
    """Per row: [exchange, symbol, base, quote] arrays (symbol parts only with symbols), a
    boolean array of rows whose names normalized, and the reasons by dictionary entry index."""
    if symbol_raw is None:
        key = exchange_raw
    else:
        key = pc.binary_join_element_wise(exchange_raw, symbol_raw, _KEY_SEPARATOR)
    encoded = pc.dictionary_encode(key)
    entries = [names.lookup(k, symbol_raw is not None) for k in encoded.dictionary.to_pylist()]
    indices = encoded.indices
    parts = 4 if symbol_raw is not None else 1
    columns = [
        pc.take(pa.array([e[i] for e in entries], pa.string()), indices) for i in range(parts)
    ]
    valid = pc.take(pa.array([e[4] is None for e in entries], pa.bool_()), indices)
    valid = pc.fill_null(valid, False)  # a NULL exchange or symbol
    return columns, valid, [e[4] for e in entries]


# TS_PATTERN with each field in its range: the shape alone lets '...T25:00:00...' through, which
# then breaks the watermark (parse_ts) after the rows were written.
_TS_IN_RANGE = (
    r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z$"
)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _ts_valid(column: pa.Array) -> pa.Array:
    """Whether each value is a real UTC time in the collectors' spelling (null: no)."""
    shaped = pc.fill_null(pc.match_substring_regex(column, _TS_IN_RANGE), False)
    # Days that do not exist (02-30): checked once per distinct date, which a batch has few of.
    dates = pc.utf8_slice_codeunits(column, 0, 10)
    real = [d for d in pc.unique(pc.filter(dates, shaped)).to_pylist() if _is_date(d)]
    known = pc.is_in(dates, value_set=pa.array(real, dates.type))
    return pc.and_(shaped, pc.fill_null(known, False))


def _all_true(masks: Sequence[pa.Array], length: int) -> pa.Array:
    result = pa.array([True] * length, pa.bool_()) if not masks else masks[0]
    for mask in masks[1:]:
        result = pc.and_(result, mask)
    return result


@dataclass
class _Tally:
    """What the run saw and exported, accumulated page by page."""

    source_exchanges: set[str] = field(default_factory=set)
    source_assets: set[str] = field(default_factory=set)
    exported_exchanges: set[str] = field(default_factory=set)
    exported_assets: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(
        default_factory=lambda: {MARKET_TICKS: 0, CONNECTION_EVENTS: 0, REJECTS: 0}
    )
    max_ts: dict[str, str | None] = field(
        default_factory=lambda: {MARKET_TICKS: None, CONNECTION_EVENTS: None}
    )

    def see_max(self, table: str, column: pa.Array) -> None:
        if len(column) == 0:
            return
        value = pc.max(column).as_py()
        current = self.max_ts[table]
        if value is not None and (current is None or value > current):
            self.max_ts[table] = value


def _uniques(column: pa.Array) -> set[str]:
    return {v for v in pc.unique(column).to_pylist() if v is not None}


def _reject_rows(
    source_file: str,
    table: str,
    rows: list[tuple],
    columns: Sequence[str],
    reasons: list[str],
) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "source_file": [source_file] * len(rows),
            "source_table": [table] * len(rows),
            "source_id": [r[0] for r in rows],
            "reason": reasons,
            "raw_row": [
                json.dumps({c: _jsonable(v) for c, v in zip(columns, r)}, ensure_ascii=False)
                for r in rows
            ],
        },
        schema=REJECT_SCHEMA,
    )


def _jsonable(value: Any) -> Any:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _filter_mask(
    ok: pa.Array, options: ExportOptions, exchange: pa.Array, base: pa.Array | None
) -> pa.Array:
    """Rows to export: readable and passing the filters (assets only where rows have a base)."""
    keep = ok
    if options.exchanges:
        keep = pc.and_(keep, pc.is_in(exchange, value_set=pa.array(options.exchanges, pa.string())))
    if options.assets and base is not None:
        keep = pc.and_(keep, pc.is_in(base, value_set=pa.array(options.assets, pa.string())))
    return pc.fill_null(keep, False)


def _without_undated(
    page: pa.Table | list[tuple], spec: _TimedTable
) -> tuple[pa.Table | list[tuple], list[tuple]]:
    """(the page without its rows whose window time is not in the collectors' shape, those
    rows as Python tuples): a window does not select them by their text, `_UndatedPlacement`
    places them."""
    if isinstance(page, pa.Table):
        column = page.column(spec.ts_column)
        shaped = pc.fill_null(pc.match_substring_regex(column, f"^{_SHAPE_RE.pattern}$"), False)
        if pc.all(shaped).as_py():
            return page, []
        undated = page.filter(pc.invert(shaped))
        rows = list(zip(*(c.to_pylist() for c in undated.columns)))
        return page.filter(shaped), [tuple(r[: len(spec.columns)]) for r in rows]
    undated = [row for row in page if not is_shaped(row[spec.ts_index])]
    if not undated:
        return page, []
    return [row for row in page if is_shaped(row[spec.ts_index])], undated


def _tick_batches(
    page: pa.Table | list[tuple],
    source_file: str,
    names: _Names,
    options: ExportOptions,
    tally: _Tally,
) -> tuple[pa.RecordBatch, pa.RecordBatch | None, list[tuple]]:
    """One page of market_ticks (an Arrow page of text, or Python rows) as (exported rows,
    rejected rows or None, the rows whose ingestion time is not in the collectors' shape, left
    for `_UndatedPlacement`)."""
    if isinstance(page, pa.Table):
        id_a, exchange_raw, symbol_raw, channel_a, event_a, ingest_a, payload_a = (
            c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in page.columns
        )
    else:
        ids, exchange, symbol, channel, event_ts, ingest_ts, payload = zip(*page)
        id_a = _int_array(ids)
        exchange_raw, symbol_raw = _text_array(exchange), _text_array(symbol)
        channel_a, payload_a = _text_array(channel), _text_array(payload)
        event_a, ingest_a = _text_array(event_ts), _text_array(ingest_ts)
    rows = len(id_a)
    ingest_ok = _ts_valid(ingest_a)
    if not pc.all(ingest_ok).as_py():
        # Only a page with an invalid ingestion time pays for looking for undated ones.
        dated, undated = _without_undated(page, _TIMED_TABLES[MARKET_TICKS])
        if undated:
            if len(dated) == 0:
                return pa.RecordBatch.from_pylist([], schema=MARKET_TICK_SCHEMA), None, undated
            batch, rejects, _ = _tick_batches(dated, source_file, names, options, tally)
            return batch, rejects, undated
    (norm_exchange, norm_symbol, base, quote), names_ok, reasons = _normalize_names(
        names, exchange_raw, symbol_raw
    )
    event_ok = _ts_valid(event_a)
    present = [pc.is_valid(channel_a), pc.is_valid(payload_a)]
    ok = _all_true([names_ok, event_ok, ingest_ok, *present], rows)
    rejects = None
    if not pc.all(ok).as_py():
        bad = [i for i, good in enumerate(ok.to_pylist()) if not good]
        if isinstance(page, pa.Table):
            taken = page.take(bad)
            page = dict(zip(bad, zip(*(c.to_pylist() for c in taken.columns))))
        why = []
        key_index = pc.dictionary_encode(
            pc.binary_join_element_wise(exchange_raw, symbol_raw, _KEY_SEPARATOR)
        ).indices.to_pylist()
        for i in bad:
            row = page[i]
            if key_index[i] is None:
                why.append("exchange/symbol: expected text, got NULL")
            elif reasons[key_index[i]] is not None:
                why.append(reasons[key_index[i]])
            elif not event_ok[i].as_py():
                why.append(
                    f"event_ts_utc: expected UTC ISO-8601 text like {TS_EXAMPLE!r}, got {_describe(row[4])}"
                )
            elif not ingest_ok[i].as_py():
                why.append(
                    f"ingestion_ts_utc: expected UTC ISO-8601 text like {TS_EXAMPLE!r}, got {_describe(row[5])}"
                )
            else:
                why.append("channel/payload: expected text, got NULL")
        rejects = _reject_rows(
            source_file, MARKET_TICKS, [page[i] for i in bad], _TICK_COLUMNS, why
        )
        # A rejected row was handled by this run: its (valid) ingestion time counts for the watermark.
        tally.see_max(MARKET_TICKS, pc.filter(ingest_a, pc.and_(pc.invert(ok), ingest_ok)))
    tally.source_exchanges |= _uniques(pc.filter(norm_exchange, ok))
    tally.source_assets |= _uniques(pc.filter(base, ok))
    keep = _filter_mask(ok, options, norm_exchange, base)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([source_file] * rows, pa.string()),
            id_a,
            exchange_raw,
            symbol_raw,
            channel_a,
            event_a,
            ingest_a,
            payload_a,
            norm_exchange,
            norm_symbol,
            base,
            quote,
        ],
        schema=MARKET_TICK_SCHEMA,
    ).filter(keep)
    tally.exported_exchanges |= _uniques(batch.column("exchange"))
    tally.exported_assets |= _uniques(batch.column("base_asset"))
    tally.see_max(MARKET_TICKS, batch.column("ingestion_ts_utc"))
    return batch, rejects, []


def _event_batches(
    page: list[tuple], source_file: str, names: _Names, options: ExportOptions, tally: _Tally
) -> tuple[pa.RecordBatch, pa.RecordBatch | None, list[tuple]]:
    """One page of connection_events as (exported rows, rejected rows or None, the rows whose
    event time is not in the collectors' shape, left for `_UndatedPlacement`)."""
    ids, exchange, worker_id, event_type, event_ts, details = zip(*page)
    event_a = _text_array(event_ts)
    event_ok = _ts_valid(event_a)
    if not pc.all(event_ok).as_py():
        # Text such as '2026-02-19 10:30:00' sorts inside a window without being a time in it.
        dated, undated = _without_undated(page, _TIMED_TABLES[CONNECTION_EVENTS])
        if undated:
            if not dated:
                empty = pa.RecordBatch.from_pylist([], schema=CONNECTION_EVENT_SCHEMA)
                return empty, None, undated
            batch, rejects, _ = _event_batches(dated, source_file, names, options, tally)  # type: ignore[arg-type]
            return batch, rejects, undated
    exchange_raw = _text_array(exchange)
    worker_a, type_a, details_a = (_text_array(c) for c in (worker_id, event_type, details))
    (norm_exchange,), names_ok, reasons = _normalize_names(names, exchange_raw, None)
    ok = _all_true([names_ok, event_ok, pc.is_valid(worker_a), pc.is_valid(type_a)], len(page))
    rejects = None
    if not pc.all(ok).as_py():
        bad = [i for i, good in enumerate(ok.to_pylist()) if not good]
        key_index = pc.dictionary_encode(exchange_raw).indices.to_pylist()
        why = []
        for i in bad:
            if key_index[i] is None:
                why.append("exchange: expected text, got NULL")
            elif reasons[key_index[i]] is not None:
                why.append(reasons[key_index[i]])
            elif not event_ok[i].as_py():
                why.append(
                    f"event_ts_utc: expected UTC ISO-8601 text like {TS_EXAMPLE!r}, got {_describe(page[i][4])}"
                )
            else:
                why.append("worker_id/event_type: expected text, got NULL")
        rejects = _reject_rows(
            source_file, CONNECTION_EVENTS, [page[i] for i in bad], _EVENT_COLUMNS, why
        )
        tally.see_max(CONNECTION_EVENTS, pc.filter(event_a, pc.and_(pc.invert(ok), event_ok)))
    tally.source_exchanges |= _uniques(pc.filter(norm_exchange, ok))
    keep = _filter_mask(ok, options, norm_exchange, None)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([source_file] * len(page), pa.string()),
            _int_array(ids),
            exchange_raw,
            worker_a,
            type_a,
            event_a,
            details_a,
            norm_exchange,
        ],
        schema=CONNECTION_EVENT_SCHEMA,
    ).filter(keep)
    tally.exported_exchanges |= _uniques(batch.column("exchange"))
    tally.see_max(CONNECTION_EVENTS, batch.column("event_ts_utc"))
    return batch, rejects, []


_NO_ID = -(2**63)


class _IdGaps:
    """The ids read from one file whose ingestion time is in the shape (the window's dated
    rows, in id order), kept as their first and last id and the gaps between them.

    A row placed in the window lies next to such a row but is not one, so only the gaps can hold
    one: a collector's ids have none, and a window read is searched no further. Past `MAX_GAPS`
    gaps they are merged into one stretch, so that the search stays a few statements.
    """

    MAX_GAPS = 64

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None
        self.gaps: list[tuple[int, int]] = []  # (after, before), both exclusive

    def add(self, page: pa.Table | list[tuple], undated: Sequence[tuple]) -> None:
        if isinstance(page, pa.Table):
            ids = page.column("id").combine_chunks()
        else:
            ids = pa.array([r[0] for r in page], pa.int64())
        if undated:
            ids = pc.filter(ids, pc.invert(pc.is_in(ids, pa.array([r[0] for r in undated]))))
        if len(ids) == 0:
            return
        head, tail = ids[0].as_py(), ids[-1].as_py()
        if self.last is None:
            self.first = head
        elif head - self.last > 1:
            self._gap(self.last, head)
        if tail - head + 1 != len(ids):
            steps = pc.subtract(ids[1:], ids[:-1])
            for i in pc.indices_nonzero(pc.greater(steps, 1)).to_pylist():
                self._gap(ids[i].as_py(), ids[i + 1].as_py())
        self.last = tail

    def _gap(self, after: int, before: int) -> None:
        if len(self.gaps) >= self.MAX_GAPS:
            self.gaps = [(self.gaps[0][0], before)]
        else:
            self.gaps.append((after, before))


class _UndatedPlacement:
    """Which window the rows of one table of one worker file whose window time (market_ticks'
    ingestion_ts_utc, connection_events' event_ts_utc) is not in the collectors' shape belong to
    (another layout such as '19/02/2026 10:30', an epoch number, empty text): no time is guessed
    for them, and none is lost or counted twice.

    Such a row belongs to the window of the nearest row of its table stored before it (by id)
    whose window time is in the shape, or, for the rows before the file's first such row, of that first one
    (the rule bronze follows for days). It is rejected there, never exported, with a reason
    starting `timestamp_not_iso8601:`, and that neighbour's time counts for the watermark, so the
    next incremental window does not hold it again. An incremental run also rejects a row stored
    after its neighbour's window was exported (the row's id is above the `read_upto` of the
    profile's previous run), which no window would hold any more, and a row of a file that holds
    no shaped ingestion time at all yet (the run that reads it first; the profile's progress
    keeps the next incremental runs from reading it again). A row whose neighbour lies after the
    window waits for that window: `settled_upto` stays below it.
    """

    def __init__(
        self,
        spec: _TimedTable,
        conn: sqlite3.Connection,
        path: Path,
        bounds: Bounds,
        max_id: int | None,
        read_before: int | None,
    ) -> None:
        self.spec, self.conn, self.path, self.max_id = spec, conn, path, max_id
        self._from = f"FROM {spec.table} WHERE"
        self._shaped = _shaped_sql(spec.ts_column)
        self.lower, self.upper = format_ts(bounds.lower_utc), format_ts(bounds.upper_utc)
        self.lower_inclusive = bounds.lower_inclusive
        self.read_before = read_before
        # The nearest row with a shaped ingestion time at or before `checked`.
        self.previous: tuple[int, str] | None = None
        self.checked = _NO_ID
        self.first: tuple[str] | None | bool = False  # False: not looked up yet
        self.first_waiting: int | None = None

    def _one(self, sql: str, params: tuple) -> tuple | None:
        try:
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise
            raise WorkerFileError(
                self.path,
                f"cannot read {self.spec.table} of worker file {self.path} ({exc}); expected an "
                "intact collector SQLite file",
            ) from exc

    def _neighbour(self, row_id: int) -> tuple[str, str] | None:
        """(ingestion time, 'before' or 'after') of the row `row_id` is placed by; rows come in
        id order, so each stretch of the file is searched once."""
        found = self._one(
            f"SELECT id, {self.spec.ts_column} {self._from} id > ? AND id < ? "
            f"AND {self._shaped} ORDER BY id DESC LIMIT 1",
            (self.checked, row_id),
        )
        if found is not None:
            self.previous = found
        self.checked = max(self.checked, row_id)
        if self.previous is not None:
            return self.previous[1], "before"
        if self.first is False:
            self.first = self._one(
                f"SELECT {self.spec.ts_column} {self._from} id > ? AND id <= ? "
                f"AND {self._shaped} ORDER BY id LIMIT 1",
                (row_id, self.max_id),
            )
        return (self.first[0], "after") if self.first else None  # type: ignore[index]

    def place(self, rows: Sequence[tuple]) -> tuple[list[tuple], list[str], list[str]]:
        """(the rows rejected in this window, their reasons, the neighbours' ingestion times
        that count for the watermark), for rows in id order."""
        here: list[tuple] = []
        reasons: list[str] = []
        times: list[str] = []
        for row in rows:
            found = self._neighbour(row[0])
            neighbour, side = found if found is not None else (None, "")
            above = neighbour is not None and (
                neighbour > self.lower or (self.lower_inclusive and neighbour == self.lower)
            )
            if neighbour is None:
                how = (
                    f"by the run that read it first: no row of the file's {self.spec.table} "
                    f"has a collector {self.spec.ts_column} yet"
                )
            elif above and neighbour <= self.upper:
                times.append(neighbour)
                how = f"in the window of the row stored {side} it, ingested {neighbour}"
            elif not above and self.read_before is not None and row[0] > self.read_before:
                how = (
                    f"stored after the window of the row before it (ingested {neighbour}) "
                    "was exported"
                )
            elif above:
                # Its neighbour's window is still to come.
                if self.first_waiting is None:
                    self.first_waiting = row[0]
                continue
            else:
                continue  # before the window, as its neighbour is
            here.append(row)
            reasons.append(
                f"{TIMESTAMP_NOT_ISO8601}: {self.spec.ts_column}: expected UTC ISO-8601 text "
                f"like {TS_EXAMPLE!r}, got {_describe(row[self.spec.ts_index])}; rejected {how}"
            )
        return here, reasons, times

    def window_stretches(self, read: _IdGaps) -> tuple[list[tuple[int, int]], int | None]:
        """The id stretches (after, upto] that can hold rows placed in this window, given the
        ids of the window's dated rows, and the id up to which they and the dated rows between
        them cover the file from its start (None: they do not start there).

        A placed row lies after its neighbour, a dated row of the window, and before the next
        dated row; or, placed by the file's first dated row, before it. So it lies in a gap
        between the window's dated rows, before the first one when that is the file's first, or
        between the last one and the next dated row. A file without a dated row is searched
        whole. The window read itself is left as it was.
        """
        if self.max_id is None:
            return [], None
        if read.first is None or read.last is None:
            any_shaped = self._one(
                f"SELECT 1 {self._from} id <= ? AND {self._shaped} LIMIT 1",
                (self.max_id,),
            )
            return ([], None) if any_shaped else ([(_NO_ID, self.max_id)], self.max_id)
        before = self._one(
            f"SELECT 1 {self._from} id < ? AND {self._shaped} ORDER BY id DESC LIMIT 1",
            (read.first,),
        )
        after = self._one(
            f"SELECT id {self._from} id > ? AND id <= ? AND {self._shaped} ORDER BY id LIMIT 1",
            (read.last, self.max_id),
        )
        stretches = [] if before else [(_NO_ID, read.first - 1)]
        stretches += [(a, b - 1) for a, b in read.gaps]
        upto = after[0] - 1 if after else self.max_id
        if upto > read.last:
            stretches.append((read.last, upto))
        return stretches, None if before else upto

    def settled_upto(self, searched_upto: int) -> int:
        """The id up to which no row waits, of the ids searched (up to `searched_upto`)."""
        return searched_upto if self.first_waiting is None else self.first_waiting - 1


def _undated_pages(
    conn: sqlite3.Connection,
    path: Path,
    spec: _TimedTable,
    after: int,
    max_id: int | None,
    chunk_size: int,
) -> Iterator[list[tuple]]:
    """The rows of `spec.table` with `after < id <= max_id` whose window time is not in the
    collectors' shape, in id order, `chunk_size` at a time."""
    if max_id is None:
        return
    sql = (
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} WHERE id > ? AND id <= ? "
        f"AND NOT {_shaped_sql(spec.ts_column)} ORDER BY id LIMIT ?"
    )
    last = after
    while True:
        try:
            page = conn.execute(sql, (last, max_id, chunk_size)).fetchall()
        except sqlite3.Error as exc:
            if is_transient(exc):
                raise
            raise WorkerFileError(
                path,
                f"cannot read {spec.table} of worker file {path} ({exc}); expected an intact "
                "collector SQLite file",
            ) from exc
        if page:
            yield page
        if len(page) < chunk_size:
            return
        last = page[-1][0]


def _reject_undated(
    placement: _UndatedPlacement,
    rows: Sequence[tuple],
    source_file: str,
    output: _Output,
    tally: _Tally,
) -> None:
    spec = placement.spec
    here, reasons, times = placement.place(rows)
    if here:
        output.write(REJECTS, _reject_rows(source_file, spec.table, here, spec.columns, reasons))
    if times:
        column = pa.array(times, pa.string())
        tally.see_max(spec.table, pc.filter(column, _ts_valid(column)))


class _UndatedSearch:
    """One run's search of one table of one worker file for its rows without a collector time:
    the dated ids the window read (`see`), then the stretches that can hold rows placed in the
    window, rejected there (`finish`, which returns the file's progress for the state)."""

    def __init__(
        self,
        spec: _TimedTable,
        conn: sqlite3.Connection,
        path: Path,
        bounds: Bounds,
        max_id: int | None,
        known: UndatedProgress | None,
        *,
        incremental: bool,
        after_watermark: bool,
    ) -> None:
        if known is not None and (max_id is None or known.read_upto > max_id):
            known = None  # not the file the profile read (replaced or rewritten)
        self.conn, self.path, self.spec, self.max_id, self.known = conn, path, spec, max_id, known
        # An incremental run knows how far the profile's runs settled the rows without a
        # collector time: it searches only beyond (the rows stored since).
        self.progress = known if incremental else None
        self.placement = _UndatedPlacement(
            spec,
            conn,
            path,
            bounds,
            max_id,
            # Rows stored after the previous run read the file: late for their window.
            self.progress.read_upto if self.progress is not None and after_watermark else None,
        )
        self.read = _IdGaps()

    def see(self, page: pa.Table | list[tuple], undated: Sequence[tuple]) -> None:
        if self.progress is None:
            self.read.add(page, undated)

    def finish(self, output: _Output, tally: _Tally, chunk_size: int) -> UndatedProgress | None:
        max_id, known, placement = self.max_id, self.known, self.placement
        if self.progress is not None:
            stretches = [] if max_id is None else [(self.progress.settled_upto, max_id)]
            searched_upto = max_id
        else:
            stretches, searched_upto = placement.window_stretches(self.read)
        for after, upto in stretches:
            for undated in _undated_pages(self.conn, self.path, self.spec, after, upto, chunk_size):
                _reject_undated(placement, undated, self.path.name, output, tally)
        if max_id is None:
            return None
        if known is not None and self.progress is None:
            settled = known.settled_upto  # a run outside the profile's sequence
        elif searched_upto is not None:
            # Searched from the file's start (or from what was settled) up to here.
            settled = placement.settled_upto(searched_upto)
        else:
            # Only a stretch (or nothing) was searched: what lies before is not known.
            settled = _NO_ID
        return UndatedProgress(
            read_upto=max(max_id, known.read_upto if known else max_id), settled_upto=settled
        )


# ---------------------------------------------------------------------------------------------
# Output writers: each writes hidden temporaries; `finish` returns (temp, target) pairs
# ---------------------------------------------------------------------------------------------


class _Output:
    def __init__(self, staging_dir: Path, base: str, tables: Sequence[str]):
        self.staging_dir = staging_dir
        self.base = base
        self.tables = list(tables)
        self.rows: dict[str, int] = dict.fromkeys(TABLE_SCHEMAS, 0)
        self.temps: dict[str, tuple[Path, Path]] = {}  # table or "" -> (temp, target)

    def _temp_for(self, name: str, target: Path) -> Path:
        temp = temp_path_for(target)
        self.temps[name] = (temp, target)
        return temp

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._write(table, batch)
            self.rows[table] += batch.num_rows

    def _write(self, table: str, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, tuple[Path, Path]]:
        """Close everything, flushed to disk; returns {table: (temp, target)}."""
        raise NotImplementedError

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        for temp, _ in self.temps.values():
            temp.unlink(missing_ok=True)

    def _close(self) -> None:
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SQLITE_TYPES = {pa.int64(): "INTEGER", pa.string(): "TEXT"}


class _SqliteOutput(_Output):
    """One SQLite file with a table per exported table (rejects always present, maybe empty).

    Arrow batches are inserted by the ADBC SQLite driver (`adbc_ingest`: the values are bound
    from the Arrow buffers in C, with no Python object per value), into tables created with the
    contract's types and NOT NULL constraints, in one transaction.
    """

    def __init__(self, staging_dir: Path, base: str, tables: Sequence[str]):
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        super().__init__(staging_dir, base, tables)
        temp = self._temp_for("", staging_dir / f"{base}.sqlite")
        self.conn = adbc_sqlite.connect(str(temp), autocommit=True)
        self.cursor = self.conn.cursor()
        # Nothing reads the temporary until it is complete: no journal, no syncs until the end
        # (then one fsync); big pages mean fewer page splits and writes for long text rows.
        for pragma in ("page_size = 65536", "journal_mode = OFF", "synchronous = OFF"):
            self.cursor.execute(f"PRAGMA {pragma}")
        self.cursor.execute("BEGIN")
        for table in [*self.tables, REJECTS]:
            schema = TABLE_SCHEMAS[table]
            columns = ", ".join(
                f"{f.name} {_SQLITE_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}"
                for f in schema
            )
            self.cursor.execute(f"CREATE TABLE {table} ({columns})")

    def _write(self, table: str, batch: pa.RecordBatch) -> None:
        self.cursor.adbc_ingest(table, batch, mode="append")

    def finish(self) -> dict[str, tuple[Path, Path]]:
        self.cursor.execute("COMMIT")
        self._close()
        temp, _ = self.temps[""]
        _fsync(temp)
        return dict(self.temps)

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
        self.conn.close()


class _FileOutput(_Output):
    """A file per table (`<base>_<table>.csv|.jsonl`); the rejects file only if a row is rejected."""

    extension = ""

    def __init__(self, staging_dir: Path, base: str, tables: Sequence[str]):
        super().__init__(staging_dir, base, tables)
        self.handles: dict[str, Any] = {}
        for table in self.tables:
            self._open(table)

    def _open(self, table: str) -> None:
        target = self.staging_dir / f"{self.base}_{table}{self.extension}"
        self.handles[table] = self._open_writer(table, self._temp_for(table, target))

    def _open_writer(self, table: str, temp: Path) -> Any:
        raise NotImplementedError

    def _write(self, table: str, batch: pa.RecordBatch) -> None:
        if table not in self.handles:
            self._open(table)
        self._append(self.handles[table], batch)

    def _append(self, handle: Any, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, tuple[Path, Path]]:
        self._close()
        for temp, _ in self.temps.values():
            _fsync(temp)
        return dict(self.temps)


class _CsvOutput(_FileOutput):
    extension = ".csv"

    def _open_writer(self, table: str, temp: Path) -> Any:
        return pa_csv.CSVWriter(str(temp), TABLE_SCHEMAS[table])

    def _append(self, handle: Any, batch: pa.RecordBatch) -> None:
        handle.write_batch(batch)

    def _close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles = {}


class _JsonOutput(_FileOutput):
    """JSON Lines: one object per row, keys in the contract's column order, UTF-8; the bytes of
    `json.dumps(row, ensure_ascii=False, separators=(",", ":"))` and a newline per row."""

    extension = ".jsonl"

    def _open_writer(self, table: str, temp: Path) -> Any:
        return open(temp, "wb", buffering=1 << 20)

    def _append(self, handle: Any, batch: pa.RecordBatch) -> None:
        handle.write(json_lines(batch))

    def _close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles = {}


# A character JSON must escape besides '"' and '\\' (Python's encoder with ensure_ascii=False
# escapes exactly these and those two).
_JSON_CONTROL = r"[\x00-\x1f]"


def json_lines(batch: pa.RecordBatch) -> bytes:
    """The batch as JSON Lines (UTF-8), exactly as `json.dumps(row, ensure_ascii=False,
    separators=(",", ":"))` writes each row, built column by column with Arrow; a batch holding
    a control character (which JSON escapes as \\uXXXX) is encoded row by row instead.
    Columns are int64 or string."""
    if batch.num_rows == 0:
        return b""
    pieces: list[Any] = []
    literal = ""  # text shared by every line, joined to the next piece
    for i, (f, column) in enumerate(zip(batch.schema, batch.columns)):
        literal += ("{" if i == 0 else ",") + json.dumps(f.name) + ":"
        if pa.types.is_integer(f.type):
            text = pc.fill_null(pc.cast(column, pa.string()), "null")
        else:
            if pc.any(pc.match_substring_regex(column, _JSON_CONTROL)).as_py():
                return _json_lines_by_row(batch)
            text = column
            for char in ("\\", '"'):  # each pass only where the character occurs
                if pc.any(pc.match_substring(text, char)).as_py():
                    text = pc.replace_substring(text, char, "\\" + char)
            if text.null_count:
                text = pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")
            else:
                literal += '"'
                pieces += [literal, text]
                literal = '"'
                continue
        pieces += [literal, text]
        literal = ""
    pieces.append(literal + "}\n")
    lines = pc.binary_join_element_wise(*pieces, "")
    # The lines, one after the other, are the string array's data buffer.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[start:end].tobytes()


def _json_lines_by_row(batch: pa.RecordBatch) -> bytes:
    names = batch.schema.names
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return "".join(
        dumps(dict(zip(names, values))) + "\n"
        for values in zip(*(c.to_pylist() for c in batch.columns))
    ).encode("utf-8")


_OUTPUTS: dict[str, type[_Output]] = {
    "sqlite": _SqliteOutput,
    "csv": _CsvOutput,
    "json": _JsonOutput,
}


# ---------------------------------------------------------------------------------------------
# Lock, journal and recovery
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staging_lock(staging_dir: Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive use of the staging folder's exporter files (state, journal) for one run.

    An advisory `flock`, released by the kernel when the process ends, however it ends.
    """
    with exclusive_file_lock(staging_dir / LOCK_FILE_NAME, timeout_s, _staging_lock_timeout):
        yield


def _staging_lock_timeout(path: Path, timeout_s: float) -> Exception:
    return StagingExportError(
        f"another staging export has held {path} for {timeout_s:.0f} s; "
        "wait for it to finish, or look for a hung run"
    )


def recover(staging_dir: Path) -> list[str]:
    """Undo what a killed run left: its temporaries, and the files of an uncommitted export.

    Call with the staging lock held. Returns the names removed.
    """
    removed: list[str] = []
    for temp in sorted(staging_dir.glob(f".{EXPORT_PREFIX}*.tmp")):
        temp.unlink(missing_ok=True)
        removed.append(temp.name)
    journal_path = staging_dir / JOURNAL_FILE_NAME
    if not journal_path.exists():
        return removed
    try:
        journal = json.loads(journal_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        journal = {"files": []}
    if not _journal_committed(staging_dir, journal):
        for name in journal.get("files", []):
            target = staging_dir / Path(name).name
            if target.exists():
                target.unlink()
                removed.append(target.name)
    journal_path.unlink(missing_ok=True)
    return removed


def _journal_committed(staging_dir: Path, journal: dict[str, Any]) -> bool:
    """Whether the journaled run reached its commit point (state written, or metadata written
    when no state update was asked for)."""
    metadata = journal.get("metadata_file")
    if not metadata or not (staging_dir / metadata).exists():
        return False
    if not journal.get("update_state"):
        return True
    try:
        state = read_state(staging_dir / STATE_FILE_NAME)
    except StagingExportError:
        return False
    profile = state["profiles"].get(journal.get("state_key")) or {}
    return profile.get("last_run_id") == journal.get("run_id")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """A written export (data, sidecars, metadata in place); committed once `commit` returns."""

    run_id: str
    staging_dir: Path
    metadata: dict[str, Any]
    metadata_path: Path
    output_paths: list[Path]
    state_path: Path
    options: ExportOptions
    skipped: dict[str, str]
    removed_on_recovery: list[str] = field(default_factory=list)
    # Per table and worker file: how far the search for rows without a collector time got
    # (stored with the watermarks).
    undated_progress: dict[str, dict[str, UndatedProgress]] = field(default_factory=dict)
    committed: bool = False
    rolled_back: bool = False

    @property
    def all_files(self) -> list[Path]:
        sidecars = [
            sidecar_path(p)  # type: ignore[arg-type]
            for p in [*self.output_paths, self.metadata_path]
        ]
        return [*self.output_paths, self.metadata_path, *(Path(str(s)) for s in sidecars)]


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to `root` with forward slashes, or as given when it is outside the root."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _unique_base(staging_dir: Path, base: str) -> str:
    candidate, n = base, 1
    while any(staging_dir.glob(f"{candidate}[._]*")):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def write_export(
    options: ExportOptions,
    *,
    worker_files: Sequence[Path],
    input_glob: str,
    data_root: Path,
    staging_dir: Path,
    started: dt.datetime | None = None,
    run_id_for_custody: str | None = None,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Read the worker files and put the export and its metadata file in place, uncommitted.

    Call with the staging lock held, after `recover`. Raises `WorkerFileError` naming a worker
    file that cannot be read (unless `skip_unreadable_sources`), `StagingExportError` for a state
    file or bound it cannot use; either way nothing of this run is left at a canonical name.
    """
    started = (started or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    end_utc = options.end_utc or started
    default_start, end_utc = export_window(options.hours, end_utc)
    state_path = staging_dir / STATE_FILE_NAME
    state = read_state(state_path)
    previous = stored_watermarks(state, options.state_key, state_path)
    previous_undated = {
        table: stored_undated_progress(state, options.state_key, state_path, table)
        for table in UNDATED_STATE_FIELDS
    }
    undated_progress: dict[str, dict[str, UndatedProgress]] = {
        table: {} for table in UNDATED_STATE_FIELDS
    }
    bounds = {
        table: query_bounds(
            default_start, end_utc, previous[table], incremental=options.incremental, table=table
        )
        for table in (MARKET_TICKS, CONNECTION_EVENTS)
    }
    base = _unique_base(staging_dir, export_base_name(started, export_label(options)))
    tables = [MARKET_TICKS] + ([CONNECTION_EVENTS] if options.include_connection_events else [])
    output = _OUTPUTS[options.output_format](staging_dir, base, tables)
    names = _Names()
    tally = _Tally()
    read_files: list[Path] = []
    read_upto: dict[str, dict[str, int | None]] = {}
    skipped: dict[str, str] = {}
    needed: dict[str, Sequence[str]] = {MARKET_TICKS: _TICK_COLUMNS}
    if options.include_connection_events:
        needed[CONNECTION_EVENTS] = _EVENT_COLUMNS
    try:
        for path in sorted((Path(p) for p in worker_files), key=lambda p: p.name):
            try:
                conn = _connect_read_only(path, needed, busy_timeout_s)
            except WorkerFileError as exc:
                if not options.skip_unreadable_sources:
                    raise
                skipped[relative_path(path, data_root)] = str(exc)
                if log:
                    log(f"skipping unreadable worker file {path}: {exc}")
                continue
            pages = None
            try:
                # The file as of now: rows committed while it is read wait for the next run.
                max_ids = {
                    t: conn.execute(f"SELECT max(id) FROM {t}").fetchone()[0] for t in needed
                }
                searches = {
                    table: _UndatedSearch(
                        _TIMED_TABLES[table],
                        conn,
                        path,
                        bounds[table],
                        max_ids[table],
                        previous_undated[table].get(path.name),
                        incremental=options.incremental,
                        # An incremental run with a watermark rejects the rows stored after
                        # the previous run read the file.
                        after_watermark=options.incremental and previous[table] is not None,
                    )
                    for table in needed
                }
                pages = _ArrowTickPages(path, conn, busy_timeout_s)
                for page in pages.read(
                    bounds[MARKET_TICKS], options.chunk_size, max_ids[MARKET_TICKS]
                ):
                    batch, rejects, undated = _tick_batches(page, path.name, names, options, tally)
                    output.write(MARKET_TICKS, batch)
                    if rejects is not None:
                        output.write(REJECTS, rejects)
                    searches[MARKET_TICKS].see(page, undated)
                if options.include_connection_events:
                    for page in _pages(
                        conn,
                        path,
                        CONNECTION_EVENTS,
                        _EVENT_COLUMNS,
                        "event_ts_utc",
                        bounds[CONNECTION_EVENTS],
                        options.chunk_size,
                        max_ids[CONNECTION_EVENTS],
                    ):
                        batch, rejects, undated = _event_batches(
                            page, path.name, names, options, tally
                        )
                        output.write(CONNECTION_EVENTS, batch)
                        if rejects is not None:
                            output.write(REJECTS, rejects)
                        searches[CONNECTION_EVENTS].see(page, undated)
                for table, search in searches.items():
                    progress = search.finish(output, tally, options.chunk_size)
                    if progress is not None:
                        undated_progress[table][path.name] = progress
            finally:
                if pages is not None:
                    pages.close()
                conn.close()
            read_files.append(path)
            read_upto[path.name] = {f"{t}_max_id": v for t, v in max_ids.items()}
        temps = output.finish()
    except BaseException:
        output.abort()
        raise

    exported_max = {t: (parse_ts(v) if v else None) for t, v in tally.max_ts.items()}
    if not options.include_connection_events:
        exported_max[CONNECTION_EVENTS] = None
    new = {t: new_watermark(previous[t], exported_max[t]) for t in previous}
    metadata_path = staging_dir / f"{base}{METADATA_SUFFIX}"
    targets = [target for _, target in temps.values()]
    journal = {
        "run_id": base,
        "state_key": options.state_key,
        "update_state": options.update_state,
        "metadata_file": metadata_path.name,
        "files": sorted(
            [t.name for t in targets]
            + [sidecar_path(t).name for t in targets]  # type: ignore[arg-type]
            + [metadata_path.name, sidecar_path(as_upath(metadata_path)).name]
        ),
    }
    try:
        write_bytes_atomic(
            as_upath(staging_dir / JOURNAL_FILE_NAME), json.dumps(journal, indent=2).encode()
        )
        factory = MetadataFactory(data_root, code_version=CODE_VERSION)
        parents: list[ParentRef] = [
            factory.file_parent(p, **read_upto[p.name]) for p in read_files
        ] or [
            # No worker file was read: the export is empty, made from no rows at all.
            ParentRef(
                kind="query",
                path=input_glob,
                sha256=hashlib.sha256(b"").hexdigest(),
                details={"rows": 0},
            )
        ]
        params = {
            "output_format": options.output_format,
            "query_bounds": {t: _jsonable_bounds(b) for t, b in bounds.items()},
            "filters": {"exchanges": list(options.exchanges), "assets": list(options.assets)},
            "include_connection_events": options.include_connection_events,
            "state_key": options.state_key,
        }
        for table, (temp, target) in temps.items():
            sha, size = sha256_file(temp)
            os.replace(temp, target)
            rows = output.rows[table] if table else sum(output.rows.values())
            record = factory.processed(
                target,  # type: ignore[arg-type]
                sha256=sha,
                size_bytes=size,
                parents=parents,
                transformation_name=TRANSFORMATION_NAME,
                transformation_params=params,
                rows=rows,
                asset_key=TRANSFORMATION_NAME,
                run_id=run_id_for_custody or base,
            )
            write_sidecar(as_upath(target), record)
        finished = dt.datetime.now(dt.UTC)
        metadata = StagingExportRunMetadata(
            run_id=base,
            run_started_utc=started,
            run_finished_utc=max(finished, started),
            mode={"incremental": options.incremental},
            window={"hours": options.hours, "default_start_utc": default_start, "end_utc": end_utc},
            query_bounds={
                MARKET_TICKS: bounds[MARKET_TICKS].as_dict(),
                CONNECTION_EVENTS: {
                    **bounds[CONNECTION_EVENTS].as_dict(),
                    "included": options.include_connection_events,
                },
            },
            source={
                "input_glob": input_glob,
                "worker_db_count": len(read_files),
                "worker_db_files": [relative_path(p, data_root) for p in read_files],
            },
            options={
                "output_format": options.output_format,
                "include_connection_events": options.include_connection_events,
                "chunk_size": options.chunk_size,
            },
            filters={"exchanges": list(options.exchanges), "assets": list(options.assets)},
            uniques={
                "source": {
                    "exchanges": sorted(tally.source_exchanges),
                    "assets": sorted(tally.source_assets),
                },
                "exported": {
                    "exchanges": sorted(tally.exported_exchanges),
                    "assets": sorted(tally.exported_assets),
                },
            },
            watermarks={
                "previous": _pair(previous),
                "exported_max": _pair(exported_max),
                "new": _pair(new),
            },
            state={
                "path": relative_path(state_path, data_root),
                "key": options.state_key,
                "update_requested": options.update_state,
                "updated": options.update_state,
            },
            row_counts={
                MARKET_TICKS: output.rows[MARKET_TICKS],
                CONNECTION_EVENTS: output.rows[CONNECTION_EVENTS],
                "rejected": output.rows[REJECTS],
            },
            output_files=[relative_path(t, data_root) for t in targets],
            skipped_sources=[{"file": f, "reason": r} for f, r in sorted(skipped.items())],
        ).model_dump(mode="json")
        metadata_sha = write_bytes_atomic(
            as_upath(metadata_path), (json.dumps(metadata, indent=2) + "\n").encode()
        )
        # The run metadata describes the export's files, so they are its parents.
        write_sidecar(
            as_upath(metadata_path),
            factory.processed(
                as_upath(metadata_path),
                sha256=metadata_sha,
                size_bytes=metadata_path.stat().st_size,
                parents=[factory.file_parent(t) for t in targets],
                transformation_name=f"{TRANSFORMATION_NAME}_run_metadata",
                transformation_params={"contract": "staging_export_run_metadata 1.0.0"},
                asset_key=TRANSFORMATION_NAME,
                run_id=run_id_for_custody or base,
            ),
        )
    except BaseException:
        for temp, _ in temps.values():
            temp.unlink(missing_ok=True)
        recover(staging_dir)
        raise
    return ExportResult(
        run_id=base,
        staging_dir=staging_dir,
        metadata=metadata,
        metadata_path=metadata_path,
        output_paths=targets,
        state_path=state_path,
        options=options,
        skipped=skipped,
        undated_progress={
            table: {**previous_undated[table], **undated_progress[table]}
            for table in UNDATED_STATE_FIELDS
        },
    )


def _pair(marks: dict[str, dt.datetime | None]) -> dict[str, dt.datetime | None]:
    return {_STATE_FIELDS[t]: marks[t] for t in _STATE_FIELDS}


def _jsonable_bounds(bounds: Bounds) -> dict[str, Any]:
    return {
        "lower_utc": format_ts(bounds.lower_utc),
        "lower_inclusive": bounds.lower_inclusive,
        "upper_utc": format_ts(bounds.upper_utc),
    }


def commit(result: ExportResult) -> None:
    """The commit point: store the new watermarks (with `update_state`), then drop the journal."""
    if result.options.update_state:
        new = result.metadata["watermarks"]["new"]
        _write_state(
            result.state_path,
            result.options.state_key,
            {
                **new,
                "last_run_id": result.run_id,
                "last_metadata_file": result.metadata_path.name,
                "updated_utc": format_ts(dt.datetime.now(dt.UTC)),
                "filters": result.metadata["filters"],
                **{
                    UNDATED_STATE_FIELDS[table]: {
                        name: {"read_upto": p.read_upto, "settled_upto": p.settled_upto}
                        for name, p in sorted(progress.items())
                    }
                    for table, progress in result.undated_progress.items()
                },
            },
        )
    (result.staging_dir / JOURNAL_FILE_NAME).unlink(missing_ok=True)
    result.committed = True


def rollback(result: ExportResult) -> None:
    """Remove the run's files and journal; the state is untouched."""
    for path in result.all_files:
        path.unlink(missing_ok=True)
    (result.staging_dir / JOURNAL_FILE_NAME).unlink(missing_ok=True)
    result.rolled_back = True


# ---------------------------------------------------------------------------------------------
# Validation of the metadata file: the spec's rules and the published JSON Schema
# ---------------------------------------------------------------------------------------------


def _ts(doc: dict[str, Any], *path: str) -> dt.datetime:
    value: Any = doc
    for part in path:
        value = value[part]
    return parse_utc(value, ".".join(path))


def _rule(
    expression: str, check: Callable[[dict[str, Any]], bool]
) -> Callable[[dict[str, Any]], tuple[bool, str]]:
    def evaluate(doc: dict[str, Any]) -> tuple[bool, str]:
        try:
            return bool(check(doc)), expression
        except (KeyError, TypeError, StagingExportError) as exc:
            return False, f"{expression}: cannot evaluate ({exc!r})"

    evaluate.expression = expression  # type: ignore[attr-defined]
    return evaluate


# The spec's validation rules, one property each, evaluated on the metadata document.
VALIDATION_RULES: dict[str, Callable[[dict[str, Any]], tuple[bool, str]]] = {
    "run_started_not_after_finished": _rule(
        "run_started_utc <= run_finished_utc",
        lambda d: _ts(d, "run_started_utc") <= _ts(d, "run_finished_utc"),
    ),
    "window_start_not_after_end": _rule(
        "window.default_start_utc <= window.end_utc",
        lambda d: _ts(d, "window", "default_start_utc") <= _ts(d, "window", "end_utc"),
    ),
    "market_ticks_bounds_ordered": _rule(
        "query_bounds.market_ticks.lower_utc <= query_bounds.market_ticks.upper_utc",
        lambda d: (
            _ts(d, "query_bounds", MARKET_TICKS, "lower_utc")
            <= _ts(d, "query_bounds", MARKET_TICKS, "upper_utc")
        ),
    ),
    "connection_events_bounds_ordered": _rule(
        "query_bounds.connection_events.lower_utc <= query_bounds.connection_events.upper_utc",
        lambda d: (
            _ts(d, "query_bounds", CONNECTION_EVENTS, "lower_utc")
            <= _ts(d, "query_bounds", CONNECTION_EVENTS, "upper_utc")
        ),
    ),
    "worker_db_count_matches_files": _rule(
        "source.worker_db_count == len(source.worker_db_files)",
        lambda d: d["source"]["worker_db_count"] == len(d["source"]["worker_db_files"]),
    ),
    "market_ticks_row_count_non_negative": _rule(
        "row_counts.market_ticks >= 0", lambda d: d["row_counts"][MARKET_TICKS] >= 0
    ),
    "connection_events_row_count_non_negative": _rule(
        "row_counts.connection_events >= 0", lambda d: d["row_counts"][CONNECTION_EVENTS] >= 0
    ),
}


def published_schema_path() -> Path:
    import contracts

    info = StagingExportRunMetadata.contract
    return Path(contracts.__file__).resolve().parent / "schemas" / info.schema_file_name


def json_schema_errors(doc: Any, schema_path: Path | None = None) -> list[str]:
    """Where the document breaks the published JSON Schema (empty: it follows it)."""
    import jsonschema

    schema = json.loads((schema_path or published_schema_path()).read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(document)'}: {error.message}"
        for error in sorted(
            validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))
        )
    ]


def validation_problems(doc: Any) -> list[str]:
    """Every way a metadata document breaks its contract: schema, model and rules."""
    problems = json_schema_errors(doc)
    try:
        StagingExportRunMetadata.model_validate(doc)
    except ValidationError as exc:
        problems.append(f"contract {StagingExportRunMetadata.contract.name}: {exc}")
    for name, rule in VALIDATION_RULES.items():
        passed, expression = rule(doc)
        if not passed:
            problems.append(f"{name}: {expression} does not hold")
    return problems


def run_staging_export(
    options: ExportOptions,
    *,
    worker_files: Sequence[Path],
    input_glob: str,
    data_root: Path,
    staging_dir: Path,
    started: dt.datetime | None = None,
    before_commit: Callable[[ExportResult], bool] | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    run_id_for_custody: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """One whole export run: lock, recover, write, validate, commit (or roll back).

    `before_commit(result)` decides whether to commit; without it the metadata file is validated
    against the contract (`validation_problems`) and a problem raises `StagingExportError` after
    rolling back. A rolled-back run leaves no file and no state change.
    """
    with staging_lock(staging_dir, lock_timeout_s):
        removed = recover(staging_dir)
        if removed and log:
            log(f"removed what an interrupted export left behind: {', '.join(removed)}")
        result = write_export(
            options,
            worker_files=worker_files,
            input_glob=input_glob,
            data_root=data_root,
            staging_dir=staging_dir,
            started=started,
            run_id_for_custody=run_id_for_custody,
            log=log,
        )
        result.removed_on_recovery = removed
        try:
            if before_commit is None:
                on_disk = json.loads(result.metadata_path.read_bytes())
                problems = validation_problems(on_disk)
                if problems:
                    raise StagingExportError(
                        f"{result.metadata_path}: the metadata breaks its contract: {'; '.join(problems)}"
                    )
                ok = True
            else:
                ok = before_commit(result)
            if ok:
                commit(result)
            else:
                rollback(result)
        except BaseException:
            if not result.committed:
                rollback(result)
            raise
    return result


def read_export_rows(
    result_or_metadata: ExportResult | Path, table: str = MARKET_TICKS
) -> Iterator[dict[str, Any]]:
    """The rows of one table of a finished export, in file order (for tests and tools)."""
    metadata_path = (
        result_or_metadata.metadata_path
        if isinstance(result_or_metadata, ExportResult)
        else result_or_metadata
    )
    metadata = json.loads(Path(metadata_path).read_bytes())
    folder = Path(metadata_path).parent
    fmt = metadata["options"]["output_format"]
    base = Path(metadata_path).name[: -len(METADATA_SUFFIX)]
    if fmt == "sqlite":
        conn = sqlite3.connect(
            f"{(folder / f'{base}.sqlite').resolve().as_uri()}?mode=ro", uri=True
        )
        conn.row_factory = sqlite3.Row
        try:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                yield dict(row)
        finally:
            conn.close()
        return
    path = folder / f"{base}_{table}{_EXTENSIONS[fmt]}"
    if not path.exists():
        return
    with open(path, encoding="utf-8", newline="") as handle:
        if fmt == "json":
            for line in handle:
                yield json.loads(line)
        else:
            ints = {f.name for f in TABLE_SCHEMAS[table] if f.type == pa.int64()}
            for row in csv.DictReader(handle):
                yield {
                    k: (int(v) if k in ints else (None if v == "" else v)) for k, v in row.items()
                }
