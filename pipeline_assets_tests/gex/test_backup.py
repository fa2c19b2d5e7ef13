"""Backups of the GEX databases: `pipeline gex import --backup` snapshots gex_history.db and
gex_data.db under the writer lock before it imports; the copies open in DuckDB and hold the state
of that moment; only the newest `PIPELINE_GEX_BACKUPS_KEPT` snapshots are kept, the others are
removed and logged."""

import datetime as dt
import json

import duckdb
import pytest

from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.settings import Settings, SettingsError
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


def test_only_the_newest_backups_are_kept_and_the_removed_ones_are_logged(data_root, sources):
    lines: list[str] = []
    importer = GexImporter(data_root, GexConfig(backups_kept=3), log=lines.append)
    job = importer.enqueue(write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero")
    other = data_root / "backups/gex/keep-me"  # not a snapshot: never touched
    other.mkdir(parents=True)
    start = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    results = [
        importer.backup_databases(now=start + dt.timedelta(minutes=m)) for m in (5, 1, 4, 2, 3)
    ]
    folders = sorted(p.name for p in (data_root / "backups/gex").iterdir())
    # Kept by their time, not by the order they were taken in.
    assert folders == [
        "20260301T120300000000Z",
        "20260301T120400000000Z",
        "20260301T120500000000Z",
        "keep-me",
    ]
    removed = [r for result in results for r in result.removed]
    assert removed == ["backups/gex/20260301T120100000000Z", "backups/gex/20260301T120200000000Z"]
    assert all(any(f"removed {r}" in line for line in lines) for r in removed)
    assert results[0].copies == ["backups/gex/20260301T120500000000Z/gex_history.db"]
    # What remains is a whole snapshot of that moment.
    assert _query(
        data_root / "backups/gex/20260301T120300000000Z/gex_history.db",
        "SELECT id FROM import_jobs",
    ) == [(job.id,)]


def test_pipeline_gex_backup_keeps_the_configured_number(data_root, sources):
    env = {"PIPELINE_GEX_BACKUPS_KEPT": "2"}
    src = write_json(sources, "a.json", [snapshot()])
    assert (
        cli(
            data_root, "enqueue", src.as_uri(), "--ticker", "SPX", "--endpoint", "gex_zero"
        ).returncode
        == 0
    )
    printed = [json.loads(cli(data_root, "backup", env=env).stdout) for _ in range(3)]
    assert [len(p["removed"]) for p in printed] == [0, 0, 1]
    assert len(list((data_root / "backups/gex").iterdir())) == 2
    with pytest.raises(SettingsError, match="PIPELINE_GEX_BACKUPS_KEPT='0'"):
        Settings.from_env({"PIPELINE_GEX_BACKUPS_KEPT": "0"})
