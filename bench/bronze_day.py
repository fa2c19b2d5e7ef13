"""Benchmark: one bronze day built from the collectors' worker files, against a plain baseline.

    .venv/bin/python bench/bronze_day.py [--rows 10000000] [--files 4] [--small 1000000]

Worker files (`--files` of them, `--rows` ticks in all, one UTC day, the three channels, three
exchange spellings, a bad row every million) are generated once with SQLite's own SQL and cached
under `$TMPDIR/bronze_bench/`. Then, in the same run:

- **baseline**: a plain read of the same rows with Python's `sqlite3` (keyset pages of the day),
  written to one Parquet file with `pyarrow.parquet.ParquetWriter` (pyarrow's defaults);
- **bronze**: `land_bronze_day_streaming` (what the bronze asset calls), each output streamed
  through `write_split_parquet` (what the lake IO manager calls), split by symbol;

and prints rows/s of each and their ratio (target: bronze at 0.5 or more of the baseline), and the
CPU time of each (on a shared machine the wall-clock ratio drifts toward the CPU ratio). The
bronze day runs in a child process, which also gives its peak memory (RSS); a second child builds
the day of `--small` rows: bounded memory means about the same figure at both sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = dt.date(2026, 2, 19)
CACHE = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "bronze_bench"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (base asset, price, size decimals) per worker file; exchanges as the collectors spell them.
ASSETS = [("BTC", 65000.0, 5), ("ETH", 3400.0, 4), ("SOL", 150.0, 2), ("XRP", 0.6, 1)]
EXCHANGES = [
    ("Binance", "{b}USDT"),
    ("coinbase", "{b}-USD"),
    ("KRAKEN", "{l}/usdt"),
]


def _generate_file(path: Path, index: int, rows: int) -> None:
    """`rows` ticks of DAY for one worker, written by SQLite itself (a recursive CTE)."""
    base, price, size_dec = ASSETS[index % len(ASSETS)]
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    from pipeline_assets.lib.market.demo_sources import CONNECTION_EVENTS_DDL, MARKET_TICKS_DDL

    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(MARKET_TICKS_DDL)
    conn.execute(CONNECTION_EVENTS_DDL)
    day_us = int(dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC).timestamp() * 1e6)
    exchange_case = " ".join(f"WHEN {i} THEN '{name}'" for i, (name, _) in enumerate(EXCHANGES))
    symbol_case = " ".join(
        f"WHEN {i} THEN '{fmt.format(b=base, l=base.lower())}'"
        for i, (_, fmt) in enumerate(EXCHANGES)
    )
    levels = ", ".join([f"[%.2f, %.{size_dec}f]"] * 10)
    level_args_bid = ", ".join(f"p - {k} * 0.01 * p / 1000, 0.5 + {k} * 0.25" for k in range(10))
    level_args_ask = ", ".join(f"p + {k + 1} * 0.01 * p / 1000, 0.4 + {k} * 0.3" for k in range(10))
    step = 86_400_000_000 // max(rows, 1)
    conn.execute("BEGIN")
    conn.execute(
        f"""
        INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload)
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows - 1}),
        t AS (
          SELECT i, i % 3 AS ex,
                 CASE WHEN (i * 7) % 10 < 5 THEN 'trades'
                      WHEN (i * 7) % 10 < 8 THEN 'orderbook' ELSE 'ticker' END AS channel,
                 {day_us} + i * {step} + (i * 7919) % {max(step, 1)} AS ev,
                 {price} * (1 + 0.02 * ((i * 2654435761) % 1000) / 1000.0) AS p
          FROM seq
        ),
        u AS (SELECT *, ev + 20000 + (i * 104729) % 50000 AS ing FROM t)
        SELECT CASE ex {exchange_case} END,
               CASE ex {symbol_case} END,
               channel,
               strftime('%Y-%m-%dT%H:%M:%S', ev / 1000000, 'unixepoch') || printf('.%06dZ', ev % 1000000),
               strftime('%Y-%m-%dT%H:%M:%S', ing / 1000000, 'unixepoch') || printf('.%06dZ', ing % 1000000),
               CASE
                 WHEN i % 1000003 = 7 THEN '{{"trade_id": "' || i || '", "price": '
                 WHEN channel = 'trades' THEN printf(
                   '{{"trade_id": "%d", "price": %.2f, "size": %.{size_dec}f, "side": %s}}',
                   3000000000 + i, p, 0.001 + (i % 997) / 100.0,
                   CASE i % 25 WHEN 0 THEN 'null' ELSE CASE i % 2 WHEN 0 THEN '"buy"' ELSE '"sell"' END END)
                 WHEN channel = 'orderbook' THEN printf(
                   '{{"bids": [{levels}], "asks": [{levels}]}}', {level_args_bid}, {level_args_ask})
                 ELSE printf(
                   '{{"bid": %.2f, "ask": %.2f, "last": %.2f, "volume_24h": %.3f}}',
                   p, p * 1.0001, p, 1000000 + i % 100000)
               END
        FROM u
        """
    )
    conn.execute(
        "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details) "
        "VALUES ('Binance', ?, 'disconnected', ?, '{\"code\": 1006}')",
        (f"worker_{index + 1:02d}", f"{DAY}T12:00:00.000000Z"),
    )
    conn.execute("COMMIT")
    conn.close()
    os.replace(tmp, path)


def worker_files(rows: int, files: int) -> list[Path]:
    """The cached worker files for (rows, files), generated on first use (in parallel)."""
    folder = CACHE / f"r{rows}_f{files}_v1"
    paths = [folder / f"worker_{i + 1:02d}.db" for i in range(files)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--generate", str(p), str(i), str(n)],
        )
        for i, (p, n) in enumerate(zip(paths, per_file))
        if not p.exists()
    ]
    if any(proc.wait() for proc in procs):
        raise SystemExit("generating worker files failed")
    print(
        f"generated {rows:,} ticks in {files} files in {time.perf_counter() - started:.1f} s: {folder}"
    )
    return paths


# --- the two contenders ------------------------------------------------------------------------


def baseline(paths: list[Path], out: Path, page_rows: int = 50_000) -> int:
    """Plain: sqlite3 keyset pages of the day -> Arrow batches -> one Parquet file (pyarrow defaults)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("source_file", pa.string()),
            ("id", pa.int64()),
            ("exchange", pa.string()),
            ("symbol", pa.string()),
            ("channel", pa.string()),
            ("event_ts_utc", pa.string()),
            ("ingestion_ts_utc", pa.string()),
            ("payload", pa.string()),
        ]
    )
    lower, upper = DAY.isoformat(), (DAY + dt.timedelta(days=1)).isoformat()
    rows = 0
    with pq.ParquetWriter(out, schema) as writer:
        for path in paths:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            last = -1
            while True:
                page = conn.execute(
                    "SELECT id, exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload "
                    "FROM market_ticks WHERE id > ? AND event_ts_utc >= ? AND event_ts_utc < ? "
                    "ORDER BY id LIMIT ?",
                    (last, lower, upper, page_rows),
                ).fetchall()
                if not page:
                    break
                columns = list(zip(*page))
                arrays = [pa.array([path.name] * len(page), pa.string())]
                arrays += [pa.array(c, t.type) for c, t in zip(columns, list(schema)[1:])]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += len(page)
                last = page[-1][0]
            conn.close()
    return rows


def bronze(paths: list[Path], out: Path) -> dict[str, int]:
    """The product: the streaming bronze day, each output written as the lake IO manager does."""
    from upath import UPath

    from pipeline_assets.lib.market.bronze_stream import (
        OUTPUT_ROW_GROUP_SIZE,
        land_bronze_day_streaming,
    )
    from pipeline_assets.lib.parquet_lake import write_parquet, write_split_parquet

    counts = {}
    with land_bronze_day_streaming(paths, DAY) as day:
        for table in day.tables:
            folder = UPath(out / table)
            reader = day.reader(table)
            if table in ("orderbook", "trades", "ticker"):
                # As the IO manager writes the bronze channels (lake/split_grouped, row groups).
                results = write_split_parquet(
                    folder,
                    reader,
                    ["symbol"],
                    fsync=False,
                    grouped=True,
                    row_group_size=OUTPUT_ROW_GROUP_SIZE,
                )
            else:
                results = [write_parquet(folder / "data.parquet", reader, fsync=False)]
            counts[table] = sum(r.rows for r in results)
        counts["duplicates_dropped"] = sum(day.duplicates_dropped.values())
    return counts


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bronze_child(rows: int, files: int) -> dict:
    """Build the bronze day of (rows, files) in a child process: its time, CPU, peak RSS and
    counts (the child's peak is the day's alone)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(rows), str(files)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_main(rows: int, files: int) -> None:
    paths = worker_files(rows, files)
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), _cpu_seconds()
        counts = bronze(paths, Path(tmp))
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "cpu_s": cpu, "peak_rss_mib": round(peak, 1), "counts": counts}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--small", type=int, default=1_000_000)
    args = parser.parse_args()

    small_paths = worker_files(args.small, args.files)
    paths = worker_files(args.rows, args.files)
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), _cpu_seconds()
        base_rows = baseline(paths, Path(tmp) / "baseline.parquet")
        base_s, base_cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    # The bronze day in a child process (imports included, as they are in the baseline's time),
    # which also gives its peak memory at this size.
    big = _bronze_child(args.rows, args.files)
    counts, bronze_s, bronze_cpu = big["counts"], big["seconds"], big["cpu_s"]
    landed = sum(counts[c] for c in ("orderbook", "trades", "ticker"))
    accounted = landed + counts["quarantine"] + counts["duplicates_dropped"]
    assert accounted == base_rows, (counts, base_rows)
    base_rate, bronze_rate = base_rows / base_s, base_rows / bronze_s
    print(f"source: {base_rows:,} ticks of {DAY} in {len(paths)} worker files")
    print(f"baseline (sqlite3 + pyarrow): {base_s:6.1f} s  {base_rate / 1e6:5.2f} M rows/s")
    print(f"bronze day (streaming):       {bronze_s:6.1f} s  {bronze_rate / 1e6:5.2f} M rows/s")
    print(f"ratio bronze/baseline: {bronze_rate / base_rate:.2f} (target 0.5 or more)")
    print(
        f"CPU (all threads): baseline {base_cpu:.1f} s, bronze {bronze_cpu:.1f} s "
        f"(baseline/bronze {base_cpu / bronze_cpu:.2f}; what the ratio tends to on a busy machine)"
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"landed {counts}")
    del small_paths
    small_peak = _bronze_child(args.small, args.files)["peak_rss_mib"]
    big_peak = big["peak_rss_mib"]
    print(
        f"peak RSS building the day: {small_peak:.0f} MiB at {args.small:,} rows, "
        f"{big_peak:.0f} MiB at {args.rows:,} rows (ratio {big_peak / small_peak:.2f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        _generate_file(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
