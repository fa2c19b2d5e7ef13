"""gex_data.db holds a snapshot's fields once (`snapshots`) and its strikes as rows (`strikes`);
the view `strike_rows` joins them into exactly the rows of the canonical Parquet; a file of the
earlier wide shape (snapshot fields on every strike row) is migrated on the next import without
losing a row or a value; a rerun of a job leaves one copy of its rows."""

import duckdb

from pipeline_assets.lib.gex.records import SCHEMA
from pipeline_assets_tests.gex.conftest import snapshot, write_json


def _import(importer, sources, name: str, records: list[dict]):
    job = importer.enqueue(write_json(sources, name, records).as_uri(), "SPX", "gex_zero")
    job = importer.import_job(job.id)
    assert job.status == "completed", job.last_error
    return job


def _differences(con, job, data_root) -> int:
    """Rows in one of strike_rows (for the job) and the canonical Parquet but not in the other."""
    files = ", ".join(f"'{data_root / f}'" for f in job.canonical_files)
    view = f"SELECT * FROM strike_rows WHERE job_id = {job.id}"
    parquet = f"SELECT * FROM read_parquet([{files}])"
    return sum(
        con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()[0]
        for a, b in ((view, parquet), (parquet, view))
    )


def _columns(con, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_strike_rows_are_the_canonical_rows_and_snapshot_fields_are_stored_once(
    importer, data_root, sources
):
    records = [snapshot(ts=1771511400 + 60 * i, strikes=3) for i in range(4)]
    records[2]["strikes"] = []
    job = _import(importer, sources, "a.json", records)
    importer.import_job(job.id)  # a rerun of a completed job changes nothing
    con = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    try:
        assert _differences(con, job, data_root) == 0
        assert con.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM strikes").fetchone()[0] == 3 * 3 + 1
        assert "spot" not in _columns(con, "strikes") and "strike" not in _columns(con, "snapshots")
        assert _columns(con, "strike_rows") == SCHEMA.names
    finally:
        con.close()


def test_a_wide_strikes_table_of_before_is_migrated_without_loss(importer, data_root, sources):
    old = _import(importer, sources, "old.json", [snapshot(strikes=2), snapshot(ts=1771511460)])
    # Rebuild the earlier shape: one wide table, every snapshot field (max_priors too) on every row.
    con = duckdb.connect(str(data_root / "gex_data.db"))
    try:
        wide = (
            ", ".join("n.max_priors" if c == "max_priors" else c for c in SCHEMA.names)
            .replace("job_id", "s.job_id")
            .replace("record_index", "s.record_index")
        )
        con.execute(
            f"CREATE TABLE wide AS SELECT {wide} FROM strikes s JOIN snapshots n "
            "USING (job_id, record_index) ORDER BY s.record_index, strike_index"
        )
        con.execute("DROP VIEW strike_rows")
        con.execute("DROP TABLE strikes")
        con.execute("DROP TABLE snapshots")
        con.execute("ALTER TABLE wide RENAME TO strikes")
        assert con.execute("SELECT count(max_priors) FROM strikes").fetchone()[0] == 2 + 3
    finally:
        con.close()
    new = _import(importer, sources, "new.json", [snapshot(ts=1771511520)])
    con = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    try:
        assert "spot" not in _columns(con, "strikes")
        assert _differences(con, old, data_root) == 0
        assert _differences(con, new, data_root) == 0
        assert con.execute(
            "SELECT job_id, count(*) FROM snapshots GROUP BY ALL ORDER BY 1"
        ).fetchall() == [
            (old.id, 2),
            (new.id, 1),
        ]
    finally:
        con.close()
