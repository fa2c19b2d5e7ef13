"""The job store `gex_history.db`: `import_jobs` has the spec's columns and those its rules need,
times are UTC with `updated_at` moving on each change, and every change is in the history."""

import datetime as dt

import duckdb

from pipeline_assets_tests.gex.conftest import snapshot, write_json

SPEC_COLUMNS = {
    "id", "url", "checksum", "ticker", "status", "records_processed", "last_error",
    "created_at", "updated_at",
}  # fmt: skip
RULE_COLUMNS = {"endpoint", "staged_path", "skipped", "duplicate_of", "corrects_job_id", "reason"}


def test_import_jobs_has_the_spec_columns_and_the_rules_columns(importer, sources):
    importer.enqueue(write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero")
    con = duckdb.connect(str(importer.paths.history_db), read_only=True)
    try:
        columns = {r[0] for r in con.execute("DESCRIBE import_jobs").fetchall()}
    finally:
        con.close()
    assert SPEC_COLUMNS | RULE_COLUMNS <= columns


def test_times_are_utc_and_every_change_is_in_the_history(importer, sources):
    staged = importer.enqueue(
        write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero"
    )
    done = importer.import_job(staged.id)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert abs(now - done.created_at) < dt.timedelta(minutes=5)
    assert done.created_at == staged.created_at and done.updated_at > staged.updated_at
    assert done.checksum and len(done.checksum) == 64 and done.records_processed == 1
    events = [(e["event"], e["status"]) for e in importer.store.history(done.id)]
    assert events == [("created", "pending"), ("staged", None), ("completed", "completed")]
