"""Bronze on worker files with timestamps that have no date (an epoch number, another layout,
empty text): the rows land in the quarantine of their ingestion date with reason
timestamp_not_iso8601, the count is in the metadata and a WARN check names them, and a rerun
writes the same quarantine."""

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.checks import EVERY_ROW_HAS_AN_EVENT_DATE
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_sources import MarketSources

DAY = dt.date(2026, 2, 19)
INGESTED = "2026-02-19T11:00:00.000000Z"
PAYLOAD = '{"bid": 1.0, "ask": 2.0, "last": 1.5, "volume_24h": 3.0}'
UNDATED_EVENTS = ["1771497000", "19/02/2026 10:30:00", ""]


def _materialize(root: Path) -> tuple[dg.ExecuteInProcessResult, str]:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data],
            resources={
                "io_manager": LakeIOManager(lake_root=str(root)),
                "market_sources": MarketSources(workers_dir=str(root / "source/workers")),
            },
            instance=instance,
            partition_key=DAY.isoformat(),
        )
    quarantine = root / f"bronze/bronze_quarantine/date={DAY}/data.parquet"
    return result, hashlib.sha256(quarantine.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    root = tmp_path_factory.mktemp("data")
    workers = write_demo_worker_files(root / "source/workers", [DAY], rows_per_day=60)
    conn = sqlite3.connect(workers[0])
    with conn:
        ids = [
            conn.execute(
                "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, "
                "ingestion_ts_utc, payload) VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?, ?)",
                (event, INGESTED, PAYLOAD),
            ).lastrowid
            for event in UNDATED_EVENTS
        ]
    conn.close()
    return root, workers[0], ids


def test_rows_without_an_event_date_are_quarantined_and_warned_about(source) -> None:
    root, worker, ids = source
    result, first_hash = _materialize(root)
    assert result.success
    quarantine = root / f"bronze/bronze_quarantine/date={DAY}/data.parquet"
    con = duckdb.connect()
    rows = con.execute(
        "SELECT source_id, event_ts_utc_raw, reason FROM read_parquet(?) "
        "WHERE source_file = ? AND starts_with(reason, 'timestamp_not_iso8601') "
        "AND source_id IN (SELECT unnest(?::BIGINT[])) ORDER BY source_id",
        [str(quarantine), worker.name, ids],
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == list(zip(ids, UNDATED_EVENTS))
    assert all("has no date" in r[2] for r in rows)

    (check,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == EVERY_ROW_HAS_AN_EVENT_DATE
    ]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    figures = check.metadata["by_day"].value[DAY.isoformat()]
    assert figures["rows_by_file"] == {worker.name: len(ids)}
    assert figures["first_row_ids"] == {worker.name: ids}

    # The metadata counts every timestamp_not_iso8601 row: these and the demo's own bad one
    # per worker file (a local time on the day), as DuckDB counts them in the file.
    (expected,) = con.execute(
        "SELECT count(*) FROM read_parquet(?) WHERE starts_with(reason, 'timestamp_not_iso8601')",
        [str(quarantine)],
    ).fetchone()
    con.close()
    assert expected > len(ids)
    (mat,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "bronze_quarantine"
    ]
    metadata = mat.materialization.metadata
    assert metadata["rows_timestamp_not_iso8601"].value == expected

    rerun, second_hash = _materialize(root)
    assert rerun.success and second_hash == first_hash
