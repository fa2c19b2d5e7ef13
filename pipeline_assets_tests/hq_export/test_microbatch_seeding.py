"""The micro-batch sensor with an empty cursor (the first daemon after `make demo`) requests only the
windows whose source rows changed since their export: none right after an export, a late row's
window, an updated row's window and a new window; each export records the fingerprint it is
compared with, matching the source counted independently."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from pipeline_assets.defs.hq_export.assets import SOURCE_FINGERPRINT, hq_export
from pipeline_assets.defs.hq_export.jobs import hq_export_job
from pipeline_assets.defs.hq_export.sensors import hq_microbatch
from pipeline_assets.lib.hq.datasets import DATASETS
from pipeline_assets.lib.hq.source_tables import create_source_tables, demo_rows, insert_rows
from pipeline_assets.lib.hq.windows import window_bounds
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.source_postgres import SourcePostgres

DAY = dt.date(2026, 2, 17)
WINDOWS = ["2026-02-17-00:00", "2026-02-17-01:00", "2026-02-17-02:00"]
NEW_WINDOW = "2026-02-17-03:00"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class Exported:
    """The `public` source tables, exported through Dagster into a lake, on one instance."""

    def __init__(self, dsn: str, lake: Path, instance: dg.DagsterInstance):
        self.dsn, self.instance = dsn, instance
        self.source = SourcePostgres(dsn=dsn, embedded_dir=str(lake / "unused"))
        self.defs = dg.Definitions(
            assets=[hq_export],
            jobs=[hq_export_job],
            sensors=[hq_microbatch],
            resources={
                "io_manager": LakeIOManager(lake_root=str(lake), fsync=False),
                "source_postgres": self.source,
            },
        )

    def export(self, first: str, last: str | None = None) -> None:
        result = self.defs.resolve_job_def(hq_export_job.name).execute_in_process(
            instance=self.instance, tags={RANGE_START: first, RANGE_END: last or first}
        )
        assert result.success

    def evaluate(self, cursor: str | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            resources={"source_postgres": self.source},
        )
        return hq_microbatch(context)


@pytest.fixture
def exported(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Exported]:
    # The sensor reads the `public` schema, as in production.
    with psycopg.connect(pg_dsn) as conn:
        for spec in DATASETS:
            conn.execute(f"DROP TABLE IF EXISTS public.{spec.table}")
        create_source_tables(conn)
        for table, rows in demo_rows([DAY], hours=len(WINDOWS)).items():
            insert_rows(conn, table, rows)
    lake = tmp_path / "lake"
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(lake))  # the checks read the lake written
    with dg.DagsterInstance.ephemeral() as instance:
        data = Exported(pg_dsn, lake, instance)
        data.export(WINDOWS[0], WINDOWS[-1])
        yield data


def requested(result: dg.SensorResult) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def _run(created: dt.datetime, run_id: str) -> dict:
    return {
        "run_id": run_id,
        "org_id": "org-a",
        "status": "succeeded",
        "entity_type": "company",
        "entity_id": "e-new",
        "operation_id": "op",
        "action_id": "a",
        "attempt_count": 1,
        "started_at": created,
        "created_at": created,
    }


def test_each_window_records_the_source_fingerprint_counted_independently(
    exported: Exported,
) -> None:
    with psycopg.connect(exported.dsn) as conn:
        for spec in DATASETS:
            records = exported.instance.fetch_materializations(
                dg.AssetKey(spec.name), limit=100
            ).records
            recorded = {
                r.partition_key: r.asset_materialization.metadata[SOURCE_FINGERPRINT].value
                for r in records
            }
            assert sorted(recorded) == WINDOWS
            for window, fingerprint in recorded.items():
                start, end = window_bounds(window)
                count, xmin = conn.execute(
                    f"SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM public.{spec.table} "
                    f"WHERE {spec.time_column} >= %s AND {spec.time_column} < %s",
                    (start, end),
                ).fetchone()
                assert fingerprint == [count, xmin], (spec.table, window)
    assert any(fp[0] > 0 for fp in recorded.values())


def test_after_an_export_an_empty_cursor_requests_nothing(exported: Exported) -> None:
    result = exported.evaluate(None)
    assert requested(result) == []
    tables = json.loads(result.cursor)["tables"]
    assert {spec.table for spec in DATASETS} <= tables.keys()
    assert all(state["watermark"] for state in tables.values())
    assert requested(exported.evaluate(result.cursor)) == []


def test_late_updated_and_new_rows_request_exactly_their_windows_then_nothing(
    exported: Exported,
) -> None:
    start = window_bounds(WINDOWS[1])[0]
    with psycopg.connect(exported.dsn) as conn:
        insert_rows(
            conn,
            "operation_runs",
            [
                _run(start + dt.timedelta(minutes=17), "late-row"),
                _run(window_bounds(NEW_WINDOW)[0] + dt.timedelta(minutes=5), "new-window"),
            ],
        )
        # An update in place (same count, a new xmin) in the first window.
        updated = conn.execute(
            "UPDATE public.operation_events SET occurred_at = occurred_at "
            "WHERE ctid = (SELECT ctid FROM public.operation_events "
            "WHERE occurred_at >= %s AND occurred_at < %s LIMIT 1)",
            window_bounds(WINDOWS[0]),
        ).rowcount
        assert updated == 1
    result = exported.evaluate(None)
    assert requested(result) == [WINDOWS[0], WINDOWS[1], NEW_WINDOW]
    tags = {r.partition_key: r.tags["hq/changed_tables"] for r in result.run_requests}
    assert tags == {
        WINDOWS[0]: "operation_events",
        WINDOWS[1]: "operation_runs",
        NEW_WINDOW: "operation_runs",
    }
    # The sensor's runs are single windows: they record fingerprints too.
    for window in requested(result):
        exported.export(window)
    assert requested(exported.evaluate(None)) == []


def test_a_dataset_never_exported_still_starts_with_its_last_two_hours(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        for spec in DATASETS:
            conn.execute(f"DROP TABLE IF EXISTS public.{spec.table}")
        create_source_tables(conn)
        insert_rows(
            conn,
            "operation_runs",
            [
                _run(dt.datetime(2026, 2, 17, 1, 5, tzinfo=dt.UTC), "a"),
                _run(dt.datetime(2026, 2, 17, 9, 5, tzinfo=dt.UTC), "b"),
            ],
        )
    lake = tmp_path / "lake"
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(lake))
    with dg.DagsterInstance.ephemeral() as instance:
        assert requested(Exported(pg_dsn, lake, instance).evaluate(None)) == ["2026-02-17-09:00"]
