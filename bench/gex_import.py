"""Benchmark: the GEX import of a ~50 MB history file against DuckDB `read_json` straight to
Parquet on the same file, in the same run.

The import (`GexImporter.enqueue` + `import_job`: stream to staging with SHA256 and sidecar,
parse with DuckDB's JSON reader and validate every field in SQL, explode the strikes into the
staging tables, integrity checks, insert into `strikes` and `snapshots` while the canonical
Parquet is written, publish it with its sidecar) against
`COPY (SELECT * FROM read_json(file)) TO 'x.parquet'` (DuckDB's own parser, no validation, strikes
left as nested JSON). Both first run once on a small file, so that neither pays for loading
modules (pyarrow, DuckDB's JSON reader) inside its timing. Prints records/s for each and the
ratio (target 0.5 or more).

    python bench/gex_import.py [--mb 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from pipeline_assets.lib.gex.demo_sources import write_large_history
from pipeline_assets.lib.gex.imports import GexConfig, GexImporter


def baseline(src: Path, out: Path) -> None:
    """DuckDB's JSON reader straight to Parquet: its own type guess, no validation."""
    duckdb.sql(
        f"COPY (SELECT * FROM read_json('{src}', maximum_object_size=268435456)) TO '{out}' (FORMAT parquet)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "history.json"
        records = write_large_history(src, int(args.mb * 1_000_000))
        size = src.stat().st_size
        print(f"history file: {size / 1e6:.1f} MB, {records:,} records")
        warm_up = Path(tmp) / "warm_up.json"
        write_large_history(warm_up, 200_000)
        baseline(warm_up, Path(tmp) / "warm_up.parquet")
        importer = GexImporter(Path(tmp) / "warm_up", GexConfig())
        assert (
            importer.import_job(importer.enqueue(warm_up.as_uri(), "SPX", "gex_zero").id).status
            == "completed"
        )
        ours, base, stage = [], [], []
        for i in range(args.repeat):
            t = time.perf_counter()
            baseline(src, Path(tmp) / f"duckdb_{i}.parquet")
            base.append(time.perf_counter() - t)
            importer = GexImporter(Path(tmp) / f"data_{i}", GexConfig(max_download_bytes=1 << 30))
            t = time.perf_counter()
            job = importer.enqueue(src.as_uri(), "SPX", "gex_zero")
            stage.append(time.perf_counter() - t)
            job = importer.import_job(job.id)
            ours.append(time.perf_counter() - t)
            assert job.status == "completed", job.last_error
        rows = job.rows_written or 0
        b, o, s = statistics.median(base), statistics.median(ours), statistics.median(stage)
        print(f"duckdb read_json -> parquet : {b:6.2f} s  {records / b:10,.0f} records/s")
        print(
            f"gex import (stage + import) : {o:6.2f} s  {records / o:10,.0f} records/s  ({rows:,} strike rows, staging {s:.2f} s)"
        )
        print(f"ratio (import / duckdb throughput): {b / o:.2f}  (target >= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
