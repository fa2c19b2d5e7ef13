"""Benchmark: checksum parity by bisection against a full key-by-key comparison, same data, same run.

Seeds N `operation_runs` rows (default 10 million) over W hour windows (default 24) of an embedded
Postgres (a temporary folder) with one `generate_series` INSERT, exports every window through the
export's own reader (`read_window`) into Parquet files laid out as the lake lays them out (one file
per window and org), then seeds 10 differing rows: 4 late rows inserted into the source, 3 rows
changed in place in the source, 3 rows deleted from the Parquet. It then times, on the same
connection and files:

- (a) `hashdiff`: one Postgres query classifies every window in one scan of the table and
  aggregates the rows by window, org and key-hash range as they stream, while one DuckDB aggregate
  does the same over the Parquet; only those summaries leave the engines and are compared; one
  more pass over the windows that differ fetches the rows of their differing segments (deeper
  levels only where needed);
- (b) the baseline: every (key, row hash) of both sides fetched (one `COPY` from Postgres of the
  same one-scan classification, DuckDB over the Parquet) and compared with a full outer join in
  DuckDB;
- (c) the same baseline window by window (one classification query and `COPY` per window), as the
  export reads the source and as this benchmark compared before the one-scan classification.

Both sides of every path use the same exact classification (the export's own query) and the same
row encoding, so (a) against (b) is the bisection alone. Prints the time to locate the 10 keys,
whether all 10 were named, the segments compared by level, the rows fetched, the ratios (b)/(a)
and (c)/(a) (above 1: bisection is faster), the CPU seconds of the Postgres server (parallel workers
included) and of this process (DuckDB included) per path, and the machine's load average (shared machines vary).

    python bench/hq_reconcile.py [--rows 10000000] [--windows 24] [--leaf-rows 2048]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline_assets.lib.hq import reconcile_hashdiff as rh
from pipeline_assets.lib.hq.datasets import RUNS
from pipeline_assets.lib.hq.extract import read_window, session_setup
from pipeline_assets.lib.hq.lake_files import window_files, window_folder
from pipeline_assets.lib.hq.source_tables import create_source_tables
from pipeline_assets.lib.hq.windows import window_bounds
from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded

FIRST_WINDOW = "2026-02-17-00:00"


def windows(count: int) -> list[str]:
    start, end = window_bounds(FIRST_WINDOW)
    return [(start + i * (end - start)).strftime("%Y-%m-%d-%H:%M") for i in range(count)]


def seed(dsn: str, rows: int, n_windows: int, *, clustered: bool = False) -> None:
    """Row i lies in window i % W (every window's rows spread over the whole table: each window
    query reads every page), or, `clustered`, the rows are stored in time order as an append-only
    table holds them (a window query reads its window's pages only)."""
    start, _ = window_bounds(FIRST_WINDOW)
    # Seconds after the first window's start, as SQL over i.
    if clustered:
        offset = f"((i - 1) * {n_windows}::bigint / {rows}) * 3600 + (i %% 3600)"
    else:
        offset = "(i %% %(w)s) * 3600 + (i / %(w)s) %% 3600"
    with psycopg.connect(dsn) as conn:
        create_source_tables(conn)
        conn.execute("DROP INDEX IF EXISTS operation_runs_created_at_idx")
        conn.execute(
            "INSERT INTO operation_runs (run_id, pipeline_run_id, workflow_id, operation_id, "
            "action_id, entity_type, entity_id, org_id, company_id, source_provider, status, "
            "attempt_count, started_at, ended_at, duration_ms, cost_usd, error_code, error_message, "
            "created_at) SELECT md5(i::text)::uuid::text, md5((i / 7)::text)::uuid::text, "
            "'wf-' || (i %% 20), 'company.enrich.profile', 'action.v2', "
            "CASE WHEN i %% 3 = 0 THEN 'person' ELSE 'company' END, md5((i %% 5000)::text)::uuid::text, "
            "'org-' || ((i / %(w)s) %% 3), md5((i %% 900)::text)::uuid::text, 'prospeo', "
            "(ARRAY['succeeded','failed','skipped','canceled'])[1 + i %% 4], 1 + i %% 3, "
            f"%(start)s + make_interval(secs => {offset}), "
            f"%(start)s + make_interval(secs => {offset} + 1.5), 1500, "
            "round((i %% 10000) / 10000.0, 4), CASE WHEN i %% 4 = 1 THEN 'TIMEOUT' END, "
            "CASE WHEN i %% 4000 = 1 THEN 'provider timed out after 3 attempts' END, "
            f"%(start)s + make_interval(secs => {offset}) "
            "FROM generate_series(1, %(rows)s) AS i",
            {"start": start, "rows": rows, "w": n_windows},
        )
        conn.execute("CREATE INDEX operation_runs_created_at_idx ON operation_runs (created_at)")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE operation_runs")


def export(dsn: str, lake: Path, keys: list[str]) -> None:
    """Every window through the export's reader, one Parquet file per org in the lake layout."""

    @contextlib.contextmanager
    def connect():
        with psycopg.connect(dsn) as conn:
            yield conn

    for key in keys:
        start, end = window_bounds(key)
        prepared, _ = read_window(connect, RUNS, key, start, end, spool_dir=str(lake))
        table = pa.Table.from_batches(list(prepared.batches()), schema=RUNS.schema)
        for org in pc.unique(table.column("org_id")).to_pylist():
            folder = Path(str(window_folder(str(lake), RUNS.name, key))) / f"org_id={org}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                table.filter(pc.equal(table.column("org_id"), org)),
                folder / "data.parquet",
                row_group_size=128 * 1024,
            )


def drift(dsn: str, lake: Path, keys: list[str], rng: random.Random) -> dict[str, set[str]]:
    """10 differing rows: 4 late rows, 3 changed in place, 3 deleted from the export."""
    late, changed, deleted = set(), set(), set()
    with psycopg.connect(dsn) as conn:
        for i in range(4):
            key = rng.choice(keys)
            start, _ = window_bounds(key)
            run_id = f"late-{i:04d}"
            conn.execute(
                "INSERT INTO operation_runs (run_id, operation_id, action_id, entity_type, "
                "entity_id, org_id, status, attempt_count, started_at, created_at) VALUES "
                "(%s, 'company.enrich.profile', 'action.v2', 'company', 'e-late', 'org-1', "
                "'succeeded', 1, %s, %s)",
                (run_id, start, start),
            )
            late.add(run_id)
        for _ in range(3):
            key = rng.choice(keys)
            start, end = window_bounds(key)
            (run_id,) = conn.execute(
                "SELECT run_id FROM operation_runs WHERE created_at >= %s AND created_at < %s "
                "AND run_id NOT LIKE 'late-%%' ORDER BY created_at DESC LIMIT 1 OFFSET %s",
                (start, end, rng.randrange(1000)),
            ).fetchone()
            conn.execute(
                "UPDATE operation_runs SET attempt_count = attempt_count + 5 WHERE run_id = %s",
                (run_id,),
            )
            changed.add(run_id)
    for _ in range(3):
        key = rng.choice(keys)
        path = rng.choice(window_files(str(lake), RUNS.name, [key])[key])
        table = pq.read_table(path)
        at = rng.randrange(table.num_rows)
        deleted.add(table.column("run_id")[at].as_py())
        pq.write_table(pa.concat_tables([table.slice(0, at), table.slice(at + 1)]), path)
    return {"late": late, "changed": changed - deleted, "deleted": deleted}


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _postgres_cpu(pgdata: Path) -> float:
    """CPU seconds (user and system) of the whole local Postgres server: the postmaster, its live
    processes, and the processes it has reaped (parallel workers of finished queries)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    ticks = sum(int(f) for f in fields[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = _stat(entry.name)
            except OSError:
                continue  # ended meanwhile: counted with the postmaster's reaped children
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_here() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--leaf-rows", type=int, default=rh.DEFAULT_LEAF_ROWS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--clustered",
        action="store_true",
        help="store the rows in time order (as an append-only table does) instead of spreading "
        "every window over the whole table",
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_hq_reconcile_"))
    pgdata = base / "postgres"
    lake = base / "lake"
    lake.mkdir()
    try:
        dsn = embedded_dsn(pgdata)
        keys = windows(args.windows)
        t0 = time.perf_counter()
        seed(dsn, args.rows, args.windows, clustered=args.clustered)
        print(
            f"seeded {args.rows:,} rows over {args.windows} windows "
            f"({'clustered by time' if args.clustered else 'every window over the whole table'}) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        t0 = time.perf_counter()
        export(dsn, lake, keys)
        print(f"exported them to Parquet in {time.perf_counter() - t0:.1f}s")
        seeded = drift(dsn, lake, keys, random.Random(args.seed))
        expected = seeded["late"] | seeded["changed"] | seeded["deleted"]
        print(f"seeded {len(expected)} differing rows: {sorted(expected)}")

        def files_of(key: str) -> list[str]:
            return window_files(str(lake), RUNS.name, [key])[key]

        load_before = os.getloadavg()[0]
        with psycopg.connect(dsn) as conn:
            session_setup(conn)
            timings: dict[str, tuple[float, float, float]] = {}

            def timed(name: str, run):
                cpu_pg, cpu_here, t0 = _postgres_cpu(pgdata), _cpu_here(), time.perf_counter()
                result = run()
                timings[name] = (
                    time.perf_counter() - t0,
                    _postgres_cpu(pgdata) - cpu_pg,
                    _cpu_here() - cpu_here,
                )
                conn.rollback()
                return result

            diff = timed(
                "bisection (hashdiff)",
                lambda: rh.hashdiff(
                    RUNS,
                    keys,
                    rh.source_side(conn, RUNS),
                    rh.export_side(RUNS, files_of),
                    leaf_rows=args.leaf_rows,
                ),
            )
            full = timed(
                "full comparison, one scan",
                lambda: rh.full_key_diff(RUNS, keys, conn, files_of),
            )
            per_window = timed(
                "full comparison, window by window",
                lambda: rh.full_key_diff(RUNS, keys, conn, files_of, one_scan=False),
            )
        found = {
            k["run_id"] for k in diff.missing_in_export + diff.different + diff.extra_in_export
        }
        print()
        print(f"{'path':<36} {'seconds':>8} {'postgres cpu s':>15} {'local cpu s':>12}")
        for name, (wall, cpu_pg, cpu_here) in timings.items():
            print(f"{name:<36} {wall:>8.2f} {cpu_pg:>15.2f} {cpu_here:>12.2f}")
        print(
            f"keys located: {len(found & expected)} of {len(expected)} "
            f"({'all' if found == expected else 'MISMATCH: ' + str(sorted(found ^ expected))}); "
            f"counts {diff.counts}; full comparison counts {full}, window by window {per_window}"
        )
        print(
            f"segments compared: {diff.segments_compared:,} {diff.segments_by_level}; "
            f"rows fetched: {diff.rows_fetched:,} of {2 * args.rows:,}"
        )
        bisect_s = timings["bisection (hashdiff)"][0]
        print(
            f"ratio {timings['full comparison, one scan'][0] / bisect_s:.2f} (full comparison, "
            f"one scan / bisection); {timings['full comparison, window by window'][0] / bisect_s:.2f}"
            " (full comparison, window by window / bisection)"
        )
        print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
        return 0 if found == expected and full == per_window == diff.counts else 1
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            stop_embedded(pgdata)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
