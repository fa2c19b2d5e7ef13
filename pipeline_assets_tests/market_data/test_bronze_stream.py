"""Bronze in bounded memory: the streamed day equals the in-memory reference byte for byte, row by
row on odd payloads (property test), and the day's id window reads only the day's ids."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upath import UPath

from pipeline_assets.lib.market import bronze_stream
from pipeline_assets.lib.market.bronze import CHANNELS, land_bronze_day
from pipeline_assets.lib.market.bronze_stream import (
    OUTPUT_ROW_GROUP_SIZE,
    TABLE_SCHEMAS,
    BronzeSpill,
    day_id_window,
    land_bronze_day_streaming,
)
from pipeline_assets.lib.market.demo_sources import (
    CONNECTION_EVENTS_DDL,
    MARKET_TICKS_DDL,
    write_demo_worker_files,
)
from pipeline_assets.lib.parquet_lake import write_parquet, write_split_parquet

DAYS = [dt.date(2026, 2, 18), dt.date(2026, 2, 19)]
DAY = DAYS[1]
INSERT = (
    "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    # The demo as `make demo` writes it: three exchange spellings, bad rows, copies across workers.
    return write_demo_worker_files(tmp_path_factory.mktemp("workers"), DAYS, rows_per_day=900)


def write_day(tables: dict[str, pa.Table | pa.RecordBatchReader], folder: Path) -> dict[str, str]:
    """Write a day's tables the way the lake IO manager does; relative path -> sha256."""
    hashes = {}
    for name, data in tables.items():
        target = UPath(folder / name)
        if name in CHANNELS:
            # The stream comes grouped by symbol (as the asset's metadata tells the IO manager).
            grouped = isinstance(data, pa.RecordBatchReader)
            results = write_split_parquet(
                target,
                data,
                ["symbol"],
                schema=TABLE_SCHEMAS[name],
                grouped=grouped,
                row_group_size=OUTPUT_ROW_GROUP_SIZE,
            )
        else:
            results = [write_parquet(target / "data.parquet", data, schema=TABLE_SCHEMAS[name])]
        for r in results:
            hashes[str(Path(str(r.path)).relative_to(folder))] = r.sha256
    return hashes


@pytest.mark.parametrize("day", DAYS)
def test_streamed_files_are_byte_identical_to_the_in_memory_path(
    demo_files: list[Path], tmp_path: Path, day: dt.date
) -> None:
    reference = land_bronze_day(demo_files, day)
    expected = write_day(dict(reference.tables), tmp_path / "memory")
    with land_bronze_day_streaming(demo_files, day, page_rows=700) as store:
        got = write_day({t: store.reader(t) for t in store.tables}, tmp_path / "stream")
        assert store.duplicates_dropped == reference.duplicates_dropped
        assert sum(store.duplicates_dropped.values()) > 0
        assert store.rows == {t: reference.tables[t].num_rows for t in store.tables}
        assert store.rows["quarantine"] > 0
        assert store.sources == reference.sources
    assert got == expected
    assert len(got) == 3 * 4 + 2  # three channels x four symbols, quarantine, connection events


@pytest.mark.parametrize("group_rows", [1, 37])
def test_small_sort_groups_give_the_same_bytes(
    demo_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group_rows: int
) -> None:
    """Channels are sorted a group of event-time buckets at a time: with groups of a bucket or a
    few dozen rows (each symbol's day cut into many groups, copies across workers inside them),
    the files are still those of sorting the whole day at once."""
    monkeypatch.setattr(bronze_stream, "SORT_GROUP_ROWS", group_rows)
    reference = land_bronze_day(demo_files, DAY)
    expected = write_day(dict(reference.tables), tmp_path / "memory")
    with land_bronze_day_streaming(demo_files, DAY, page_rows=500) as store:
        groups = sum(len(store._groups[c]) for c in CHANNELS)
        assert groups > 3 * 4  # more than one group per channel and symbol
        got = write_day({t: store.reader(t) for t in store.tables}, tmp_path / "stream")
        assert store.duplicates_dropped == reference.duplicates_dropped
    assert got == expected


def test_a_range_in_one_spill_keeps_days_apart(demo_files: list[Path]) -> None:
    with BronzeSpill(memory_limit_mb=64) as spill:
        stores = [spill.land_day(demo_files, day) for day in DAYS]
        for store in stores:
            table = store.reader("trades").read_all()
            dates = {ts.date() for ts in table.column("event_ts_utc").to_pylist()}
            assert dates == {store.day}
            assert store.streamed["trades"].rows == table.num_rows
            assert store.streamed["trades"].rows_on_other_dates == 0
    assert not spill.folder.exists()


# --- the vectorized parse against the exact one, row by row ----------------------------------

_numbers = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-0", "0.1", "65000.10", "1E+5", "NaN", "Infinity", "-inf", "nan"]),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: json.dumps(str(f))),
    st.sampled_from(["true", "null", '"x"', "[]", "{}"]),
)
_ids = st.one_of(
    st.text(max_size=6).map(json.dumps),
    st.integers(-5, 10**22).map(str),
    st.sampled_from(['""', "-0", "1.0", "null", '"a\\"b"', '"\\u00e9"']),
)
_sides = st.sampled_from(['"buy"', '"sell"', "null", '"BUY"', "1", None])
_level = st.lists(_numbers, min_size=0, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
_levels = st.one_of(
    st.lists(_level, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.sampled_from(["[[1, 2],]", "[[[1], 2]]", "[null]", '"[[1, 2]]"', "[[1, 2, [3]]]"]),
)


@st.composite
def _payload(draw: st.DrawFn, channel: str) -> str:
    if channel == "trades":
        fields = {"trade_id": draw(_ids), "price": draw(_numbers), "size": draw(_numbers)}
        side = draw(_sides)
        if side is not None:
            fields["side"] = side
    elif channel == "ticker":
        fields = {k: draw(_numbers) for k in ("bid", "ask", "last", "volume_24h")}
    else:
        fields = {"bids": draw(_levels), "asks": draw(_levels)}
    items = [f'"{k}": {v}' for k, v in fields.items()]
    if draw(st.booleans()) and items:
        items.pop(draw(st.integers(0, len(items) - 1)))  # a missing field
    if draw(st.integers(0, 4)) == 0:
        items.append(f'"extra": {draw(_numbers)}')  # an extra key, possibly NaN
    if draw(st.integers(0, 6)) == 0 and items:
        items.append(items[0].split(":")[0] + ': "dup"')  # a repeated key
    items = draw(st.permutations(items))
    text = "{" + ", ".join(items) + ("," if draw(st.integers(0, 8)) == 0 else "") + "}"
    if draw(st.integers(0, 10)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut off
    return text


@st.composite
def _rows(draw: st.DrawFn) -> list[tuple]:
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        channel = draw(st.sampled_from([*CHANNELS, "funding"]))
        exchange, symbol = draw(
            st.sampled_from([("Binance", "BTCUSDT"), ("KRAKEN", "btc/usdt"), ("coinbase", "X")])
        )
        ts = draw(
            st.sampled_from(
                [
                    "2026-02-19T10:30:00.123456Z",
                    "2026-02-19T10:30:00Z",
                    "2026-02-19T10:30:00.1234+00:00",
                    "2026-02-19T24:30:00.000000Z",
                    "2026-02-19 10:30:00.000000",
                ]
            )
        )
        payload = draw(_payload(channel if channel in CHANNELS else "trades"))
        rows.append((exchange, symbol, channel, ts, "2026-02-19T10:30:01.000000Z", payload))
    return rows


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=_rows())
def test_vectorized_parse_lands_every_row_as_the_exact_path_does(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "worker_01.db"
    conn = sqlite3.connect(path)
    conn.execute(MARKET_TICKS_DDL)
    conn.execute(CONNECTION_EVENTS_DDL)
    with conn:
        conn.executemany(INSERT, rows)
    conn.close()
    reference = land_bronze_day([path], DAY)
    with land_bronze_day_streaming([path], DAY) as store:
        for table in store.tables:
            got = store.reader(table).read_all()
            assert got.equals(reference.tables[table]), (table, got.to_pylist())


def test_values_that_are_not_text_take_the_exact_path(tmp_path: Path) -> None:
    path = tmp_path / "worker_01.db"
    conn = sqlite3.connect(path)
    conn.execute(MARKET_TICKS_DDL.replace("NOT NULL", ""))
    conn.execute(CONNECTION_EVENTS_DDL)
    good = '{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 3}'
    ts, ingested = "2026-02-19T10:30:00.000001Z", "2026-02-19T10:30:00.100000Z"
    with conn:
        conn.executemany(
            INSERT,
            [
                ("Binance", "BTCUSDT", "ticker", ts, ingested, good),
                (5, "BTCUSDT", "ticker", ts, ingested, good),
                ("Binance", "BTCUSDT", "ticker", ts, ingested, good.encode()),
                ("Binance", None, "ticker", ts, ingested, good),
            ],
        )
    conn.close()
    reference = land_bronze_day([path], DAY)
    with land_bronze_day_streaming([path], DAY) as store:
        for table in store.tables:
            assert store.reader(table).read_all().equals(reference.tables[table]), table
        # A payload stored as a BLOB and a NULL symbol are quarantined; an integer exchange is
        # read as its text, as `land_tick_rows` reads it.
        assert store.rows["ticker"] == 2 and store.rows["quarantine"] == 2


# --- the day's id window ----------------------------------------------------------------------


def test_the_id_window_holds_exactly_the_days_ingested_rows(demo_files: list[Path]) -> None:
    conn = sqlite3.connect(demo_files[0])
    try:
        ((lo, hi),) = conn.execute("SELECT min(id), max(id) FROM market_ticks").fetchall()
        first, last = day_id_window(conn, DAY, lo, hi, max_clock_skew_s=0, max_ingestion_lag_s=0)
        # Independently: the ids whose ingestion time is on the day (they grow with the id).
        ((want_first, want_last),) = conn.execute(
            "SELECT min(id), max(id) FROM market_ticks WHERE ingestion_ts_utc >= ? "
            "AND ingestion_ts_utc < ?",
            (DAY.isoformat(), (DAY + dt.timedelta(days=1)).isoformat()),
        ).fetchall()
    finally:
        conn.close()
    assert (first, last) == (want_first, want_last)


def test_a_row_ingested_later_than_the_lag_is_read_only_by_a_full_scan(tmp_path: Path) -> None:
    path = write_demo_worker_files(tmp_path, DAYS, rows_per_day=60, workers=1)[0]
    late = (
        "Binance",
        "BTCUSDT",
        "ticker",
        "2026-02-18T23:00:00.000000Z",
        "2026-02-19T12:00:00.000000Z",  # stored 13 hours after the event
        '{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 3}',
    )
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(INSERT, late)
    conn.close()
    reference = land_bronze_day([path], DAYS[0])
    with land_bronze_day_streaming([path], DAYS[0]) as windowed:
        assert windowed.rows["ticker"] == reference.tables["ticker"].num_rows - 1
    with land_bronze_day_streaming([path], DAYS[0], max_ingestion_lag_s=None) as full:
        assert full.rows["ticker"] == reference.tables["ticker"].num_rows


# --- the grouped split the bronze channels use (lake/split_grouped) ---------------------------


def test_a_grouped_split_writes_the_same_files_and_refuses_a_value_that_comes_back(
    tmp_path: Path,
) -> None:
    from pipeline_assets.lib.parquet_lake import LakeError

    table = pa.table({"symbol": ["A", "A", "B", "B", "C"], "x": [1, 2, 3, 4, 5]})
    plain = write_split_parquet(UPath(tmp_path / "plain"), table, ["symbol"])
    grouped = write_split_parquet(
        UPath(tmp_path / "grouped"),
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1)),
        ["symbol"],
        grouped=True,
    )
    assert [r.sha256 for r in grouped] == [r.sha256 for r in plain]
    back = pa.table({"symbol": ["A", "B", "A"], "x": [1, 2, 3]})
    batches = pa.RecordBatchReader.from_batches(back.schema, back.to_batches(max_chunksize=1))
    with pytest.raises(LakeError, match="not grouped by"):
        write_split_parquet(UPath(tmp_path / "bad"), batches, ["symbol"], grouped=True)
