"""Retention of staged files (one setting, archive option, never a non-completed job's file, a
log of what it removed) as the scheduled Dagster job, and corrections recorded in the job
history with reason and checksums."""

import datetime as dt
import hashlib
import json

import dagster as dg
import duckdb

from pipeline_assets.defs.gex.jobs import gex_retention_job
from pipeline_assets.defs.gex.schedules import gex_retention_schedule
from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.gex_store import GexStore
from pipeline_assets_tests.gex.conftest import snapshot, write_json

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=15)


def _stage_three(importer, sources):
    done = importer.enqueue(write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero")
    importer.import_job(done.id)
    failed = importer.enqueue(
        write_json(sources, "b.json", "<html>oops</html>").as_uri(), "SPX", "gex_zero"
    )
    pending = importer.enqueue(
        write_json(sources, "c.json", [snapshot(ts=1771600000)]).as_uri(), "NQ_NDX", "gex_zero"
    )
    return importer.store.job(done.id), failed, pending


def test_retention_removes_only_old_files_of_completed_jobs_and_logs_them(
    importer, data_root, sources
):
    done, failed, pending = _stage_three(importer, sources)
    lines: list[str] = []
    importer.log = lines.append
    assert importer.retention().removed == []  # nothing is 14 days old yet
    report = importer.retention(now=LATER)
    assert report.removed == [done.staged_path] and report.archived == []
    assert not (data_root / done.staged_path).exists()
    assert not (data_root / (done.staged_path + ".meta.json")).exists()
    assert (data_root / failed.staged_path).exists() and (data_root / pending.staged_path).exists()
    assert report.kept == {
        failed.staged_path: f"job {failed.id} is failed",
        pending.staged_path: f"job {pending.id} is pending",
    }
    assert any(f"retention: removed {done.staged_path}" in line for line in lines)
    events = importer.store.history(done.id)
    assert (
        events[-1]["event"] == "staged_file_removed"
        and "older than 14 days" in events[-1]["reason"]
    )


def test_retention_archives_first_when_asked(data_root, sources):
    importer = GexImporter(data_root, GexConfig(archive=True, retention_days=3))
    done, _, _ = _stage_three(importer, sources)
    before = (data_root / done.staged_path).read_bytes()
    report = importer.retention(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=4))
    (archived,) = report.archived
    assert (
        archived.startswith("archive/gex/staged/") and (data_root / archived).read_bytes() == before
    )
    assert (data_root / (archived + ".meta.json")).exists()


def test_the_retention_period_is_one_setting_default_14_days():
    assert Settings.from_env({}).gex_retention_days == 14
    assert Settings.from_env({"PIPELINE_GEX_RETENTION_DAYS": "90"}).gex_retention_days == 90


def test_retention_runs_as_a_scheduled_dagster_job(importer, data_root, sources):
    _stage_three(importer, sources)
    assert gex_retention_schedule.cron_schedule == "15 3 * * *"
    assert gex_retention_schedule.job_name == gex_retention_job.name
    store = GexStore(data_root=str(data_root), retention_days=0)
    with dg.DagsterInstance.ephemeral() as instance:
        result = gex_retention_job.execute_in_process(
            instance=instance, resources={"gex_store": store}
        )
    assert result.success
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    removed = event.event_specific_data.metadata["removed"].value
    assert len(removed) == 1 and removed[0].endswith("SPX_classic_gex_zero.json")


def test_a_correction_supersedes_the_original_and_is_recorded_with_reason_and_checksums(
    importer, data_root, sources
):
    original = importer.enqueue(
        write_json(sources, "v1.json", [snapshot(spot=6050.0)]).as_uri(), "SPX", "gex_zero"
    )
    original = importer.import_job(original.id)
    (old_file,) = original.canonical_files
    old_sha = hashlib.sha256((data_root / old_file).read_bytes()).hexdigest()
    fixed = write_json(sources, "v2.json", [snapshot(spot=6051.5)])
    correction = importer.correct(original.id, fixed.as_uri(), reason="vendor re-sent spot")
    assert correction.corrects_job_id == original.id and correction.reason == "vendor re-sent spot"
    correction = importer.import_job(correction.id)
    assert correction.status == "completed"
    assert importer.store.job(original.id).status == "superseded"
    assert not (data_root / old_file).exists()
    (rewrite,) = [e for e in importer.store.history(original.id) if e["event"] == "rewrite"]
    details = rewrite["details"]
    assert rewrite["reason"] == "vendor re-sent spot"
    assert details["old_files"][0]["sha256"] == old_sha
    assert (
        details["new_files"][0]["sha256"]
        == hashlib.sha256((data_root / correction.canonical_files[0]).read_bytes()).hexdigest()
    )
    assert (details["old_staged_sha256"], details["new_staged_sha256"]) == (
        original.checksum,
        correction.checksum,
    )
    assert (data_root / details["old_files"][0]["archived_to"]).exists()
    data = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    assert data.execute("SELECT DISTINCT job_id, spot FROM strike_rows").fetchall() == [
        (correction.id, 6051.5)
    ]
    assert data.execute("SELECT DISTINCT job_id FROM strikes").fetchall() == [(correction.id,)]
    assert json.loads(json.dumps(importer.store.history(correction.id)))[-1]["event"] == "rewrite"
