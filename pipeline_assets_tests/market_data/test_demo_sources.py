"""Demo collector files: the design's schema, realistic content, determinism, idempotency, atomic writes."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest

from pipeline_assets.lib.market import demo_sources
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files

DAYS = [dt.date(2026, 2, 19), dt.date(2026, 2, 20)]
ROWS = 600

# PRAGMA table_info rows (cid, name, type, notnull, dflt_value, pk) of the design's schema.
EXPECTED_COLUMNS = {
    "market_ticks": [
        (0, "id", "INTEGER", 0, None, 1),
        (1, "exchange", "TEXT", 1, None, 0),
        (2, "symbol", "TEXT", 1, None, 0),
        (3, "channel", "TEXT", 1, None, 0),
        (4, "event_ts_utc", "TEXT", 1, None, 0),
        (5, "ingestion_ts_utc", "TEXT", 1, None, 0),
        (6, "payload", "TEXT", 1, None, 0),
    ],
    "connection_events": [
        (0, "id", "INTEGER", 0, None, 1),
        (1, "exchange", "TEXT", 1, None, 0),
        (2, "worker_id", "TEXT", 1, None, 0),
        (3, "event_type", "TEXT", 1, None, 0),
        (4, "event_ts_utc", "TEXT", 1, None, 0),
        (5, "details", "TEXT", 0, None, 0),
    ],
}
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def query(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def dump(paths: list[Path]) -> list[list[tuple]]:
    return [
        query(p, "SELECT * FROM market_ticks ORDER BY id")
        + query(p, "SELECT * FROM connection_events ORDER BY id")
        for p in paths
    ]


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_demo_worker_files(tmp_path_factory.mktemp("workers"), DAYS, rows_per_day=ROWS)


def test_one_file_per_worker(demo_files: list[Path]) -> None:
    assert [p.name for p in demo_files] == ["worker_01.db", "worker_02.db"]
    assert sorted(p.name for p in demo_files[0].parent.iterdir() if p.suffix == ".db") == [
        "worker_01.db",
        "worker_02.db",
    ]


def test_schema_is_exactly_the_design_schema(demo_files: list[Path]) -> None:
    for path in demo_files:
        tables = {
            name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert tables == set(EXPECTED_COLUMNS)
        for table, columns in EXPECTED_COLUMNS.items():
            assert query(path, f"PRAGMA table_info({table})") == columns


def test_timestamps_are_utc_iso_text_with_microseconds_and_z(demo_files: list[Path]) -> None:
    for path in demo_files:
        for (ts,) in query(
            path,
            "SELECT event_ts_utc FROM market_ticks UNION ALL SELECT ingestion_ts_utc FROM market_ticks "
            "UNION ALL SELECT event_ts_utc FROM connection_events",
        ):
            assert TS_RE.fullmatch(ts), ts


def test_ingestion_is_slightly_after_the_event(demo_files: list[Path]) -> None:
    for path in demo_files:
        for event, ingestion in query(
            path, "SELECT event_ts_utc, ingestion_ts_utc FROM market_ticks"
        ):
            lag = dt.datetime.fromisoformat(ingestion) - dt.datetime.fromisoformat(event)
            assert dt.timedelta(0) < lag < dt.timedelta(seconds=5)


def test_each_day_has_both_exchanges_all_channels_and_modest_volume(demo_files: list[Path]) -> None:
    for path in demo_files:
        for day in DAYS:
            rows = query(
                path,
                "SELECT exchange, symbol, channel, count(*) FROM market_ticks "
                f"WHERE substr(event_ts_utc, 1, 10) = '{day.isoformat()}' GROUP BY 1, 2, 3",
            )
            assert {(ex, ch) for ex, _, ch, _ in rows} == {
                (ex, ch)
                for ex in ("Binance", "coinbase")
                for ch in ("orderbook", "trades", "ticker")
            }
            assert 0.9 * ROWS <= sum(n for *_, n in rows) <= ROWS * 1.05
    symbols = {
        s for p in demo_files for (s,) in query(p, "SELECT DISTINCT symbol FROM market_ticks")
    }
    assert symbols == {"BTCUSDT", "ETHUSDT", "BTC-USD", "ETH-USD"}


def test_payloads_have_the_channel_shapes(demo_files: list[Path]) -> None:
    sides = set()
    for path in demo_files:
        for channel, payload in query(path, "SELECT channel, payload FROM market_ticks"):
            obj = json.loads(payload)
            if channel == "orderbook":
                bids, asks = obj["bids"], obj["asks"]
                assert 5 <= len(bids) <= 10 and 5 <= len(asks) <= 10
                assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
                assert [p for p, _ in asks] == sorted(p for p, _ in asks)
                assert bids[0][0] < asks[0][0]
            elif channel == "trades":
                assert set(obj) == {"trade_id", "price", "size", "side"}
                assert isinstance(obj["trade_id"], str) and obj["price"] > 0 and obj["size"] > 0
                sides.add(obj["side"])
            else:
                assert set(obj) == {"bid", "ask", "last", "volume_24h"}
                assert obj["bid"] < obj["ask"]
    assert sides == {"buy", "sell", None}


def test_prices_are_realistic_levels(demo_files: list[Path]) -> None:
    for path in demo_files:
        for symbol, payload in query(
            path, "SELECT symbol, payload FROM market_ticks WHERE channel = 'ticker'"
        ):
            low, high = (20_000, 200_000) if symbol.startswith("BTC") else (1_000, 10_000)
            assert low < json.loads(payload)["last"] < high


def test_disconnect_is_followed_by_a_reconnect_each_day(demo_files: list[Path]) -> None:
    for path in demo_files:
        for day in DAYS:
            events = query(
                path,
                "SELECT exchange, event_type, event_ts_utc FROM connection_events "
                f"WHERE substr(event_ts_utc, 1, 10) = '{day.isoformat()}' ORDER BY event_ts_utc",
            )
            for exchange in ("Binance", "coinbase"):
                types = [t for ex, t, _ in events if ex == exchange]
                assert "disconnected" in types
                assert "connected" in types[types.index("disconnected") :]


def test_no_ticks_arrive_while_disconnected(demo_files: list[Path]) -> None:
    for path in demo_files:
        events = query(
            path, "SELECT exchange, event_type, event_ts_utc FROM connection_events ORDER BY id"
        )
        downs = [(ex, ts) for ex, t, ts in events if t == "disconnected"]
        for exchange, down in downs:
            up = min(
                ts for ex, t, ts in events if ex == exchange and t == "connected" and ts > down
            )
            (inside,) = query(
                path,
                "SELECT count(*) FROM market_ticks WHERE exchange = "
                f"'{exchange}' AND event_ts_utc > '{down}' AND event_ts_utc < '{up}'",
            )[0]
            assert inside == 0


def test_same_arguments_give_the_same_rows(tmp_path: Path) -> None:
    first = write_demo_worker_files(tmp_path / "a", DAYS, rows_per_day=200)
    second = write_demo_worker_files(tmp_path / "b", DAYS, rows_per_day=200)
    assert dump(first) == dump(second)
    other_seed = write_demo_worker_files(tmp_path / "c", DAYS, rows_per_day=200, seed=8)
    assert dump(other_seed) != dump(first)


def test_second_call_adds_nothing(tmp_path: Path) -> None:
    paths = write_demo_worker_files(tmp_path, DAYS, rows_per_day=200)
    before = dump(paths)
    assert write_demo_worker_files(tmp_path, DAYS, rows_per_day=200) == paths
    assert write_demo_worker_files(tmp_path, DAYS[:1], rows_per_day=999) == paths
    assert dump(paths) == before


def test_adding_a_day_later_equals_writing_both_at_once(tmp_path: Path) -> None:
    write_demo_worker_files(tmp_path / "stepwise", DAYS[:1], rows_per_day=200)
    stepwise = write_demo_worker_files(tmp_path / "stepwise", DAYS, rows_per_day=200)
    at_once = write_demo_worker_files(tmp_path / "at_once", DAYS, rows_per_day=200)
    assert dump(stepwise) == dump(at_once)


def test_prices_continue_across_midnight(tmp_path: Path) -> None:
    (path,) = write_demo_worker_files(tmp_path, DAYS, rows_per_day=3000, workers=1)
    rows = query(
        path,
        "SELECT event_ts_utc, payload FROM market_ticks WHERE symbol = 'BTCUSDT' AND channel = 'ticker' "
        "ORDER BY event_ts_utc",
    )
    before = [json.loads(p)["last"] for ts, p in rows if ts < "2026-02-20"][-1]
    after = next(json.loads(p)["last"] for ts, p in rows if ts >= "2026-02-20")
    assert abs(after / before - 1) < 0.01


def test_a_failed_write_leaves_no_worker_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(demo_sources, "_insert_day", explode)
    with pytest.raises(RuntimeError):
        write_demo_worker_files(tmp_path, DAYS, rows_per_day=200)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_extension_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_demo_worker_files(tmp_path, DAYS[:1], rows_per_day=200)
    before = dump(paths)
    real_insert = demo_sources._insert_day

    def insert_then_fail(*args: object, **kwargs: object) -> None:
        real_insert(*args, **kwargs)
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(demo_sources, "_insert_day", insert_then_fail)
    with pytest.raises(RuntimeError):
        write_demo_worker_files(tmp_path, DAYS, rows_per_day=200)
    assert dump(paths) == before
