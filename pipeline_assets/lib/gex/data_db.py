"""The tables of `gex_data.db`, the GEX import's DuckDB processing engine (not canonical storage).

- `strikes`: every imported strike row (`job_id`, `record_index`, `strike_index`, `strike`,
  `gex_vol`, `gex_oi`, `priors`; one row with `strike_index` -1 for a snapshot without strikes);
- `snapshots`: each imported snapshot's own fields once (`job_id`, `record_index`, `ticker`,
  `timestamp`, `spot`, ..., `max_priors`, `extra_fields`);
- the view `strike_rows`: the two joined into the rows of the `gex_strikes` contract, as the
  canonical Parquet holds them.

A job's rows are replaced in one transaction, so a rerun leaves one copy. Files written before the
split (one wide `strikes` table with the snapshot fields on every row) are migrated on first use:
the snapshot fields move to `snapshots`, nothing is lost (`strike_rows` gives the old rows back).
"""

from __future__ import annotations

import duckdb

from pipeline_assets.lib.gex.sql_records import (
    SNAPSHOT_COLUMNS,
    STRIKE_COLUMNS,
    StagingTables,
    canonical_rows_sql,
)

STRIKES_TABLE = "strikes"
SNAPSHOTS_TABLE = "snapshots"
STRIKE_ROWS_VIEW = "strike_rows"


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {r[0] for r in rows}


def migrate_wide_strikes(con: duckdb.DuckDBPyConnection) -> bool:
    """Split a `strikes` table of the earlier wide shape into `strikes` and `snapshots`.

    Returns whether there was one. A snapshot's fields come from its first row (`strike_index`
    0, or -1 without strikes), which carries them all.
    """
    if "spot" not in _columns(con, STRIKES_TABLE):
        return False
    con.execute("BEGIN")
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {SNAPSHOTS_TABLE} AS SELECT {', '.join(SNAPSHOT_COLUMNS)} "
            f"FROM {STRIKES_TABLE} LIMIT 0"
        )
        con.execute(
            f"INSERT INTO {SNAPSHOTS_TABLE} BY NAME SELECT {', '.join(SNAPSHOT_COLUMNS)} "
            f"FROM {STRIKES_TABLE} WHERE strike_index <= 0 ORDER BY job_id, record_index"
        )
        con.execute(
            f"CREATE TABLE strikes_narrow AS SELECT {', '.join(STRIKE_COLUMNS)} FROM {STRIKES_TABLE}"
        )
        con.execute(f"DROP TABLE {STRIKES_TABLE}")
        con.execute(f"ALTER TABLE strikes_narrow RENAME TO {STRIKES_TABLE}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(_columns(con, table))


def delete_job_rows(con: duckdb.DuckDBPyConnection, job_id: int) -> None:
    """Remove a job's rows from `strikes` and `snapshots` (those that exist)."""
    for table in (STRIKES_TABLE, SNAPSHOTS_TABLE):
        if _exists(con, table):
            con.execute(f"DELETE FROM {table} WHERE job_id = ?", [job_id])


def store_job_rows(con: duckdb.DuckDBPyConnection, job_id: int, tables: StagingTables) -> None:
    """Replace the job's rows in `strikes` and `snapshots` by the staging tables', atomically."""
    migrate_wide_strikes(con)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {STRIKES_TABLE} AS SELECT * FROM {tables.strikes} LIMIT 0"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {SNAPSHOTS_TABLE} AS SELECT * FROM {tables.snapshots} LIMIT 0"
    )
    con.execute("BEGIN")
    try:
        delete_job_rows(con, job_id)
        con.execute(f"INSERT INTO {STRIKES_TABLE} BY NAME SELECT * FROM {tables.strikes}")
        con.execute(f"INSERT INTO {SNAPSHOTS_TABLE} BY NAME SELECT * FROM {tables.snapshots}")
        con.execute(
            f"CREATE OR REPLACE VIEW {STRIKE_ROWS_VIEW} AS "
            f"{canonical_rows_sql(STRIKES_TABLE, SNAPSHOTS_TABLE)}"
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
