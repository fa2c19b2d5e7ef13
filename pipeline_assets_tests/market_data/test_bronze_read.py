"""Bronze reading of collector files: counts, typed payloads, rejects, and safe reads beside a live writer."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.market.bronze import (
    BRONZE_ORDERBOOK_SCHEMA,
    BRONZE_REJECTS_SCHEMA,
    BRONZE_SCHEMAS,
    BRONZE_TICKER_SCHEMA,
    BRONZE_TRADES_SCHEMA,
    CHANNELS,
    PayloadError,
    parse_payload,
    read_bronze_day,
    read_worker_day,
)
from pipeline_assets.lib.market.demo_sources import MARKET_TICKS_DDL, write_demo_worker_files
from pipeline_assets_tests.market_data.source_sql import remove_demo_anomalies

DAYS = [dt.date(2026, 2, 19), dt.date(2026, 2, 20)]
DAY = DAYS[0]
INSERT_TICK = (
    "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    files = write_demo_worker_files(tmp_path_factory.mktemp("workers"), DAYS, rows_per_day=600)
    # Tests here plant their own bad rows; the demo's own are read in test_bronze_assets.py.
    remove_demo_anomalies(files)
    return files


@pytest.fixture
def worker_copy(demo_files: list[Path], tmp_path: Path) -> Path:
    target = tmp_path / demo_files[0].name
    shutil.copyfile(demo_files[0], target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def insert_ticks(path: Path, rows: list[tuple[str, str, str, str, str, str]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(INSERT_TICK, rows)
    conn.close()


def count_day_rows(path: Path, day: dt.date) -> int:
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM market_ticks WHERE substr(event_ts_utc, 1, 10) = ?",
            (day.isoformat(),),
        ).fetchone()
    finally:
        conn.close()
    return n


def ids_by_table(tables: dict[str, pa.Table]) -> dict[str, list[int]]:
    return {name: table.column("source_id").to_pylist() for name, table in tables.items()}


def test_counts_per_channel_symbol_and_day_match_sqlite(demo_files: list[Path]) -> None:
    expected: collections.Counter = collections.Counter()
    for path in demo_files:
        conn = sqlite3.connect(path)
        for channel, exchange, symbol, day, n in conn.execute(
            "SELECT channel, exchange, symbol, substr(event_ts_utc, 1, 10), count(*) "
            "FROM market_ticks GROUP BY 1, 2, 3, 4"
        ):
            expected[(channel, exchange, symbol, day)] += n
        conn.close()

    got: collections.Counter = collections.Counter()
    for day in DAYS:
        tables = read_bronze_day(demo_files, day)
        assert tables["rejects"].num_rows == 0
        for channel in CHANNELS:
            table = tables[channel]
            for exchange, symbol, ts in zip(
                table.column("exchange_raw").to_pylist(),
                table.column("symbol_raw").to_pylist(),
                table.column("event_ts_utc").to_pylist(),
            ):
                got[(channel, exchange, symbol, ts.date().isoformat())] += 1
    assert got == expected


def test_tables_have_the_declared_schemas_with_descriptions(demo_files: list[Path]) -> None:
    tables = read_bronze_day(demo_files, DAY)
    assert set(tables) == {"orderbook", "trades", "ticker", "rejects"}
    for name, schema in BRONZE_SCHEMAS.items():
        assert tables[name].schema.equals(schema, check_metadata=True)
        for field in schema:
            assert field.metadata and field.metadata[b"description"], field.name
    # A parsed level always has both numbers, so the contract makes them NOT NULL.
    assert BRONZE_ORDERBOOK_SCHEMA.field("bids").type == pa.list_(
        pa.struct(
            [
                pa.field("price", pa.float64(), nullable=False),
                pa.field("size", pa.float64(), nullable=False),
            ]
        )
    )
    assert BRONZE_TRADES_SCHEMA.field("side").nullable
    assert BRONZE_TICKER_SCHEMA.field("event_ts_utc").type == pa.timestamp("us", tz="UTC")


def test_columns_are_normalized_and_parsed_from_the_payload(demo_files: list[Path]) -> None:
    tables = read_bronze_day(demo_files, DAY)
    trades = tables["trades"].to_pylist()
    assert {(r["exchange"], r["symbol"], r["base_asset"], r["quote_asset"]) for r in trades} == {
        ("binance", "BTC-USDT", "BTC", "USDT"),
        ("binance", "ETH-USDT", "ETH", "USDT"),
        ("coinbase", "BTC-USD", "BTC", "USD"),
        ("coinbase", "ETH-USD", "ETH", "USD"),
        ("kraken", "BTC-USDT", "BTC", "USDT"),
        ("kraken", "ETH-USDT", "ETH", "USDT"),
    }
    for row in trades:
        payload = json.loads(row["payload"])
        assert (row["trade_id"], row["price"], row["size"], row["side"]) == (
            payload["trade_id"],
            payload["price"],
            payload["size"],
            payload["side"],
        )
        assert row["ingestion_ts_utc"] > row["event_ts_utc"]
        assert row["event_ts_utc"].date() == DAY
    assert any(row["side"] is None for row in trades)
    for row in tables["orderbook"].to_pylist()[:50]:
        payload = json.loads(row["payload"])
        assert [[lvl["price"], lvl["size"]] for lvl in row["bids"]] == payload["bids"]
        assert [[lvl["price"], lvl["size"]] for lvl in row["asks"]] == payload["asks"]


def test_timestamps_keep_microseconds(worker_copy: Path) -> None:
    insert_ticks(
        worker_copy,
        [
            (
                "Binance",
                "BTCUSDT",
                "ticker",
                "2026-02-19T10:30:00.123456Z",
                "2026-02-19T10:30:00.200001Z",
                '{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 10}',
            )
        ],
    )
    ticker = read_worker_day(worker_copy, DAY)["ticker"].to_pylist()
    row = next(r for r in ticker if r["event_ts_utc"].microsecond == 123456 and r["bid"] == 1.0)
    assert row["event_ts_utc"] == dt.datetime(2026, 2, 19, 10, 30, 0, 123456, tzinfo=dt.UTC)
    assert row["ingestion_ts_utc"].microsecond == 200001


def test_day_boundaries_are_utc_midnight(worker_copy: Path) -> None:
    payload = '{"bid": 1, "ask": 2, "last": 1.5, "volume_24h": 10}'
    insert_ticks(
        worker_copy,
        [
            (
                "Binance",
                "BTCUSDT",
                "ticker",
                "2026-02-19T23:59:59.999999Z",
                "2026-02-20T00:00:00.010000Z",
                payload,
            ),
            (
                "Binance",
                "BTCUSDT",
                "ticker",
                "2026-02-20T00:00:00.000000Z",
                "2026-02-20T00:00:00.020000Z",
                payload,
            ),
        ],
    )
    last_of_19 = (
        read_worker_day(worker_copy, DAYS[0])["ticker"].column("event_ts_utc").to_pylist()[-1]
    )
    first_of_20 = (
        read_worker_day(worker_copy, DAYS[1])["ticker"].column("event_ts_utc").to_pylist()[0]
    )
    assert last_of_19.isoformat() == "2026-02-19T23:59:59.999999+00:00"
    assert first_of_20.isoformat() == "2026-02-20T00:00:00+00:00"


def test_a_day_without_data_gives_empty_tables(demo_files: list[Path]) -> None:
    tables = read_bronze_day(demo_files, dt.date(2026, 3, 1))
    assert {name: t.num_rows for name, t in tables.items()} == dict.fromkeys(BRONZE_SCHEMAS, 0)
    assert read_bronze_day([], DAY)["trades"].schema.equals(
        BRONZE_TRADES_SCHEMA, check_metadata=True
    )


def test_result_does_not_depend_on_file_order(demo_files: list[Path]) -> None:
    forward = read_bronze_day(demo_files, DAY)
    backward = read_bronze_day(list(reversed(demo_files)), DAY)
    for name in BRONZE_SCHEMAS:
        assert forward[name].equals(backward[name], check_metadata=True)
    keys = (
        forward["trades"]
        .select(["event_ts_utc", "exchange", "symbol", "source_file", "source_id"])
        .to_pylist()
    )
    assert keys == sorted(keys, key=lambda r: tuple(r.values()))


def test_repeated_file_names_are_refused(demo_files: list[Path], worker_copy: Path) -> None:
    with pytest.raises(ValueError, match="worker_01.db"):
        read_bronze_day([demo_files[0], worker_copy], DAY)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_read_beside_an_open_write_transaction(worker_copy: Path, journal_mode: str) -> None:
    setup = sqlite3.connect(worker_copy)
    assert setup.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    setup.close()
    committed = read_worker_day(worker_copy, DAY)

    writer = sqlite3.connect(worker_copy, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            INSERT_TICK,
            (
                "Binance",
                "BTCUSDT",
                "trades",
                "2026-02-19T12:00:00.000000Z",
                "2026-02-19T12:00:00.050000Z",
                '{"trade_id": "x1", "price": 65000.0, "size": 0.1, "side": "buy"}',
            ),
        )
        before = sha256(worker_copy)
        during = read_worker_day(worker_copy, DAY)
        assert sha256(worker_copy) == before
        assert ids_by_table(during) == ids_by_table(committed)
        # The reader holds no lock afterwards: the writer commits without waiting.
        writer.execute("COMMIT")
    finally:
        writer.close()
    after = read_worker_day(worker_copy, DAY)
    assert after["trades"].num_rows == committed["trades"].num_rows + 1


def test_reads_never_block_a_wal_writer(worker_copy: Path) -> None:
    errors: list[sqlite3.Error] = []
    commits = [0]
    stop = threading.Event()

    def collector() -> None:
        # 50 ms of patience: enough for a reader opening the WAL index, far less than one read
        # of the day, so a reader that held a lock across its read would still fail commits.
        conn = sqlite3.connect(worker_copy, isolation_level=None, timeout=0.05)
        try:
            i = 0
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    INSERT_TICK,
                    (
                        "coinbase",
                        "BTC-USD",
                        "trades",
                        f"2026-02-19T13:00:00.{i:06d}Z",
                        "2026-02-19T13:00:01.000000Z",
                        json.dumps(
                            {"trade_id": str(i), "price": 65000.0, "size": 0.1, "side": None}
                        ),
                    ),
                )
                conn.execute("COMMIT")
                i += 1
                commits[0] = i
        except sqlite3.Error as exc:  # "database is locked", reported to the test thread
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        counts = [
            read_worker_day(worker_copy, DAY, page_rows=50)["trades"].num_rows for _ in range(5)
        ]
    finally:
        stop.set()
        thread.join()
    # Any lock held by the reader for longer than a moment would have failed a commit.
    assert errors == []
    assert commits[0] > 0
    assert counts == sorted(counts)


def test_garbage_and_missing_price_are_rejected_with_reasons(worker_copy: Path) -> None:
    ts, ing = "2026-02-19T08:00:00.000001Z", "2026-02-19T08:00:00.100000Z"
    bad = {
        "not json {": ("trades", "BTCUSDT", ts, "payload: expected valid JSON"),
        '{"trade_id": "t1", "size": 0.5, "side": "buy"}': (
            "trades",
            "BTCUSDT",
            ts,
            "price: missing (expected a number)",
        ),
        '{"trade_id": "t2", "price": "abc", "size": 1, "side": "buy"}': (
            "trades",
            "BTCUSDT",
            ts,
            "price: expected a number",
        ),
        '{"trade_id": "t3", "price": NaN, "size": 1, "side": "buy"}': (
            "trades",
            "BTCUSDT",
            ts,
            "payload: expected valid JSON",
        ),
        '{"trade_id": "t4", "price": 1, "size": 1, "side": "BUY"}': (
            "trades",
            "BTCUSDT",
            ts,
            "side: expected 'buy', 'sell' or null",
        ),
        "[1, 2]": ("ticker", "BTCUSDT", ts, "payload: expected a JSON object"),
        '{"bid": 1, "ask": 2, "last": 3}': ("ticker", "BTCUSDT", ts, "volume_24h: missing"),
        '{"bids": [[1, 2]], "asks": [[3]]}': (
            "orderbook",
            "BTCUSDT",
            ts,
            "asks[0]: expected [price, size]",
        ),
        '{"bids": [[1, 2]], "asks": [[3, 4]], "x": 1}': (
            "funding",
            "BTCUSDT",
            ts,
            "channel: expected one of",
        ),
        '{"bid": 1, "ask": 2, "last": 3, "volume_24h": 4}': (
            "ticker",
            "ETH-PERP",
            ts,
            "symbol: exchange 'Binance', symbol 'ETH-PERP'",
        ),
        '{"bid": 1, "ask": 2, "last": 3, "volume_24h": 5}': (
            "ticker",
            "BTCUSDT",
            "2026-02-19 08:00:00Z",
            "timestamp_not_iso8601: event_ts_utc: expected UTC ISO-8601",
        ),
        "[" * 100_000: ("orderbook", "BTCUSDT", ts, "payload: expected valid JSON"),
    }
    insert_ticks(
        worker_copy,
        [("Binance", sym, ch, t, ing, payload) for payload, (ch, sym, t, _) in bad.items()],
    )

    tables = read_worker_day(worker_copy, DAY)
    rejects = {row["payload"]: row for row in tables["rejects"].to_pylist()}
    assert set(rejects) == set(bad)
    for payload, (channel, _, _, reason) in bad.items():
        assert rejects[payload]["reason"].startswith(reason), rejects[payload]["reason"]
        assert rejects[payload]["channel"] == channel
        assert rejects[payload]["source_file"] == worker_copy.name
    assert sum(t.num_rows for t in tables.values()) == count_day_rows(worker_copy, DAY)


def test_numeric_text_and_integer_ids_are_accepted() -> None:
    parsed = parse_payload("trades", '{"trade_id": 42, "price": "65000.50", "size": "0.001"}')
    assert parsed == {"trade_id": "42", "price": 65000.5, "size": 0.001, "side": None}


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["1.5", "-2", "1e3", "nan", "Infinity", "1_0", " 1"]),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.sampled_from(["65000.5", "-2", "1e3", ".5", "1."]),
)
_levels = st.lists(
    st.lists(st.one_of(_numbers, _numbers, _json_scalars), min_size=2, max_size=3), max_size=4
)
_CHANNEL_FIELDS = {
    "orderbook": {"bids": _levels, "asks": _levels},
    "trades": {
        "trade_id": st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**12)),
        "price": _numbers,
        "size": _numbers,
        "side": st.sampled_from(["buy", "sell", None]),
    },
    "ticker": dict.fromkeys(("bid", "ask", "last", "volume_24h"), _numbers),
}


def _payloads_for(channel: str) -> st.SearchStrategy[str]:
    """Text for one channel: mostly well-formed payloads, some with wrong or missing fields, and junk."""
    fields = {
        key: st.one_of(good, good, good, _json_values)
        for key, good in _CHANNEL_FIELDS[channel].items()
    }
    complete = st.fixed_dictionaries(fields)
    partial = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(complete, complete, partial, _json_values).map(json.dumps) | st.text(
        max_size=40
    )


_channel_payloads = st.sampled_from(CHANNELS).flatmap(
    lambda ch: _payloads_for(ch).map(lambda p: (ch, p))
)


def _parses(channel: str, payload: str) -> bool:
    try:
        parse_payload(channel, payload)
    except PayloadError:
        return False
    return True


@settings(max_examples=300)
@given(pair=_channel_payloads)
def test_parse_payload_raises_only_payload_errors_naming_a_field(pair: tuple[str, str]) -> None:
    channel, payload = pair
    try:
        parse_payload(channel, payload)
    except PayloadError as exc:
        field, _, detail = str(exc).partition(": ")
        assert field and "expected" in detail


def _tiny_worker_file(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "worker_hyp.db"
    conn = sqlite3.connect(path)
    conn.execute(MARKET_TICKS_DDL)
    conn.executemany(
        INSERT_TICK,
        [
            (
                "Binance",
                "BTCUSDT",
                channel,
                "2026-02-19T01:00:00.000000Z",
                "2026-02-19T01:00:00.100000Z",
                payload,
            )
            for channel, payload in rows
        ],
    )
    conn.commit()
    conn.close()
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_channel_payloads, min_size=1, max_size=20))
def test_any_payload_is_parsed_or_rejected_never_lost(rows: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tables = read_worker_day(_tiny_worker_file(Path(folder), rows), DAY)
    ids = sorted(i for table in tables.values() for i in table.column("source_id").to_pylist())
    assert ids == list(range(1, len(rows) + 1))
    parsed = sum(tables[c].num_rows for c in CHANNELS)
    assert parsed + tables["rejects"].num_rows == len(rows)
    assert parsed == sum(_parses(channel, payload) for channel, payload in rows)
    assert tables["rejects"].schema.equals(BRONZE_REJECTS_SCHEMA, check_metadata=True)
