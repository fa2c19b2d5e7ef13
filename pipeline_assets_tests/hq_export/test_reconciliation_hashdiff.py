"""Checksum parity by bisection (lib/hq/reconcile_hashdiff.py) on a real Postgres and real Parquet:
Postgres and DuckDB encode and hash rows identically (NULLs, negative decimals, microseconds, the
60-bit hash halves on either Postgres form); drift is drilled down through several key-hash levels
to exactly the seeded keys, agreeing with a full key-by-key comparison while fetching a fraction of
the rows; the key list is capped; the leaf comparison is checked against a plain multiset oracle
(hypothesis)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.lib.hq import reconcile_hashdiff as rh
from pipeline_assets.lib.hq.datasets import RUNS
from pipeline_assets.lib.hq.extract import read_window, session_setup
from pipeline_assets.lib.hq.lake_files import window_files, window_folder
from pipeline_assets.lib.hq.windows import window_bounds

WINDOW = "2026-03-02-10:00"
ROWS = 6000


def _seed(conn: psycopg.Connection, schema: str) -> None:
    start, _ = window_bounds(WINDOW)
    conn.execute(
        f"INSERT INTO {schema}.operation_runs (run_id, pipeline_run_id, operation_id, action_id, "
        "entity_type, entity_id, org_id, status, attempt_count, started_at, ended_at, duration_ms, "
        "cost_usd, error_code, error_message, created_at) "
        "SELECT md5(i::text), CASE WHEN i %% 5 = 0 THEN NULL ELSE md5((i / 3)::text) END, "
        "'company.enrich.profile', 'action.v1', 'company', md5((i %% 97)::text), "
        "'org-' || (i %% 2), (ARRAY['succeeded','failed','skipped','canceled'])[1 + i %% 4], 1 + i %% 3, "
        "%(s)s + make_interval(secs => i * 0.5 + 0.000123), "
        "CASE WHEN i %% 7 = 0 THEN NULL ELSE %(s)s + make_interval(secs => i * 0.5 + 1) END, "
        "i %% 1000, CASE WHEN i %% 6 = 0 THEN NULL ELSE round(((i %% 13) - 6) / 1000.0, 3) END, "
        "NULL, CASE WHEN i %% 4 = 1 THEN 'token=abc' || i END, "
        "%(s)s + make_interval(secs => i * 0.5 + 0.000123) FROM generate_series(1, %(n)s) AS i",
        {"s": start, "n": ROWS},
    )
    conn.commit()


def _export(connect, schema: str, lake: Path) -> None:
    """The window through the export's own reader, one file per org in the lake layout."""
    start, end = window_bounds(WINDOW)
    prepared, _ = read_window(connect, RUNS, WINDOW, start, end, schema=schema)
    table = pa.Table.from_batches(list(prepared.batches()), schema=RUNS.schema)
    for org in pc.unique(table.column("org_id")).to_pylist():
        folder = Path(str(window_folder(str(lake), RUNS.name, WINDOW))) / f"org_id={org}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(table.column("org_id"), org)), folder / "data.parquet")


@pytest.fixture
def window(source_schema, pg_dsn, connect, tmp_path):
    with psycopg.connect(pg_dsn) as conn:
        _seed(conn, source_schema)
    _export(connect, source_schema, tmp_path)
    return source_schema, tmp_path


def _diff(pg_dsn: str, schema: str, lake: Path, **kwargs) -> rh.KeyDiff:
    with psycopg.connect(pg_dsn) as conn:
        session_setup(conn)
        return rh.hashdiff(
            RUNS,
            [WINDOW],
            rh.source_side(conn, RUNS, schema=schema),
            rh.export_side(RUNS, lambda k: window_files(str(lake), RUNS.name, [k])[k]),
            **kwargs,
        )


def test_an_unchanged_window_matches_on_both_engines(window, pg_dsn):
    schema, lake = window
    diff = _diff(pg_dsn, schema, lake)
    assert diff.checksum_ok and not diff.count_gaps()
    assert sum(diff.source_rows[WINDOW].values()) == ROWS
    # Summaries only: nothing fetched row by row.
    assert diff.rows_fetched == 0 and diff.segments_by_level["window_org"] == 2


def test_drift_is_bisected_to_exactly_the_seeded_keys(window, pg_dsn):
    schema, lake = window
    with psycopg.connect(pg_dsn) as conn:
        table = f"{schema}.operation_runs"
        conn.execute(
            f"INSERT INTO {table} SELECT 'late-' || run_id, pipeline_run_id, workflow_id, "
            "operation_id, action_id, entity_type, entity_id, org_id, company_id, source_provider, "
            "status, attempt_count, started_at, ended_at, duration_ms, cost_usd, error_code, "
            f"error_message, created_at FROM {table} ORDER BY run_id LIMIT 2"
        )
        changed = [
            r[0]
            for r in conn.execute(
                f"SELECT run_id FROM {table} WHERE cost_usd IS NOT NULL AND run_id NOT LIKE 'late-%' "
                "ORDER BY run_id DESC LIMIT 2"
            )
        ]
        conn.execute(
            f"UPDATE {table} SET cost_usd = cost_usd + 0.000001 WHERE run_id = ANY(%s)", (changed,)
        )
        late = [
            r[0] for r in conn.execute(f"SELECT run_id FROM {table} WHERE run_id LIKE 'late-%'")
        ]
    path = window_files(str(lake), RUNS.name, [WINDOW])[WINDOW][0]
    table = pq.read_table(path)
    deleted = table.column("run_id").to_pylist()[100:103]
    pq.write_table(pa.concat_tables([table.slice(0, 100), table.slice(103)]), path)

    diff = _diff(pg_dsn, schema, lake, leaf_rows=8)
    assert [k["run_id"] for k in diff.missing_in_export] == sorted(late + deleted)
    assert [k["run_id"] for k in diff.different] == sorted(changed)
    assert diff.extra_in_export == []
    assert diff.counts == {"missing_in_export": 5, "extra_in_export": 0, "different": 2}
    # Bisected through two key-hash levels below (window, org), fetching few rows.
    assert set(diff.segments_by_level) == {"window_org", "key_prefix_2", "key_prefix_4"}
    assert diff.rows_fetched < ROWS / 20

    with psycopg.connect(pg_dsn) as conn:
        session_setup(conn)
        full = rh.full_key_diff(
            RUNS,
            [WINDOW],
            conn,
            lambda k: window_files(str(lake), RUNS.name, [k])[k],
            schema=schema,
        )
    assert full == diff.counts

    capped = _diff(pg_dsn, schema, lake, leaf_rows=8, max_keys=3)
    assert capped.keys_truncated
    assert len(capped.missing_in_export + capped.different + capped.extra_in_export) == 3
    assert not capped.checksum_ok


def test_a_row_exported_twice_is_extra(window, pg_dsn):
    schema, lake = window
    path = window_files(str(lake), RUNS.name, [WINDOW])[WINDOW][0]
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(5, 1)]), path)
    diff = _diff(pg_dsn, schema, lake, leaf_rows=64)
    assert [k["run_id"] for k in diff.extra_in_export] == [table.column("run_id")[5].as_py()]
    assert diff.missing_in_export == [] and diff.different == []


pairs = st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from("xyz")), max_size=12)


@given(source=pairs, export=pairs)
def test_leaf_comparison_matches_a_multiset_oracle(source, export):
    missing, extra, different = rh._diff_rows(source, export)
    src, exp = Counter(source), Counter(export)
    src_only = Counter(k for k, _ in (src - exp).elements())
    exp_only = Counter(k for k, _ in (exp - src).elements())
    assert set(different) == set(src_only) & set(exp_only)
    assert Counter(missing) == src_only - exp_only
    assert Counter(extra) == exp_only - src_only
    if Counter(source) == Counter(export):
        assert (missing, extra, different) == ([], [], [])


def test_hash_halves_agree_across_engines_and_postgres_versions(pg_dsn):
    """The 60-bit halves summed per segment, against Python's own reading of the md5 digits."""
    digests = [hashlib.md5(f"row-{i}".encode()).hexdigest() for i in range(300)]
    expected = [(int(d[:15], 16), int(d[15:30], 16)) for d in digests]
    with psycopg.connect(pg_dsn) as conn:
        version = conn.info.server_version
        for server_version in {version, 150000}:  # the hex form from 16 on, bit(60) before
            h1, h2 = rh._pg_hash_values("d", server_version)
            got = conn.execute(
                f"SELECT {h1}, {h2} FROM unnest(%s::text[]) WITH ORDINALITY AS u(d, i) ORDER BY i",
                (digests,),
            ).fetchall()
            assert got == expected
    h1, h2 = rh._duck_hash_values("d")
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {h1}, {h2} FROM (SELECT unnest(?) AS d, generate_subscripts(?, 1) AS i) ORDER BY i",
        [digests, digests],
    ).fetchall()
    assert got == expected
