"""Jobs whose enqueue stopped before the file was staged: `pipeline gex import` and the sensor fail
them once they are older than any download can take (with a readable last_error), leave younger
ones alone, remove the partial download a dead enqueue left, and enqueueing the URL again imports
it; a job failed that way while its download was still running keeps its verdict."""

import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.gex import assets, jobs, sensors
from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.gex_store import GexStore
from pipeline_assets_tests.gex.conftest import snapshot, write_json
from pipeline_assets_tests.gex.test_import_flow import cli


def _killed_enqueue(importer: GexImporter, url: str, *, age_s: float) -> int:
    """What an enqueue killed mid-download leaves: a pending job row, created `age_s` ago, no file."""
    with importer.store.connect() as con:
        job = importer.store.create(con, url=url, ticker="SPX", endpoint="gex_zero")
        created = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=age_s)
        con.execute("UPDATE import_jobs SET created_at = ? WHERE id = ?", [created, job.id])
    return job.id


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_staging_limit_covers_every_attempt_of_a_download_to_its_deadline():
    config = GexConfig(download_timeout=30.0, download_attempts=4)
    assert config.download_deadline == 300.0
    assert config.staging_limit_s == 4 * (300.0 + 8.0)  # 8 s: the longest backoff between attempts


def test_pipeline_gex_import_fails_an_abandoned_job_and_a_new_enqueue_of_the_url_imports_it(
    data_root, sources
):
    # The settings `pipeline gex import` reads (the defaults), for the limit.
    config = GexConfig.from_settings(Settings.from_env({"PIPELINE_DATA_ROOT": str(data_root)}))
    importer = GexImporter(data_root, config)
    src = write_json(sources, "spx.json", [snapshot()])
    abandoned = _killed_enqueue(importer, src.as_uri(), age_s=config.staging_limit_s + 60)
    recent = _killed_enqueue(importer, src.as_uri(), age_s=config.staging_limit_s - 60)
    # The partial download the killed enqueue left, and one of a writer that still runs.
    staging = data_root / "source/gexbot"
    staging.mkdir(parents=True)
    partial = staging / f".spx.json.{_dead_pid()}-{uuid.uuid4().hex}.tmp"
    partial.write_bytes(b'[{"timestamp": 17715')
    running = staging / f".other.json.{os.getpid()}-{uuid.uuid4().hex}.tmp"
    running.write_bytes(b"[")

    result = cli(data_root, "import")
    assert result.returncode == 1, result.stderr  # a job failed
    (printed,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (printed["id"], printed["status"]) == (abandoned, "failed")
    assert printed["last_error"].startswith(
        f"abandoned: the file of {src.as_uri()} was never staged"
    )
    assert "Enqueue the URL again" in printed["last_error"]
    assert importer.store.job(recent).status == "pending"  # its enqueue may still be downloading
    assert [e["event"] for e in importer.store.history(abandoned)] == ["created", "abandoned"]
    assert not partial.exists() and running.exists()

    again = importer.enqueue(src.as_uri(), "SPX", "gex_zero")
    assert (again.status, again.skipped) == ("pending", False)
    assert importer.import_job(again.id).status == "completed"


@pytest.mark.parametrize(("age_s", "fails"), [(-30.0, False), (30.0, True)])
def test_the_limit_decides(importer, data_root, age_s, fails):
    job = _killed_enqueue(importer, "file:///x.json", age_s=importer.config.staging_limit_s + age_s)
    failed = importer.fail_abandoned_jobs()
    assert [j.id for j in failed] == ([job] if fails else [])
    assert importer.store.job(job).status == ("failed" if fails else "pending")


def test_the_sensor_fails_abandoned_jobs_and_requests_runs_for_staged_ones(
    data_root, sources, instance
):
    store = GexStore(data_root=str(data_root))
    importer = store.importer()
    staged = importer.enqueue(
        write_json(sources, "a.json", [snapshot()]).as_uri(), "SPX", "gex_zero"
    )
    abandoned = _killed_enqueue(
        importer, "file:///gone.json", age_s=importer.config.staging_limit_s + 1
    )
    defs = dg.Definitions(
        assets=[assets.gex_strikes],
        jobs=[jobs.gex_import_job],
        sensors=[sensors.gex_pending_jobs],
        resources={"gex_store": store},
    )
    context = dg.build_sensor_context(
        instance=instance, resources={"gex_store": store}, definitions=defs
    )
    result = sensors.gex_pending_jobs(context)
    assert [r.partition_key for r in result.run_requests] == [staged.partition_key]
    job = importer.store.job(abandoned)
    assert job.status == "failed" and "was never staged" in job.last_error


def test_a_job_failed_as_abandoned_while_its_download_ran_keeps_the_verdict(
    importer, data_root, sources
):
    src = write_json(sources, "slow.json", [snapshot()])
    download = importer.download_to_staging
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=importer.config.staging_limit_s + 60)

    def slow_download(*args, **kwargs):
        # The download outlives the limit (a stalled machine, say): the sensor fails the job.
        result = download(*args, **kwargs)
        assert len(importer.fail_abandoned_jobs(now=later)) == 1
        return result

    importer.download_to_staging = slow_download
    job = importer.enqueue(src.as_uri(), "SPX", "gex_zero")
    assert job.status == "failed" and job.staged_path and job.checksum
    assert [e["event"] for e in importer.store.history(job.id)] == [
        "created",
        "abandoned",
        "staged",
    ]
    assert importer.pending_jobs() == []
    importer.download_to_staging = download
    again = importer.enqueue(
        src.as_uri(), "SPX", "gex_zero"
    )  # same content: not a duplicate of a failed job
    assert importer.import_job(again.id).status == "completed"
    con = duckdb.connect(str(data_root / "gex_data.db"), read_only=True)
    try:
        assert con.execute("SELECT DISTINCT job_id FROM strikes").fetchall() == [(again.id,)]
    finally:
        con.close()
