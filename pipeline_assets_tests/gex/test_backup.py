"""Backups of the GEX databases: `pipeline gex import --backup` snapshots gex_history.db and
gex_data.db under the writer lock before it imports; the copies open in DuckDB and hold the state
of that moment."""

import json

import duckdb

from pipeline_assets_tests.gex.conftest import snapshot, write_json
from pipeline_assets_tests.gex.test_import_flow import cli


def _query(path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_import_with_backup_snapshots_both_databases_first(importer, data_root, sources):
    first = importer.enqueue(
        write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero"
    )
    assert importer.import_job(first.id).status == "completed"
    second = importer.enqueue(
        write_json(sources, "b.json", [snapshot(ts=1771511460)]).as_uri(), "SPX", "gex_zero"
    )
    result = cli(data_root, "import", "--backup")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    (folder,) = (data_root / "backups/gex").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["gex_data.db", "gex_history.db"]
    jobs = _query(folder / "gex_history.db", "SELECT id, status FROM import_jobs ORDER BY id")
    assert jobs == [(first.id, "completed"), (second.id, "pending")]
    assert _query(folder / "gex_data.db", "SELECT DISTINCT job_id FROM strikes") == [(first.id,)]
    # The live databases moved on; the snapshot did not.
    assert importer.store.job(second.id).status == "completed"
