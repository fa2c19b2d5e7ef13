"""The bronze watcher with an empty cursor (the first daemon after `make demo`) requests only the
days bronze does not hold as the worker files are now: none right after a landing, a late row's
day, a new day, every day of a new worker file, the days never landed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.jobs import bronze_job
from pipeline_assets.defs.market_data.sensors import bronze_watcher, days_changed_since_landed
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAYS = [dt.date(2026, 2, 17), dt.date(2026, 2, 18)]
NEW_DAY = dt.date(2026, 2, 19)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
INSERT_TICK = (
    "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
    "VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?, '{\"bid\": 1, \"ask\": 2, \"last\": 1.5, \"volume_24h\": 3}')"
)


class Landed:
    """A data root whose worker files bronze landed through Dagster, on one instance."""

    def __init__(self, root: Path, instance: dg.DagsterInstance):
        self.root, self.instance = root, instance
        self.workers = root / "source/workers"
        self.resources = market_resources(root)
        self.defs = dg.Definitions(
            assets=[bronze_market_data],
            jobs=[bronze_job],
            sensors=[bronze_watcher],
            resources=self.resources,
        )

    def land(self, first: str, last: str | None = None) -> None:
        result = self.defs.resolve_job_def(bronze_job.name).execute_in_process(
            instance=self.instance,
            tags={RANGE_START: first, RANGE_END: last or first},
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]

    def evaluate(self, cursor: str | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            # Direct invocation takes the sensor's resources from the context.
            resources={"market_sources": self.resources["market_sources"]},
        )
        return bronze_watcher(context)


@pytest.fixture
def landed(tmp_path: Path) -> Iterator[Landed]:
    write_demo_worker_files(tmp_path / "source/workers", DAYS, rows_per_day=60)
    with dg.DagsterInstance.ephemeral() as instance:
        data = Landed(tmp_path, instance)
        data.land(DAYS[0].isoformat(), DAYS[-1].isoformat())
        yield data


def requested(result: dg.SensorResult) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def max_ids(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        (ticks,) = conn.execute("SELECT coalesce(max(id), 0) FROM market_ticks").fetchone()
        (events,) = conn.execute("SELECT coalesce(max(id), 0) FROM connection_events").fetchone()
    finally:
        conn.close()
    return ticks, events


def test_after_a_landing_an_empty_cursor_requests_nothing(landed: Landed) -> None:
    result = landed.evaluate(None)
    assert requested(result) == []
    # The cursor it starts from holds each file as it is now, so the next look is incremental.
    cursor = json.loads(result.cursor)
    for name in ("worker_01.db", "worker_02.db"):
        assert tuple(cursor[name][2:]) == max_ids(landed.workers / name)
    assert requested(landed.evaluate(result.cursor)) == []


def test_a_late_row_requests_only_its_landed_day(landed: Landed) -> None:
    conn = sqlite3.connect(landed.workers / "worker_02.db")
    with conn:
        conn.execute(INSERT_TICK, (f"{DAYS[0]}T23:59:59.000000Z", f"{DAYS[1]}T00:00:00.100000Z"))
    conn.close()
    result = landed.evaluate(None)
    assert requested(result) == [DAYS[0].isoformat()]
    assert result.run_requests[0].tags["market/changed_files"] == "worker_02.db"


def test_a_new_day_in_the_landed_files_requests_that_day_only(landed: Landed) -> None:
    write_demo_worker_files(landed.workers, [*DAYS, NEW_DAY], rows_per_day=60)
    assert requested(landed.evaluate(None)) == [NEW_DAY.isoformat()]


def test_a_new_worker_file_requests_every_day_it_holds_and_then_nothing(landed: Landed) -> None:
    elsewhere = Path(tempfile.mkdtemp(prefix="new-worker-"))
    try:
        (made,) = write_demo_worker_files(elsewhere, [DAYS[1], NEW_DAY], rows_per_day=40, workers=1)
        shutil.copy(made, landed.workers / "worker_03.db")
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
    result = landed.evaluate(None)
    # DAYS[1] was landed, but before this file existed: its rows are not in bronze.
    assert requested(result) == [DAYS[1].isoformat(), NEW_DAY.isoformat()]
    assert {r.tags["market/changed_files"] for r in result.run_requests} == {"worker_03.db"}
    for request in result.run_requests:
        landed.land(request.partition_key)
    assert requested(landed.evaluate(None)) == []


def test_days_never_landed_are_requested_and_landed_ones_are_not(tmp_path: Path) -> None:
    write_demo_worker_files(tmp_path / "source/workers", [*DAYS, NEW_DAY], rows_per_day=40)
    with dg.DagsterInstance.ephemeral() as instance:
        data = Landed(tmp_path, instance)
        data.land(DAYS[1].isoformat())
        assert requested(data.evaluate(None)) == [DAYS[0].isoformat(), NEW_DAY.isoformat()]


# --- the rule itself, on files of any shape -----------------------------------------------------

SCHEMA = """
CREATE TABLE market_ticks (id INTEGER PRIMARY KEY, event_ts_utc TEXT NOT NULL);
CREATE TABLE connection_events (id INTEGER PRIMARY KEY, event_ts_utc TEXT NOT NULL);
"""
PROPERTY_DAYS = ["2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20"]
rows = st.lists(
    st.tuples(
        st.sampled_from(["market_ticks", "connection_events"]), st.sampled_from(PROPERTY_DAYS)
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    phases=st.lists(rows, min_size=3, max_size=3),
    first_landing=st.sets(st.sampled_from(PROPERTY_DAYS)),
    second_landing=st.sets(st.sampled_from(PROPERTY_DAYS)),
)
def test_a_day_is_requested_when_never_landed_or_it_has_rows_past_its_landing(
    phases: list[list[tuple[str, str]]], first_landing: set[str], second_landing: set[str]
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="seeding-"))
    try:
        path = folder / "worker_01.db"
        conn = sqlite3.connect(path)
        conn.executescript(SCHEMA)
        written: list[tuple[str, int, str]] = []  # (table, id, day), in the order written
        landed: dict[str, dict[str, tuple[int, int]]] = {}
        for phase, landing in zip(phases, (first_landing, second_landing, set()), strict=True):
            for table, day in phase:
                cursor = conn.execute(
                    f"INSERT INTO {table} (event_ts_utc) VALUES (?)", (f"{day}T12:00:00.000000Z",)
                )
                written.append((table, cursor.lastrowid, day))
            conn.commit()
            # A landing after the phase records the file's max ids for each day it covers.
            marks = (
                max([i for t, i, _ in written if t == "market_ticks"], default=0),
                max([i for t, i, _ in written if t == "connection_events"], default=0),
            )
            for day in landing:
                landed[day] = {"worker_01.db": marks}
        conn.close()

        changed, max_tick, max_event = days_changed_since_landed(path, landed)

        column = {"market_ticks": 0, "connection_events": 1}
        expected = {
            day
            for table, row_id, day in written
            if day not in landed or row_id > landed[day]["worker_01.db"][column[table]]
        }
        assert changed == expected
        assert (max_tick, max_event) == (
            max([i for t, i, _ in written if t == "market_ticks"], default=0),
            max([i for t, i, _ in written if t == "connection_events"], default=0),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
