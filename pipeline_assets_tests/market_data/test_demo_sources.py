"""Demo collector files: the design's schema, realistic content (three exchange spellings, disconnects,
a quiet gap, bad rows, copies recorded by two workers), determinism, idempotency, atomic writes."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import re
import sqlite3
from pathlib import Path

import pytest

from pipeline_assets.lib.market import demo_sources
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.source_sql import GOOD_ROWS, TS_GLOB

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
EXCHANGES = ("Binance", "coinbase", "KRAKEN")


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
        bad = []
        for (ts,) in query(
            path,
            "SELECT event_ts_utc FROM market_ticks UNION ALL SELECT ingestion_ts_utc FROM market_ticks "
            "UNION ALL SELECT event_ts_utc FROM connection_events",
        ):
            if not TS_RE.fullmatch(ts):
                bad.append(ts)
        # One bad event time a day, by design: local time without the T and the Z.
        assert len(bad) == len(DAYS)
        for ts in bad:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}", ts), ts


def test_ingestion_is_slightly_after_the_event(demo_files: list[Path]) -> None:
    for path in demo_files:
        for event, ingestion in query(
            path,
            f"SELECT event_ts_utc, ingestion_ts_utc FROM market_ticks WHERE event_ts_utc GLOB '{TS_GLOB}'",
        ):
            lag = dt.datetime.fromisoformat(ingestion) - dt.datetime.fromisoformat(event)
            assert dt.timedelta(0) < lag < dt.timedelta(seconds=5)


def test_each_day_has_three_exchanges_all_channels_and_modest_volume(
    demo_files: list[Path],
) -> None:
    for path in demo_files:
        for day in DAYS:
            rows = query(
                path,
                "SELECT exchange, symbol, channel, count(*) FROM market_ticks "
                f"WHERE substr(event_ts_utc, 1, 10) = '{day.isoformat()}' AND {GOOD_ROWS} "
                "GROUP BY 1, 2, 3",
            )
            assert {(ex, ch) for ex, _, ch, _ in rows} == {
                (ex, ch) for ex in EXCHANGES for ch in ("orderbook", "trades", "ticker")
            }
            assert 0.9 * ROWS <= sum(n for *_, n in rows) <= ROWS * 1.05
    symbols = {
        s
        for p in demo_files
        for (s,) in query(p, f"SELECT DISTINCT symbol FROM market_ticks WHERE {GOOD_ROWS}")
    }
    assert symbols == {"BTCUSDT", "ETHUSDT", "BTC-USD", "ETH-USD", "btc/usdt", "eth/usdt"}


def test_payloads_have_the_channel_shapes(demo_files: list[Path]) -> None:
    sides = set()
    for path in demo_files:
        for channel, payload in query(
            path, f"SELECT channel, payload FROM market_ticks WHERE {GOOD_ROWS}"
        ):
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
            path,
            f"SELECT symbol, payload FROM market_ticks WHERE channel = 'ticker' AND {GOOD_ROWS}",
        ):
            low, high = (20_000, 200_000) if symbol.upper().startswith("BTC") else (1_000, 10_000)
            assert low < json.loads(payload)["last"] < high


def test_disconnect_is_followed_by_a_reconnect_each_day(demo_files: list[Path]) -> None:
    for path in demo_files:
        for day in DAYS:
            events = query(
                path,
                "SELECT exchange, event_type, event_ts_utc FROM connection_events "
                f"WHERE substr(event_ts_utc, 1, 10) = '{day.isoformat()}' ORDER BY event_ts_utc",
            )
            for exchange in EXCHANGES:
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


def test_one_stream_falls_quiet_for_half_an_hour_without_a_disconnect(
    demo_files: list[Path],
) -> None:
    # Each worker's first asset on coinbase: BTC-USD in worker_01, ETH-USD in worker_02.
    for path, symbol in zip(demo_files, ("BTC-USD", "ETH-USD")):
        for day in DAYS:
            times = [
                dt.datetime.fromisoformat(ts)
                for (ts,) in query(
                    path,
                    "SELECT event_ts_utc FROM market_ticks WHERE exchange = 'coinbase' "
                    f"AND symbol = '{symbol}' AND substr(event_ts_utc, 1, 10) = '{day.isoformat()}' "
                    f"AND {GOOD_ROWS} ORDER BY event_ts_utc",
                )
            ]
            silence, start = max((b - a, a) for a, b in itertools.pairwise(times))
            assert silence >= dt.timedelta(minutes=30)
            events = query(
                path,
                "SELECT event_type, event_ts_utc FROM connection_events WHERE exchange = 'coinbase'",
            )
            end = start + silence
            assert not [e for e in events if start < dt.datetime.fromisoformat(e[1]) < end]


def test_each_day_has_one_bad_row_of_each_kind(demo_files: list[Path]) -> None:
    kinds = {
        "payload not JSON": "NOT json_valid(payload)",
        "ticker without last": "channel = 'ticker' "
        "AND CASE WHEN json_valid(payload) THEN json_type(payload, '$.last') IS NULL END",
        "unknown channel": "channel NOT IN ('orderbook', 'trades', 'ticker')",
        "unreadable timestamp": f"event_ts_utc NOT GLOB '{TS_GLOB}'",
        "unreadable symbol": "symbol LIKE '%-PERP'",
    }
    for path in demo_files:
        for day in DAYS:
            on_day = f"substr(event_ts_utc, 1, 10) = '{day.isoformat()}'"
            for kind, where in kinds.items():
                (n,) = query(path, f"SELECT count(*) FROM market_ticks WHERE {on_day} AND {where}")[
                    0
                ]
                assert n == 1, (path.name, day, kind)
            (bad,) = query(
                path, f"SELECT count(*) FROM market_ticks WHERE {on_day} AND NOT ({GOOD_ROWS})"
            )[0]
            assert bad == len(kinds)


def test_worker_02_recorded_a_few_of_worker_01s_ticks_again(demo_files: list[Path]) -> None:
    conn = sqlite3.connect(demo_files[1])
    try:
        conn.execute("ATTACH DATABASE ? AS w1", (str(demo_files[0]),))
        copies = conn.execute(
            "SELECT substr(a.event_ts_utc, 1, 10), a.exchange, a.symbol, "
            "a.ingestion_ts_utc, b.ingestion_ts_utc FROM w1.market_ticks a JOIN main.market_ticks b "
            "USING (exchange, symbol, channel, event_ts_utc, payload)"
        ).fetchall()
    finally:
        conn.close()
    assert sorted(collections.Counter(c[0] for c in copies).items()) == [
        (day.isoformat(), 6) for day in DAYS
    ]
    assert {(c[1], c[2]) for c in copies} == {("Binance", "BTCUSDT")}
    assert all(first < second for *_, first, second in copies)


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
        f"AND {GOOD_ROWS} ORDER BY event_ts_utc",
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
