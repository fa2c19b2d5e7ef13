"""Benchmark: silver features and gold bars against a one-shot DuckDB computation of the same features.

    .venv/bin/python bench/market_features.py [--books N] [--trades M] [--days D]
        [--memory-days K] [--memory-books N] [--memory-trades M] [--memory-only | --no-memory]

Synthetic bronze-shaped streams (2 exchanges x 2 symbols, 5-level books, 30% of trades without a
side) are computed two ways in the same run:

- the pipeline's code (`lib.market.features.compute_symbol_day` per symbol and day, then
  `lib.market.bars.bars_for_symbol`), state carried from day to day;
- one DuckDB SQL statement per layer over the whole range: mid, spread, size-weighted mid,
  imbalances, OFI with `lag`, the as-of quote with `ASOF JOIN`, rolling 1 and 5 minute TFI and
  VWAP with RANGE windows, and the bars with GROUP BY (no resets, no tick rule: the baseline does
  less than the pipeline).

It prints rows/s of both and the ratio (DuckDB time / pipeline time; target 0.5 or more).

Then peak memory, as a backfill uses it: the synthetic days are written as a bronze lake (one
Parquet file per day, channel and symbol, with sidecars), and a fresh process materializes the
silver and gold assets over 1 day, then another over `--memory-days` days, each as one
single-run backfill of the range (reading bronze, spilling, writing Parquet and checkpoints,
running the checks). Each prints its maximum resident set size (VmHWM); the data generation runs
in this process, not in theirs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from upath import UPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline_assets.lib.custody import MetadataFactory, write_sidecar
from pipeline_assets.lib.market.bars import bars_for_symbol
from pipeline_assets.lib.market.bronze import (
    BRONZE_ORDERBOOK_SCHEMA,
    BRONZE_TICKER_SCHEMA,
    BRONZE_TRADES_SCHEMA,
)
from pipeline_assets.lib.market.features import FeatureParams, compute_symbol_day
from pipeline_assets.lib.parquet_lake import DATA_FILE_NAME, write_parquet

DAY_US = 86_400_000_000
T0 = 1_771_286_400_000_000  # 2026-02-17T00:00:00Z
FIRST_DAY = dt.date(2026, 2, 17)
STREAMS = [
    ("binance", "BTC-USDT"),
    ("coinbase", "BTC-USDT"),
    ("binance", "ETH-USDT"),
    ("coinbase", "ETH-USDT"),
]
LEVELS = 5


def _common(
    n: int, ts: np.ndarray, exchange: str, symbol: str, first_id: int
) -> dict[str, pa.Array]:
    base, quote = symbol.split("-")
    ts_arr = pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return {
        "source_file": pa.array(["bench.db"] * n),
        "source_id": pa.array(np.arange(first_id, first_id + n)),
        "exchange_raw": pa.array([exchange] * n),
        "symbol_raw": pa.array([symbol] * n),
        "exchange": pa.array([exchange] * n),
        "symbol": pa.array([symbol] * n),
        "base_asset": pa.array([base] * n),
        "quote_asset": pa.array([quote] * n),
        "event_ts_utc": ts_arr,
        "ingestion_ts_utc": ts_arr,
        "payload": pa.array([""] * n),
    }


def _levels(rng: np.random.Generator, best: np.ndarray, sign: float) -> pa.Array:
    n = len(best)
    prices = best[:, None] + sign * 0.01 * np.arange(LEVELS)[None, :]
    sizes = rng.exponential(1.0, (n, LEVELS)).round(4)
    values = pa.StructArray.from_arrays(
        [pa.array(prices.ravel()), pa.array(sizes.ravel())], names=["price", "size"]
    )
    offsets = pa.array(np.arange(0, n * LEVELS + 1, LEVELS, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values).cast(
        BRONZE_ORDERBOOK_SCHEMA.field("bids").type
    )


def synthetic_day(
    day: int, books: int, trades: int, seed: int = 1
) -> dict[str, dict[str, pa.Table]]:
    """Bronze-shaped tables of one day, per symbol (both exchanges), sorted like bronze."""
    rng = np.random.default_rng(seed + day)
    out: dict[str, dict[str, list[pa.Table]]] = {}
    for k, (exchange, symbol) in enumerate(STREAMS):
        nb, nt = books // len(STREAMS), trades // len(STREAMS)
        start = T0 + day * DAY_US
        bts = np.sort(rng.integers(start, start + DAY_US, nb))
        tts = np.sort(rng.integers(start, start + DAY_US, nt))
        path = 100.0 * (k + 1) + np.cumsum(rng.normal(0, 0.01, nb))
        bid = path.round(2)
        ask = bid + 0.01 * rng.integers(1, 3, nb)
        book = (
            pa.table(
                {
                    **_common(nb, bts, exchange, symbol, k * 10**8),
                    "bids": _levels(rng, bid, -1),
                    "asks": _levels(rng, ask, 1),
                }
            )
            .select(BRONZE_ORDERBOOK_SCHEMA.names)
            .cast(BRONZE_ORDERBOOK_SCHEMA)
        )
        j = np.clip(np.searchsorted(bts, tts) - 1, 0, nb - 1)
        price = (bid[j] + rng.integers(-1, 3, nt) * 0.01).round(2)
        side = rng.choice(np.array(["buy", "sell", None], dtype=object), nt, p=[0.35, 0.35, 0.3])
        trade = (
            pa.table(
                {
                    **_common(nt, tts, exchange, symbol, k * 10**8 + 5 * 10**7),
                    "trade_id": pa.array(np.arange(nt).astype(str)),
                    "price": pa.array(price),
                    "size": pa.array(rng.exponential(0.1, nt).round(5)),
                    "side": pa.array(side, pa.string()),
                }
            )
            .select(BRONZE_TRADES_SCHEMA.names)
            .cast(BRONZE_TRADES_SCHEMA)
        )
        parts = out.setdefault(symbol, {"orderbook": [], "trades": []})
        parts["orderbook"].append(book)
        parts["trades"].append(trade)
    order = [("event_ts_utc", "ascending"), ("exchange", "ascending"), ("source_id", "ascending")]
    return {
        symbol: {
            name: pa.concat_tables(t).sort_by(order).combine_chunks() for name, t in parts.items()
        }
        for symbol, parts in out.items()
    }


def run_pipeline(days: int, books: int, trades: int) -> tuple[float, int, int]:
    """Seconds spent in the pipeline's functions (data generation excluded), rows, bars."""
    state: dict = {}
    params = FeatureParams()
    seconds, rows, bars = 0.0, 0, 0
    ticker = BRONZE_TICKER_SCHEMA.empty_table()
    for day in range(days):
        for tables in synthetic_day(day, books, trades).values():
            started = time.perf_counter()
            silver = compute_symbol_day(
                tables["orderbook"], tables["trades"], ticker, {}, state, params
            )
            bars += bars_for_symbol(silver.orderbook, silver.trades).num_rows
            seconds += time.perf_counter() - started
            rows += tables["orderbook"].num_rows + tables["trades"].num_rows
    return seconds, rows, bars


DUCKDB_SQL = """
CREATE OR REPLACE TEMP TABLE b AS
SELECT exchange, symbol, event_ts_utc AS ts, source_id,
       bids[1].price AS bid, bids[1].size AS bsz, asks[1].price AS ask, asks[1].size AS asz,
       list_sum(list_transform(bids[1:5], lambda x: x.size)) AS bdepth,
       list_sum(list_transform(asks[1:5], lambda x: x.size)) AS adepth
FROM books;
CREATE OR REPLACE TEMP TABLE bf AS
SELECT *, (bid + ask) / 2 AS mid, ask - bid AS spread, (ask - bid) / ((bid + ask) / 2) * 1e4 AS spread_bps,
       (bsz * ask + asz * bid) / (bsz + asz) AS weighted_mid, (bsz - asz) / (bsz + asz) AS top_imbalance,
       (bdepth - adepth) / (bdepth + adepth) AS depth_imbalance,
       CASE WHEN bid >= lag(bid) OVER w THEN bsz ELSE 0 END - CASE WHEN bid <= lag(bid) OVER w THEN lag(bsz) OVER w ELSE 0 END
       - CASE WHEN ask <= lag(ask) OVER w THEN asz ELSE 0 END + CASE WHEN ask >= lag(ask) OVER w THEN lag(asz) OVER w ELSE 0 END AS ofi,
       ln(((bid + ask) / 2) / lag((bid + ask) / 2) OVER w) AS mid_log_return
FROM b WINDOW w AS (PARTITION BY exchange, symbol ORDER BY ts, source_id);
CREATE OR REPLACE TEMP TABLE tq AS
SELECT t.exchange, t.symbol, t.event_ts_utc AS ts, t.price, t.size,
       coalesce(t.side, CASE WHEN t.price > q.mid THEN 'buy' WHEN t.price < q.mid THEN 'sell' END) AS side, q.mid AS quote_mid
FROM trades t ASOF LEFT JOIN bf q ON t.exchange = q.exchange AND t.symbol = q.symbol AND t.event_ts_utc >= q.ts;
CREATE OR REPLACE TEMP TABLE tf AS
SELECT *, sum(sv) OVER w1 / sum(size) OVER w1 AS tfi_1m, sum(price * size) OVER w1 / sum(size) OVER w1 AS vwap_1m,
       sum(sv) OVER w5 / sum(size) OVER w5 AS tfi_5m, sum(price * size) OVER w5 / sum(size) OVER w5 AS vwap_5m
FROM (SELECT *, CASE side WHEN 'buy' THEN size WHEN 'sell' THEN -size ELSE 0 END AS sv FROM tq)
WINDOW w1 AS (PARTITION BY exchange, symbol ORDER BY ts RANGE BETWEEN INTERVAL 59999999 MICROSECONDS PRECEDING AND CURRENT ROW),
       w5 AS (PARTITION BY exchange, symbol ORDER BY ts RANGE BETWEEN INTERVAL 299999999 MICROSECONDS PRECEDING AND CURRENT ROW);
CREATE OR REPLACE TEMP TABLE bars AS
WITH t AS (SELECT exchange, symbol, date_trunc('minute', ts) AS m, arg_min(price, ts) AS open, max(price) AS high,
                  min(price) AS low, arg_max(price, ts) AS close, sum(size) AS volume,
                  sum(CASE WHEN side = 'buy' THEN size ELSE 0 END) AS buy_volume,
                  sum(CASE WHEN side = 'sell' THEN size ELSE 0 END) AS sell_volume, count(*) AS n,
                  sum(price * size) / sum(size) AS vwap FROM tf GROUP BY ALL),
     k AS (SELECT exchange, symbol, date_trunc('minute', ts) AS m, count(*) AS book_count, sum(ofi) AS ofi_sum,
                  avg(spread) AS mean_spread, arg_max(mid, ts) AS last_mid, sum(mid_log_return ^ 2) AS rv FROM bf GROUP BY ALL)
SELECT * FROM t FULL OUTER JOIN k USING (exchange, symbol, m);
"""


def run_duckdb(days: int, books: int, trades: int) -> tuple[float, int]:
    day_tables = [synthetic_day(day, books, trades) for day in range(days)]
    books_t = pa.concat_tables([t["orderbook"] for d in day_tables for t in d.values()])
    trades_t = pa.concat_tables([t["trades"] for d in day_tables for t in d.values()])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("books", books_t)
    con.register("trades", trades_t)
    started = time.perf_counter()
    for statement in DUCKDB_SQL.split(";"):
        if statement.strip():
            con.execute(statement)
    seconds = time.perf_counter() - started
    (bars,) = con.execute("SELECT count(*) FROM bars").fetchone()
    return seconds, bars


def day_key(day: int) -> str:
    return (FIRST_DAY + dt.timedelta(days=day)).isoformat()


def write_bronze_lake(root: Path, days: int, books: int, trades: int) -> None:
    """The synthetic days as a bronze lake (one file per day, channel and symbol, with sidecars),
    laid out as the bronze assets write it, so that the silver and gold assets can run on it."""
    base = UPath(root)
    factory = MetadataFactory(base, code_version="bench")
    source = root / "source" / "bench.db"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"synthetic bronze of bench/market_features.py")
    parent = factory.file_parent(UPath(source))
    schemas = {"orderbook": BRONZE_ORDERBOOK_SCHEMA, "trades": BRONZE_TRADES_SCHEMA}
    for day in range(days):
        key = day_key(day)
        for symbol, tables in synthetic_day(day, books, trades).items():
            for name, table in tables.items():
                path = base.joinpath(
                    "bronze", f"bronze_{name}", f"date={key}", f"symbol={symbol}", DATA_FILE_NAME
                )
                result = write_parquet(path, table, schema=schemas[name], fsync=False)
                record = factory.processed(
                    path,
                    sha256=result.sha256,
                    size_bytes=result.size_bytes,
                    rows=result.rows,
                    parents=[parent],
                    transformation_name=f"bronze_{name}",
                    partition_key=key,
                )
                write_sidecar(path, record, fsync=False)
        # No connection events: the day's partition holds only the empty marker.
        events = root / "bronze" / "bronze_connection_events" / f"date={key}"
        events.mkdir(parents=True, exist_ok=True)
        (events / "_empty.json").write_text("{}")


def run_assets(root: Path, days: int) -> None:
    """Materialize silver and gold for the first `days` days of the lake at `root` as one
    single-run backfill of the range, as the UI's backfill or the features watcher does."""
    import dagster as dg

    from pipeline_assets.defs.market_data.gold import gold_bars_1m
    from pipeline_assets.defs.market_data.silver import silver_market_features
    from pipeline_assets.resources.lake_io_manager import LakeIOManager
    from pipeline_assets.resources.market_features import MarketFeatureSettings

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [silver_market_features, gold_bars_1m],
            resources={
                "io_manager": LakeIOManager(lake_root=str(root)),
                "market_features": MarketFeatureSettings(),
            },
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": day_key(0),
                "dagster/asset_partition_range_end": day_key(days - 1),
            },
            raise_on_error=True,
        )
        assert result.success


def _peak_child(root: Path, days: int) -> float:
    """Peak RSS (MiB, VmHWM) of a fresh process materializing `days` days of silver and gold.

    (Not getrusage's ru_maxrss: on Linux a child inherits the parent's high-water mark.) The
    silver and gold of an earlier measurement are removed first, so every day is computed."""
    for layer in ("silver", "gold"):
        shutil.rmtree(root / layer, ignore_errors=True)
    code = (
        "import sys, json, pathlib; "
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import market_features as m; "
        f"m.run_assets(pathlib.Path({str(root)!r}), {days}); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print(json.dumps(int(hwm.split()[1])))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the asset run of {days} day(s) failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=1_000_000, help="book events per day")
    parser.add_argument("--trades", type=int, default=500_000, help="trades per day")
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument(
        "--memory-days", type=int, default=10, help="days of the multi-day memory run"
    )
    parser.add_argument(
        "--memory-books", type=int, default=1_000_000, help="book events a day of the memory runs"
    )
    parser.add_argument(
        "--memory-trades", type=int, default=500_000, help="trades a day of the memory runs"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    parser.add_argument("--no-memory", action="store_true", help="no peak-memory runs")
    args = parser.parse_args()
    if args.memory_only:
        _print_memory(args.memory_books, args.memory_trades, args.memory_days)
        return
    seconds, rows, n_bars = run_pipeline(args.days, args.books, args.trades)
    duck_seconds, duck_bars = run_duckdb(args.days, args.books, args.trades)
    print(
        f"input: {args.days} days x ({args.books:,} book events + {args.trades:,} trades), {len(STREAMS)} streams"
    )
    print(
        f"pipeline (silver + gold): {seconds:.2f} s, {rows / seconds:,.0f} rows/s, {n_bars:,} bars"
    )
    print(
        f"duckdb one-shot:          {duck_seconds:.2f} s, {rows / duck_seconds:,.0f} rows/s, {duck_bars:,} bars"
    )
    print(f"ratio (duckdb time / pipeline time): {duck_seconds / seconds:.2f}  (target >= 0.5)")
    if not args.no_memory:
        _print_memory(args.memory_books, args.memory_trades, args.memory_days)


def _print_memory(books: int, trades: int, days: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-market-features-"))
    try:
        write_bronze_lake(root, days, books, trades)
        one = _peak_child(root, 1)
        many = _peak_child(root, days)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"peak RSS of a silver + gold asset run ({books:,} books + {trades:,} trades a day): "
        f"1 day {one:.0f} MiB, {days} days {many:.0f} MiB ({many / one:.2f}x)"
    )


if __name__ == "__main__":
    main()
