"""Staging export sources: bad worker files fail naming the file (or are skipped and named),
filters, and reading while another process writes to a WAL-mode worker file."""

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipeline_assets.lib.market.bronze import WorkerFileError
from pipeline_assets.lib.market.staging_export import (
    StagingExportError,
    export_options,
    read_export_rows,
)
from pipeline_assets_tests.market_data.staging_helpers import END, export, make_root


def garbage(path):
    path.write_bytes(b"this is not a SQLite database\n" * 200)


def no_tables(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()


def truncated(path):
    shutil.copyfile(path.parent / "worker_01.db", path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize(
    "breaker,expected",
    [
        (garbage, "not a SQLite"),
        (no_tables, "expected a table market_ticks"),
        (truncated, "truncated"),
    ],
)
def test_bad_worker_file_fails_naming_it_and_leaves_nothing(tmp_path, breaker, expected):
    root = make_root(tmp_path)
    bad = root / "source/workers/worker_09.db"
    breaker(bad)
    with pytest.raises(WorkerFileError, match=expected) as info:
        export(root, export_options(hours=24, end_utc=END, update_state=True))
    assert str(bad) in str(info.value) and info.value.path == bad
    staging = root / "staging"
    assert [p.name for p in staging.iterdir() if not p.name.startswith(".")] == []


def test_skip_unreadable_sources_names_the_skipped_file(tmp_path):
    root = make_root(tmp_path)
    garbage(root / "source/workers/worker_09.db")
    result = export(root, export_options(hours=24, end_utc=END, skip_unreadable_sources=True))
    doc = result.metadata
    assert [s["file"] for s in doc["skipped_sources"]] == ["source/workers/worker_09.db"]
    assert doc["source"]["worker_db_count"] == 2 and doc["row_counts"]["market_ticks"] > 0


def test_filters_are_normalized_and_applied(tmp_path):
    root = make_root(tmp_path)
    result = export(
        root, export_options(hours=24, end_utc=END, exchanges=[" Binance "], assets="eth, xbt")
    )
    doc = result.metadata
    assert doc["filters"] == {"exchanges": ["binance"], "assets": ["BTC", "ETH"]}
    rows = list(read_export_rows(result))
    assert rows and {r["exchange"] for r in rows} == {"binance"}
    assert doc["uniques"]["exported"]["exchanges"] == ["binance"]
    assert set(doc["uniques"]["source"]["exchanges"]) > {"binance"}
    events = list(read_export_rows(result, "connection_events"))
    assert events and {e["exchange"] for e in events} == {"binance"}
    only_btc = export(root, export_options(hours=24, end_utc=END, assets=["btc"]))
    assert {r["base_asset"] for r in read_export_rows(only_btc)} == {"BTC"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hours": 0}, "hours=0"),
        ({"output_format": "parquet"}, "output_format='parquet'"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"state_key": "../x"}, "state_key='../x'"),
        ({"assets": ["BTC-USDT"]}, "not a pair"),
        ({"end_utc": "yesterday"}, "end_utc='yesterday'"),
    ],
)
def test_bad_options_are_refused_naming_them(kwargs, message):
    with pytest.raises(StagingExportError, match=message.replace("(", r"\(").replace("[", r"\[")):
        export_options(**kwargs)


def test_reads_while_another_process_writes_the_wal_file(tmp_path):
    root = make_root(tmp_path)
    path = root / "source/workers/worker_01.db"
    writer = textwrap.dedent(
        f"""
        import sqlite3, sys, time
        conn = sqlite3.connect({str(path)!r}, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        print("READY", flush=True)
        for i in range(400):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
                         "VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?, '{{}}')",
                         ("2026-02-19T23:59:59.%06dZ" % i, "2026-02-19T23:59:59.%06dZ" % i))
            conn.execute("COMMIT")
            time.sleep(0.002)
        print("DONE", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    before = path.stat().st_mtime_ns
    results = []
    while proc.poll() is None:
        results.append(export(root, export_options(hours=24, end_utc=END, chunk_size=50)))
    assert proc.stdout.read().strip() == "DONE" and proc.returncode == 0
    # Every export is consistent: no duplicate rows; the writer was never blocked (it finished).
    for result in results:
        got = [(r["source_file"], r["source_id"]) for r in read_export_rows(result)]
        assert len(got) == len(set(got)) == result.metadata["row_counts"]["market_ticks"]
    final = export(root, export_options(hours=24, end_utc=END))
    conn = sqlite3.connect(path)
    (count,) = conn.execute(
        "SELECT count(*) FROM market_ticks WHERE ingestion_ts_utc LIKE '2026-02-19T23:59:59.%'"
    ).fetchone()
    conn.close()
    assert count == 400
    assert (
        sum(
            1
            for r in read_export_rows(final)
            if r["ingestion_ts_utc"].startswith("2026-02-19T23:59:59.")
            and r["source_file"] == "worker_01.db"
        )
        >= 400
    )
    assert path.stat().st_mtime_ns >= before
