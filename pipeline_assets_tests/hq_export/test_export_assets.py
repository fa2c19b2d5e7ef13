"""The hq_export assets end to end on a real Dagster instance, real Postgres and real Parquet read
back with DuckDB: contract columns and types, keys and guards, v1 everywhere, the dead letter, the
query parents of the sidecars, no planted credential in any output byte, and byte-identical
replays in any window order."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pytest

from contracts.core import arrow_schema
from contracts.hq import DATASET_CONTRACTS, DxDeadLetter
from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS, hq_export
from pipeline_assets.lib.hq.datasets import DATASETS
from pipeline_assets.lib.hq.source_tables import (
    DEMO_SECRET,
    create_source_tables,
    demo_rows,
    insert_rows,
)
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.source_postgres import SourcePostgres

SCHEMA = "e2e"
WINDOWS = ["2026-02-17-00:00", "2026-02-17-01:00", "2026-02-17-02:00"]


@pytest.fixture(scope="module")
def seeded(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        create_source_tables(conn, SCHEMA)
        for table, rows in demo_rows([dt.date(2026, 2, 17)], hours=3).items():
            insert_rows(conn, table, rows, SCHEMA)
    return SCHEMA


def _defs(lake: Path, dsn: str) -> dg.Definitions:
    return dg.Definitions(
        assets=[hq_export],
        resources={
            "io_manager": LakeIOManager(lake_root=str(lake), fsync=False),
            "source_postgres": SourcePostgres(dsn=dsn, embedded_dir=str(lake / "unused")),
        },
    )


def export(lake: Path, dsn: str, instance: dg.DagsterInstance, first: str, last: str | None = None):
    job = _defs(lake, dsn).resolve_implicit_global_asset_job_def()
    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last or first,
    }
    return job.execute_in_process(
        instance=instance,
        asset_selection=list(HQ_ASSET_KEYS),
        tags=tags,
        run_config={"ops": {"hq_export": {"config": {"source_schema": SCHEMA}}}},
        raise_on_error=False,
    )


def _hashes(lake: Path) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((lake / "hq").rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def exported(seeded, pg_dsn, tmp_path_factory):
    lake = tmp_path_factory.mktemp("hq_lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIPELINE_DATA_ROOT", str(lake))  # the checks read the lake the IO manager writes
    with dg.DagsterInstance.ephemeral() as instance:
        result = export(lake, pg_dsn, instance, WINDOWS[0], WINDOWS[-1])
        logs = [
            json.dumps(e.to_dict() if hasattr(e, "to_dict") else str(e), default=str)
            for e in instance.all_logs(result.run_id)
        ]
        yield (
            lake,
            result,
            "\n".join(logs) + "\n".join(str(e) for e in instance.all_logs(result.run_id)),
        )
    mp.undo()


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    raise AssertionError(t)


def test_the_run_succeeds_with_every_check_passing(exported):
    _, result, _ = exported
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [
        (e.asset_key, e.check_name) for e in evaluations if not e.passed
    ]


@pytest.mark.parametrize("model", [*DATASET_CONTRACTS, DxDeadLetter], ids=lambda m: m.contract.name)
def test_datasets_read_back_with_duckdb_have_the_contract_columns_keys_and_version(exported, model):
    lake, _, _ = exported
    info = model.contract
    glob = f"{lake}/hq/{info.name}/**/*.parquet"
    con = duckdb.connect()
    described = con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
    ).fetchall()
    expected = [(f.name, _duck_type(f.type)) for f in arrow_schema(model)]
    assert [(name, kind) for name, kind, *_ in described] == expected
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    assert rows > 0
    for key in (info.primary_key, *info.unique):
        cols = ", ".join(key)
        dupes = con.execute(
            f"SELECT {cols}, count(*) FROM read_parquet('{glob}') GROUP BY ALL HAVING count(*) > 1"
        ).fetchall()
        assert dupes == [], (key, dupes[:3])
    if model is not DxDeadLetter:
        versions = con.execute(
            f"SELECT DISTINCT export_schema_version FROM read_parquet('{glob}')"
        ).fetchall()
        assert versions == [("v1",)]
        # Files are laid out by the date of the window's time column and org (the hour between),
        # and each file holds only its own org and window.
        time_column = next(s.time_column for s in DATASETS if s.name == info.name)
        mismatched = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', filename = true, hive_partitioning = false) "
            "WHERE filename NOT LIKE '%/hq/' || $name || '/date=' || "
            f"strftime(\"{time_column}\" AT TIME ZONE 'UTC', '%Y-%m-%d/hour=%H') "
            "|| '/org_id=' || org_id || '/data.parquet'",
            {"name": info.name},
        ).fetchone()[0]
        assert mismatched == 0


@pytest.mark.parametrize("model", [*DATASET_CONTRACTS, DxDeadLetter], ids=lambda m: m.contract.name)
def test_datasets_read_whole_with_hive_partitioning_keep_the_contract_columns(exported, model):
    """With hive_partitioning = true, the contract's columns keep their names, order and types
    (org_id and the dead letter's dataset are folders too, with the same values), and the folders
    add exactly `date` and `hour`: the UTC date and hour of each row's window."""
    lake, _, _ = exported
    glob = f"{lake}/hq/{model.contract.name}/**/*.parquet"
    con = duckdb.connect()
    described = con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    contract = [(f.name, _duck_type(f.type)) for f in arrow_schema(model)]
    assert [(name, kind) for name, kind, *_ in described] == [
        *contract,
        ("date", "DATE"),
        ("hour", "VARCHAR"),
    ]
    window_column = (
        "window_start"
        if model is DxDeadLetter
        else next(s.time_column for s in DATASETS if s.name == model.contract.name)
    )
    utc = f"(\"{window_column}\" AT TIME ZONE 'UTC')"
    rows, misplaced = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE date <> CAST({utc} AS DATE) "
        f"OR hour <> strftime({utc}, '%H')) FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchone()
    assert rows > 0 and misplaced == 0


def test_contract_breakers_are_in_the_dead_letter_with_their_reasons(exported):
    lake, result, _ = exported
    con = duckdb.connect()
    reasons = dict(
        con.execute(
            f"SELECT dataset || ':' || reason, count(*) FROM read_parquet('{lake}/hq/dx_dead_letter/**/*.parquet', "
            "hive_partitioning = false) GROUP BY 1"
        ).fetchall()
    )
    for expected in [
        "dx_operation_runs_v1:missing_org_id",
        "dx_operation_runs_v1:invalid_status",
        "dx_operation_runs_v1:invalid_entity_type",
        "dx_operation_runs_v1:null_key",
        "dx_operation_events_v1:duplicate_key",
        "dx_operation_events_v1:duplicate_unique_guard",
        "dx_company_entities_v1:stale_version",
        "dx_person_entities_v1:stale_version",
        "dx_entity_snapshots_v1:duplicate_unique_guard",
    ]:
        assert reasons.get(expected), (expected, reasons)
    # Every source row of the windows is exported, dead-lettered, or (upserts) superseded.
    for event in result.get_asset_materialization_events():
        md = event.materialization.metadata
        if "row_counts" in md and "exported" in md["row_counts"].value:
            counts = md["row_counts"].value
            assert (
                counts["exported"] + counts["dead_letter"] + counts.get("superseded", 0)
                == counts["source"]
            )
            assert sum(md["rows_by_org"].value.values()) == counts["exported"]


def test_sidecars_name_the_query_with_a_redacted_dsn_and_a_content_hash(exported):
    lake, _, _ = exported
    sidecars = sorted((lake / "hq/dx_operation_runs_v1").rglob("data.parquet.meta.json"))
    assert sidecars
    for path in sidecars:
        record = json.loads(path.read_text())
        (parent,) = record["parents"]
        assert parent["kind"] == "query"
        assert parent["path"].endswith(f"#{SCHEMA}.operation_runs")
        assert len(parent["sha256"]) == 64
        assert set(parent["details"]) >= {"query", "bounds", "row_count"}
        assert "COPY" in parent["details"]["query"] and "created_at" in parent["details"]["query"]


def test_a_planted_credential_never_reaches_an_output_byte_log_or_metadata(exported):
    lake, _, logs = exported
    con = duckdb.connect()
    for folder in sorted((lake / "hq").iterdir()):
        schema = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{folder}/**/*.parquet')"
        ).fetchall()
        text = [name for name, kind, *_ in schema if kind == "VARCHAR"]
        hits = con.execute(
            f"SELECT count(*) FROM read_parquet('{folder}/**/*.parquet') WHERE "
            + " OR ".join(f"contains(coalesce(\"{c}\", ''), '{DEMO_SECRET[:20]}')" for c in text)
        ).fetchone()[0]
        assert hits == 0, folder
    for path in (lake / "hq").rglob("*"):
        if path.is_file() and not path.name.endswith(".parquet"):
            assert DEMO_SECRET[:20] not in path.read_text(errors="replace"), path
    assert DEMO_SECRET[:20] not in logs
    # The source did hold it, in a column, in JSON and in free text.
    assert "Hunter" not in logs


def test_replaying_windows_in_any_order_gives_byte_identical_files(exported, pg_dsn, tmp_path):
    lake, _, _ = exported
    before = _hashes(lake)
    mp = pytest.MonkeyPatch()
    with dg.DagsterInstance.ephemeral() as instance:
        # The same lake, one window replayed alone: nothing changes.
        mp.setenv("PIPELINE_DATA_ROOT", str(lake))
        assert export(lake, pg_dsn, instance, WINDOWS[1]).success
        assert _hashes(lake) == before
        # A fresh lake, windows one by one, newest first: the same files as one range run.
        other = tmp_path / "lake"
        mp.setenv("PIPELINE_DATA_ROOT", str(other))
        for key in reversed(WINDOWS):
            assert export(other, pg_dsn, instance, key).success
    mp.undo()
    assert _hashes(other) == before
