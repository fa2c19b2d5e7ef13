"""Bad input and failures: an unreachable Postgres (retried, then a clear failure and an alert on
the assets), a source column missing (named), a connection lost mid-stream (read again from the
start, no row twice)."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, hq_export
from pipeline_assets.defs.hq_export.sensors import hq_export_failure_alert
from pipeline_assets.lib.hq.datasets import RUNS
from pipeline_assets.lib.hq.extract import read_window
from pipeline_assets.lib.hq.source_tables import create_source_tables
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.source_postgres import SourcePostgres

WINDOW = "2026-02-17-10:00"
START = dt.datetime(2026, 2, 17, 10, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=1)
PASSWORD = "n0t-in-any-log"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(
    tmp_path: Path, source: SourcePostgres, instance: dg.DagsterInstance, schema: str = "public"
):
    defs = dg.Definitions(
        assets=[hq_export],
        resources={
            "io_manager": LakeIOManager(lake_root=str(tmp_path), fsync=False),
            "source_postgres": source,
        },
    )
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=list(HQ_ASSET_KEYS),
        partition_key=WINDOW,
        run_config={"ops": {"hq_export": {"config": {"source_schema": schema}}}},
        raise_on_error=False,
    )


def _failure_text(result) -> str:
    return "\n".join(
        str(e.event_specific_data.error.message)
        if getattr(e.event_specific_data, "error", None)
        else e.message or ""
        for e in result.all_events
        if e.is_failure
    )


def test_unreachable_postgres_is_retried_then_fails_clearly_and_raises_an_alert(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(tmp_path))
    source = SourcePostgres(
        dsn=f"postgresql://loader:{PASSWORD}@127.0.0.1:{_free_port()}/ops",
        embedded_dir=str(tmp_path / "unused"),
        connect_attempts=3,
        backoff_seconds=0.01,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(tmp_path, source, instance)
        assert not result.success
        text = _failure_text(result)
        assert (
            "could not connect to postgresql://loader@127.0.0.1" in text
            and "after 3 attempts" in text
        )
        assert "dx_operation_runs_v1 window 2026-02-17-10:00" in text
        logs = "\n".join(str(e) for e in instance.all_logs(result.run_id))
        assert PASSWORD not in logs
        assert "attempt 1/3 failed" in logs  # each retry is logged

        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="hq_export_failure_alert",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
        ).for_run_failure()
        hq_export_failure_alert(context)
        observations = instance.fetch_observations(
            dg.AssetKey("dx_operation_runs_v1"), limit=5
        ).records
        assert observations
        metadata = observations[0].asset_observation.metadata
        assert metadata["failed_run_id"].value == result.run_id
        assert (
            "after 3 attempts" in metadata["error"].value
            and PASSWORD not in metadata["error"].value
        )
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_missing_source_column_fails_the_run_naming_it(
    tmp_path, monkeypatch, pg_dsn, source_schema
):
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(tmp_path))
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"ALTER TABLE {source_schema}.operation_runs DROP COLUMN status")
    source = SourcePostgres(dsn=pg_dsn, embedded_dir=str(tmp_path / "unused"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(tmp_path, source, instance, schema=source_schema)
    assert not result.success
    text = _failure_text(result)
    assert f"source table {source_schema}.operation_runs has no column 'status'" in text
    assert "dx_operation_runs_v1" in text


@pytest.fixture(scope="module")
def big_window(pg_dsn: str) -> str:
    """80,000 valid runs in one window: long enough a stream to cut in the middle."""
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DROP SCHEMA IF EXISTS big CASCADE")
        create_source_tables(conn, "big")
        conn.execute(
            "INSERT INTO big.operation_runs (run_id, operation_id, action_id, entity_type, entity_id, "
            "org_id, status, attempt_count, started_at, created_at, error_message) "
            "SELECT md5(i::text), 'company.enrich.profile', 'a1', 'company', 'e' || (i %% 500), "
            "'org-' || (i %% 3), 'succeeded', 1, %s, %s + make_interval(secs => i / 50.0), repeat('x', 200) "
            "FROM generate_series(1, 80000) AS i",
            (START, START),
        )
    return "big"


def test_a_connection_lost_mid_stream_is_read_again_without_duplicates(
    pg_dsn, big_window, tmp_path
):
    killed = threading.Event()
    pids: list[int] = []

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(pg_dsn) as conn:
            pids.append(conn.info.backend_pid)
            yield conn

    def killer() -> None:
        # Cut the first connection once its rows have started to arrive.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            if pids and any(
                p.stat().st_size > 100_000 for p in tmp_path.glob(".dx_operation_runs_v1-*.arrows")
            ):
                with psycopg.connect(pg_dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
                killed.set()
            time.sleep(0.001)

    thread = threading.Thread(target=killer)
    thread.start()
    retries: list[str] = []
    try:
        window, read = read_window(
            connect,
            RUNS,
            WINDOW,
            START,
            END,
            schema=big_window,
            spool_dir=str(tmp_path),
            backoff_seconds=0.01,
            on_retry=lambda attempt, delay, error: retries.append(error),
        )
    finally:
        killed.set()
        thread.join()
    assert len(pids) == 2 and read.attempts == 2 and len(retries) == 1
    run_ids = [rid for batch in window.batches() for rid in batch.column("run_id").to_pylist()]
    assert len(run_ids) == 80_000 == len(set(run_ids)) == read.rows
    # The same rows as an undisturbed read, to the byte.
    clean, clean_read = read_window(
        connect, RUNS, WINDOW, START, END, schema=big_window, spool_dir=str(tmp_path)
    )
    assert clean_read.sha256 == read.sha256 and clean_read.attempts == 1
    clean.remove()
    assert not list(tmp_path.glob(".dx_*"))  # no spool left behind
