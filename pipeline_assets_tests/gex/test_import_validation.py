"""The import's validation end to end: a broken record deep in a file fails its job naming the
record and the field (nothing written, no staging table left); the canonical rows of a plain and
a gzip staged file equal the Python parser's rows, read back with pyarrow; a history across a
month end gives one verified file per month, and none at all when one of them cannot be written."""

import gzip
import json

import duckdb
import pyarrow.parquet as pq
from upath import UPath

from pipeline_assets.lib.custody import verify_file
from pipeline_assets.lib.gex import imports
from pipeline_assets.lib.gex.records import parse_records
from pipeline_assets_tests.gex.conftest import snapshot, write_json


def _history(n: int = 20) -> list[dict]:
    return [snapshot(ts=1771511400 + 60 * i, strikes=4) for i in range(n)]


def test_a_broken_strike_deep_in_a_file_fails_the_job_naming_record_and_field(
    importer, data_root, sources
):
    records = _history()
    records[13]["strikes"][1] = ["6005", 1.0, 2.0]
    src = write_json(sources, "bad.json", records)
    job = importer.import_job(importer.enqueue(src.as_uri(), "SPX", "gex_zero").id)
    assert job.status == "failed"
    assert "record 13 field 'strikes[1][0]': expected the strike" in job.last_error
    assert (data_root / job.staged_path).read_bytes() == src.read_bytes()
    assert not (data_root / "parquet").exists()
    con = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert not any(t.startswith("staging_strikes_") for t in tables)
        if "strikes" in tables:
            count = con.execute("SELECT count(*) FROM strikes WHERE job_id = ?", [job.id])
            assert count.fetchall() == [(0,)]
    finally:
        con.close()


def test_a_plain_and_a_gzip_file_give_the_python_parsers_rows(importer, data_root, sources):
    records = _history(7)
    records[2]["strikes"] = []
    records[4]["strikes"][0] = [6000.0, None, -0.0]
    plain = json.dumps(records).encode()
    reference = parse_records(plain, job_id=0, endpoint="gex_zero", name="ref").table
    src = write_json(sources, "plain.json", plain.decode())
    packed = sources / "packed.json.gz"
    packed.write_bytes(gzip.compress(plain, mtime=0))
    for url in (src.as_uri(), packed.as_uri()):
        job = importer.import_job(importer.enqueue(url, "SPX", "gex_zero").id)
        assert job.status == "completed", job.last_error
        assert job.records_processed == 7 and job.rows_written == reference.num_rows
        (path,) = job.canonical_files
        written = pq.read_table(data_root / path)
        assert written.schema.metadata == reference.schema.metadata  # the contract's identity
        # Parquet names list items `element`; otherwise the types are the contract's.
        written = written.cast(reference.schema)
        assert (
            written.drop_columns(["job_id"]).to_pylist()
            == reference.drop_columns(["job_id"]).to_pylist()
        )
        assert set(written["job_id"].to_pylist()) == {job.id}


def test_a_history_across_a_month_end_gives_one_file_per_month(importer, data_root, sources):
    jan_31_last_minute = 1769903940  # 2026-01-31T23:59:00Z
    records = [snapshot(ts=jan_31_last_minute + 60 * i, strikes=2) for i in range(3)]
    src = write_json(sources, "month_end.json", records)
    job = importer.import_job(importer.enqueue(src.as_uri(), "SPX", "gex_zero").id)
    assert job.status == "completed", job.last_error
    assert job.canonical_files == [
        f"parquet/gex/2026/01/SPX/gex_zero/strikes_job{job.id}.parquet",
        f"parquet/gex/2026/02/SPX/gex_zero/strikes_job{job.id}.parquet",
    ]
    january, february = (pq.read_table(data_root / f) for f in job.canonical_files)
    assert january["record_index"].to_pylist() == [0, 0]
    assert february["record_index"].to_pylist() == [1, 1, 2, 2]
    for path in job.canonical_files:
        verify_file(UPath(data_root / path))


def test_a_failed_month_file_leaves_no_file_of_any_month(importer, data_root, sources, monkeypatch):
    write = imports.write_canonical_parquet_draft

    def failing_february(path, table):
        if "/2026/02/" in str(path):
            raise OSError("disk full")
        return write(path, table)

    monkeypatch.setattr(imports, "write_canonical_parquet_draft", failing_february)
    jan_31_last_minute = 1769903940
    records = [snapshot(ts=jan_31_last_minute + 60 * i, strikes=2) for i in range(3)]
    job = importer.import_job(
        importer.enqueue(write_json(sources, "m.json", records).as_uri(), "SPX", "gex_zero").id
    )
    assert job.status == "failed" and "disk full" in job.last_error
    assert [p for p in (data_root / "parquet").rglob("*") if p.is_file()] == []
