"""The micro-batch sensor: a watermark cursor requests exactly the windows with new, late or
updated rows (and, for upserts, the windows of the versions they replace), nothing when nothing
changed, and stable run keys; its interval comes from the settings, within 5-15 minutes."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import psycopg
import pytest

from pipeline_assets.defs.hq_export.sensors import (
    MICROBATCH_MINUTES,
    hq_microbatch,
    plan_microbatch,
)
from pipeline_assets.lib.hq.extract import session_setup
from pipeline_assets.lib.hq.source_tables import create_source_tables, insert_rows
from pipeline_assets.lib.settings import Settings, SettingsError
from pipeline_assets.resources.source_postgres import SourcePostgres

T0 = dt.datetime(2026, 2, 17, 10, 5, tzinfo=dt.UTC)


def _run(run_id: str, created: dt.datetime) -> dict:
    return {
        "run_id": run_id,
        "org_id": "org-a",
        "status": "succeeded",
        "entity_type": "company",
        "entity_id": "e1",
        "operation_id": "op",
        "action_id": "a",
        "attempt_count": 1,
        "started_at": created,
        "created_at": created,
    }


def _plan(dsn: str, schema: str, state: dict) -> tuple[list[str], dict]:
    with psycopg.connect(dsn) as conn:
        session_setup(conn)
        changed, new_state, _ = plan_microbatch(conn, state, schema)
    return sorted(changed), json.loads(json.dumps(new_state))


def test_windows_with_new_late_or_changed_rows_are_requested_once(pg_dsn, source_schema):
    with psycopg.connect(pg_dsn) as conn:
        insert_rows(
            conn,
            "operation_runs",
            [
                _run("old", T0 - dt.timedelta(hours=9)),
                _run("r1", T0),
                _run("r2", T0 + dt.timedelta(hours=1)),
            ],
            source_schema,
        )
    first, state = _plan(pg_dsn, source_schema, {})
    # First look: the windows within the late-row lookback of the newest row, not all history.
    assert first == ["2026-02-17-10:00", "2026-02-17-11:00"]
    assert _plan(pg_dsn, source_schema, state)[0] == []

    with psycopg.connect(pg_dsn) as conn:
        insert_rows(
            conn,
            "operation_runs",
            [_run("late", T0 + dt.timedelta(minutes=20)), _run("r3", T0 + dt.timedelta(hours=2))],
            source_schema,
        )
    second, state = _plan(pg_dsn, source_schema, state)
    assert second == ["2026-02-17-10:00", "2026-02-17-12:00"]

    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"DELETE FROM {source_schema}.operation_runs WHERE run_id = 'r2'")
    assert _plan(pg_dsn, source_schema, state)[0] == ["2026-02-17-11:00"]


def test_a_new_entity_version_also_requests_the_window_of_the_version_it_replaces(
    pg_dsn, source_schema
):
    def company(version: int, at: dt.datetime) -> dict:
        return {
            "org_id": "org-a",
            "company_id": "c1",
            "entity_id": "e1",
            "record_version": version,
            "updated_at": at,
        }

    with psycopg.connect(pg_dsn) as conn:
        insert_rows(
            conn, "company_entities", [company(1, T0 - dt.timedelta(hours=30))], source_schema
        )
    _, state = _plan(pg_dsn, source_schema, {})
    with psycopg.connect(pg_dsn) as conn:
        insert_rows(conn, "company_entities", [company(2, T0)], source_schema)
    assert _plan(pg_dsn, source_schema, state)[0] == ["2026-02-16-04:00", "2026-02-17-10:00"]


@pytest.fixture
def public_source(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        for table in (
            "operation_runs",
            "operation_events",
            "company_entities",
            "person_entities",
            "entity_snapshots",
        ):
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        create_source_tables(conn)
        insert_rows(conn, "operation_runs", [_run("r1", T0)])
    return pg_dsn


def test_the_sensor_requests_runs_with_stable_keys_and_a_cursor(public_source, tmp_path):
    source = SourcePostgres(dsn=public_source, embedded_dir=str(tmp_path / "unused"))
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"source_postgres": source})
        result = hq_microbatch(context)
        assert [r.partition_key for r in result.run_requests] == ["2026-02-17-10:00"]
        again = hq_microbatch(
            dg.build_sensor_context(instance=instance, resources={"source_postgres": source})
        )
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in result.run_requests]
        quiet = hq_microbatch(
            dg.build_sensor_context(
                instance=instance, cursor=result.cursor, resources={"source_postgres": source}
            )
        )
        assert not quiet.run_requests and "no window" in quiet.skip_reason.skip_message


def test_the_micro_batch_interval_is_configurable_within_5_to_15_minutes():
    assert MICROBATCH_MINUTES == 5
    assert hq_microbatch.minimum_interval_seconds == 300
    assert Settings.from_env({"PIPELINE_HQ_MICROBATCH_MINUTES": "15"}).hq_microbatch_minutes == 15
    for bad in ("4", "16", "five"):
        with pytest.raises(SettingsError, match="PIPELINE_HQ_MICROBATCH_MINUTES"):
            Settings.from_env({"PIPELINE_HQ_MICROBATCH_MINUTES": bad})
