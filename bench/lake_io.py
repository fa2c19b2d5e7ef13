"""Benchmark: the lake IO manager against plain pyarrow on the same rows, in the same run.

Writes and reads N rows of trade-like data (a) with `pyarrow.parquet.write_table`/`read_table`
and (b) through `LakeParquetIOManager` (atomic write, streamed SHA256, sidecar, verification on
read), and prints rows/s for each and the ratio. Also streams a larger-than-chunk output through
the IO manager as record batches and reports the peak memory it took.

    python bench/lake_io.py [--rows 3000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.resources.lake_io_manager import LakeParquetIOManager

ASSET = dg.AssetKey("bronze_bench_trades")
DAY = "2026-01-05"
PARTITIONS = dg.DailyPartitionsDefinition("2026-01-01")


def make_table(rows: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-05T00:00:00", "us").astype(np.int64)
    return pa.table(
        {
            "event_ts_utc": pa.array(
                start + np.sort(rng.integers(0, 86_400_000_000, rows)), pa.timestamp("us", tz="UTC")
            ),
            "symbol": pa.array(rng.choice(["BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USD"], rows))
            .dictionary_encode()
            .cast(pa.string()),
            "price": pa.array(60_000 + np.cumsum(rng.normal(0, 2, rows))),
            "size": pa.array(rng.exponential(0.3, rows)),
            "side": pa.array(rng.choice(["buy", "sell"], rows)),
            "trade_id": pa.array(np.arange(rows, dtype=np.int64)),
        }
    )


def timed(fn, repeat: int, setup=lambda: None) -> float:
    """Median seconds of `fn(setup())`; `setup` (building Dagster contexts) is not timed."""
    times = []
    for _ in range(repeat):
        arg = setup()
        t0 = time.perf_counter()
        fn(arg) if arg is not None else fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    table = make_table(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain_path = root / "plain.parquet"
        manager = LakeParquetIOManager(UPath(root / "lake"))
        parent = ParentRef(kind="url", path="bench://generated", sha256="0" * 64)
        metadata = {"lake/layer": "bronze"}
        # Building a Dagster context creates an ephemeral instance (about 0.1 s), which is not the
        # IO manager's work: contexts are built before each timed call.
        instance = dg.DagsterInstance.ephemeral()

        def plain_write():
            pq.write_table(table, plain_path, compression="zstd", compression_level=3)

        def plain_read():
            return pq.read_table(plain_path)

        def write_context():
            return dg.build_output_context(
                asset_key=ASSET,
                partition_key=DAY,
                definition_metadata=metadata,
                asset_partitions_def=PARTITIONS,
                instance=instance,
            )

        def read_context():
            upstream = dg.build_output_context(
                asset_key=ASSET, definition_metadata=metadata, instance=instance
            )
            return dg.build_input_context(
                asset_key=ASSET,
                partition_key=DAY,
                asset_partitions_def=PARTITIONS,
                upstream_output=upstream,
                instance=instance,
                dagster_type=dg.DagsterType(lambda _, __: True, name="Table", typing_type=pa.Table),
            )

        def lake_write(ctx):
            manager.handle_output(ctx, LakeOutput(table, parents=[parent]))

        def lake_read(ctx):
            return manager.load_input(ctx)

        plain_write()
        lake_write(write_context())
        assert plain_read().equals(lake_read(read_context())), (
            "the IO manager read back different rows"
        )

        figures = {
            "write": (
                timed(plain_write, args.repeat),
                timed(lake_write, args.repeat, write_context),
            ),
            "read": (timed(plain_read, args.repeat), timed(lake_read, args.repeat, read_context)),
        }
        sizes = (
            plain_path.stat().st_size,
            (root / "lake/bronze/bronze_bench_trades/date=2026-01-05/data.parquet").stat().st_size,
        )

        print(f"lake IO manager vs plain pyarrow, {args.rows:,} rows, median of {args.repeat}")
        print(f"{'op':<6} {'pyarrow rows/s':>16} {'IO manager rows/s':>18} {'ratio':>7}")
        worst = 1.0
        for op, (plain_s, lake_s) in figures.items():
            ratio = plain_s / lake_s
            worst = min(worst, ratio)
            print(
                f"{op:<6} {args.rows / plain_s:>16,.0f} {args.rows / lake_s:>18,.0f} {ratio:>7.2f}"
            )
        print(
            f"file size: pyarrow {sizes[0]:,} B, IO manager {sizes[1]:,} B (sidecar and SHA256 included in the timing)"
        )

        # Streaming: ten times the rows, in batches, never materialized as one table.
        stream_rows = args.rows * 10
        chunk = make_table(100_000, seed=2)

        def batches():
            for _ in range(stream_rows // chunk.num_rows):
                yield from chunk.to_batches()

        ctx = dg.build_output_context(
            asset_key=dg.AssetKey("bronze_bench_stream"),
            partition_key=DAY,
            definition_metadata=metadata,
            asset_partitions_def=PARTITIONS,
            instance=instance,
        )
        process = psutil.Process()
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.perf_counter()
        manager.handle_output(ctx, LakeOutput(batches(), schema=chunk.schema, parents=[parent]))
        elapsed = time.perf_counter() - t0
        done.set()
        sampler.join()
        print(
            f"stream: {stream_rows:,} rows as record batches in {elapsed:.1f}s ({stream_rows / elapsed:,.0f} rows/s); "
            f"RSS rose at most {(peak[0] - baseline) / 2**20:,.0f} MiB above its start (the rows as one table "
            f"would take {chunk.nbytes * (stream_rows // chunk.num_rows) / 2**20:,.0f} MiB)"
        )
        print(
            f"target: ratio >= 0.80 -> {'met' if worst >= 0.8 else 'NOT met'} (worst {worst:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
