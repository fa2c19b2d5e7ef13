"""Bad sources in bronze: unreadable files fail or are skipped, bad rows quarantined, duplicates dropped."""

import datetime as dt
import json
import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets_tests.market_data.source_sql import remove_demo_anomalies

DAY = "2026-02-19"
SKIP_CONFIG = {"ops": {"bronze_market_data": {"config": {"skip_unreadable_sources": True}}}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = write_demo_worker_files(
        tmp_path / "source/workers", [dt.date.fromisoformat(DAY)], rows_per_day=90
    )
    # These tests plant their own bad rows and duplicates and count exactly those.
    remove_demo_anomalies(files)
    return tmp_path


def workers(root: Path) -> Path:
    return root / "source/workers"


def materialize(root: Path, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [bronze_market_data],
            resources={
                "io_manager": LakeIOManager(lake_root=str(root)),
                "market_sources": MarketSources(workers_dir=str(workers(root))),
            },
            instance=instance,
            partition_key=DAY,
            run_config=run_config,
            raise_on_error=False,
        )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    return " ".join(
        filter(
            None,
            [
                data.error.message if data.error else None,
                data.user_failure_data and data.user_failure_data.description,
            ],
        )
    )


def write_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a SQLite database\n" * 200)


def write_without_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()


def write_truncated(path: Path) -> None:
    shutil.copyfile(path.parent / "worker_01.db", path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


BAD_FILES = {
    "garbage": write_garbage,
    "no_tables": write_without_tables,
    "truncated": write_truncated,
}


def quarantine_rows(root: Path) -> list[dict]:
    path = root / f"bronze/bronze_quarantine/date={DAY}/data.parquet"
    return duckdb.sql(f"SELECT * FROM '{path}'").arrow().read_all().to_pylist()


def checks_passed(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_an_unreadable_worker_file_fails_the_run_naming_it(root: Path, kind: str) -> None:
    BAD_FILES[kind](workers(root) / "worker_09.db")
    result = materialize(root)
    assert not result.success
    text = failure_text(result)
    assert "worker_09.db" in text and "skip_unreadable_sources" in text
    assert not (root / "bronze").exists()


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_skip_unreadable_sources_lands_the_others_and_names_the_skipped(
    root: Path, kind: str
) -> None:
    BAD_FILES[kind](workers(root) / "worker_09.db")
    result = materialize(root, SKIP_CONFIG)
    assert result.success
    for mat in result.get_asset_materialization_events():
        metadata = mat.materialization.metadata
        assert [s["file"] for s in metadata["skipped_sources"].value] == ["worker_09.db"]
        assert "worker_09.db" in metadata["skipped_sources"].value[0]["reason"]
        assert [Path(f).name for f in metadata["source"].value["worker_db_files"]] == [
            "worker_01.db",
            "worker_02.db",
        ]
    assert all(checks_passed(result).values())


def test_bad_rows_are_quarantined_with_their_reasons(root: Path) -> None:
    ts, ingested = f"{DAY}T08:00:00.000001Z", f"{DAY}T08:00:00.100000Z"
    conn = sqlite3.connect(workers(root) / "worker_01.db")
    with conn:
        conn.executemany(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("Binance", "BTCUSDT", "trades", ts, ingested, "not json {"),
                (
                    "Binance",
                    "BTCUSDT",
                    "trades",
                    ts,
                    ingested,
                    '{"trade_id": "t1", "size": 0.5, "side": "buy"}',
                ),
                (
                    "Binance",
                    "BTC-PERP",
                    "ticker",
                    ts,
                    ingested,
                    '{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 3}',
                ),
                ("Binance", "BTCUSDT", "funding", ts, ingested, "{}"),
            ],
        )
        conn.execute(
            "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details) VALUES (?, ?, ?, ?, ?)",
            ("Binance", "worker_01", "disconnected", ts, "[1, 2]"),
        )
    conn.close()

    result = materialize(root)
    assert result.success
    reasons = {
        (r["source_table"], r["channel"], r["reason"].split(":")[0]) for r in quarantine_rows(root)
    }
    assert reasons == {
        ("market_ticks", "trades", "payload"),
        ("market_ticks", "trades", "price"),
        ("market_ticks", "ticker", "symbol"),
        ("market_ticks", "funding", "channel"),
        ("connection_events", None, "details"),
    }
    (mat,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("bronze_quarantine")
    ]
    assert mat.materialization.metadata["rows_quarantined"].value == 5
    assert all(checks_passed(result).values())


def test_an_exact_duplicate_across_two_workers_is_dropped_once_and_counted(root: Path) -> None:
    columns = "exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload"
    source = sqlite3.connect(workers(root) / "worker_01.db")
    (row,) = source.execute(
        f"SELECT {columns} FROM market_ticks WHERE channel = 'trades' ORDER BY id LIMIT 1"
    ).fetchall()
    source.close()
    # The second worker stored the same trade a little later: only the ingestion time differs.
    copy = (*row[:4], row[4].replace("Z", "").ljust(26, "0")[:-1] + "9Z", row[5])
    target = sqlite3.connect(workers(root) / "worker_02.db")
    with target:
        target.execute(f"INSERT INTO market_ticks ({columns}) VALUES (?, ?, ?, ?, ?, ?)", copy)
    target.close()

    result = materialize(root)
    assert result.success
    trades = root / "bronze/bronze_trades"
    kept = duckdb.sql(
        f"SELECT source_file FROM read_parquet('{trades}/**/*.parquet', hive_partitioning=true) "
        f"WHERE payload = ? AND event_ts_utc = ?::TIMESTAMPTZ",
        params=[row[5], row[3]],
    ).fetchall()
    assert kept == [("worker_01.db",)]
    (mat,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("bronze_trades")
    ]
    assert mat.materialization.metadata["rows_duplicates_dropped"].value == 1
    passed = checks_passed(result)
    assert (
        passed[("bronze_trades", "no_duplicate_keys")]
        and passed[("bronze_trades", "row_count_matches_source")]
    )
    assert all(passed.values())


def test_one_trade_recorded_differently_by_two_workers_fails_the_blocking_key_check(
    root: Path,
) -> None:
    columns = "exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload"
    source = sqlite3.connect(workers(root) / "worker_01.db")
    (row,) = source.execute(
        f"SELECT {columns} FROM market_ticks WHERE channel = 'trades' ORDER BY id LIMIT 1"
    ).fetchall()
    source.close()
    # Same trade, other JSON spacing: not an exact duplicate, so both rows land.
    respaced = json.dumps(json.loads(row[5]), separators=(",", ":"))
    target = sqlite3.connect(workers(root) / "worker_02.db")
    with target:
        target.execute(
            f"INSERT INTO market_ticks ({columns}) VALUES (?, ?, ?, ?, ?, ?)", (*row[:5], respaced)
        )
    target.close()

    result = materialize(root)
    assert not result.success
    (failed,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert (failed.asset_key.to_user_string(), failed.check_name) == (
        "bronze_trades",
        "no_duplicate_keys",
    )
    assert failed.blocking
    (duplicate,) = failed.metadata["by_day"].value[DAY]["duplicate_keys"]
    assert duplicate["trade_id"] == json.loads(row[5])["trade_id"]
