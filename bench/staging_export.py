"""Benchmark: the staging export of 10 million ticks from 4 worker files, against a plain baseline.

Prints rows/s of `staging_export` (the library the asset calls, default format sqlite, plus csv
and json), the ratio to a plain read of the same rows with Python's `sqlite3` written to Parquet
with pyarrow in the same run (target 0.5 or more), the CPU time of each (on a shared machine the
wall-clock ratio drifts toward the CPU ratio), and the peak RSS of the export at 1M and at 10M
rows (each measured in its own child process; they should be about the same: memory holds one
chunk).

Worker files are generated once with a fast direct generator (collector schema, realistic rows)
and cached under `$STAGING_BENCH_DIR` (default: the temp folder). `--rows` changes the big size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline_assets.lib.market.demo_sources import (
    CONNECTION_EVENTS_DDL,
    MARKET_TICKS_DDL,
    format_ts,
)

WORKERS = 4
START_US = 1_771_459_200_000_000  # 2026-02-19T00:00:00Z
SPAN_US = 86_400_000_000
END_UTC = "2026-02-20T00:00:00Z"


def generate(folder: Path, total_rows: int) -> list[Path]:
    """4 worker files holding `total_rows` market_ticks over one day (cached by size)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = total_rows // WORKERS
    for w in range(WORKERS):
        path = folder / f"worker_{w + 1:02d}.db"
        paths.append(path)
        if path.exists():
            continue
        rng = random.Random(w)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(MARKET_TICKS_DDL)
        conn.execute(CONNECTION_EVENTS_DDL)
        spellings = [
            ("Binance", "BTCUSDT"),
            ("coinbase", "BTC-USD"),
            ("Binance", "ETHUSDT"),
            ("coinbase", "ETH-USD"),
        ]
        step = SPAN_US // per_file

        def rows(rng=rng, step=step, spellings=spellings):
            for i in range(per_file):
                ts = START_US + i * step + rng.randrange(step)
                ex, sym = spellings[i % 4]
                channel = ("trades", "orderbook", "ticker")[i % 3]
                if channel == "trades":
                    payload = f'{{"trade_id": "{i}", "price": {65000 + i % 500}.5, "size": 0.0{i % 9 + 1}, "side": "buy"}}'
                elif channel == "ticker":
                    payload = f'{{"bid": {65000 + i % 500}.1, "ask": {65000 + i % 500}.2, "last": 65000.1, "volume_24h": 1234.5}}'
                else:
                    payload = '{"bids": [[65000.1, 0.5], [64999.9, 1.2]], "asks": [[65000.2, 0.4], [65000.5, 2.0]]}'
                yield ex, sym, channel, format_ts(ts - 20_000), format_ts(ts), payload

        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) VALUES (?, ?, ?, ?, ?, ?)",
            rows(),
        )
        conn.executemany(
            "INSERT INTO connection_events (exchange, worker_id, event_type, event_ts_utc, details) VALUES (?, ?, ?, ?, ?)",
            [
                ("Binance", f"worker_{w + 1:02d}", t, format_ts(START_US + k * 3_600_000_000), None)
                for k, t in enumerate(["disconnected", "connected"] * 4)
            ],
        )
        conn.execute("COMMIT")
        conn.close()
        os.replace(tmp, path)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, the work done, whatever the
    contention."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_export(folder: str, fmt: str) -> dict:
    from pipeline_assets.lib.market.staging_export import export_options, run_staging_export

    root = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix="staging_bench_out_", dir=root))
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = run_staging_export(
        export_options(hours=24, end_utc=END_UTC, output_format=fmt),
        worker_files=sorted(root.glob("worker_*.db")),
        input_glob=f"{root}/*.db",
        data_root=root,
        staging_dir=staging,
    )
    seconds = time.perf_counter() - started
    rows = result.metadata["row_counts"]["market_ticks"]
    shutil.rmtree(staging)
    return {
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_s": cpu_seconds() - cpu_started,
    }


def child_baseline(folder: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(folder)
    out = Path(tempfile.mkdtemp(prefix="staging_bench_pq_")) / "ticks.parquet"
    names = ["id", "exchange", "symbol", "channel", "event_ts_utc", "ingestion_ts_utc", "payload"]
    schema = pa.schema([("id", pa.int64())] + [(n, pa.string()) for n in names[1:]])
    started, cpu_started = time.perf_counter(), cpu_seconds()
    rows = 0
    with pq.ParquetWriter(out, schema) as writer:
        for path in sorted(root.glob("worker_*.db")):
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            cursor = conn.execute(
                f"SELECT {', '.join(names)} FROM market_ticks WHERE ingestion_ts_utc >= ? AND ingestion_ts_utc <= ?",
                ("2026-02-19T00:00:00.000000Z", "2026-02-20T00:00:00.000000Z"),
            )
            while batch := cursor.fetchmany(50_000):
                columns = list(zip(*batch))
                writer.write_table(
                    pa.Table.from_arrays(
                        [pa.array(c, t.type) for c, t in zip(columns, schema)], schema=schema
                    )
                )
                rows += len(batch)
            conn.close()
    seconds = time.perf_counter() - started
    out.unlink()
    out.parent.rmdir()
    return {
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_s": cpu_seconds() - cpu_started,
    }


def in_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        print(
            json.dumps(
                child_export(folder, rest[0]) if kind == "export" else child_baseline(folder)
            )
        )
        return
    cache = (
        Path(os.environ.get("STAGING_BENCH_DIR", tempfile.gettempdir())) / "staging_export_bench"
    )
    small, big = cache / "rows_1000000", cache / f"rows_{args.rows}"
    for folder, n in ((small, 1_000_000), (big, args.rows)):
        t = time.perf_counter()
        generate(folder, n)
        print(
            f"worker files: {n:,} ticks in {WORKERS} files under {folder} ({time.perf_counter() - t:.1f}s)"
        )
    base = in_child("baseline", str(big))
    print(
        f"baseline   sqlite3 -> pyarrow Parquet: {base['rows']:,} rows in {base['seconds']:.1f}s = {base['rows'] / base['seconds']:,.0f} rows/s; CPU {base['cpu_s']:.1f}s"
    )
    for fmt in ("sqlite", "csv", "json"):
        r = in_child("export", str(big), fmt)
        rate = r["rows"] / r["seconds"]
        print(
            f"staging_export {fmt:6}: {r['rows']:,} rows in {r['seconds']:.1f}s = {rate:,.0f} rows/s; ratio to baseline {rate / (base['rows'] / base['seconds']):.2f} (target >= 0.5); CPU {r['cpu_s']:.1f}s (baseline/export {base['cpu_s'] / r['cpu_s']:.2f}); peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    r1 = in_child("export", str(small), "sqlite")
    print(
        f"peak RSS of the export (sqlite): {r1['peak_rss_mib']:.0f} MiB at {r1['rows']:,} rows; see above for {args.rows:,} rows"
    )


if __name__ == "__main__":
    main()
