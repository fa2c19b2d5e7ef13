"""Benchmark: the HQ export of operation_runs against a plain COPY into pyarrow, same database, same run.

Seeds N `operation_runs` rows into one UTC hour window of an embedded Postgres (a temporary
folder), then exports the window (a) with a plain `COPY (SELECT <contract columns> ... ORDER BY
run_id) TO STDOUT (FORMAT csv)` read into one pyarrow table and written with
`pyarrow.parquet.write_table`, and (b) through the export path of the `hq_export` asset: the
classified COPY hashed and parsed as it streams, contract conversion (UTC timestamps, exact
decimals, redaction, v1) to local Arrow files (one per org), dead letter split, and the lake IO
manager writing one file per org, org after org, with sidecars.
Prints rows/s of each and the ratio; then measures the peak memory (RSS above the start) of the
export path for 200k and 2M rows, each in a fresh process.

    python bench/hq_export.py [--rows 2000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import psycopg.sql
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.defs.hq_export.assets import hq_export
from pipeline_assets.lib.hq.datasets import RUNS
from pipeline_assets.lib.hq.extract import read_window
from pipeline_assets.lib.hq.source_tables import create_source_tables
from pipeline_assets.lib.hq.windows import window_bounds
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded
from pipeline_assets.resources.lake_io_manager import LakeParquetIOManager

WINDOW = "2026-02-17-10:00"
START, END = window_bounds(WINDOW)
PARTITIONS = dg.HourlyPartitionsDefinition(start_date="2026-02-01-00:00")
# The asset's own lake metadata for the dataset (layer, split by org, row-group size).
METADATA = {
    k: v
    for k, v in hq_export.specs_by_key[dg.AssetKey("dx_operation_runs_v1")].metadata.items()
    if k.startswith("lake/")
}


def seed(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS public.operation_runs")
        create_source_tables(conn)
        conn.execute(
            "INSERT INTO operation_runs (run_id, pipeline_run_id, workflow_id, operation_id, action_id, "
            "entity_type, entity_id, org_id, company_id, source_provider, status, attempt_count, "
            "started_at, ended_at, duration_ms, cost_usd, error_code, error_message, created_at) "
            "SELECT md5(i::text)::uuid::text, md5((i / 7)::text)::uuid::text, 'wf-' || (i %% 20), "
            "'company.enrich.profile', 'action.v2', CASE WHEN i %% 3 = 0 THEN 'person' ELSE 'company' END, "
            "md5((i %% 5000)::text)::uuid::text, 'org-' || (i %% 3), md5((i %% 900)::text)::uuid::text, "
            "'prospeo', (ARRAY['succeeded','failed','skipped','canceled'])[1 + i %% 4], 1 + i %% 3, "
            "%(start)s + make_interval(secs => (i %% 3600000) / 1000.0), "
            "%(start)s + make_interval(secs => (i %% 3600000) / 1000.0 + 1.5), 1500, "
            "round((i %% 10000) / 10000.0, 4), CASE WHEN i %% 4 = 1 THEN 'TIMEOUT' END, "
            "CASE WHEN i %% 4 = 1 THEN 'provider timed out after 3 attempts' END, "
            "%(start)s + make_interval(secs => (i %% 3600000) / 1000.0) "
            "FROM generate_series(1, %(rows)s) AS i",
            {"start": START, "rows": rows},
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE operation_runs")


def plain_copy(dsn: str, out: Path) -> int:
    """The baseline: COPY the contract columns into one pyarrow table, write it to Parquet."""
    columns = psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, RUNS.source_columns))
    statement = psycopg.sql.SQL(
        "COPY (SELECT {cols} FROM operation_runs WHERE created_at >= {lo} AND created_at < {hi} "
        "ORDER BY run_id) TO STDOUT (FORMAT csv)"
    ).format(cols=columns, lo=psycopg.sql.Literal(START), hi=psycopg.sql.Literal(END))
    buffer = io.BytesIO()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    table = pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(column_names=RUNS.source_columns),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    pq.write_table(table, out, compression="zstd", compression_level=3)
    return table.num_rows


def hq_path(dsn: str, lake: Path, instance: dg.DagsterInstance) -> int:
    """The asset's export path for one window: read and shape, IO manager (split by org, sidecars)."""
    import contextlib

    @contextlib.contextmanager
    def connect():
        with psycopg.connect(dsn) as conn:
            yield conn

    window, read = read_window(connect, RUNS, WINDOW, START, END, spool_dir=str(lake.parent))
    parent = ParentRef(
        kind="query",
        path="bench#public.operation_runs",
        sha256=read.sha256,
        details={"row_count": read.rows},
    )
    manager = LakeParquetIOManager(UPath(lake))
    context = dg.build_output_context(
        asset_key=dg.AssetKey("dx_operation_runs_v1"),
        partition_key=WINDOW,
        definition_metadata=METADATA,
        asset_partitions_def=PARTITIONS,
        instance=instance,
    )
    manager.handle_output(
        context, LakeOutput(window.batches(), parents=[parent], schema=RUNS.schema)
    )
    return window.result.rows


def peak_memory(dsn: str, rows: int, workdir: Path) -> dict:
    """Run the export path in this process, sampling RSS; the caller runs it in a fresh process."""
    seed(dsn, rows)
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with dg.DagsterInstance.ephemeral() as instance:
        exported = hq_path(dsn, workdir / "lake_mem", instance)
    done.set()
    sampler.join()
    return {"rows": rows, "exported": exported, "peak_mib": round((peak[0] - base) / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pgdata", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_run:
        with tempfile.TemporaryDirectory() as tmp:
            print(
                json.dumps(peak_memory(embedded_dsn(Path(args.pgdata)), args.memory_run, Path(tmp)))
            )
        return 0

    base = Path(tempfile.mkdtemp(prefix="bench_hq_"))
    pgdata = base / "postgres"
    try:
        dsn = embedded_dsn(pgdata)
        t0 = time.perf_counter()
        seed(dsn, args.rows)
        print(
            f"seeded {args.rows:,} operation_runs rows in one hour window in {time.perf_counter() - t0:.1f}s"
        )
        plain_times, hq_times = [], []
        with dg.DagsterInstance.ephemeral() as instance:
            for i in range(args.repeat):
                t0 = time.perf_counter()
                n_plain = plain_copy(dsn, base / "plain.parquet")
                plain_times.append(time.perf_counter() - t0)
                shutil.rmtree(base / "lake", ignore_errors=True)
                t0 = time.perf_counter()
                n_hq = hq_path(dsn, base / "lake", instance)
                hq_times.append(time.perf_counter() - t0)
                assert n_plain == n_hq == args.rows, (n_plain, n_hq)
        plain_s, hq_s = statistics.median(plain_times), statistics.median(hq_times)
        ratio = plain_s / hq_s
        print(
            f"HQ export vs plain COPY -> pyarrow -> Parquet, {args.rows:,} rows, median of {args.repeat}"
        )
        print(f"{'path':<34} {'seconds':>8} {'rows/s':>12}")
        print(
            f"{'plain COPY into pyarrow, Parquet':<34} {plain_s:>8.2f} {args.rows / plain_s:>12,.0f}"
        )
        print(f"{'hq export (asset path)':<34} {hq_s:>8.2f} {args.rows / hq_s:>12,.0f}")
        print(f"ratio {ratio:.2f} (target 0.70 or more -> {'met' if ratio >= 0.7 else 'NOT met'})")

        figures = []
        for rows in (200_000, args.rows):
            done = subprocess.run(
                [sys.executable, __file__, "--memory-run", str(rows), "--pgdata", str(pgdata)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for f in figures:
            print(
                f"peak memory of the export path, {f['rows']:>9,} rows: {f['peak_mib']:>7.1f} MiB above the start"
            )
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
