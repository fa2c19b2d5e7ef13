"""The bronze watcher requests one run per UTC day whose rows changed, and nothing otherwise."""

import datetime as dt
import json
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.jobs import bronze_job
from pipeline_assets.defs.market_data.sensors import bronze_watcher
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.market_sources import MarketSources

DAYS = [dt.date(2026, 2, 17), dt.date(2026, 2, 18)]
NEW_DAY = dt.date(2026, 2, 19)
INSERT_TICK = (
    "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
    "VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?, '{\"bid\": 1, \"ask\": 2, \"last\": 1.5, \"volume_24h\": 3}')"
)


@pytest.fixture
def workers(tmp_path: Path) -> Path:
    folder = tmp_path / "source/workers"
    write_demo_worker_files(folder, DAYS, rows_per_day=60)
    return folder


def evaluate(workers: Path, cursor: str | None = None) -> dg.SensorResult:
    sources = MarketSources(workers_dir=str(workers))
    definitions = dg.Definitions(
        assets=[bronze_market_data],
        jobs=[bronze_job],
        sensors=[bronze_watcher],
        resources={"market_sources": sources},
    )
    with dg.DagsterInstance.ephemeral() as instance:
        # Direct invocation takes the sensor's resources from the context, not from the definitions.
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=definitions,
            resources={"market_sources": sources},
        )
        return bronze_watcher(context)


def requested_days(result: dg.SensorResult) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def test_a_new_file_requests_one_run_per_day_it_holds(workers: Path) -> None:
    result = evaluate(workers)
    assert requested_days(result) == [d.isoformat() for d in DAYS]
    assert len({r.run_key for r in result.run_requests}) == len(DAYS)
    cursor = json.loads(result.cursor)
    assert sorted(cursor) == ["worker_01.db", "worker_02.db"]
    conn = sqlite3.connect(workers / "worker_01.db")
    (max_id,) = conn.execute("SELECT max(id) FROM market_ticks").fetchone()
    conn.close()
    assert cursor["worker_01.db"][2] == max_id


def test_unchanged_files_request_nothing(workers: Path) -> None:
    first = evaluate(workers)
    second = evaluate(workers, first.cursor)
    assert requested_days(second) == []
    assert second.skip_reason is not None
    # The first read of a WAL file creates its -wal; from then on the cursor stays put.
    third = evaluate(workers, second.cursor)
    assert requested_days(third) == []
    assert json.loads(third.cursor) == json.loads(second.cursor)


def test_the_same_change_seen_twice_gets_the_same_run_keys(workers: Path) -> None:
    assert [r.run_key for r in evaluate(workers).run_requests] == [
        r.run_key for r in evaluate(workers).run_requests
    ]


def test_rows_for_a_new_day_request_only_that_day(workers: Path) -> None:
    cursor = evaluate(workers).cursor
    write_demo_worker_files(workers, [*DAYS, NEW_DAY], rows_per_day=60)
    assert requested_days(evaluate(workers, cursor)) == [NEW_DAY.isoformat()]


def test_a_late_row_for_an_old_day_requests_that_day_while_still_in_the_wal(workers: Path) -> None:
    cursor = evaluate(workers).cursor
    # A collector's connection keeps its rows in the -wal file until a checkpoint.
    collector = sqlite3.connect(workers / "worker_02.db", isolation_level=None)
    try:
        assert collector.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        collector.execute("PRAGMA wal_autocheckpoint = 0")
        collector.execute(
            INSERT_TICK, (f"{DAYS[0]}T23:59:59.000000Z", f"{DAYS[1]}T00:00:00.100000Z")
        )
        result = evaluate(workers, cursor)
    finally:
        collector.close()
    assert requested_days(result) == [DAYS[0].isoformat()]
    assert result.run_requests[0].tags["market/changed_files"] == "worker_02.db"


def test_days_outside_the_partitions_are_not_requested(workers: Path) -> None:
    cursor = evaluate(workers).cursor
    conn = sqlite3.connect(workers / "worker_01.db")
    with conn:
        conn.execute(INSERT_TICK, ("1999-12-31T12:00:00.000000Z", "1999-12-31T12:00:00.100000Z"))
    conn.close()
    result = evaluate(workers, cursor)
    assert requested_days(result) == []
    assert json.loads(result.cursor)["worker_01.db"] != json.loads(cursor)["worker_01.db"]
