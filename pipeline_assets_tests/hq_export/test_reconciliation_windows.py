"""Several windows in one scan (lib/hq/datasets.windows_query, used by the reconciliation): every
dataset's rows classified exactly as the export classifies each window alone (dead-letter reasons,
duplicates ranked within their window, upsert versions across windows), for any set of windows
(hypothesis); and the bisection over many windows costs one source pass per level, not per window.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pipeline_assets.lib.hq import reconcile_hashdiff as rh
from pipeline_assets.lib.hq.datasets import DATASETS, RUNS, window_query, windows_query
from pipeline_assets.lib.hq.extract import read_window, session_setup
from pipeline_assets.lib.hq.lake_files import window_files, window_folder
from pipeline_assets.lib.hq.source_tables import demo_rows, insert_rows
from pipeline_assets.lib.hq.windows import window_bounds, window_key

DAY = dt.date(2026, 3, 4)
HOURS = 6
KEYS = [window_key(dt.datetime.combine(DAY, dt.time(hour), dt.UTC)) for hour in range(HOURS)]


@pytest.fixture(scope="module")
def seeded(schema: str, pg_dsn: str) -> str:
    """The demo's flawed rows over six hours, plus a run key repeated in two windows (each window
    exports its own copy) and a run key repeated within one window (the first is kept)."""
    rows = demo_rows([DAY], seed=11, hours=HOURS)
    runs = rows["operation_runs"]
    moved = runs[40]["created_at"] + dt.timedelta(hours=1)
    runs.append({**runs[40], "created_at": moved, "started_at": moved, "attempt_count": 9})
    runs.append({**runs[41], "attempt_count": 7})
    with psycopg.connect(pg_dsn) as conn:
        for table in rows:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, table)))
            insert_rows(conn, table, rows[table], schema)
    return schema


def _rows(conn: psycopg.Connection, query: sql.Composable) -> list[tuple]:
    return [tuple(str(v) for v in row) for row in conn.execute(query)]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chosen=st.sets(st.sampled_from(KEYS), min_size=1))
def test_one_scan_classifies_every_window_as_the_export_does(seeded, pg_dsn, chosen):
    keys = sorted(chosen)
    with psycopg.connect(pg_dsn) as conn:
        session_setup(conn)
        for spec in DATASETS:
            alone = Counter()
            for key in keys:
                start, end = window_bounds(key)
                for row in _rows(conn, window_query(spec, start, end, schema=seeded)):
                    alone[(key, *row)] += 1
            together = Counter()
            query = windows_query(spec, [window_bounds(k) for k in keys], schema=seeded)
            for *row, position in _rows(conn, query):
                together[(keys[int(position) - 1], *row)] += 1
            assert together == alone, spec.name


def test_the_seeded_flaws_put_the_ranking_to_work(seeded, pg_dsn):
    """The rows above carry every reason the ranking gives, so the equality tests it."""
    reasons = set()
    with psycopg.connect(pg_dsn) as conn:
        for spec in DATASETS:
            query = windows_query(spec, [window_bounds(k) for k in KEYS], schema=seeded)
            reasons.update(row[-4] for row in conn.execute(query))
    assert {"duplicate_key", "duplicate_unique_guard", "missing_org_id", "null_key"} <= reasons
    assert reasons & {"stale_version", "superseded"}


def test_windows_must_be_disjoint_and_ascending():
    first, second = window_bounds(KEYS[0]), window_bounds(KEYS[1])
    with pytest.raises(ValueError, match="ascending"):
        windows_query(RUNS, [second, first])
    with pytest.raises(ValueError, match="at least one"):
        windows_query(RUNS, [])


class _CountingConnection:
    """A psycopg connection that counts the statements run on it."""

    def __init__(self, conn: psycopg.Connection):
        self.conn, self.statements = conn, 0

    def execute(self, *args, **kwargs):
        self.statements += 1
        return self.conn.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_bisecting_many_windows_costs_one_source_pass_per_level(
    seeded, pg_dsn, connect, tmp_path: Path
):
    def export(key: str) -> None:
        start, end = window_bounds(key)
        prepared, _ = read_window(connect, RUNS, key, start, end, schema=seeded)
        table = pa.Table.from_batches(list(prepared.batches()), schema=RUNS.schema)
        for org in pc.unique(table.column("org_id")).to_pylist():
            folder = Path(str(window_folder(str(tmp_path), RUNS.name, key))) / f"org_id={org}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                table.filter(pc.equal(table.column("org_id"), org)), folder / "data.parquet"
            )

    for key in KEYS:
        export(key)
    # Drift in two windows: a row lost from one export, a row changed in place in the source.
    lost_path = window_files(str(tmp_path), RUNS.name, [KEYS[1]])[KEYS[1]][0]
    lost_table = pq.read_table(lost_path)
    lost = lost_table.column("run_id")[3].as_py()
    pq.write_table(pa.concat_tables([lost_table.slice(0, 3), lost_table.slice(4)]), lost_path)
    start, end = window_bounds(KEYS[4])
    with psycopg.connect(pg_dsn) as conn:
        (changed,) = conn.execute(
            sql.SQL(
                "SELECT run_id FROM {} WHERE created_at >= %s AND created_at < %s AND org_id "
                "IS NOT NULL AND status = 'succeeded' ORDER BY run_id LIMIT 1"
            ).format(sql.Identifier(seeded, "operation_runs")),
            (start, end),
        ).fetchone()
        conn.execute(
            sql.SQL("UPDATE {} SET attempt_count = attempt_count + 1 WHERE run_id = %s").format(
                sql.Identifier(seeded, "operation_runs")
            ),
            (changed,),
        )

    with psycopg.connect(pg_dsn) as conn:
        session_setup(conn)
        counting = _CountingConnection(conn)
        source = rh.source_side(counting, RUNS, schema=seeded)
        before = counting.statements
        diff = rh.hashdiff(
            RUNS,
            KEYS,
            source,
            rh.export_side(RUNS, lambda k: window_files(str(tmp_path), RUNS.name, [k])[k]),
        )
        passes = counting.statements - before
    assert [k["run_id"] for k in diff.missing_in_export] == [lost]
    assert [k["run_id"] for k in diff.different] == [changed]
    assert diff.mismatched_windows == [KEYS[1], KEYS[4]]
    # One pass summarising all six windows, one fetching the rows of the differing segments.
    assert passes == 2
    assert diff.segments_by_level["window_org"] >= HOURS
