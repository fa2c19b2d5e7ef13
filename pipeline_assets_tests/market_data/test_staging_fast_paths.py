"""Staging export fast paths: pages read into Arrow by ADBC export exactly what Python's sqlite3
rows export (odd values included), the SQLite output holds the contract's tables, and the
column-wise JSON Lines writer writes the bytes of `json.dumps` row by row."""

import json
import sqlite3

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.market import staging_export as se
from pipeline_assets.lib.market.staging_export import (
    CONNECTION_EVENTS,
    MARKET_TICKS,
    REJECTS,
    export_options,
    json_lines,
    read_export_rows,
)
from pipeline_assets_tests.market_data.staging_helpers import END, export, make_root

TS = "2026-02-19T10:{:02d}:00.000000Z"
ODD_ROWS = [
    # (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload): each page of 3 rows
    # holds one or two of these among plain rows, so both paths meet them.
    (5, "BTCUSDT", "ticker", TS.format(1), TS.format(1), '{"bid": 1}'),  # an integer as exchange
    ("Binance", "BTCUSDT", "trades", TS.format(2), TS.format(2), b'{"price": 1}'),  # a blob
    ("Binance", None, "trades", TS.format(3), TS.format(3), "{}"),  # NULL symbol
    ("Binance", "BTCUSDT", None, TS.format(4), TS.format(4), "{}"),  # NULL channel
    ("Binance", "BTC-PERP", "ticker", TS.format(5), TS.format(5), "{}"),  # not normalizable
    ("Binance", "BTCUSDT", "ticker", "2026-02-19 10:06:00", TS.format(6), "{}"),  # local time
    ("kraken", "xbt/usdt", "ticker", TS.format(7), TS.format(7), '{"note": "café ☕"}'),
    ("Binance", "ETHUSDT", "trades", TS.format(8), TS.format(8), '{"s": "a\\"b\\\\c\\n"}'),
    ("Binance", "BTCUSDT", "ticker", TS.format(9), TS.format(9), 3.5),  # a real as payload
]


def _odd_worker(path):
    # The collector's columns without type or NOT NULL constraints: SQLite keeps what it is given.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE market_ticks (id INTEGER PRIMARY KEY, exchange, symbol, channel, "
        "event_ts_utc, ingestion_ts_utc, payload)"
    )
    conn.execute(
        "CREATE TABLE connection_events (id INTEGER PRIMARY KEY, exchange, worker_id, "
        "event_type, event_ts_utc, details)"
    )
    rows = []
    for i, odd in enumerate(ODD_ROWS):
        minute = 10 + i * 3
        for k in range(3):
            ts = f"2026-02-19T11:{minute + k:02d}:00.000000Z"
            rows.append(("coinbase", "ETH-USD", "ticker", ts, ts, '{"bid": 2}'))
        rows[-2] = odd
    conn.executemany(
        "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, "
        "payload) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details) "
        "VALUES ('Binance', 'w9', 'disconnected', ?, NULL)",
        (TS.format(30),),
    )
    conn.commit()
    conn.close()
    return len(rows)


def _all_rows(result):
    return {
        t: list(read_export_rows(result, t)) for t in (MARKET_TICKS, CONNECTION_EVENTS, REJECTS)
    }


@pytest.mark.parametrize("fmt", ["sqlite", "csv", "json"])
def test_arrow_pages_export_exactly_what_python_rows_export(tmp_path, monkeypatch, fmt):
    root = make_root(tmp_path / "fast")
    odd_rows = _odd_worker(root / "source/workers/worker_09.db")
    options = export_options(hours=24, end_utc=END, output_format=fmt, chunk_size=3)
    fast = export(root, options)
    fast_rows = _all_rows(fast)

    # The same sources, every page read as Python rows (the exact path).
    monkeypatch.setattr(se, "_text_page", lambda table: None)
    slow = export(root, options)
    slow_rows = _all_rows(slow)

    assert fast_rows == slow_rows
    for key in ("row_counts", "uniques", "watermarks"):
        assert fast.metadata[key] == slow.metadata[key]
    # The odd rows were met: the NULL symbol, the NULL channel, the perpetual and the local
    # time are rejected; the others (values that are not text read as text) are exported.
    odd_id = {i: 3 * i + 2 for i in range(len(ODD_ROWS))}
    exported = {
        r["source_id"] for r in fast_rows[MARKET_TICKS] if r["source_file"] == "worker_09.db"
    }
    rejected = {r["source_id"] for r in fast_rows[REJECTS] if r["source_file"] == "worker_09.db"}
    assert rejected == {odd_id[i] for i in (2, 3, 4, 5)}
    assert exported == set(range(1, odd_rows + 1)) - rejected
    payloads = {r["source_id"]: r["payload"] for r in fast_rows[MARKET_TICKS]}
    assert payloads[odd_id[6]] == '{"note": "café ☕"}'
    assert payloads[odd_id[7]] == ODD_ROWS[7][5]
    assert payloads[odd_id[1]] == '{"price": 1}' and payloads[odd_id[8]] == "3.5"


def test_sqlite_output_has_the_contract_tables_and_constraints(tmp_path):
    root = make_root(tmp_path)
    result = export(root, export_options(hours=24, end_utc=END, output_format="sqlite"))
    (path,) = result.output_paths
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for table, schema in se.TABLE_SCHEMAS.items():
            info = {r[1]: (r[2], bool(r[3])) for r in conn.execute(f"PRAGMA table_info({table})")}
            assert list(info) == schema.names
            for f in schema:
                assert info[f.name] == (
                    "INTEGER" if f.type == pa.int64() else "TEXT",
                    not f.nullable,
                )
            # Every value is stored as its declared type (or NULL where the contract allows it).
            for f in schema:
                stored = {
                    r[0] for r in conn.execute(f"SELECT DISTINCT typeof({f.name}) FROM {table}")
                }
                declared = "integer" if f.type == pa.int64() else "text"
                assert stored <= ({declared, "null"} if f.nullable else {declared}), (table, f.name)
        ((count,),) = conn.execute("SELECT count(*) FROM market_ticks").fetchall()
        ((check,),) = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    assert count == result.metadata["row_counts"]["market_ticks"] > 0
    assert check == "ok"


_TEXT = st.one_of(st.none(), st.text(max_size=12))
_INT = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_INT, _TEXT, _TEXT), max_size=8), st.integers(0, 3))
def test_json_lines_writes_the_bytes_of_json_dumps(rows, cut):
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([r[0] for r in rows], pa.int64()),
            pa.array([r[1] for r in rows], pa.string()),
            pa.array([r[2] for r in rows], pa.string()),
        ],
        names=["source_id", "payload", 'a "quoted" name'],
    ).slice(min(cut, len(rows)))
    expected = "".join(
        json.dumps(dict(zip(batch.schema.names, values)), ensure_ascii=False, separators=(",", ":"))
        + "\n"
        for values in zip(*(c.to_pylist() for c in batch.columns))
    ).encode("utf-8")
    assert json_lines(batch) == expected
