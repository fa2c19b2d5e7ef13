"""Demo collector files: worker SQLite databases shaped exactly like the collectors' output.

`make demo` and the tests need source data without live exchange connections. Each worker file
holds the design's two tables (`market_ticks`, `connection_events`) and, for each requested UTC
day, what a collector would have stored:

- three exchanges spelled as the collectors spell them ('Binance' with 'BTCUSDT', 'coinbase'
  with 'BTC-USD', 'KRAKEN' with 'btc/usdt'), the three channels, ingestion times a little after
  the exchange event times;
- a disconnect per exchange with its reconnect and resubscribe (and no ticks from that exchange
  in between);
- a quiet gap: the worker's first asset on coinbase falls silent for 30 to 60 minutes while the
  connection stays up (no connection event), as a stalled feed does;
- five rows bronze cannot land: a payload cut off mid-JSON, a ticker without `last`, an unknown
  channel ('funding'), an event time in local format ('2026-02-19 10:30:00.123456'), and a
  perpetual-future symbol ('BTC-PERP');
- in worker_02 only, six exact copies of ticks worker_01 recorded on Binance (same exchange,
  symbol, event time and payload, a later ingestion time), as two workers briefly subscribed to
  one stream during a failover.

Prices follow one random walk per asset that every exchange quotes (Coinbase's USD a hair below
Binance's USDT, Kraken's a hair above). Day opens follow a mean-reverting daily series from a fixed epoch, and each day
is a bridge from its open to the next day's open, so prices are continuous across midnight
whichever days are generated and in whatever calls.

Generation is deterministic (a seeded `random.Random` per worker, asset and day; no wall clock)
and idempotent (a day already in a worker file is never written again). A new file is written
under a temporary name and renamed into place, so a killed run leaves no half-written worker file;
days added to an existing file go in one transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The collector schema, verbatim from the design ("Collector source schema").
MARKET_TICKS_DDL = """CREATE TABLE market_ticks (
  id INTEGER PRIMARY KEY,
  exchange TEXT NOT NULL,
  symbol TEXT NOT NULL,
  channel TEXT NOT NULL,
  event_ts_utc TEXT NOT NULL,
  ingestion_ts_utc TEXT NOT NULL,
  payload TEXT NOT NULL
)"""
CONNECTION_EVENTS_DDL = """CREATE TABLE connection_events (
  id INTEGER PRIMARY KEY,
  exchange TEXT NOT NULL,
  worker_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  event_ts_utc TEXT NOT NULL,
  details TEXT
)"""

DEFAULT_ROWS_PER_DAY = 3000
CHANNEL_SHARES = (("trades", 0.5), ("orderbook", 0.3), ("ticker", 0.2))

US_PER_DAY = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Day opens are a mean-reverting daily series counted from this day; earlier days are refused.
_PRICE_EPOCH = dt.date(2015, 1, 1)
_DAILY_VOL = 0.03
_MEAN_REVERSION = 0.02
_PATH_STEP_US = 10_000_000  # the intraday random walk is sampled every 10 seconds


@dataclass(frozen=True)
class _Asset:
    code: str
    base_price: float  # the level the daily series reverts to
    price_decimals: int  # tick size 10**-price_decimals
    size_decimals: int


# Assets handed out to workers in this order; two workers collect BTC and ETH.
_ASSETS = (
    _Asset("BTC", 65_000.0, 2, 5),
    _Asset("ETH", 3_400.0, 2, 4),
    _Asset("SOL", 150.0, 2, 2),
    _Asset("XRP", 0.60, 4, 1),
    _Asset("DOGE", 0.15, 5, 0),
    _Asset("ADA", 0.45, 4, 1),
    _Asset("LTC", 80.0, 2, 3),
    _Asset("LINK", 15.0, 3, 2),
)


@dataclass(frozen=True)
class _Exchange:
    name: str  # as the collector spells it
    ws_url: str
    quote: str
    basis: float  # relative offset of this venue's mid from the common path
    half_spread_ticks: tuple[int, int]
    latency_ms: tuple[float, float]  # lognormal mu, sigma of the ingestion delay in ms
    numeric_trade_ids: bool
    symbol_style: str  # 'concatenated' BTCUSDT, 'dash' BTC-USD, 'slash_lower' btc/usdt

    def symbol(self, asset: str) -> str:
        if self.symbol_style == "concatenated":
            return f"{asset}{self.quote}"
        if self.symbol_style == "slash_lower":
            return f"{asset}/{self.quote}".lower()
        return f"{asset}-{self.quote}"


_EXCHANGES = (
    _Exchange(
        name="Binance",
        ws_url="wss://stream.binance.com:9443/stream",
        quote="USDT",
        basis=0.0,
        half_spread_ticks=(1, 2),
        latency_ms=(3.0, 0.6),  # median about 20 ms
        numeric_trade_ids=True,
        symbol_style="concatenated",
    ),
    _Exchange(
        name="coinbase",
        ws_url="wss://ws-feed.exchange.coinbase.com",
        quote="USD",
        basis=-0.0002,
        half_spread_ticks=(1, 4),
        latency_ms=(3.8, 0.5),  # median about 45 ms
        numeric_trade_ids=False,
        symbol_style="dash",
    ),
    _Exchange(
        name="KRAKEN",
        ws_url="wss://ws.kraken.com/v2",
        quote="USDT",
        basis=0.0001,
        half_spread_ticks=(1, 3),
        latency_ms=(3.5, 0.5),  # median about 33 ms
        numeric_trade_ids=True,
        symbol_style="slash_lower",
    ),
)
# The stream (a worker's first asset on this exchange) that falls silent once a day, connected.
QUIET_STREAM_EXCHANGE = 1
# 30 to 60 minutes: far longer than a 60 s staleness limit, and than the demo streams' usual
# spacing of a few minutes, so it stands out at demo volumes too.
QUIET_GAP_US = (1_800_000_000, 3_600_000_000)
DUPLICATES_PER_DAY = 6


def worker_file_name(index: int) -> str:
    """The file name of worker `index` (1-based): `worker_01.db`."""
    return f"worker_{index:02d}.db"


def write_demo_worker_files(
    workers_dir: Path,
    days: Sequence[dt.date],
    *,
    seed: int = 7,
    workers: int = 2,
    rows_per_day: int = DEFAULT_ROWS_PER_DAY,
) -> list[Path]:
    """Write (or complete) one collector SQLite file per worker holding the given UTC days.

    Workers share out the assets round-robin (two workers: worker_01 collects BTC, worker_02
    ETH), each on the three exchanges. `rows_per_day` is the number of good `market_ticks` rows
    per worker and day (give or take rounding), half trades, 30% order book snapshots, 20%
    tickers; none fall inside an exchange's disconnect gap or the quiet gap. Each worker and day
    also gets the five bad rows, and worker_02 the six copies of worker_01's ticks (see the
    module docstring). Returns the worker files, in worker order. Days a
    file already holds are left as they are, so calling twice adds nothing.
    """
    if workers < 1 or workers > len(_ASSETS):
        raise ValueError(f"workers={workers}: expected between 1 and {len(_ASSETS)}")
    if rows_per_day < 0:
        raise ValueError(f"rows_per_day={rows_per_day}: expected a number >= 0")
    workers_dir = Path(workers_dir)
    workers_dir.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(days))
    assets = _ASSETS[: max(2, workers)]
    paths = []
    for index in range(1, workers + 1):
        path = workers_dir / worker_file_name(index)
        worker_assets = assets[index - 1 :: workers]
        spec = _WorkerSpec(index, tuple(worker_assets), tuple(assets), workers)
        if path.exists():
            _extend_worker_file(path, spec, wanted, seed, rows_per_day)
        else:
            _create_worker_file(path, spec, wanted, seed, rows_per_day)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class _WorkerSpec:
    index: int  # 1-based
    assets: tuple[_Asset, ...]  # the assets this worker collects
    all_assets: tuple[_Asset, ...]  # the assets of all workers (worker_02 copies worker_01's)
    workers: int


def _create_worker_file(
    path: Path, spec: _WorkerSpec, days: list[dt.date], seed: int, rows: int
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    _remove_sqlite_files(tmp)  # left behind by a killed run
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            # Collectors run in WAL mode so that readers never block them; the demo files do too.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN")
            conn.execute(MARKET_TICKS_DDL)
            conn.execute(CONNECTION_EVENTS_DDL)
            for day in days:
                _insert_day(conn, spec, day, seed, rows)
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection checkpoints and removes the -wal and -shm files
        os.replace(tmp, path)
    finally:
        _remove_sqlite_files(tmp)


def _extend_worker_file(
    path: Path, spec: _WorkerSpec, days: list[dt.date], seed: int, rows: int
) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if not {"market_ticks", "connection_events"} <= tables:
            raise ValueError(
                f"{path}: expected a collector file with tables market_ticks and "
                f"connection_events, found {sorted(tables)}"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for day in days:
                if not _holds_day(conn, day):
                    _insert_day(conn, spec, day, seed, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def _holds_day(conn: sqlite3.Connection, day: dt.date) -> bool:
    lower, upper = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
    for table in ("market_ticks", "connection_events"):
        row = conn.execute(
            f"SELECT 1 FROM {table} WHERE event_ts_utc >= ? AND event_ts_utc < ? LIMIT 1",
            (lower, upper),
        ).fetchone()
        if row is not None:
            return True
    return False


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def format_ts(us_since_epoch: int) -> str:
    """UTC ISO-8601 text with microseconds and a Z, as the collectors write it."""
    moment = _EPOCH + dt.timedelta(microseconds=us_since_epoch)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day_start_us(day: dt.date) -> int:
    return (day - _EPOCH.date()).days * US_PER_DAY


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in (seed, *parts)))


@functools.lru_cache(maxsize=64)
def _daily_log_series(seed: int, code: str, base_price: float, n_days: int) -> tuple[float, ...]:
    rng = _rng(seed, "daily", code)
    anchor, x, series = math.log(base_price), 0.0, []
    for _ in range(n_days):
        series.append(anchor + x)
        x = x * (1.0 - _MEAN_REVERSION) + rng.gauss(0.0, _DAILY_VOL)
    return tuple(series)


def _day_open_log_price(seed: int, asset: _Asset, day: dt.date) -> float:
    """Log open price of a day: a mean-reverting daily series that starts at `_PRICE_EPOCH`."""
    index = (day - _PRICE_EPOCH).days
    if index < 0:
        raise ValueError(f"day {day}: demo prices start on {_PRICE_EPOCH}")
    # Whole years at a time, so that a run over many days reuses one cached series.
    n_days = (index // 366 + 1) * 366 + 1
    return _daily_log_series(seed, asset.code, asset.base_price, n_days)[index]


def _intraday_path(
    seed: int, asset: _Asset, day: dt.date, open_log: float, close_log: float
) -> list[float]:
    """Mid prices every 10 s over the day: a Brownian bridge from this open to the next open."""
    rng = _rng(seed, "path", asset.code, day.isoformat())
    steps = US_PER_DAY // _PATH_STEP_US
    step_vol = _DAILY_VOL / math.sqrt(steps)
    walk = [0.0]
    for _ in range(steps):
        walk.append(walk[-1] + rng.gauss(0.0, step_vol))
    drift = close_log - open_log - walk[-1]
    return [math.exp(open_log + w + drift * i / steps) for i, w in enumerate(walk)]


def _disconnect_gap(
    seed: int, worker_id: str, exchange: _Exchange, day: dt.date
) -> tuple[int, int]:
    """The (down, up) offsets in µs of the day's disconnect of one worker's exchange connection."""
    rng = _rng(seed, "connection", worker_id, exchange.name, day.isoformat())
    down = rng.randrange(US_PER_DAY // 24, US_PER_DAY - US_PER_DAY // 24)
    return down, down + rng.randrange(3_000_000, 90_000_000)


def _quiet_gap(
    seed: int, worker_id: str, disconnect: tuple[int, int], day: dt.date
) -> tuple[int, int]:
    """A silence of 30 to 60 minutes on one stream, in the half of the day away from the disconnect."""
    rng = _rng(seed, "quiet", worker_id, day.isoformat())
    length = rng.randrange(QUIET_GAP_US[0], QUIET_GAP_US[1])
    half = US_PER_DAY // 2
    lower = half if disconnect[0] < half else 0
    start = lower + rng.randrange(US_PER_DAY // 48, half - US_PER_DAY // 48 - length)
    return start, start + length


def _worker_streams(
    seed: int, worker_index: int, assets: Sequence[_Asset], day: dt.date, rows_per_day: int
) -> tuple[dict[str, tuple[int, int]], list[tuple[int, int, tuple[str, str, str, str, str, str]]]]:
    """One worker's day of ticks: its disconnect gap per exchange, and (ingest µs, exchange order,
    row) for every tick of its (asset, exchange) streams."""
    worker_id = f"worker_{worker_index:02d}"
    gaps = {ex.name: _disconnect_gap(seed, worker_id, ex, day) for ex in _EXCHANGES}
    quiet_exchange = _EXCHANGES[QUIET_STREAM_EXCHANGE]
    quiet = _quiet_gap(seed, worker_id, gaps[quiet_exchange.name], day)
    ticks: list[tuple[int, int, tuple[str, str, str, str, str, str]]] = []
    per_stream = rows_per_day / (len(assets) * len(_EXCHANGES)) if assets else 0
    for asset_order, asset in enumerate(assets):
        path = _intraday_path(
            seed,
            asset,
            day,
            _day_open_log_price(seed, asset, day),
            _day_open_log_price(seed, asset, day + dt.timedelta(days=1)),
        )
        for ex_order, exchange in enumerate(_EXCHANGES):
            stream_gaps = [gaps[exchange.name]]
            if asset_order == 0 and exchange is quiet_exchange:
                stream_gaps.append(quiet)
            stream_rows = _stream_ticks(
                seed, worker_id, asset, exchange, day, path, stream_gaps, per_stream
            )
            ticks.extend((ingest_us, ex_order, row) for ingest_us, row in stream_rows)
    return gaps, ticks


def _connection_events(
    seed: int,
    worker_id: str,
    assets: Sequence[_Asset],
    day: dt.date,
    gaps: dict[str, tuple[int, int]],
) -> list[tuple[int, int, tuple[str, str, str, str, str | None]]]:
    day_us = _day_start_us(day)
    events: list[tuple[int, int, tuple[str, str, str, str, str | None]]] = []
    for ex_order, exchange in enumerate(_EXCHANGES):
        # Continues the rng that drew the gap, so the events are those of the original demo.
        rng = _rng(seed, "connection", worker_id, exchange.name, day.isoformat())
        rng.randrange(US_PER_DAY // 24, US_PER_DAY - US_PER_DAY // 24)
        rng.randrange(3_000_000, 90_000_000)
        down, up = gaps[exchange.name]
        symbols = [exchange.symbol(a.code) for a in assets]
        timeline: list[tuple[int, str, dict | None]] = []
        if rng.random() < 0.5:
            timeline.append(
                (
                    down - rng.randrange(1_000_000, 20_000_000),
                    "error",
                    {"message": "heartbeat missed", "code": rng.choice([1001, 1006, 1011])},
                )
            )
        timeline.append((down, "disconnected", {"reason": "ping timeout", "code": 1006}))
        timeline.append((up, "connected", {"url": exchange.ws_url}))
        timeline.append(
            (
                up + rng.randrange(50_000, 900_000),
                "resubscribed",
                {"channels": [c for c, _ in CHANNEL_SHARES], "symbols": symbols},
            )
        )
        for offset, event_type, details in timeline:
            events.append(
                (
                    offset,
                    ex_order,
                    (
                        exchange.name,
                        worker_id,
                        event_type,
                        format_ts(day_us + offset),
                        None if details is None else json.dumps(details, separators=(",", ":")),
                    ),
                )
            )
    return events


def _bad_rows(
    seed: int, worker_id: str, asset: _Asset, day: dt.date
) -> list[tuple[int, int, tuple[str, str, str, str, str, str]]]:
    """The day's rows bronze cannot land (one of each kind), as a collector bug would store them."""
    rng = _rng(seed, "bad", worker_id, day.isoformat())
    day_us = _day_start_us(day)
    exchange = _EXCHANGES[0]
    symbol = exchange.symbol(asset.code)
    price = round(asset.base_price, asset.price_decimals)
    rows = [
        # payload not JSON: a message cut off mid-write
        (exchange.name, symbol, "trades", '{"trade_id": "1", "price": ' + str(price)),
        # a missing field: a ticker without its last price
        (
            exchange.name,
            symbol,
            "ticker",
            json.dumps({"bid": price, "ask": price, "volume_24h": 1.0}),
        ),
        # an unknown channel
        (exchange.name, symbol, "funding", json.dumps({"rate": 0.0001})),
        # an unreadable timestamp (patched below)
        (
            exchange.name,
            symbol,
            "trades",
            json.dumps({"trade_id": "2", "price": price, "size": 1.0, "side": "buy"}),
        ),
        # an unreadable symbol: a perpetual future, not a spot pair
        (
            exchange.name,
            f"{asset.code}-PERP",
            "trades",
            json.dumps({"trade_id": "3", "price": price, "size": 1.0, "side": "sell"}),
        ),
    ]
    out = []
    for kind, (ex, sym, channel, payload) in enumerate(rows):
        event_us = day_us + rng.randrange(US_PER_DAY // 24, US_PER_DAY - US_PER_DAY // 24)
        event_ts = format_ts(event_us)
        if kind == 3:
            # a local time without the T and the Z: on the day, but not the collectors' format
            event_ts = event_ts.replace("T", " ").rstrip("Z")
        ingest_us = event_us + rng.randrange(5_000, 200_000)
        out.append((ingest_us, kind, (ex, sym, channel, event_ts, format_ts(ingest_us), payload)))
    return out


def _copies_of_worker_01(
    seed: int,
    assets: Sequence[_Asset],
    workers: int,
    day: dt.date,
    rows_per_day: int,
    own_gaps: dict[str, tuple[int, int]],
) -> list[tuple[int, int, tuple[str, str, str, str, str, str]]]:
    """A few ticks worker_01 recorded on its first stream, recorded again by this worker (as
    during a failover): same exchange, symbol, event time and payload, later ingestion."""
    _, first = _worker_streams(seed, 1, assets[0::workers], day, rows_per_day)
    exchange = _EXCHANGES[0]
    down, up = own_gaps[exchange.name]
    day_us = _day_start_us(day)
    candidates = [
        t
        for t in first
        if t[2][0] == exchange.name and not down <= _parse_offset(t[2][3], day_us) <= up
    ]
    rng = _rng(seed, "copies", day.isoformat())
    picked = sorted(rng.sample(range(len(candidates)), min(DUPLICATES_PER_DAY, len(candidates))))
    out = []
    for i in picked:
        ingest_us, ex_order, row = candidates[i]
        later = ingest_us + rng.randrange(1_000, 50_000)
        out.append((later, ex_order, (*row[:4], format_ts(later), row[5])))
    return out


def _parse_offset(ts: str, day_us: int) -> int:
    moment = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) - day_us


def _insert_day(
    conn: sqlite3.Connection, spec: _WorkerSpec, day: dt.date, seed: int, rows_per_day: int
) -> None:
    worker_id = f"worker_{spec.index:02d}"
    gaps, ticks = _worker_streams(seed, spec.index, spec.assets, day, rows_per_day)
    events = _connection_events(seed, worker_id, spec.assets, day, gaps)
    ticks.extend(_bad_rows(seed, worker_id, spec.assets[0], day))
    if spec.index == 2 and rows_per_day > 0:
        ticks.extend(
            _copies_of_worker_01(seed, spec.all_assets, spec.workers, day, rows_per_day, gaps)
        )

    # A collector appends rows in the order it stores them.
    ticks.sort(key=lambda t: (t[0], t[1], t[2][1], t[2][2], t[2][3]))
    events.sort(key=lambda e: (e[0], e[1]))
    conn.executemany(
        "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (row for _, _, row in ticks),
    )
    conn.executemany(
        "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details) "
        "VALUES (?, ?, ?, ?, ?)",
        (row for _, _, row in events),
    )


def _stream_ticks(
    seed: int,
    worker_id: str,
    asset: _Asset,
    exchange: _Exchange,
    day: dt.date,
    path: list[float],
    gaps: Sequence[tuple[int, int]],
    rows: float,
) -> list[tuple[int, tuple[str, str, str, str, str, str]]]:
    """Rows of one (asset, exchange) stream for one day, with their ingestion time in µs."""
    rng = _rng(seed, "ticks", worker_id, asset.code, exchange.name, day.isoformat())
    day_us = _day_start_us(day)
    symbol = exchange.symbol(asset.code)
    tick = 10.0**-asset.price_decimals
    silences = sorted(gaps)
    awake_us = US_PER_DAY - sum(end - start for start, end in silences)

    def event_times(count: int) -> list[int]:
        # Uniform over the part of the day the stream is live, skipping its gaps (strictly inside
        # none of them: a tick may fall on a gap's edge).
        out = []
        for t in sorted(rng.randrange(awake_us) for _ in range(count)):
            for start, end in silences:
                if t >= start:
                    t += end - start
            out.append(t)
        return out

    def mid_at(offset_us: int) -> float:
        return path[offset_us // _PATH_STEP_US] * (1.0 + exchange.basis)

    def quote_at(offset_us: int) -> tuple[float, float]:
        mid = mid_at(offset_us)
        half = rng.randint(*exchange.half_spread_ticks) * tick
        bid = round(math.floor((mid - half) / tick) * tick, asset.price_decimals)
        ask = round(max(math.ceil((mid + half) / tick) * tick, bid + tick), asset.price_decimals)
        return bid, ask

    def size(notional_usd: float) -> float:
        lot = 10.0**-asset.size_decimals
        return round(max(lot, notional_usd / mid_at(0)), asset.size_decimals)

    out: list[tuple[int, tuple[str, str, str, str, str, str]]] = []

    def emit(offset_us: int, channel: str, payload: dict) -> None:
        latency_us = max(500, int(rng.lognormvariate(*exchange.latency_ms) * 1000))
        event_us = day_us + offset_us
        ingest_us = event_us + latency_us
        out.append(
            (
                ingest_us,
                (
                    exchange.name,
                    symbol,
                    channel,
                    format_ts(event_us),
                    format_ts(ingest_us),
                    json.dumps(payload, separators=(", ", ": ")),
                ),
            )
        )

    counts = {channel: round(rows * share) for channel, share in CHANNEL_SHARES}

    next_trade_id = rng.randrange(1_000_000_000, 4_000_000_000)
    for offset in event_times(counts["trades"]):
        bid, ask = quote_at(offset)
        side = rng.choices(("buy", "sell", None), weights=(48, 48, 4))[0]
        price = ask if side == "buy" else bid if side == "sell" else rng.choice((bid, ask))
        if exchange.numeric_trade_ids:
            next_trade_id += rng.randint(1, 40)
            trade_id = str(next_trade_id)
        else:
            bits = f"{rng.getrandbits(128):032x}"
            trade_id = f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}"
        emit(
            offset,
            "trades",
            {
                "trade_id": trade_id,
                "price": price,
                "size": size(rng.lognormvariate(6.5, 1.4)),
                "side": side,
            },
        )

    for offset in event_times(counts["orderbook"]):
        bid, ask = quote_at(offset)
        levels = rng.randint(5, 10)
        bids, asks = [], []
        bid_px, ask_px = bid, ask
        for _ in range(levels):
            bids.append([bid_px, size(rng.lognormvariate(8.0, 1.2))])
            asks.append([ask_px, size(rng.lognormvariate(8.0, 1.2))])
            bid_px = round(bid_px - rng.randint(1, 5) * tick, asset.price_decimals)
            ask_px = round(ask_px + rng.randint(1, 5) * tick, asset.price_decimals)
        emit(offset, "orderbook", {"bids": bids, "asks": asks})

    volume = (
        rng.uniform(0.6, 1.4) * 2.0e9 / asset.base_price / (1 if exchange is _EXCHANGES[0] else 4)
    )
    for offset in event_times(counts["ticker"]):
        bid, ask = quote_at(offset)
        last = rng.choice((bid, ask))
        volume *= math.exp(rng.gauss(0.0, 0.002))
        emit(
            offset,
            "ticker",
            {
                "bid": bid,
                "ask": ask,
                "last": last,
                "volume_24h": round(volume, asset.size_decimals),
            },
        )
    return out
