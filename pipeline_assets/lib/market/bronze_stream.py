"""Bronze in bounded memory: a UTC day of the worker files landed through an on-disk DuckDB spill.

`land_bronze_day` (in `bronze.py`) builds a day as whole Arrow tables; that is the reference and
what the unit tests read. The bronze assets use this module instead, so that a day of any size,
and a range of days in one run, is built in about the same memory:

1. **Read**: each worker file (read-only, as `bronze.py` describes) in keyset pages of
   `page_rows` ids, restricted to the day's id window (see below). A page becomes one Arrow
   batch of the raw columns.
2. **Parse**, `PARSE_THREADS` pages at a time (Arrow's kernels and DuckDB release the GIL), in
   three tiers. Rows in the collectors' plainest form are parsed by Arrow's string kernels
   (`_plain_tier`; the conditions are listed at `_PLAIN_BOOK`). The others are parsed by DuckDB's
   JSON reader (`json_structure`, `from_json`), with names normalized through a small table of
   (exchange, symbol) pairs normalized by `symbols.py`. A row takes either vectorized tier only
   when the result is certainly the one `bronze.land_tick_rows` would give (the conditions are
   listed at `_FAST_SQL`); every other row (bad JSON, a missing field, numbers sent as text, an
   unknown channel, an odd timestamp, an escape sequence, a duplicated key...) is handed to
   `land_tick_rows` itself, which lands it or quarantines it with its reason. So the paths agree
   by construction on those rows, and by test (property tests, byte comparison of the written
   files) on the others.
3. **Spill**: the typed rows go to Arrow IPC files (LZ4) in a temporary folder, one per table and
   worker file. Channel rows are cut into buckets of (symbol, `SORT_BUCKET_S` of event time)
   before they are written, each bucket its own record batch, and an index in memory lists the
   batches of each bucket. The folder holds an owner lock; the folders of killed runs are swept
   by the next spill.
4. **Duplicates**: exact duplicates (exchange, symbol, event time, payload) share a bucket. Runs
   of consecutive buckets of one symbol, about `SORT_GROUP_ROWS` rows (a bucket is never split),
   are the sort groups; within each, a repeated hash of the duplicate key marks candidates, which
   are compared exactly; the rows to leave out (all but the first by source file and id) are
   noted in a table of the spill's DuckDB database, which the key checks read.
5. **Stream out**: `BronzeDayStore.reader(table)` is a `RecordBatchReader` over the day's table
   with the contract's Arrow schema, sorted by the same keys as `land_bronze_day`. A channel
   streams symbol by symbol, one sort group at a time: read by batch index, duplicates left out,
   sorted in memory with Arrow. The groups follow each other in the order of the whole, so memory
   holds one group however large the day is (the old way, one DuckDB `ORDER BY` over the day,
   held up to its memory limit and grew with the day). The quarantine and the connection events
   (a few rows) are sorted by DuckDB with a memory limit. The lake IO manager writes each stream
   batch by batch. Each reader counts what it hands out (rows, rows on another date), which the
   asset checks read.

**The day's id window.** A day's rows used to be found by a full scan of each file (there is no
index on `event_ts_utc`). Collectors append rows in ingestion order, so `ingestion_ts_utc` grows
with `id`, and a row's event time is at most its ingestion time plus a small clock skew and at
least its ingestion time less the feed's latency. The window of ids whose ingestion time lies in
`[day - max_clock_skew, day + 1 + max_ingestion_lag)` is found by binary search on the rowid
(about 2 x 30 point lookups), and only those ids are read, so a file holding months costs what
its day costs. Rows outside the window are not read even if their event time is on the day (a
collector that replays hours-old events, or a clock that jumped): the row-count check, which
counts the whole file with a plain `COUNT`, then fails and names the day; rerun it with
`max_ingestion_lag_s: null` for a full scan. Defaults: skew 300 s, lag 6 hours. Rows whose
ingestion time has no date are skipped by the search, and the window grows over those at its
edges, since one of them may belong to the day (`bronze.DAY_TICKS_SQL`).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import itertools
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import adbc_driver_sqlite.dbapi as adbc_sqlite
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipeline_assets.lib.market.bronze import (
    _CONNECTION_EVENTS_COLUMNS,
    _MARKET_TICKS_COLUMNS,
    BRONZE_CONNECTION_EVENTS_SCHEMA,
    BRONZE_QUARANTINE_SCHEMA,
    BRONZE_SCHEMAS,
    CHANNELS,
    CONNECTION_EVENTS,
    DAY_TICKS_SQL,
    DEFAULT_BUSY_TIMEOUT_S,
    DUPLICATE_KEY,
    EVENT_SORT_KEYS,
    LEVELS_TYPE,
    QUARANTINE,
    REJECT_SORT_KEYS,
    REJECTS,
    SORT_KEYS,
    SourceRead,
    WorkerFileError,
    _Builder,
    _check_distinct_names,
    _connect_read_only,
    _dated,
    _day_bounds,
    _events_of_day,
    _file_errors,
    _normalize_names,
    land_tick_rows,
)

# Rows per read page. Pages in flight (one read ahead, two being parsed, their results) are most
# of the memory of building a day, and the part that was larger at 10 M ticks than at 1 M. On the
# benchmark (bench/bronze_day.py), 16,000-row pages peaked at 424-473 MiB at both sizes against
# 438-540 MiB with 25,000 rows, for about 8% more CPU.
STREAM_PAGE_ROWS = 16_000
# Pages parsed at once (Arrow's kernels and DuckDB release the GIL); each holds one page.
PARSE_THREADS = 2
OUTPUT_BATCH_ROWS = 64 * 1024
# Row groups of the bronze channel files (asset metadata `lake/row_group_size`): with
# `lake/split_grouped` the lake IO manager holds one pending group, at most this many rows (and
# a copy while it writes it). 32,768 rows reach that cap on a day of 1 M ticks already, so
# memory is the same at 1 M and 10 M; files are 1.5 to 4% larger than with 131,072 rows.
OUTPUT_ROW_GROUP_SIZE = 32 * 1024
SPILL_BATCH_ROWS = 16 * 1024
# LZ4 rather than zstd: the spill is written once and read twice (duplicates, then the sorted
# stream); LZ4 costs a fraction of zstd's CPU both ways, for a spill about 1.5x larger.
SPILL_COMPRESSION = "lz4"
DEFAULT_MEMORY_LIMIT_MB = 512
# Channel rows are spilled in buckets of (symbol, SORT_BUCKET_S of event time) and sorted a few
# consecutive buckets at a time, about SORT_GROUP_ROWS rows, in memory: the sort holds one group,
# whatever the size of the day (at most the busiest symbol's SORT_BUCKET_S when one bucket is
# larger than a group).
SORT_BUCKET_S = 300
SORT_GROUP_ROWS = 16 * 1024
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
DEFAULT_MAX_INGESTION_LAG_S = 6 * 3600.0

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "orderbook": BRONZE_SCHEMAS["orderbook"],
    "trades": BRONZE_SCHEMAS["trades"],
    "ticker": BRONZE_SCHEMAS["ticker"],
    QUARANTINE: BRONZE_QUARANTINE_SCHEMA,
    CONNECTION_EVENTS: BRONZE_CONNECTION_EVENTS_SCHEMA,
}
# What the spill files hold: the contract's columns, and for the channels a hash of the
# duplicate key (exchange, symbol, event time, payload) that finds duplicate candidates cheaply.
SPILL_SCHEMAS: dict[str, pa.Schema] = {
    name: schema.append(pa.field("dup_hash", pa.uint64())) if name in CHANNELS else schema
    for name, schema in TABLE_SCHEMAS.items()
}
_DUP_HASH_SQL = "hash(exchange, symbol, event_ts_utc, payload)"
# The order a table is streamed in. Channels come grouped by symbol (the lake's split column),
# each symbol's rows in `SORT_KEYS` order: every per-symbol file holds exactly the rows, in
# exactly the order, of the day sorted by `SORT_KEYS`, and the IO manager finishes each file
# before the next symbol begins.
_ORDER = {
    **{channel: [("symbol", "ascending"), *SORT_KEYS] for channel in CHANNELS},
    QUARANTINE: REJECT_SORT_KEYS,
    CONNECTION_EVENTS: EVENT_SORT_KEYS,
}
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TS_TYPE = pa.timestamp("us", tz="UTC")
_NUMBER_TYPES = "('UBIGINT', 'BIGINT', 'DOUBLE')"


def _keys_ok(required: str, exact: str | None = None) -> str:
    # The channel's keys, each once; other keys only when the payload has no nan/inf literal and
    # is nested less than 400 deep (Python refuses both; DuckDB takes the first).
    exact = exact or required
    return (
        f"(keys IN ({required}, {exact}) OR (list_has_all(keys, {required}) "
        "AND len(keys) = len(list_distinct(keys)) "
        "AND NOT regexp_matches(payload, '(?i)nan|inf') "
        "AND length(payload) - length(replace(replace(payload, '[', ''), '{', '')) < 400))"
    )


def _number(text: str) -> str:
    # A JSON number's text (first character a digit or '-') as a double; NULL otherwise.
    return (
        f"CASE WHEN regexp_full_match(left({text}::VARCHAR, 1), '[-0-9]') "
        f"THEN TRY_CAST({text}::VARCHAR AS DOUBLE) END"
    )


def _flat_levels(text: str, parsed: str) -> str:
    # No list nested deeper than a level: one '[' for the list and one per level.
    return f"length({text}) - length(replace({text}, '[', '')) = len({parsed}) + 1"


def _numeric_levels_text(column: str) -> str:
    # The JSON text of a list holding only numbers and lists: no string, true/false/null, object.
    return (
        f"starts_with({column}, '[') AND NOT contains({column}, '\"') "
        f"AND NOT contains({column}, 't') AND NOT contains({column}, 'f') "
        f"AND NOT contains({column}, 'n') AND NOT contains({column}, '{{')"
    )


# The vectorized parse of one page (`page`: the raw columns; `names`: the normalizable
# (exchange_raw, symbol_raw) pairs). A row is `fast` only when every condition holds under which
# DuckDB's reading equals `land_tick_rows`'; all others take the exact path:
# - channel known, names normalizable, both timestamps exactly 'YYYY-MM-DDTHH:MM:SS.ffffffZ'
#   (parsed and printed back to the same text);
# - payload valid JSON without backslashes (no escapes) or a trailing comma (DuckDB's JSON
#   reader accepts trailing commas and nan/inf literals, Python's does not);
# - the channel's top-level keys (trades: side may be absent), none repeated (DuckDB takes the
#   first, Python the last); other keys only if the text has no nan/inf (DuckDB reads those
#   literals, Python refuses them) and is nested less than 400 deep (`_keys_ok`);
# - each field's JSON text of a kind `parse_payload` takes without conversion: numbers as JSON
#   numbers (numeric text takes the exact path) and finite, which also refuses nan/inf; trade_id
#   a non-empty string or an integer written canonically; side "buy", "sell", null or absent;
#   bids and asks lists of lists of numbers only (no quote, letter t/f/n or brace in their JSON
#   text, no list deeper than a level), each level at least [price, size], both finite (checked
#   on the parsed lists by `_levels`).
_FAST_SQL = f"""
WITH base AS (
  SELECT p.source_id, p.exchange_raw, p.symbol_raw, p.channel, p.event_raw, p.ingest_raw,
         p.payload, n.exchange, n.symbol, n.base_asset, n.quote_asset,
         try_strptime(p.event_raw, '{_TS_FORMAT}') AS ev,
         try_strptime(p.ingest_raw, '{_TS_FORMAT}') AS ing,
         CASE WHEN p.channel IN ('orderbook', 'trades', 'ticker') AND n.exchange IS NOT NULL
                   AND NOT contains(p.payload, '\\')
                   AND NOT regexp_matches(p.payload, ',\\s*[\\]}}]')
              THEN list_sort(TRY(json_keys(p.payload))) END AS keys
  FROM page p LEFT JOIN names n
    ON p.exchange_raw = n.exchange_raw AND p.symbol_raw = n.symbol_raw
),
fields AS (
  SELECT *,
    CASE WHEN channel = 'trades' AND {_keys_ok("['price', 'size', 'trade_id']", "['price', 'side', 'size', 'trade_id']")}
      THEN from_json(payload,
        '{{"trade_id": "JSON", "price": "JSON", "size": "JSON", "side": "JSON"}}') END AS tj,
    CASE WHEN channel = 'ticker' AND {_keys_ok("['ask', 'bid', 'last', 'volume_24h']")}
      THEN from_json(payload,
        '{{"bid": "JSON", "ask": "JSON", "last": "JSON", "volume_24h": "JSON"}}') END AS kj,
    CASE WHEN channel = 'orderbook' AND {_keys_ok("['asks', 'bids']")}
      THEN from_json(payload, '{{"bids": "JSON", "asks": "JSON"}}') END AS obj
  FROM base
),
parsed AS (
  SELECT *,
    CASE WHEN starts_with(tj.trade_id::VARCHAR, '"') THEN (tj.trade_id::VARCHAR)[2:-2]
         WHEN TRY_CAST(tj.trade_id::VARCHAR AS HUGEINT)::VARCHAR = tj.trade_id::VARCHAR
           THEN tj.trade_id::VARCHAR
    END AS trade_id,
    {_number("tj.price")} AS price, {_number("tj.size")} AS size,
    CASE WHEN tj.side IS NULL OR tj.side::VARCHAR = 'null' THEN NULL
         WHEN tj.side::VARCHAR IN ('"buy"', '"sell"') THEN (tj.side::VARCHAR)[2:-2]
         ELSE '?' END AS side,
    {_number("kj.bid")} AS bid, {_number("kj.ask")} AS ask, {_number("kj.last")} AS last,
    {_number("kj.volume_24h")} AS volume_24h,
    CASE WHEN {_numeric_levels_text("obj.bids")} AND {_numeric_levels_text("obj.asks")}
      THEN from_json(obj.bids, '[["DOUBLE"]]') END AS ob_bids,
    CASE WHEN {_numeric_levels_text("obj.bids")} AND {_numeric_levels_text("obj.asks")}
      THEN from_json(obj.asks, '[["DOUBLE"]]') END AS ob_asks
  FROM fields
)
SELECT source_id, exchange_raw, symbol_raw, channel, event_raw, ingest_raw, payload,
  coalesce(ev IS NOT NULL AND ing IS NOT NULL
    AND strftime(ev, '{_TS_FORMAT}') = event_raw AND strftime(ing, '{_TS_FORMAT}') = ingest_raw
    AND CASE channel
      WHEN 'trades' THEN tj IS NOT NULL AND trade_id <> '' AND isfinite(price)
        AND isfinite(size) AND (side IS NULL OR side <> '?')
      WHEN 'ticker' THEN kj IS NOT NULL AND isfinite(bid) AND isfinite(ask) AND isfinite(last)
        AND isfinite(volume_24h)
      WHEN 'orderbook' THEN ob_bids IS NOT NULL AND ob_asks IS NOT NULL
        AND {_flat_levels("obj.bids", "ob_bids")} AND {_flat_levels("obj.asks", "ob_asks")}
    END, false) AS fast,
  exchange, symbol, base_asset, quote_asset, timezone('UTC', ev) AS event_ts_utc,
  timezone('UTC', ing) AS ingestion_ts_utc,
  trade_id, price, size, side, bid, ask, last, volume_24h, ob_bids, ob_asks,
  hash(exchange, symbol, timezone('UTC', ev), payload) AS dup_hash
FROM parsed
"""

# ---------------------------------------------------------------------------------------------
# The canonical tier: payloads in the collectors' plain form, parsed with Arrow kernels
# ---------------------------------------------------------------------------------------------

# Before the DuckDB parse, rows whose payload has the plainest form are parsed by Arrow's string
# kernels alone (RE2 validation, splits, a correctly rounded text-to-double cast), at a third of
# the CPU. A row takes this tier only when every condition below holds; under them Python's
# `json` reads the payload to exactly the values taken here, so `land_tick_rows` would land the
# same row. All other rows go on to `_FAST_SQL` (and from there, maybe, to the exact path).
# - channel known, names normalizable, both timestamps 'YYYY-MM-DDTHH:MM:SS.ffffffZ' with a year
#   from 1000 to 2999, read by Arrow's ISO-8601 parser (an impossible date or time makes the whole
#   page skip this tier);
# - whitespace between tokens is spaces only; no escapes;
# - orderbook: exactly `{"bids": [...], "asks": [...]}` in that order, each level exactly
#   [price, size];
# - ticker and trades: a flat object (values: numbers, strings without `"\,:[]{}` or control
#   characters, null, true, false; keys of the same kind), each wanted key exactly once (side at
#   most once);
# - every number a JSON number (no text), and not a bare `-0` (JSON reads it as the integer 0,
#   Arrow as -0.0); at most 300 characters; finite once read; trade_id a non-empty string or an
#   integer of at most 300 digits, side "buy", "sell", null or absent.
_SP = " *"
_NUM = r"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)|0|-?[1-9][0-9]*)"
_INT = r"(?:0|-?[1-9][0-9]*)"
_PLAIN_STR = r'"[^"\\\x00-\x1f,:\[\]{}]*"'
_LEVEL = rf"\[{_SP}{_NUM}{_SP},{_SP}{_NUM}{_SP}\]"
_LEVELS = rf"\[{_SP}(?:{_LEVEL}(?:{_SP},{_SP}{_LEVEL})*)?{_SP}\]"
_PLAIN_BOOK = (
    rf'^{_SP}\{{{_SP}"bids"{_SP}:{_SP}{_LEVELS}{_SP},{_SP}"asks"{_SP}:{_SP}{_LEVELS}{_SP}\}}{_SP}$'
)
_VALUE = rf"(?:{_NUM}|{_PLAIN_STR}|null|true|false)"
_MEMBER = rf"{_PLAIN_STR}{_SP}:{_SP}{_VALUE}"
_PLAIN_FLAT = rf"^{_SP}\{{{_SP}(?:{_MEMBER}{_SP}(?:,{_SP}{_MEMBER}{_SP})*)?\}}{_SP}$"
_PLAIN_TS = r"^[12][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
_MAX_NUMBER_TEXT = 300
_FLAT_FIELDS = {
    "ticker": {"bid": "number", "ask": "number", "last": "number", "volume_24h": "number"},
    "trades": {"trade_id": "trade_id", "price": "number", "size": "number", "side": "side"},
}


def _numbers(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """JSON number texts (already validated) as doubles, and per value whether it is usable:
    short enough and finite."""
    short = np.asarray(pc.less_equal(pc.utf8_length(text), _MAX_NUMBER_TEXT), dtype=bool)
    if not short.all():
        text = pc.if_else(pa.array(short), text, "0")
    values = pc.cast(text, pa.float64())
    finite = np.asarray(pc.is_finite(values), dtype=bool)
    return values, short & finite


def _plain_levels(side: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """One side of validated plain books (the text around its list) as the contract's levels,
    and per row whether every number is usable."""
    text = side
    for char in ("[", "]", " "):
        text = pc.replace_substring(text, char, "")
    text = pc.utf8_trim(text, '{}":,abdiks')  # the key and punctuation around the numbers
    empty = pc.equal(pc.utf8_length(text), 0)
    if pc.any(empty).as_py():  # an empty list: no levels (not one empty number)
        text = pc.if_else(empty, pa.scalar(None, pa.string()), text)
    tokens = pc.split_pattern(text, ",")
    counts = np.asarray(pc.fill_null(pc.list_value_length(tokens), 0), dtype=np.int64)
    numbers = pc.list_flatten(tokens)
    values, usable = _numbers(numbers)
    values = np.asarray(values)
    bad_rows = np.zeros(len(side), dtype=bool)
    if not usable.all():
        bad_rows[np.repeat(np.arange(len(side)), counts)[~usable]] = True
    offsets = np.zeros(len(side) + 1, dtype=np.int32)
    np.cumsum(counts // 2, out=offsets[1:])
    struct = pa.StructArray.from_arrays(
        [pa.array(values[0::2], pa.float64()), pa.array(values[1::2], pa.float64())],
        fields=list(LEVELS_TYPE.value_type),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), struct, type=LEVELS_TYPE), ~bad_rows


def _plain_flat(payload: pa.Array, channel: str) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The wanted fields of validated flat payloads, and per row whether they are all usable."""
    n = len(payload)
    inner = pc.utf8_trim(payload, " {}")
    items = pc.split_pattern(inner, ",")
    parent = np.asarray(pc.list_parent_indices(items))
    members = pc.split_pattern(pc.list_flatten(items), ":", max_splits=1)
    keys = pc.utf8_trim(pc.list_element(members, 0), ' "')
    values = pc.utf8_trim(pc.fill_null(pc.list_element(members, 1), ""), " ")
    ok = np.ones(n, dtype=bool)
    fields: dict[str, pa.Array] = {}
    for name, kind in _FLAT_FIELDS[channel].items():
        at = np.asarray(pc.equal(keys, name), dtype=bool)
        rows = parent[at]
        seen = np.bincount(rows, minlength=n)
        ok &= (seen == 1) | ((seen == 0) & (kind == "side"))
        ok &= seen <= 1
        text = values.filter(pa.array(at))
        # Rows where the key is missing (or repeated, already refused) read as null here.
        unique_rows = seen[rows] == 1
        rows, text = rows[unique_rows], text.filter(pa.array(unique_rows))
        if kind == "number":
            valid = np.asarray(pc.match_substring_regex(text, f"^{_NUM}$"), dtype=bool)
            numbers, usable = _numbers(pc.if_else(pa.array(valid), text, "0"))
            good = np.zeros(n, dtype=bool)
            good[rows] = valid & usable
            ok &= good
            column = np.zeros(n, dtype=np.float64)
            column[rows] = np.asarray(numbers)
            fields[name] = pa.array(column, pa.float64())
            continue
        if kind == "trade_id":
            quoted = np.asarray(pc.starts_with(text, '"'), dtype=bool)
            content = pc.utf8_slice_codeunits(text, 1, -1)
            integer = np.asarray(pc.match_substring_regex(text, f"^{_INT}$"), dtype=bool) & (
                np.asarray(pc.utf8_length(text)) <= _MAX_NUMBER_TEXT
            )
            chosen = pc.if_else(pa.array(quoted), content, text)
            good = np.zeros(n, dtype=bool)
            good[rows] = (quoted & np.asarray(pc.greater(pc.utf8_length(content), 0))) | integer
        else:  # side
            chosen = pc.if_else(
                pc.equal(text, "null"),
                pa.scalar(None, pa.string()),
                pc.utf8_slice_codeunits(text, 1, -1),
            )
            good = np.ones(n, dtype=bool)
            good[rows] = np.asarray(
                pc.fill_null(pc.is_in(text, pa.array(['"buy"', '"sell"', "null"])), False),
                dtype=bool,
            )
        ok &= good
        slots = np.full(n, -1, dtype=np.int64)
        slots[rows] = np.arange(len(rows))
        indices = pa.array(slots, mask=slots < 0)
        fields[name] = pc.take(chosen, indices)
    return fields, ok


def _plain_tier(
    page: pa.Table, names: Mapping[tuple[Any, Any], tuple[str, str, str, str] | str]
) -> tuple[dict[str, pa.Table], np.ndarray]:
    """The page's rows in the plainest form, parsed with Arrow kernels: per channel the spill
    columns (without source_file and dup_hash), and the mask of the page's rows taken."""
    n = page.num_rows
    taken = np.zeros(n, dtype=bool)
    try:
        event = page.column("event_raw").combine_chunks()
        ingest = page.column("ingest_raw").combine_chunks()
        plain_ts = np.asarray(
            pc.and_(
                pc.match_substring_regex(event, _PLAIN_TS),
                pc.match_substring_regex(ingest, _PLAIN_TS),
            ),
            dtype=bool,
        )
        stand_in = "2000-01-01T00:00:00.000000Z"
        event_ts = pc.cast(pc.if_else(pa.array(plain_ts), event, stand_in), TS_TYPE)
        ingest_ts = pc.cast(pc.if_else(pa.array(plain_ts), ingest, stand_in), TS_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return {}, taken  # an impossible date or time: the page takes the other paths
    exchange_raw = page.column("exchange_raw").combine_chunks()
    symbol_raw = page.column("symbol_raw").combine_chunks()
    encoded = pc.dictionary_encode(pc.binary_join_element_wise(exchange_raw, symbol_raw, "\x1f"))
    normalized = [names.get(tuple(k.split("\x1f", 1))) for k in encoded.dictionary.to_pylist()]
    entries = [v if isinstance(v, tuple) else (None, None, None, None) for v in normalized]
    key_index = encoded.indices
    name_columns = [
        pc.take(pa.array([e[i] for e in entries], pa.string()), key_index) for i in range(4)
    ]
    named = np.asarray(pc.is_valid(name_columns[0]), dtype=bool)
    channel = page.column("channel").combine_chunks()
    payload = page.column("payload").combine_chunks()
    common = plain_ts & named
    out: dict[str, pa.Table] = {}
    for name in CHANNELS:
        rows = np.flatnonzero(common & np.asarray(pc.equal(channel, name), dtype=bool))
        if not len(rows):
            continue
        text = payload.take(pa.array(rows))
        pattern = _PLAIN_BOOK if name == "orderbook" else _PLAIN_FLAT
        plain = np.asarray(pc.match_substring_regex(text, pattern), dtype=bool)
        if not plain.all():  # (filters copy: skipped in the common case)
            rows, text = rows[plain], text.filter(pa.array(plain))
        if not len(rows):
            continue
        try:
            if name == "orderbook":
                halves = pc.split_pattern(text, '"asks"', max_splits=1)
                bids, bids_ok = _plain_levels(pc.list_element(halves, 0))
                asks, asks_ok = _plain_levels(pc.list_element(halves, 1))
                fields, ok = {"bids": bids, "asks": asks}, bids_ok & asks_ok
            else:
                fields, ok = _plain_flat(text, name)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # a number Arrow would not read: these rows take the other paths
        if not ok.any():
            continue
        keep = pa.array(ok)
        index = pa.array(rows[ok])
        columns: dict[str, Any] = {
            "source_id": page.column("source_id").combine_chunks().take(index),
            "exchange_raw": exchange_raw.take(index),
            "symbol_raw": symbol_raw.take(index),
            "exchange": name_columns[0].take(index),
            "symbol": name_columns[1].take(index),
            "base_asset": name_columns[2].take(index),
            "quote_asset": name_columns[3].take(index),
            "event_ts_utc": event_ts.take(index),
            "ingestion_ts_utc": ingest_ts.take(index),
            "payload": text if ok.all() else text.filter(keep),
        }
        for field_name, column in fields.items():
            columns[field_name] = column if ok.all() else column.filter(keep)
        schema = SPILL_SCHEMAS[name]
        out[name] = pa.table(
            {f.name: columns[f.name] for f in schema if f.name not in ("source_file", "dup_hash")}
        )
        taken[rows[ok]] = True
    return out, taken


_RAW_SCHEMA = pa.schema(
    [
        ("source_id", pa.int64()),
        ("exchange_raw", pa.string()),
        ("symbol_raw", pa.string()),
        ("channel", pa.string()),
        ("event_raw", pa.string()),
        ("ingest_raw", pa.string()),
        ("payload", pa.string()),
    ]
)
_NAMES_SCHEMA = pa.schema(
    [
        ("exchange_raw", pa.string()),
        ("symbol_raw", pa.string()),
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("base_asset", pa.string()),
        ("quote_asset", pa.string()),
    ]
)


# ---------------------------------------------------------------------------------------------
# The day's id window
# ---------------------------------------------------------------------------------------------


def _first_id_ingested_at_or_after(conn: sqlite3.Connection, lo: int, hi: int, moment: str) -> int:
    """The smallest id in [lo, hi] whose ingestion_ts_utc >= moment (hi + 1 if none), by binary
    search over the rowid, skipping ids missing from the file and rows whose ingestion time has
    no date (`_widened` takes those at the window's edges in)."""
    answer = hi + 1
    while lo <= hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT id, ingestion_ts_utc FROM market_ticks WHERE id >= ? AND id <= ? "
            f"AND {_DATED_INGESTION} ORDER BY id LIMIT 1",
            (mid, hi),
        ).fetchone()
        if row is None:
            hi = mid - 1
        elif row[1] < moment:
            lo = row[0] + 1
        else:
            answer, hi = row[0], mid - 1
    return answer


def _widened(
    conn: sqlite3.Connection, first: int, last: int, min_id: int, max_id: int
) -> tuple[int, int]:
    """[first, last] grown over the rows just outside it whose ingestion time has no date: the
    binary search cannot place them, and one of them may belong to the day (`DAY_TICKS_SQL`
    gives it the ingestion date of its neighbour); reading them costs nothing else, since the
    read selects the day's rows by that same rule."""
    before = conn.execute(
        f"SELECT id FROM market_ticks WHERE id < ? AND {_DATED_INGESTION} ORDER BY id DESC LIMIT 1",
        (first,),
    ).fetchone()
    after = conn.execute(
        f"SELECT id FROM market_ticks WHERE id > ? AND id <= ? AND {_DATED_INGESTION} "
        "ORDER BY id LIMIT 1",
        (last, max_id),
    ).fetchone()
    return (min_id if before is None else before[0] + 1), (
        max_id if after is None else after[0] - 1
    )


_DATED_INGESTION = _dated("ingestion_ts_utc")


def _ts_text(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_id_window(
    conn: sqlite3.Connection,
    day: dt.date,
    min_id: int,
    max_id: int,
    *,
    max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S,
    max_ingestion_lag_s: float | None = DEFAULT_MAX_INGESTION_LAG_S,
) -> tuple[int, int]:
    """The ids [first, last] that may hold rows of `day` (see the module docstring); the whole
    file when either bound is None."""
    if max_clock_skew_s is None or max_ingestion_lag_s is None:
        return min_id, max_id
    start = dt.datetime(day.year, day.month, day.day)
    lower = _ts_text(start - dt.timedelta(seconds=max_clock_skew_s))
    upper = _ts_text(start + dt.timedelta(days=1, seconds=max_ingestion_lag_s))
    first = _first_id_ingested_at_or_after(conn, min_id, max_id, lower)
    last = _first_id_ingested_at_or_after(conn, first, max_id, upper) - 1
    return _widened(conn, first, last, min_id, max_id)


# ---------------------------------------------------------------------------------------------
# The day store: spilled tables, streamed out
# ---------------------------------------------------------------------------------------------


@dataclass
class StreamCounts:
    """What a reader handed out: rows, and rows whose event date is not the day."""

    rows: int = 0
    rows_on_other_dates: int = 0
    first_event_date: dt.date | None = None
    last_event_date: dt.date | None = None
    finished: bool = False


def _conform(column: pa.Array | pa.ChunkedArray, wanted: pa.DataType) -> pa.Array:
    """`column` as type `wanted`. DuckDB returns struct fields as nullable: order-book levels are
    rebuilt around the same buffers with the contract's NOT NULL fields instead of cast."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.type == wanted:
        return column
    if wanted == LEVELS_TYPE and pa.types.is_list(column.type) and column.null_count == 0:
        items = column.values.slice(column.offsets[0].as_py(), len(column.values))
        struct = pa.StructArray.from_arrays(
            [items.field(0), items.field(1)], fields=list(LEVELS_TYPE.value_type)
        )
        offsets = pc.subtract(column.offsets, column.offsets[0])
        return pa.ListArray.from_arrays(offsets, struct, type=LEVELS_TYPE)
    return column.cast(wanted)


def _levels(lists: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Order-book levels from DuckDB's parse of a bids or asks list (list<list<double>>): the
    contract's list of (price, size), and per row whether every level has at least two elements,
    the first two non-null and finite (rows failing it take the exact path)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks != 1 else lists.chunk(0)
    lists = pa.concat_arrays([lists])  # offset 0, own buffers
    outer_off = np.asarray(lists.offsets)
    inner = lists.values
    inner_off = np.asarray(inner.offsets)
    values = inner.values
    numbers = values.to_numpy(zero_copy_only=False)
    present = ~np.asarray(values.is_null(), dtype=bool) & np.isfinite(numbers)
    start = inner_off[:-1]
    length = np.diff(inner_off)
    last = max(len(numbers) - 1, 0)
    first_at = np.minimum(start, last)
    second_at = np.minimum(start + 1, last)
    if len(numbers):
        level_ok = (length >= 2) & present[first_at] & present[second_at]
    else:
        level_ok = np.zeros(len(start), dtype=bool)
    level_ok &= ~np.asarray(inner.is_null(), dtype=bool)
    bad = np.concatenate([[0], np.cumsum(~level_ok)])
    row_ok = ~np.asarray(lists.is_null(), dtype=bool) & (bad[outer_off[1:]] == bad[outer_off[:-1]])
    price = numbers[first_at] if len(numbers) else np.zeros(len(start))
    size = numbers[second_at] if len(numbers) else np.zeros(len(start))
    struct = pa.StructArray.from_arrays(
        [pa.array(price, pa.float64()), pa.array(size, pa.float64())],
        fields=list(LEVELS_TYPE.value_type),
    )
    offsets = pa.array(outer_off, pa.int32())
    return pa.ListArray.from_arrays(offsets, struct, type=LEVELS_TYPE), row_ok


@dataclass
class BronzeDayStore:
    """One UTC day as the bronze assets write it, held in the spill.

    `reader(table)` streams a table ('orderbook', 'trades', 'ticker', 'quarantine',
    'connection_events') with its contract's schema (`TABLE_SCHEMAS`), sorted, exact duplicates
    left out; `streamed[table]` counts what was handed out. `rows`, `duplicates_dropped`,
    `quarantined()` and `duplicate_keys()` answer from the spilled rows.
    """

    day: dt.date
    sources: tuple[SourceRead, ...]
    skipped: Mapping[str, str]
    duplicates_dropped: Mapping[str, int]
    rows: Mapping[str, int]
    _spill: BronzeSpill
    _files: Mapping[str, list[Path]]
    _dropped: Mapping[str, str]
    _groups: Mapping[str, list[_SortGroup]] = field(default_factory=dict)
    _groups_with_duplicates: Mapping[str, frozenset[int]] = field(default_factory=dict)
    streamed: dict[str, StreamCounts] = field(default_factory=dict)

    tables = tuple(TABLE_SCHEMAS)

    @property
    def ticks(self) -> int:
        return sum(self.rows[c] for c in CHANNELS)

    def _cursor(
        self, table: str, columns: Sequence[str] | None = None
    ) -> duckdb.DuckDBPyConnection:
        """A cursor on which `landed` is the rows written for `table` (`columns` of them)."""
        wanted = list(columns) if columns is not None else list(TABLE_SCHEMAS[table].names)
        if table in self._dropped:
            wanted += [c for c in ("source_file", "source_id") if c not in wanted]
        cursor = self._spill.con.cursor()
        cursor.register("spilled", _scan(self._files[table], SPILL_SCHEMAS[table], wanted))
        if table in self._dropped:
            cursor.execute(
                "CREATE OR REPLACE TEMP VIEW landed AS SELECT * FROM spilled "
                f"ANTI JOIN {self._dropped[table]} USING (source_file, source_id)"
            )
        else:
            cursor.execute("CREATE OR REPLACE TEMP VIEW landed AS SELECT * FROM spilled")
        return cursor

    def reader(self, table: str, batch_rows: int = OUTPUT_BATCH_ROWS) -> pa.RecordBatchReader:
        """The rows written for `table`, sorted, in batches. Lazy: the query (the sort) starts at
        the first read, so a range run can hand out one reader per day without holding them."""
        schema = TABLE_SCHEMAS[table]
        order = ", ".join(name for name, _ in _ORDER[table])
        columns = ", ".join(schema.names)
        counts = self.streamed[table] = StreamCounts()
        has_event_ts = "event_ts_utc" in schema.names
        day = pa.scalar(self.day, pa.date32())

        def sorted_batches() -> Iterator[pa.RecordBatch]:
            if table in CHANNELS:
                yield from self._sorted_channel(table, batch_rows)
                return
            cursor = self._cursor(table)
            try:
                source = cursor.sql(
                    f"SELECT {columns} FROM landed ORDER BY {order}"
                ).to_arrow_reader(batch_rows)
                for batch in source:
                    yield pa.RecordBatch.from_arrays(
                        [_conform(c, f.type) for c, f in zip(batch.columns, schema)],
                        schema=schema,
                    )
            finally:
                cursor.close()

        def batches() -> Iterator[pa.RecordBatch]:
            for out in sorted_batches():
                counts.rows += out.num_rows
                if has_event_ts and out.num_rows:
                    dates = pc.cast(out.column("event_ts_utc"), pa.date32())
                    on_day = pc.sum(pc.cast(pc.equal(dates, day), pa.int64())).as_py() or 0
                    counts.rows_on_other_dates += out.num_rows - on_day
                    low, high = pc.min(dates).as_py(), pc.max(dates).as_py()
                    counts.first_event_date = min(d for d in (counts.first_event_date, low) if d)
                    counts.last_event_date = max(d for d in (counts.last_event_date, high) if d)
                yield out
            counts.finished = True

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _sorted_channel(self, channel: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """A channel's rows by symbol, then `SORT_KEYS`: each sort group read, its exact
        duplicates left out, sorted in memory (the groups follow each other in that order)."""
        schema = TABLE_SCHEMAS[channel]
        with _SpillReaders(SPILL_SCHEMAS[channel]) as readers:
            for index, group in enumerate(self._groups[channel]):
                rows = readers.read(group.batches, schema.names)
                if index in self._groups_with_duplicates[channel]:
                    rows = rows.filter(pa.array(_first_of_each_key(rows)))
                rows = rows.take(pc.sort_indices(rows, SORT_KEYS))
                yield from rows.combine_chunks().to_batches(max_chunksize=batch_rows)

    def quarantined(self, source_table: str, channel: str | None = None) -> int:
        sql = "SELECT count(*) FROM landed WHERE source_table = ?"
        params: list[Any] = [source_table]
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        cursor = self._cursor(QUARANTINE, ["source_table", "channel"])
        try:
            ((count,),) = cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()
        return count

    def quarantined_with_reason(
        self, code: str, first: int = 10
    ) -> dict[str, tuple[int, list[int]]]:
        """Per worker file, how many quarantined rows have a reason starting with `code`, and
        the first `first` of their row ids (market_ticks and connection_events alike)."""
        cursor = self._cursor(QUARANTINE, ["source_file", "source_id", "reason"])
        try:
            rows = cursor.execute(
                "SELECT source_file, count(*), "
                f"list(source_id ORDER BY source_id)[1:{int(first)}] FROM landed "
                "WHERE starts_with(reason, ?) GROUP BY source_file ORDER BY source_file",
                [code],
            ).fetchall()
        finally:
            cursor.close()
        return {name: (count, list(ids)) for name, count, ids in rows}

    def duplicate_keys(self, table: str, key: Sequence[str], limit: int = 5) -> list[dict]:
        """Up to `limit` values of `key` held by more than one written row of `table`."""
        columns = ", ".join(key)
        cursor = self._cursor(table, key)
        try:
            cursor.execute(
                f"SELECT {columns} FROM landed GROUP BY ALL HAVING count(*) > 1 "
                f"ORDER BY ALL LIMIT {int(limit)}"
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            cursor.close()


def _scan(files: Sequence[Path], schema: pa.Schema, columns: Sequence[str]) -> Any:
    """`columns` of the spill files, read one small batch at a time (pyarrow's default
    read-ahead would hold dozens of batches per file)."""
    if not files:
        return schema.empty_table().select(list(columns))
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="ipc")
    return dataset.scanner(
        columns=list(columns),
        batch_size=SPILL_BATCH_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
        use_threads=False,
    )


SPILL_PREFIX = "bronze-spill-"
_SPILL_NEW_PREFIX = ".bronze-spill-new-"
_SPILL_LOCK = ".owner.lock"
# A spill folder without an owner lock (left by a run killed while creating it, or written by a
# version without locks) is removed only when nothing in it changed for this long.
UNLOCKED_SPILL_MAX_AGE_S = 6 * 3600.0


def _latest_change(folder: Path) -> float:
    latest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            latest = max(latest, path.stat().st_mtime)
    return latest


@dataclass(frozen=True)
class SweptSpill:
    """A spill folder left by a killed run and removed: where it was and the bytes it held."""

    path: Path
    size_bytes: int


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def sweep_stale_spills(
    parent: Path, *, unlocked_max_age_s: float = UNLOCKED_SPILL_MAX_AGE_S, now: float | None = None
) -> list[SweptSpill]:
    """Remove the spill folders under `parent` that no live run owns; returns them with the
    bytes each held (measured just before removal).

    Each spill holds an exclusive `flock` on its `.owner.lock` for as long as its process lives
    (the kernel releases it however the process ends), and only appears under its final name once
    it holds it. So a folder whose lock can be taken was left by a killed run; a live run's
    folder is never touched.
    """
    now = time.time() if now is None else now
    removed: list[SweptSpill] = []
    if not parent.is_dir():
        return removed
    candidates = [
        p
        for p in parent.iterdir()
        if p.is_dir() and p.name.startswith((SPILL_PREFIX, _SPILL_NEW_PREFIX))
    ]
    for folder in sorted(candidates):
        lock = folder / _SPILL_LOCK
        try:
            if folder.name.startswith(_SPILL_NEW_PREFIX):
                # Being created (its lock may not be taken yet): only by age.
                raise FileNotFoundError(lock)
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if now - _latest_change(folder) >= unlocked_max_age_s:
                    size = _folder_bytes(folder)
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(SweptSpill(folder, size))
            continue
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            size = _folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(SweptSpill(folder, size))
        finally:
            os.close(fd)
    return removed


def _new_spill_folder(parent: Path) -> tuple[Path, int]:
    """A fresh spill folder under `parent` and the descriptor holding its owner lock."""
    staging = Path(tempfile.mkdtemp(prefix=_SPILL_NEW_PREFIX, dir=parent))
    fd = os.open(staging / _SPILL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        folder = parent / (SPILL_PREFIX + staging.name[len(_SPILL_NEW_PREFIX) :])
        os.rename(staging, folder)  # the lock stays with the open file
    except BaseException:
        os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder, fd


class BronzeSpill:
    """A temporary folder (Arrow IPC files of the landed rows, and a DuckDB database with a memory
    limit that sorts and de-duplicates them out of core) holding the days of one run.

    Use as a context manager; `land_day` fills one day and returns its store. The folder and
    everything in it are removed on exit. Folders of killed runs in the same parent folder are
    removed when the next spill starts (`sweep_stale_spills`; `swept` lists them with their
    sizes).
    """

    def __init__(
        self,
        *,
        spill_dir: str | Path | None = None,
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
        threads: int | None = None,
    ) -> None:
        parent = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        self.swept = sweep_stale_spills(parent)
        self.folder, self._lock_fd = _new_spill_folder(parent)
        config: dict[str, Any] = {
            "memory_limit": f"{int(memory_limit_mb)}MB",
            "temp_directory": str(self.folder / "duckdb_tmp"),
            "preserve_insertion_order": False,
        }
        if threads:
            config["threads"] = int(threads)
        try:
            self.con = duckdb.connect(str(self.folder / "spill.duckdb"), config=config)
            self.con.execute("SET TimeZone = 'UTC'")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            os.close(self._lock_fd)
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def land_day(
        self,
        db_paths: Sequence[Path],
        day: dt.date,
        *,
        skip_unreadable: bool = False,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        page_rows: int = STREAM_PAGE_ROWS,
        max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S,
        max_ingestion_lag_s: float | None = DEFAULT_MAX_INGESTION_LAG_S,
    ) -> BronzeDayStore:
        """Land one UTC day of the worker files into the spill; same contract as
        `land_bronze_day`: a `WorkerFileError` names an unreadable file; with `skip_unreadable`
        it is left out and named in `skipped` with the reason."""
        paths = sorted((Path(p) for p in db_paths), key=lambda p: p.name)
        _check_distinct_names(paths)
        prefix = f"d{day:%Y%m%d}_{uuid.uuid4().hex[:8]}"
        loader = _DayLoader(self.con, self.folder / prefix, day)
        sources: list[SourceRead] = []
        skipped: dict[str, str] = {}
        reading = _read_files(
            paths,
            day,
            stop_at_error=not skip_unreadable,
            busy_timeout_s=busy_timeout_s,
            page_rows=page_rows,
            max_clock_skew_s=max_clock_skew_s,
            max_ingestion_lag_s=max_ingestion_lag_s,
        )
        pool = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="bronze-parse")
        parsing: collections.deque = collections.deque()

        def land_parsed(upto: int) -> None:
            # Append the oldest pages' rows until at most `upto` pages are being parsed.
            while len(parsing) > upto:
                file_name, future = parsing.popleft()
                for table, landed in future.result():
                    loader.append(table, file_name, landed)

        try:
            # One page read ahead: each page waiting here is memory the parse does not need yet.
            for item in _prefetched(reading, depth=1):
                kind, name = item[0], item[1]
                if kind == "page":
                    page = item[2]
                    if not isinstance(page, list):
                        loader.learn_names(page)
                    parsing.append((name, pool.submit(loader.parse_page, page, name)))
                    land_parsed(PARSE_THREADS)
                    continue
                land_parsed(0)
                if kind == "events":
                    events = item[2]
                    loader.append(CONNECTION_EVENTS, name, events[CONNECTION_EVENTS])
                    loader.append(QUARANTINE, name, events[REJECTS])
                elif kind == "done":
                    sources.append(item[2])
                elif kind == "error":
                    loader.forget(name)
                    if not skip_unreadable:
                        raise item[2]
                    skipped[name] = str(item[2])
            land_parsed(0)
        finally:
            for _, future in parsing:
                future.cancel()
            pool.shutdown(wait=True)
            loader.close()
        duplicates, with_duplicates = loader.find_duplicates()
        return BronzeDayStore(
            day=day,
            sources=tuple(sources),
            skipped=skipped,
            duplicates_dropped=duplicates,
            rows={t: loader.rows.get(t, 0) - duplicates.get(t, 0) for t in TABLE_SCHEMAS},
            _spill=self,
            _files=loader.files(),
            _dropped={c: loader.dropped_table(c) for c in CHANNELS},
            _groups={c: loader.sort_groups(c) for c in CHANNELS},
            _groups_with_duplicates=with_duplicates,
        )


def _read_files(
    paths: Sequence[Path],
    day: dt.date,
    *,
    stop_at_error: bool,
    busy_timeout_s: float,
    page_rows: int,
    max_clock_skew_s: float | None,
    max_ingestion_lag_s: float | None,
) -> Iterator[tuple]:
    """What the day's read of each file yields, in order: ('page', file, table_or_rows) for the
    market_ticks of the day, ('events', file, tables), ('done', file, SourceRead); or ('error',
    file, WorkerFileError) when the file turns out unreadable."""
    needed = {
        "market_ticks": _MARKET_TICKS_COLUMNS,
        "connection_events": _CONNECTION_EVENTS_COLUMNS,
    }
    for path in paths:
        name = path.name
        try:
            try:
                conn = _connect_read_only(path, busy_timeout_s, needed)
            except FileNotFoundError as exc:
                raise WorkerFileError(path, str(exc)) from exc
            pages = None
            try:
                with _file_errors(path):
                    min_id, max_id = conn.execute(
                        "SELECT min(id), max(id) FROM market_ticks"
                    ).fetchone()
                    if max_id is not None:
                        first, last = day_id_window(
                            conn,
                            day,
                            min_id,
                            max_id,
                            max_clock_skew_s=max_clock_skew_s,
                            max_ingestion_lag_s=max_ingestion_lag_s,
                        )
                        pages = _ArrowPages(path, conn, busy_timeout_s)
                        for page in pages.read(day, first, last, page_rows):
                            yield ("page", name, page)
                    events, events_max = _events_of_day(conn, name, day)
            finally:
                if pages is not None:
                    pages.close()
                conn.close()
        except WorkerFileError as exc:
            yield ("error", name, exc)
            if stop_at_error:
                return
            continue
        yield ("events", name, events)
        yield ("done", name, SourceRead(name, max_id, events_max))


class _ArrowPages:
    """A day's market_ticks of one file in keyset pages, read straight into Arrow by the ADBC
    SQLite driver (5x less CPU than building Python rows; read-only through `mode=ro`).

    ADBC converts what a loosely typed SQLite column holds (an integer in a text column arrives
    as text), so each row says whether all its text columns really hold text; rows that do not
    are read again with Python's sqlite3 and take the exact path, as do pages that fail to
    convert. Each page is its own statement: no read lock is held between pages.
    """

    _SQL = (
        "SELECT id AS source_id, exchange AS exchange_raw, symbol AS symbol_raw, channel, "
        "event_ts_utc AS event_raw, ingestion_ts_utc AS ingest_raw, payload, "
        "(typeof(exchange) = 'text' AND typeof(symbol) = 'text' AND typeof(channel) = 'text' "
        "AND typeof(event_ts_utc) = 'text' AND typeof(ingestion_ts_utc) = 'text' "
        "AND typeof(payload) = 'text') AS all_text "
        f"FROM market_ticks WHERE id > :last AND id <= :max AND {DAY_TICKS_SQL} "
        "ORDER BY id LIMIT :rows"
    )
    _PY_SQL = (
        "SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload "
        f"FROM market_ticks WHERE id > :last AND id <= :max AND {DAY_TICKS_SQL} "
        "ORDER BY id LIMIT :rows"
    )

    def __init__(self, path: Path, conn: sqlite3.Connection, busy_timeout_s: float) -> None:
        self.conn = conn
        self.adbc = adbc_sqlite.connect(f"{path.resolve().as_uri()}?mode=ro")
        self.cursor = self.adbc.cursor()
        self.cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
        with contextlib.suppress(Exception):
            self.adbc.close()

    def read(
        self, day: dt.date, first: int, last: int, page_rows: int
    ) -> Iterator[pa.Table | list[tuple]]:
        lower, upper = _day_bounds(day)
        last_id = first - 1
        while last_id < last:
            params = {
                "last": last_id,
                "max": last,
                "lower": lower,
                "upper": upper,
                "rows": page_rows,
            }
            try:
                # ADBC binds by position: SQLite numbers named parameters by first appearance.
                self.cursor.execute(self._SQL, (last_id, last, lower, upper, page_rows))
                table = self.cursor.fetch_arrow_table()
            except adbc_sqlite.Error:
                table = None
            if table is None or table.num_rows == 0:
                # Nothing (or ADBC could not read it): Python's sqlite3 decides, exactly.
                rows = self.conn.execute(self._PY_SQL, params).fetchall()
                if rows:
                    yield _raw_page(rows)
                if len(rows) < page_rows:
                    return
                last_id = rows[-1][0]
                continue
            ids = table.column("source_id")
            text = pc.fill_null(table.column("all_text"), 0)
            page = _as_raw(table.filter(pc.equal(text, 1)))
            if page is None:
                yield _raw_page(self.conn.execute(self._PY_SQL, params).fetchall())
            else:
                if page.num_rows:
                    yield page
                others = table.filter(pc.not_equal(text, 1)).column("source_id").to_pylist()
                if others:
                    marks = ",".join("?" * len(others))
                    yield self.conn.execute(
                        f"SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, "
                        f"payload FROM market_ticks WHERE id IN ({marks}) ORDER BY id",
                        others,
                    ).fetchall()
            if table.num_rows < page_rows:
                return
            last_id = pc.max(ids).as_py()


def _as_raw(table: pa.Table) -> pa.Table | None:
    """ADBC's page in the raw schema, or None when a text column is not valid UTF-8 text (then
    Python's sqlite3 reads the page and fails as it always has)."""
    try:
        columns = []
        for f in _RAW_SCHEMA:
            column = table.column(f.name)
            if column.type != f.type:
                column = column.cast(f.type)  # binary -> string validates the UTF-8
            columns.append(column)
        raw = pa.Table.from_arrays(columns, schema=_RAW_SCHEMA)
        raw.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return raw


def _raw_page(page: list[tuple]) -> pa.Table | list[tuple]:
    """A page as an Arrow table of the raw columns; the rows themselves when a value is not text
    where text belongs (SQLite columns are loosely typed): such a page takes the exact path."""
    columns = list(zip(*page))
    try:
        return pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, _RAW_SCHEMA)], schema=_RAW_SCHEMA
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return page


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`items`, produced by a background thread up to `depth` ahead: the SQLite reads and Arrow
    conversion of the next page overlap the parse of this one (DuckDB releases the GIL)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(exc)
        finally:
            # Close the generator here: its SQLite connection belongs to this thread.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="bronze-read", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _DayLoader:
    """Writes one day's landed rows as Arrow IPC files, one per table and worker file."""

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: Path, day: dt.date) -> None:
        self.con = con
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.names: dict[tuple[Any, Any], tuple[str, str, str, str] | str] = {}
        self._names_table = _NAMES_SCHEMA.empty_table()
        self._writers: dict[tuple[str, str], pa.ipc.RecordBatchFileWriter] = {}
        self._paths: dict[tuple[str, str], Path] = {}
        self._rows: dict[tuple[str, str], int] = {}
        self._batches: dict[tuple[str, str], int] = {}
        self._day_start = pa.scalar(
            dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), TS_TYPE
        )
        # channel -> (symbol, bucket) -> the spilled batches holding its rows.
        self.buckets: dict[str, dict[tuple[str, int], list[_SpilledBatch]]] = {
            channel: {} for channel in CHANNELS
        }

    @property
    def rows(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (table, _), n in self._rows.items():
            totals[table] = totals.get(table, 0) + n
        return totals

    def files(self) -> dict[str, list[Path]]:
        return {
            table: [p for (t, _), p in sorted(self._paths.items()) if t == table]
            for table in TABLE_SCHEMAS
        }

    def dropped_table(self, channel: str) -> str:
        return f"{self.folder.name}_dropped_{channel}"

    def append(self, table: str, source_file: str, data: pa.Table) -> None:
        if not data.num_rows:
            return
        key = (table, source_file)
        if key not in self._writers:
            path = self.folder / f"{table}.{len(self._paths):04d}.arrow"
            self._paths[key] = path
            self._writers[key] = pa.ipc.new_file(
                path,
                SPILL_SCHEMAS[table],
                options=pa.ipc.IpcWriteOptions(compression=SPILL_COMPRESSION),
            )
            self._rows[key] = 0
            self._batches[key] = 0
        writer, path = self._writers[key], self._paths[key]
        if table not in CHANNELS:
            for batch in data.to_batches(max_chunksize=SPILL_BATCH_ROWS):
                writer.write_batch(batch)
                self._batches[key] += 1
        else:
            buckets = self.buckets[table]
            for bucket, part in self._by_bucket(data):
                for batch in part.to_batches(max_chunksize=SPILL_BATCH_ROWS):
                    writer.write_batch(batch)
                    buckets.setdefault(bucket, []).append(
                        _SpilledBatch(path, self._batches[key], batch.num_rows)
                    )
                    self._batches[key] += 1
        self._rows[key] += data.num_rows

    def _by_bucket(self, data: pa.Table) -> Iterator[tuple[tuple[str, int], pa.Table]]:
        """`data` (one channel) cut into its (symbol, event-time bucket) parts."""
        symbols = pc.dictionary_encode(data.column("symbol").combine_chunks())
        micros = pc.subtract(
            data.column("event_ts_utc").combine_chunks().cast(pa.int64()),
            self._day_start.cast(pa.int64()),
        )
        bucket = np.clip(
            np.asarray(micros, dtype=np.int64) // (SORT_BUCKET_S * 1_000_000),
            0,
            _BUCKETS_PER_DAY - 1,
        )
        key = np.asarray(symbols.indices, dtype=np.int64) * _BUCKETS_PER_DAY + bucket
        names = symbols.dictionary.to_pylist()
        if (key == key[0]).all():
            yield (names[key[0] // _BUCKETS_PER_DAY], int(bucket[0])), data
            return
        order = np.argsort(key, kind="stable")
        ordered_keys = key[order]
        starts = np.flatnonzero(np.diff(ordered_keys)) + 1
        ordered = data.take(pa.array(order))
        bounds = [0, *starts.tolist(), len(order)]
        for start, end in itertools.pairwise(bounds):
            k = int(ordered_keys[start])
            yield (
                (names[k // _BUCKETS_PER_DAY], k % _BUCKETS_PER_DAY),
                ordered.slice(start, end - start),
            )

    def forget(self, source_file: str) -> None:
        """Remove what a file that turned out unreadable had landed so far."""
        for key in [k for k in self._paths if k[1] == source_file]:
            self._writers.pop(key).close()
            path = self._paths.pop(key)
            path.unlink(missing_ok=True)
            self._rows.pop(key)
            self._batches.pop(key)
            for buckets in self.buckets.values():
                for bucket in list(buckets):
                    kept = [b for b in buckets[bucket] if b.path != path]
                    if kept:
                        buckets[bucket] = kept
                    else:
                        del buckets[bucket]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def land_page(self, page: pa.Table | list[tuple], source_file: str) -> None:
        if not isinstance(page, list):
            self.learn_names(page)
        for table, landed in self.parse_page(page, source_file):
            self.append(table, source_file, landed)

    def learn_names(self, page: pa.Table) -> None:
        """Normalize the page's new (exchange, symbol) spellings (before `parse_page`)."""
        self._update_names(page.column("exchange_raw"), page.column("symbol_raw"))

    def parse_page(
        self, page: pa.Table | list[tuple], source_file: str
    ) -> list[tuple[str, pa.Table]]:
        """The page's rows as (spill table, rows) pairs, appending nothing: pages can be parsed
        on several threads (Arrow and DuckDB release the GIL) and appended by one."""
        if isinstance(page, list):
            return self._land_exactly(page, source_file)
        out: list[tuple[str, pa.Table]] = []
        plain, taken = _plain_tier(page, self.names)
        for name, table in plain.items():
            out.append((name, _spill_table(name, self._with_dup_hash(table), source_file)))
        if taken.all():
            return out
        if taken.any():
            page = page.filter(pa.array(~taken))
        cursor = self.con.cursor()
        try:
            # Two batches, so that DuckDB parses them on two threads.
            half = (page.num_rows + 1) // 2
            cursor.register("page", pa.Table.from_batches(page.to_batches(max_chunksize=half)))
            cursor.register("names", self._names_table)
            parsed = cursor.sql(_FAST_SQL).to_arrow_table()
        finally:
            cursor.close()
        channel = parsed.column("channel")
        fast = np.asarray(parsed.column("fast"), dtype=bool)
        is_book = np.asarray(pc.equal(channel, "orderbook").fill_null(False), dtype=bool)
        bids, asks = None, None
        if (fast & is_book).any():
            bids, bids_ok = _levels(parsed.column("ob_bids"))
            asks, asks_ok = _levels(parsed.column("ob_asks"))
            fast &= ~is_book | (bids_ok & asks_ok)
        for name in CHANNELS:
            mask = fast & np.asarray(pc.equal(channel, name).fill_null(False), dtype=bool)
            if not mask.any():
                continue
            columns = {}
            for f in SPILL_SCHEMAS[name]:
                if f.name == "source_file":
                    continue
                if f.name == "bids":
                    columns[f.name] = bids
                elif f.name == "asks":
                    columns[f.name] = asks
                else:
                    columns[f.name] = parsed.column(f.name)
            selected = pa.table(columns).filter(pa.array(mask))
            out.append((name, _spill_table(name, selected, source_file)))
        if not fast.all():
            # From the result, not the page: with two threads DuckDB may return rows reordered.
            slow = parsed.filter(pa.array(~fast))
            values = [slow.column(f.name).to_pylist() for f in _RAW_SCHEMA]
            out += self._land_exactly(list(zip(*values)), source_file)
        return out

    def _with_dup_hash(self, table: pa.Table) -> pa.Table:
        """`table` with the duplicate-key hash, computed by the same expression as on the exact
        path (so a row and its copy get the same hash whichever path each took)."""
        keyed = table.select(list(DUPLICATE_KEY)).append_column(
            "row_index", pa.array(np.arange(table.num_rows, dtype=np.int64))
        )
        cursor = self.con.cursor()
        try:
            cursor.register("plain", keyed)
            hashes = cursor.sql(
                f"SELECT row_index, {_DUP_HASH_SQL} AS dup_hash FROM plain"
            ).to_arrow_table()
        finally:
            cursor.close()
        # DuckDB may return the rows in another order (insertion order is not preserved).
        dup_hash = np.empty(table.num_rows, dtype=np.uint64)
        dup_hash[np.asarray(hashes.column("row_index"))] = np.asarray(hashes.column("dup_hash"))
        return table.append_column("dup_hash", pa.array(dup_hash, pa.uint64()))

    def _land_exactly(self, rows: list[tuple], source_file: str) -> list[tuple[str, pa.Table]]:
        """Rows the vectorized parse does not take, landed by `land_tick_rows` itself."""
        builder = _Builder()
        # A copy: pages are parsed on several threads while the main one adds names.
        land_tick_rows(rows, source_file, builder, dict(self.names))
        out = []
        for name, table in builder.tables().items():
            if name in CHANNELS and table.num_rows:
                cursor = self.con.cursor()
                try:
                    cursor.register("exact", table)
                    table = cursor.sql(
                        f"SELECT *, {_DUP_HASH_SQL} AS dup_hash FROM exact"
                    ).to_arrow_table()
                finally:
                    cursor.close()
                table = _spill_table(name, table, source_file)
            out.append((QUARANTINE if name == REJECTS else name, table))
        return out

    def _update_names(self, exchanges: pa.ChunkedArray, symbols: pa.ChunkedArray) -> None:
        pairs = pa.table({"e": exchanges, "s": symbols}).group_by(["e", "s"]).aggregate([])
        new = [
            pair
            for pair in zip(pairs.column("e").to_pylist(), pairs.column("s").to_pylist())
            if pair not in self.names
        ]
        if not new:
            return
        for exchange_raw, symbol_raw in new:
            self.names[(exchange_raw, symbol_raw)] = _normalize_names(exchange_raw, symbol_raw)
        good = [(*k, *v) for k, v in self.names.items() if not isinstance(v, str)]
        self._names_table = pa.Table.from_pylist(
            [dict(zip(_NAMES_SCHEMA.names, row)) for row in good], schema=_NAMES_SCHEMA
        )

    def sort_groups(self, channel: str) -> list[_SortGroup]:
        """The channel's spilled rows in the order they stream out: by symbol, then runs of
        consecutive event-time buckets of about `SORT_GROUP_ROWS` rows (a bucket is never
        split), each sorted alone. Exact duplicates share symbol and event time, so each lies
        within one group."""
        groups: list[_SortGroup] = []
        by_symbol: dict[str, list[int]] = {}
        for symbol, bucket in self.buckets[channel]:
            by_symbol.setdefault(symbol, []).append(bucket)
        for symbol in sorted(by_symbol):
            batches: list[_SpilledBatch] = []
            for bucket in sorted(by_symbol[symbol]):
                batches += self.buckets[channel][(symbol, bucket)]
                if sum(b.rows for b in batches) >= SORT_GROUP_ROWS:
                    groups.append(_SortGroup(symbol, tuple(batches)))
                    batches = []
            if batches:
                groups.append(_SortGroup(symbol, tuple(batches)))
        return groups

    def find_duplicates(self) -> tuple[dict[str, int], dict[str, frozenset[int]]]:
        """Note the exact duplicates of each channel (all but the first by source file and id) in
        a table of the spill database; returns how many per channel, and per channel the sort
        groups (indices into `sort_groups`) that hold any. Candidates are found by a hash of the
        duplicate key within each sort group, then compared exactly."""
        dropped: dict[str, int] = {}
        flagged: dict[str, frozenset[int]] = {}
        for channel in CHANNELS:
            with _SpillReaders(SPILL_SCHEMAS[channel]) as readers:
                table_name = self.dropped_table(channel)
                self.con.execute(
                    f"CREATE TABLE {table_name} (source_file VARCHAR, source_id BIGINT)"
                )
                count, with_duplicates = 0, set()
                for index, group in enumerate(self.sort_groups(channel)):
                    hashes = readers.read(group.batches, ["dup_hash"]).column("dup_hash")
                    if len(np.unique(np.asarray(hashes))) == len(hashes):
                        continue
                    rows = readers.read(group.batches, ["source_file", "source_id", *DUPLICATE_KEY])
                    keep = _first_of_each_key(rows)
                    if keep.all():
                        continue  # equal hashes, different rows
                    with_duplicates.add(index)
                    gone = rows.select(["source_file", "source_id"]).filter(pa.array(~keep))
                    count += gone.num_rows
                    cursor = self.con.cursor()
                    try:
                        cursor.register("gone", gone)
                        cursor.execute(f"INSERT INTO {table_name} SELECT * FROM gone")
                    finally:
                        cursor.close()
                dropped[channel] = count
                flagged[channel] = frozenset(with_duplicates)
        return dropped, flagged


@dataclass(frozen=True)
class _SpilledBatch:
    """One record batch of a spill file: all its rows of one (symbol, event-time bucket)."""

    path: Path
    index: int
    rows: int


@dataclass(frozen=True)
class _SortGroup:
    """Consecutive event-time buckets of one symbol, sorted together."""

    symbol: str
    batches: tuple[_SpilledBatch, ...]


_BUCKETS_PER_DAY = 86_400 // SORT_BUCKET_S


class _SpillReaders:
    """Open readers of spill files, by file and column subset, reading batches by index (plain
    reads, not memory maps: a mapped spill would count in the process's resident memory)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._open: dict[tuple[Path, tuple[str, ...]], tuple[Any, Any]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for source, _ in self._open.values():
            with contextlib.suppress(Exception):
                source.close()
        self._open.clear()

    def read(self, batches: Sequence[_SpilledBatch], columns: Sequence[str]) -> pa.Table:
        names = tuple(columns)
        parts = []
        for spilled in batches:
            key = (spilled.path, names)
            if key not in self._open:
                source = pa.OSFile(str(spilled.path))
                fields = [self.schema.get_field_index(name) for name in names]
                options = pa.ipc.IpcReadOptions(included_fields=sorted(fields), use_threads=False)
                self._open[key] = (source, pa.ipc.open_file(source, options=options))
            parts.append(self._open[key][1].get_batch(spilled.index))
        return pa.Table.from_batches(parts).select(list(names))


def _first_of_each_key(rows: pa.Table) -> np.ndarray:
    """Per row, whether it is the first (by source file, then id) of the rows sharing its
    duplicate key (exchange, symbol, event time, payload): the rows bronze keeps."""
    order = pc.sort_indices(rows, [("source_file", "ascending"), ("source_id", "ascending")])
    ordered = rows.select(list(DUPLICATE_KEY)).take(order)
    ordered = ordered.append_column("__row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    first = ordered.group_by(list(DUPLICATE_KEY), use_threads=False).aggregate([("__row", "min")])
    keep = np.zeros(rows.num_rows, dtype=bool)
    keep[np.asarray(order)[np.asarray(first.column("__row_min"))]] = True
    return keep


def _spill_table(channel: str, parsed: pa.Table, source_file: str) -> pa.Table:
    schema = SPILL_SCHEMAS[channel]
    columns = [
        pa.array([source_file] * parsed.num_rows, pa.string())
        if f.name == "source_file"
        else _conform(parsed.column(f.name), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@contextlib.contextmanager
def land_bronze_day_streaming(
    db_paths: Sequence[Path],
    day: dt.date,
    *,
    spill_dir: str | Path | None = None,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    **options: Any,
) -> Iterator[BronzeDayStore]:
    """One day landed through its own spill (removed on exit): for scripts, tests and benchmarks.
    The assets use one `BronzeSpill` for all days of a run."""
    with BronzeSpill(spill_dir=spill_dir, memory_limit_mb=memory_limit_mb) as spill:
        yield spill.land_day(db_paths, day, **options)
