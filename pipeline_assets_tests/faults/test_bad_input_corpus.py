"""Generated bad input for every contract (collector rows, GEX JSON, operational rows): each row or
document ends in a clear error, the quarantine/rejects or the dead letter, never a silent drop or an
unhandled exception; every inserted row is accounted for exactly once."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.defs.market_data.checks import count_source_rows
from pipeline_assets.lib.gex.records import GexRecordError, parse_records
from pipeline_assets.lib.hq.datasets import DATASETS
from pipeline_assets.lib.hq.extract import read_window
from pipeline_assets.lib.hq.source_tables import create_source_tables, demo_rows, insert_rows
from pipeline_assets.lib.market.bronze import NO_EVENT_DATE, land_bronze_day
from pipeline_assets.lib.market.bronze_stream import land_bronze_day_streaming
from pipeline_assets.lib.market.staging_export import (
    export_options,
    read_export_rows,
    run_staging_export,
)

DAY = dt.date(2026, 2, 19)
GOOD_TS = "2026-02-19T10:30:00.123456Z"
GOOD_PAYLOAD = {
    "ticker": '{"bid": 1.0, "ask": 2.0, "last": 1.5, "volume_24h": 3.0}',
    "trades": '{"trade_id": "t1", "price": 100.5, "size": 0.25, "side": "buy"}',
    "orderbook": '{"bids": [[99.5, 1.0]], "asks": [[100.5, 2.0]]}',
}
DDL = """
CREATE TABLE market_ticks (id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, symbol TEXT NOT NULL,
  channel TEXT NOT NULL, event_ts_utc TEXT NOT NULL, ingestion_ts_utc TEXT NOT NULL,
  payload TEXT NOT NULL);
CREATE TABLE connection_events (id INTEGER PRIMARY KEY, exchange TEXT NOT NULL,
  worker_id TEXT NOT NULL, event_type TEXT NOT NULL, event_ts_utc TEXT NOT NULL, details TEXT);
"""

# --- collector rows ----------------------------------------------------------------------------

_bad_numbers = st.sampled_from(['"1.0"', "NaN", "-1", "null", "true", "[]", '"abc"', "1e999"])


@st.composite
def collector_rows(draw: st.DrawFn) -> tuple[str, str, str, str, str, str]:
    """(exchange, symbol, channel, event_ts, ingestion_ts, payload), valid or breaking one rule.

    Timestamps keep the day's text prefix, so that a row is in the day the readers select (other
    shapes: `test_bronze_quarantines_every_out_of_shape_timestamp_on_exactly_one_day`).
    """
    channel = draw(st.sampled_from(sorted(GOOD_PAYLOAD)))
    row = ["Binance", "BTCUSDT", channel, GOOD_TS, GOOD_TS, GOOD_PAYLOAD[channel]]
    rule = draw(
        st.sampled_from(
            ["valid", "exchange", "symbol", "channel", "event_ts", "ingestion_ts", "payload",
             "field", "number"]
        )
    )  # fmt: skip
    if rule == "exchange":
        row[0] = draw(st.sampled_from(["", " ", "Bin ance", "../x", "\x00"]))
    elif rule == "symbol":
        row[1] = draw(st.sampled_from(["", "BTC", "???", "BTC-USD-X", "b t c"]))
    elif rule == "channel":
        row[2] = draw(st.text(max_size=8).filter(lambda c: c not in GOOD_PAYLOAD))
    elif rule in ("event_ts", "ingestion_ts"):
        suffix = draw(
            st.sampled_from(
                [" 10:30:00", "T10:30:00Z", "T25:00:00.000000Z", "T10:30:00.123456", "Tnoon",
                 "T10:30:00.123456+01:00", ""]
            )
        )  # fmt: skip
        row[3 if rule == "event_ts" else 4] = "2026-02-19" + suffix
    elif rule == "payload":
        row[5] = draw(st.sampled_from(["", "{", "null", "[]", '"text"', "{'bid': 1}", "1"]))
    elif rule == "field":
        doc = json.loads(GOOD_PAYLOAD[channel])
        doc.pop(draw(st.sampled_from(sorted(doc))))
        row[5] = json.dumps(doc)
    elif rule == "number":
        doc = json.loads(GOOD_PAYLOAD[channel])
        key = {"ticker": "bid", "trades": "price", "orderbook": "bids"}[channel]
        bad = draw(_bad_numbers)
        text = json.dumps(doc).replace(json.dumps(doc[key]), "@@", 1)
        row[5] = text.replace("@@", f"[[{bad}, 1.0]]" if channel == "orderbook" else bad)
    return tuple(row)  # type: ignore[return-value]


def _worker_file(folder: Path, rows: list[tuple[str, ...]]) -> Path:
    path = folder / "source/workers/worker_01.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    with conn:
        conn.executemany(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc,"
            " payload) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()
    return path


@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bad_input_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _export_accounting(root: Path, path: Path) -> tuple[list[int], list[int], list[str]]:
    """(exported ids, rejected ids, reject reasons) of one export of the worker file."""
    result = run_staging_export(
        export_options(hours=48, end_utc="2026-02-20T00:00:00Z", chunk_size=7),
        worker_files=[path],
        input_glob="source/workers/*.db",
        data_root=root,
        staging_dir=root / "staging",
    )
    exported = [int(r["source_id"]) for r in read_export_rows(result)]
    rejects = [
        r for r in read_export_rows(result, "rejects") if r["source_table"] == "market_ticks"
    ]
    return exported, [int(r["source_id"]) for r in rejects], [r["reason"] for r in rejects]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(collector_rows(), min_size=1, max_size=12))
def test_every_collector_row_is_exported_or_rejected_with_a_reason(rows):
    folder = Path(tempfile.mkdtemp(prefix="bad_rows_"))
    try:
        path = _worker_file(folder, rows)
        exported, rejected, reasons = _export_accounting(folder, path)
        assert sorted(exported + rejected) == list(range(1, len(rows) + 1))
        assert all(reason and reason.strip() for reason in reasons)
        with land_bronze_day_streaming([path], DAY) as store:
            landed = sum(store.rows[c] for c in ("orderbook", "trades", "ticker"))
            quarantined = store.reader("quarantine").read_all()
            dropped = sum(store.duplicates_dropped.values())
        # Every row of the day: landed, quarantined with a reason, or an exact duplicate.
        day_rows = [r for r in rows if r[3].startswith("2026-02-19")]
        assert landed + quarantined.num_rows + dropped == len(day_rows)
        assert all(r and r.strip() for r in quarantined.column("reason").to_pylist())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("ts", "as_ingestion"),
    [
        ("2026-02-19T25:00:00.000000Z", True),
        ("2026-02-19T10:00:60.000000Z", True),
        # A day that does not exist sorts after the window's end as ingestion time; as event
        # time it is inside every window.
        ("2026-02-30T10:00:00.000000Z", False),
    ],
)
def test_impossible_times_in_the_collector_spelling_are_rejected(scratch, ts, as_ingestion):
    """Shaped like a collector time but not a time: rejected with a reason, and the export's
    watermark stays computable (such an ingestion time used to fail the run after its files
    were written)."""
    rows = [
        ("Binance", "BTCUSDT", "ticker", GOOD_TS, GOOD_TS, GOOD_PAYLOAD["ticker"]),
        ("Binance", "BTCUSDT", "ticker", ts, GOOD_TS, GOOD_PAYLOAD["ticker"]),
    ]
    if as_ingestion:
        rows.append(("Binance", "BTCUSDT", "ticker", GOOD_TS, ts, GOOD_PAYLOAD["ticker"]))
    exported, rejected, reasons = _export_accounting(scratch, _worker_file(scratch, rows))
    assert (exported, sorted(rejected)) == ([1], list(range(2, len(rows) + 1)))
    assert all("ts_utc" in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    "undated",
    [
        "19/02/2026 10:30",
        1771497000,
        1771497000.25,
        "1771497000",
        "",
        "2026-02-19 10:30:00",
        "soon",
    ],
)
def test_out_of_shape_timestamps_are_not_dropped_by_the_staging_export(scratch, undated):
    """A row whose ingestion time is not the collectors' ISO-8601 text is in the window of the
    row stored before it (after it, for the first row) and rejected there, naming the field."""
    rows = [
        ("Binance", "BTCUSDT", "ticker", GOOD_TS, undated, GOOD_PAYLOAD["ticker"]),
        ("Binance", "BTCUSDT", "ticker", GOOD_TS, GOOD_TS, GOOD_PAYLOAD["ticker"]),
        ("Binance", "BTCUSDT", "ticker", GOOD_TS, undated, GOOD_PAYLOAD["ticker"]),
        ("Binance", "BTCUSDT", "ticker", "1771497000", GOOD_TS, GOOD_PAYLOAD["ticker"]),
    ]
    path = _worker_file(scratch, rows)
    exported, rejected, reasons = _export_accounting(scratch, path)
    assert (exported, sorted(rejected)) == ([2], [1, 3, 4])
    by_id = dict(zip(rejected, reasons))
    for row_id in (1, 3):
        assert by_id[row_id].startswith("timestamp_not_iso8601: ingestion_ts_utc: "), by_id


NEXT_DAY_TS = "2026-02-20T00:10:00.000000Z"
# (event_ts_utc, ingestion_ts_utc, the day the row belongs to, whether it is quarantined for
# its timestamp): an undated event time goes to its ingestion date; with no dated ingestion time
# either, to the ingestion date of the nearest row stored before it (after it, for the first).
OUT_OF_SHAPE = [
    ("soon", 1771497000, DAY, True),  # no row before it: the next dated row's ingestion date
    (GOOD_TS, GOOD_TS, DAY, False),
    ("19/02/2026 10:30:00", GOOD_TS, DAY, True),
    (1771497000, GOOD_TS, DAY, True),
    (1771497000.25, GOOD_TS, DAY, True),
    ("", GOOD_TS, DAY, True),
    ("1771497000", NEXT_DAY_TS, DAY + dt.timedelta(days=1), True),
    (GOOD_TS, "19/02/2026 10:30", DAY, True),  # dated event: its own day, rejected there
    ("02/20/2026", "", DAY + dt.timedelta(days=1), True),  # the row before: ingested on the 20th
    ("2026-02-20T09:00:00.000000Z", NEXT_DAY_TS, DAY + dt.timedelta(days=1), False),
]


@pytest.mark.parametrize("max_ingestion_lag_s", [None, 6 * 3600.0])
def test_bronze_quarantines_every_out_of_shape_timestamp_on_exactly_one_day(
    scratch, max_ingestion_lag_s
):
    """No date is guessed (19/02 or 02/19?): a row whose timestamp is not ISO-8601 is
    quarantined with reason timestamp_not_iso8601, on one deterministic day, and the row-count
    check's own SQL count agrees with where it went."""
    rows = [
        ("Binance", "BTCUSDT", "ticker", event, ingestion, GOOD_PAYLOAD["ticker"])
        for event, ingestion, _, _ in OUT_OF_SHAPE
    ]
    path = _worker_file(scratch, rows)
    days = [DAY + dt.timedelta(days=n) for n in (-1, 0, 1, 2)]
    seen: dict[int, dt.date] = {}
    for day in days:
        with land_bronze_day_streaming(
            [path], day, max_ingestion_lag_s=max_ingestion_lag_s
        ) as store:
            landed = store.reader("ticker").read_all()
            quarantined = store.reader("quarantine").read_all()
            reported = store.quarantined_with_reason("timestamp_not_iso8601")
            undated = store.quarantined_with_reason(NO_EVENT_DATE)
            (source,) = store.sources
        for row_id in landed.column("source_id").to_pylist():
            assert row_id not in seen, (row_id, seen[row_id], day)
            seen[row_id] = day
        for row in quarantined.to_pylist():
            assert row["source_id"] not in seen, (row, seen[row["source_id"]], day)
            seen[row["source_id"]] = day
            assert row["reason"].startswith("timestamp_not_iso8601: "), row["reason"]
        ids = sorted(quarantined.column("source_id").to_pylist())
        assert reported == ({path.name: (len(ids), ids)} if ids else {})
        # Row 8 has a dated event time (its ingestion time is the bad one).
        without_date = sorted(set(ids) - {8})
        assert undated == ({path.name: (len(without_date), without_date)} if without_date else {})
        # The row-count check counts the day's source rows with its own SQL.
        assert (
            count_source_rows(path, "market_ticks", day, source.market_ticks_max_id)
            == landed.num_rows + quarantined.num_rows
        )
    expected = {i + 1: day for i, (_, _, day, _) in enumerate(OUT_OF_SHAPE)}
    assert seen == expected
    # The in-memory reference agrees row by row.
    for day in days:
        reference = land_bronze_day([path], day).tables
        assert sorted(reference["quarantine"].column("source_id").to_pylist()) == sorted(
            i + 1 for i, (_, _, d, bad) in enumerate(OUT_OF_SHAPE) if d == day and bad
        )


def test_bronze_quarantines_connection_events_without_a_date_on_exactly_one_day(scratch):
    """A connection event has no ingestion time: one whose event time has no date is
    quarantined on the date of the dated event stored before it (after it, for the first)."""
    path = _worker_file(scratch, [])
    events = [
        ("19/02/2026 09:00", DAY),  # no event before it: the next dated one's date
        (GOOD_TS, DAY),
        ("1771497000", DAY),
        (NEXT_DAY_TS, DAY + dt.timedelta(days=1)),
        ("", DAY + dt.timedelta(days=1)),
    ]
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details)"
            " VALUES ('Binance', 'w1', 'disconnected', ?, NULL)",
            [(ts,) for ts, _ in events],
        )
    conn.close()
    seen: dict[int, dt.date] = {}
    for day in (DAY - dt.timedelta(days=1), DAY, DAY + dt.timedelta(days=1)):
        with land_bronze_day_streaming([path], day) as store:
            landed = store.reader("connection_events").read_all()
            quarantined = store.reader("quarantine").read_all()
            (source,) = store.sources
        for row in quarantined.to_pylist():
            assert row["source_table"] == "connection_events"
            assert row["reason"].startswith(NO_EVENT_DATE), row["reason"]
        ids = [
            *landed.column("source_id").to_pylist(),
            *quarantined.column("source_id").to_pylist(),
        ]
        for row_id in ids:
            assert row_id not in seen
            seen[row_id] = day
        assert count_source_rows(
            path, "connection_events", day, source.connection_events_max_id
        ) == len(ids)
    assert seen == {i + 1: day for i, (_, day) in enumerate(events)}


# --- GEX JSON ----------------------------------------------------------------------------------


def _snapshot() -> dict:
    return {
        "timestamp": 1771511400, "ticker": "SPX", "min_dte": 0, "sec_min_dte": 1,
        "spot": 6050.25, "zero_gamma": 6032.5, "major_pos_vol": 6100.0, "major_pos_oi": 6075.0,
        "major_neg_vol": 6000.0, "major_neg_oi": 5990.0,
        "strikes": [[6000.0, 1.5, -2.25, [0.1, 0.2, None]], [6005.0, 1.0, 2.0, []]],
        "sum_gex_vol": 12.5, "sum_gex_oi": -3.75, "delta_risk_reversal": 0.042,
        "max_priors": [[6000.0, 1.25]],
    }  # fmt: skip


_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.just(float("nan")),
    st.just(float("inf")),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def broken_gex_documents(draw: st.DrawFn) -> bytes:
    """A gexbot history that breaks one rule of the GEX contract."""
    records = [_snapshot() for _ in range(draw(st.integers(1, 3)))]
    victim = records[draw(st.integers(0, len(records) - 1))]
    rule = draw(
        st.sampled_from(["missing", "type", "strike_shape", "strike_value", "top", "bytes"])
    )
    if rule == "missing":
        victim.pop(draw(st.sampled_from(["timestamp", "spot", "strikes", "ticker"])))
    elif rule == "type":
        key = draw(st.sampled_from(["timestamp", "spot", "zero_gamma", "strikes"]))
        victim[key] = draw(
            _junk.filter(
                lambda v: (
                    not isinstance(v, (int, float))
                    or (isinstance(v, float) and not math.isfinite(v))
                )
            )
        )
    elif rule == "strike_shape":
        victim["strikes"][0] = draw(st.sampled_from([[], [6000.0], "6000", None, {"s": 1}]))
    elif rule == "strike_value":
        index = draw(st.integers(0, 2))
        victim["strikes"][0][index] = draw(st.sampled_from(["x", None, [1], {"a": 1}, True]))
    elif rule == "top":
        return draw(st.sampled_from([b"[]", b"42", b'"text"', b"null"]))
    else:
        text = json.dumps(records)
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    return json.dumps(records, allow_nan=True).encode()


@settings(max_examples=150, deadline=None)
@given(data=broken_gex_documents())
def test_every_broken_gex_document_fails_with_a_named_error(data):
    """A clear GexRecordError naming the file, or a document the parser accepts whole: the
    parser never raises anything else and never drops a snapshot."""
    try:
        parsed = parse_records(data, job_id=1, endpoint="gex_zero", name="probe.json")
    except GexRecordError as exc:
        assert "probe.json" in str(exc)
        return
    # Accepted: only when the broken value is one the contract allows (a null, say); then every
    # snapshot of the document is there.
    assert parsed.records == len(json.loads(data))


# --- operational rows --------------------------------------------------------------------------

RUN_RULES = {
    "no org_id": {"org_id": None},
    "status outside its set": {"status": "exploded"},
    "null key": {"run_id": None},
    "entity_type outside its set": {"entity_type": "planet"},
}


@pytest.fixture(scope="module")
def pg(tmp_path_factory) -> Iterator[str]:
    from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded

    base = Path(tempfile.mkdtemp(prefix="bad_ops_pg_"))
    folder = base / "postgres"
    dsn = embedded_dsn(folder)
    yield dsn
    import contextlib
    import subprocess

    with contextlib.suppress(subprocess.CalledProcessError):
        stop_embedded(folder)
    shutil.rmtree(base, ignore_errors=True)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    breaks=st.lists(st.sampled_from(sorted(RUN_RULES)), min_size=1, max_size=4),
    duplicate=st.booleans(),
)
def test_every_operational_row_is_exported_or_dead_lettered(pg, breaks, duplicate):
    """Operation runs that break contract rules: exported rows + dead-letter rows = source rows,
    each dead row with its reason; never a silent drop."""
    import contextlib

    spec = next(s for s in DATASETS if s.table == "operation_runs")
    start = dt.datetime(2026, 2, 17, 0, tzinfo=dt.UTC)
    good = demo_rows([start.date()], hours=1)["operation_runs"][:6]
    rows = [dict(r) for r in good]
    for i, rule in enumerate(breaks):
        rows[i % len(rows)].update(RUN_RULES[rule])
    if duplicate:
        rows.append(dict(rows[-1]))
    with psycopg.connect(pg) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bad_ops CASCADE")
        create_source_tables(conn, "bad_ops")
        insert_rows(conn, "operation_runs", rows, "bad_ops")
        in_window = conn.execute(
            "SELECT count(*) FROM bad_ops.operation_runs WHERE created_at >= %s AND created_at < %s",
            (start, start + dt.timedelta(hours=1)),
        ).fetchone()[0]

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(pg) as conn:
            yield conn

    prepared, _ = read_window(
        connect, spec, "2026-02-17-00:00", start, start + dt.timedelta(hours=1), schema="bad_ops"
    )
    try:
        exported = sum(b.num_rows for b in prepared.batches())
    finally:
        prepared.remove()
    dead = prepared.result.dead
    assert exported + len(dead) == in_window
    assert all(d["reason"] and d["detail"] for d in dead)
    broken = {i % len(rows) for i in range(len(breaks))}
    assert len(dead) >= len(broken)
