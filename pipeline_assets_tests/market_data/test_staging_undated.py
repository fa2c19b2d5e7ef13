"""Market ticks whose ingestion time, and connection events whose event time, is not the
collectors' ISO-8601 text: placed in the window of the nearest dated row of their table stored
before them (after them, for a file's first rows) and rejected there, exactly once across
consecutive incremental runs, whether rows arrive between runs or not."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.market.demo_sources import CONNECTION_EVENTS_DDL, MARKET_TICKS_DDL
from pipeline_assets.lib.market.staging_export import (
    STATE_FILE_NAME,
    UNDATED_STATE_FIELD,
    UNDATED_STATE_FIELDS,
    export_options,
    read_export_rows,
    run_staging_export,
)

BASE = dt.datetime(2026, 2, 19, tzinfo=dt.UTC)
PAYLOAD = '{"bid": 1.0, "ask": 2.0, "last": 1.5, "volume_24h": 3.0}'
UNDATED_VALUES = [
    "19/02/2026 10:30",
    1771497000,
    1771497000.25,
    "1771497000",
    "",
    "2026-02-19 10:30:00",
    "soon",
    None,
]
FILES = ("worker_01.db", "worker_02.db")
TICKS, EVENTS = "market_ticks", "connection_events"
# The column each table's windows select by.
TIME_COLUMN = {TICKS: "ingestion_ts_utc", EVENTS: "event_ts_utc"}


def _ts(minute: int) -> str:
    return (BASE + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _end(minute: int) -> str:
    return (BASE + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create(path: Path) -> None:
    conn = sqlite3.connect(path)
    # The collector schema, except that the window times may hold NULL here (loosely typed
    # SQLite files have been seen to).
    conn.execute(
        MARKET_TICKS_DDL.replace("ingestion_ts_utc TEXT NOT NULL", "ingestion_ts_utc TEXT")
    )
    conn.execute(CONNECTION_EVENTS_DDL.replace("event_ts_utc TEXT NOT NULL", "event_ts_utc TEXT"))
    conn.commit()
    conn.close()


def _append(path: Path, ingestion: list[object]) -> list[int]:
    conn = sqlite3.connect(path)
    ids = []
    with conn:
        for value in ingestion:
            cursor = conn.execute(
                "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, "
                "ingestion_ts_utc, payload) VALUES ('Binance', 'BTCUSDT', 'ticker', ?, ?, ?)",
                (_ts(0), value, PAYLOAD),
            )
            ids.append(cursor.lastrowid)
    conn.close()
    return ids


def _append_events(path: Path, event_times: list[object]) -> list[int]:
    conn = sqlite3.connect(path)
    ids = []
    with conn:
        for value in event_times:
            cursor = conn.execute(
                "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, "
                "details) VALUES ('Binance', 'w1', 'connected', ?, NULL)",
                (value,),
            )
            ids.append(cursor.lastrowid)
    conn.close()
    return ids


def _run_tables(root: Path, end_minute: int, *, state_key: str = "u"):
    """(result, exported, rejected) with keys (file, table, id) over both tables."""
    result = run_staging_export(
        export_options(
            hours=24 * 30,
            end_utc=_end(end_minute),
            incremental=True,
            update_state=True,
            state_key=state_key,
            chunk_size=3,
            include_connection_events=True,
        ),
        worker_files=sorted((root / "source/workers").glob("*.db")),
        input_glob="source/workers/*.db",
        data_root=root,
        staging_dir=root / "staging",
    )
    exported = [
        (r["source_file"], table, int(r["source_id"]))
        for table in (TICKS, EVENTS)
        for r in read_export_rows(result, table)
    ]
    rejected = {
        (r["source_file"], r["source_table"], int(r["source_id"])): r["reason"]
        for r in read_export_rows(result, "rejects")
    }
    return result, exported, rejected


def _run(root: Path, end_minute: int, *, state_key: str = "u"):
    result = run_staging_export(
        export_options(
            hours=24 * 30,
            end_utc=_end(end_minute),
            incremental=True,
            update_state=True,
            state_key=state_key,
            chunk_size=3,
        ),
        worker_files=sorted((root / "source/workers").glob("*.db")),
        input_glob="source/workers/*.db",
        data_root=root,
        staging_dir=root / "staging",
    )
    exported = [(r["source_file"], int(r["source_id"])) for r in read_export_rows(result)]
    rejected = {
        (r["source_file"], int(r["source_id"])): r["reason"]
        for r in read_export_rows(result, "rejects")
        if r["source_table"] == "market_ticks"
    }
    return result, exported, rejected


# A row of a batch: a dated row (True) or an undated one (the index of its value), in one table
# of one file.
rows_strategy = st.tuples(
    st.sampled_from(FILES),
    st.sampled_from((TICKS, EVENTS)),
    st.one_of(st.just(True), st.integers(0, len(UNDATED_VALUES) - 1)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.lists(rows_strategy, max_size=8), min_size=1, max_size=4),
    lags=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    append_between_runs=st.booleans(),
)
def test_every_row_is_exported_or_rejected_exactly_once(batches, lags, append_between_runs):
    root = Path(tempfile.mkdtemp(prefix="staging_undated_"))
    try:
        folder = root / "source/workers"
        folder.mkdir(parents=True)
        for name in FILES:
            _create(folder / name)
        minute = 0
        # key (file, table, id) -> whether the row is dated, and a dated row's minute
        kinds: dict[tuple[str, str, int], bool | None] = {}
        dated_minute: dict[tuple[str, str, int], int] = {}

        def write(batch) -> None:
            nonlocal minute
            for name, table, kind in batch:
                append = _append if table == TICKS else _append_events
                if kind is True:
                    minute += 1  # window times grow with ids, as a collector writes them
                    (row_id,) = append(folder / name, [_ts(minute)])
                    dated_minute[(name, table, row_id)] = minute
                else:
                    (row_id,) = append(folder / name, [UNDATED_VALUES[kind]])
                kinds[(name, table, row_id)] = kind is True

        if not append_between_runs:
            for batch in batches:
                write(batch)
        seen: dict[tuple[str, int], int] = {}
        ends_by_run: list[int] = []
        for run, batch in enumerate(batches):
            if append_between_runs:
                write(batch)
                reach = minute
            else:
                reach = minute * (run + 1) // len(batches)
            # Each run ends at the newest time written so far, or up to 3 minutes before it
            # (rows left for the next run); the last one reaches everything.
            end_minute = max([reach - lags[run], *ends_by_run[-1:]])
            if run == len(batches) - 1:
                end_minute = 10_000
            ends_by_run.append(end_minute)
            _, exported, rejected = _run_tables(root, end_minute)
            for key in [*exported, *rejected]:
                assert key not in seen, (key, seen[key], run)
                seen[key] = run
            for key in exported:
                assert kinds[key], key  # an undated row is never exported
            for key, reason in rejected.items():
                assert not kinds[key], (key, reason)
                assert reason.startswith(f"timestamp_not_iso8601: {TIME_COLUMN[key[1]]}: "), reason
        # Nothing lost: every row was exported or rejected, by exactly one run.
        assert set(seen) == set(kinds)
        if not append_between_runs:
            # Every row was there from the start: a row's run is the first whose end reaches
            # its window time, or for an undated row its neighbour's (the nearest dated row of
            # its table before it, after it for a file's first rows); with no dated row, the
            # first run.
            for (name, table, row_id), run in seen.items():
                dated = sorted(i for (f, t, i) in dated_minute if (f, t) == (name, table))
                before = [i for i in dated if i <= row_id]
                after = [i for i in dated if i > row_id]
                anchor = before[-1] if before else (after[0] if after else None)
                if anchor is None:
                    assert run == 0
                    continue
                at = dated_minute[(name, table, anchor)]
                assert run == min(k for k, e in enumerate(ends_by_run) if at <= e), (
                    name,
                    table,
                    row_id,
                    at,
                    ends_by_run,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_row_stored_after_its_neighbours_window_is_rejected_by_the_next_run(tmp_path):
    """The common micro-batch case: the dated row before it was exported by the previous run."""
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    _append(path, [_ts(1), _ts(2)])
    _, exported, rejected = _run(tmp_path, 5)
    assert (exported, rejected) == ([(FILES[0], 1), (FILES[0], 2)], {})
    _append(path, ["19/02/2026 00:03", _ts(4)])
    _, exported, rejected = _run(tmp_path, 6)
    assert exported == [(FILES[0], 4)]
    assert list(rejected) == [(FILES[0], 3)]
    assert "stored after the window of the row before it" in rejected[(FILES[0], 3)]
    _, exported, rejected = _run(tmp_path, 7)
    assert (exported, rejected) == ([], {})
    state = json.loads((tmp_path / "staging" / STATE_FILE_NAME).read_text())
    assert state["profiles"]["u"][UNDATED_STATE_FIELD] == {
        FILES[0]: {"read_upto": 4, "settled_upto": 4}
    }


def test_a_row_whose_neighbour_is_after_the_window_waits_for_that_window(tmp_path):
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    _append(path, [_ts(1), _ts(10), 1771497000, _ts(11)])
    _, exported, rejected = _run(tmp_path, 5)
    assert (exported, rejected) == ([(FILES[0], 1)], {})
    state = json.loads((tmp_path / "staging" / STATE_FILE_NAME).read_text())
    # Row 3 waits: the next run searches from below it.
    assert state["profiles"]["u"][UNDATED_STATE_FIELD][FILES[0]]["settled_upto"] < 3
    _, exported, rejected = _run(tmp_path, 10)
    assert exported == [(FILES[0], 2)]
    assert list(rejected) == [(FILES[0], 3)]
    assert "in the window of the row stored before it" in rejected[(FILES[0], 3)]
    _, exported, rejected = _run(tmp_path, 20)
    assert (exported, rejected) == ([(FILES[0], 4)], {})


def test_the_rejected_count_includes_undated_rows_and_the_watermark_their_neighbours_time(
    tmp_path,
):
    """With an exchange filter the neighbour itself is not exported: its time still moves the
    watermark, so the next run does not place the undated row in its window again."""
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    _append(path, [_ts(1), "", ""])
    result = run_staging_export(
        export_options(
            hours=24 * 30,
            end_utc=_end(5),
            incremental=True,
            update_state=True,
            state_key="f",
            exchanges=["coinbase"],
        ),
        worker_files=[path],
        input_glob="source/workers/*.db",
        data_root=tmp_path,
        staging_dir=tmp_path / "staging",
    )
    doc = result.metadata
    assert doc["row_counts"]["market_ticks"] == 0
    assert doc["row_counts"]["rejected"] == 2
    assert doc["watermarks"]["new"]["market_ticks_ingestion_ts_utc"] == _ts(1).replace(
        ".000000Z", "Z"
    )


def test_many_undated_rows_between_dated_ones_are_each_rejected_once(tmp_path):
    """More gaps between the window's dated rows than are searched one by one."""
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    values: list[object] = []
    for minute in range(1, 151):
        values += [_ts(minute), "x" * (minute % 3), minute]
    _append(path, values)
    _, exported, rejected = _run(tmp_path, 100)
    assert [i for _, i in exported] == list(range(1, 300, 3))
    assert sorted(i for _, i in rejected) == [i for i in range(1, 301) if i % 3 != 1]
    _, exported, rejected = _run(tmp_path, 200)
    assert [i for _, i in exported] == list(range(301, 450, 3))
    assert sorted(i for _, i in rejected) == [i for i in range(301, 451) if i % 3 != 1]


def test_an_undated_row_before_the_windows_dated_rows_is_not_passed_over(tmp_path):
    """Ingestion times out of id order: the row before the window's first dated row is placed
    by a later time, and the next runs still find it when that time's window comes."""
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    _append(path, [_ts(20), "19/02/2026 00:20", _ts(2)])
    assert _run(tmp_path, 5)[1:] == ([(FILES[0], 3)], {})
    assert _run(tmp_path, 10)[1:] == ([], {})
    _, exported, rejected = _run(tmp_path, 30)
    assert (exported, list(rejected)) == ([(FILES[0], 1)], [(FILES[0], 2)])


def test_an_undated_connection_event_is_rejected_in_its_neighbours_window_once(tmp_path):
    """Connection events follow the rule by their own ids and event_ts_utc, apart from ticks."""
    folder = tmp_path / "source/workers"
    folder.mkdir(parents=True)
    path = folder / FILES[0]
    _create(path)
    _append(path, [_ts(1)])
    _append_events(path, ["2026-02-19 00:00:30", _ts(2), _ts(10), 1771497000, _ts(11)])
    _, exported, rejected = _run_tables(tmp_path, 5)
    # Event 1 precedes the table's first dated event (minute 2): rejected in that window.
    assert exported == [(FILES[0], TICKS, 1), (FILES[0], EVENTS, 2)]
    assert list(rejected) == [(FILES[0], EVENTS, 1)]
    assert rejected[(FILES[0], EVENTS, 1)].startswith(
        "timestamp_not_iso8601: event_ts_utc: expected UTC ISO-8601 text"
    )
    assert "in the window of the row stored after it" in rejected[(FILES[0], EVENTS, 1)]
    state = json.loads((tmp_path / "staging" / STATE_FILE_NAME).read_text())
    # Event 4 waits for the window of event 3 (minute 10).
    assert state["profiles"]["u"][UNDATED_STATE_FIELDS[EVENTS]][FILES[0]]["settled_upto"] < 4
    _, exported, rejected = _run_tables(tmp_path, 10)
    assert exported == [(FILES[0], EVENTS, 3)]
    assert list(rejected) == [(FILES[0], EVENTS, 4)]
    _append_events(path, ["soon", _ts(12)])
    _, exported, rejected = _run_tables(tmp_path, 20)
    assert exported == [(FILES[0], EVENTS, 5), (FILES[0], EVENTS, 7)]
    assert list(rejected) == [(FILES[0], EVENTS, 6)]
    _, exported, rejected = _run_tables(tmp_path, 30)
    assert (exported, rejected) == ([], {})
    state = json.loads((tmp_path / "staging" / STATE_FILE_NAME).read_text())
    assert state["profiles"]["u"][UNDATED_STATE_FIELDS[EVENTS]] == {
        FILES[0]: {"read_upto": 7, "settled_upto": 7}
    }
    assert state["profiles"]["u"]["connection_events_event_ts_utc"] == _end(12)
