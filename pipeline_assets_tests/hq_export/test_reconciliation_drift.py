"""The HQ reconciliation end to end on a real Dagster instance, real Postgres and real Parquet: clean
data passes every check (after each export and in the hq_reconciliation job); seeded drift (a late
row, a row changed in place in the source, a row deleted from the export) is found with the exact
keys named, healed by the healing sensor's re-exports and recorded as healed by the next
reconciliation; a lag beyond the SLA fails its check; the report has its custody sidecars."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from upath import UPath

from contracts.hq_reconciliation import HqReconciliationReport
from pipeline_assets.defs.hq_export.assets import hq_export
from pipeline_assets.defs.hq_export.jobs import hq_export_job
from pipeline_assets.defs.hq_export.reconciliation_checks import (
    HQ_RECONCILIATION_CHECKS,
    hq_reconciliation_checks,
)
from pipeline_assets.defs.hq_export.reconciliation_jobs import (
    HQ_RECONCILIATION,
    hq_reconciliation_job,
)
from pipeline_assets.defs.hq_export.reconciliation_sensors import (
    HEALING_TAG,
    hq_reconciliation_heal,
)
from pipeline_assets.lib.custody import verify_file
from pipeline_assets.lib.hq.lake_files import window_files
from pipeline_assets.lib.hq.source_tables import create_source_tables, demo_rows, insert_rows
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.source_postgres import SourcePostgres

SCHEMA = "recon"
WINDOWS = ["2026-02-17-00:00", "2026-02-17-01:00", "2026-02-17-02:00"]
START, END = "2026-02-17T00:00:00Z", "2026-02-17T03:00:00Z"
RUNS = "dx_operation_runs_v1"


@pytest.fixture(scope="module")
def env(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        create_source_tables(conn, SCHEMA)
        for table, rows in demo_rows([dt.date(2026, 2, 17)], hours=3).items():
            insert_rows(conn, table, rows, SCHEMA)
    lake = tmp_path_factory.mktemp("recon_lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIPELINE_DATA_ROOT", str(lake))
    defs = dg.Definitions(
        assets=[hq_export],
        asset_checks=[hq_reconciliation_checks],
        jobs=[hq_export_job, hq_reconciliation_job],
        sensors=[hq_reconciliation_heal],
        resources={
            "io_manager": LakeIOManager(lake_root=str(lake), fsync=False),
            "source_postgres": SourcePostgres(dsn=pg_dsn, embedded_dir=str(lake / "unused")),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        yield lake, defs, instance
    mp.undo()


def _config() -> dict:
    schema = {"config": {"source_schema": SCHEMA}}
    return {"ops": {"hq_export": schema, HQ_RECONCILIATION_CHECKS: schema}}


def _export(env, first: str, last: str | None = None, tags: dict | None = None):
    _, defs, instance = env
    return defs.resolve_job_def("hq_export_job").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last or first,
            **(tags or {}),
        },
        run_config=_config(),
        raise_on_error=False,
    )


def _reconcile(env, start: str = START, end: str = END):
    _, defs, instance = env
    config = {"source_schema": SCHEMA, "start_utc": start, "end_utc": end}
    return defs.resolve_job_def(HQ_RECONCILIATION).execute_in_process(
        instance=instance,
        run_config={"ops": {HQ_RECONCILIATION_CHECKS: {"config": config}}},
        raise_on_error=False,
    )


def _results(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
        if e.check_name
        in {
            "row_count_parity",
            "checksum_parity",
            "max_lag_within_sla",
            "critical_null_rates",
            "status_distribution_stable",
        }
    }


def _report(lake: Path, result) -> dict:
    (path,) = [
        p
        for p in (lake / "hq/_reconciliation").glob("reconciliation_*.json")
        if result.run_id[:8] in p.name and not p.name.endswith(".meta.json")
    ]
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def exported(env):
    result = _export(env, WINDOWS[0], WINDOWS[-1])
    assert result.success
    return result


def test_checks_run_after_every_export_and_pass_on_clean_data(exported):
    results = _results(exported)
    # 5 datasets x (row count, checksum, lag) + 2 null-rate checks + 1 anomaly check.
    assert len(results) == 18
    failed = {k: e.description for k, e in results.items() if not e.passed}
    assert not failed
    parity = results[(RUNS, "checksum_parity")].metadata
    assert parity["differing_keys"].value == 0
    assert parity["range_start"].value == "2026-02-17T00:00:00Z"


def test_a_clean_reconciliation_passes_and_writes_its_report_with_sidecars(env, exported):
    lake, _, _ = env
    result = _reconcile(env)
    assert result.success
    results = _results(result)
    assert results and all(e.passed for e in results.values())
    severities = {k[1]: e.severity for k, e in results.items()}
    assert severities["checksum_parity"] == dg.AssetCheckSeverity.ERROR
    assert severities["critical_null_rates"] == dg.AssetCheckSeverity.WARN
    report = _report(lake, result)
    HqReconciliationReport.model_validate(report)
    assert report["passed"] and report["heal_windows"] == []
    json_path = UPath(lake / "hq/_reconciliation" / report["report_file"])
    record = verify_file(json_path)
    assert record.parents[0].kind == "query" and f"#{SCHEMA}" in record.parents[0].path
    assert any(p.path.startswith(f"hq/{RUNS}/") for p in record.parents)
    verify_file(json_path.with_suffix(".md"))
    # Numeric figures land on an observation of each asset, where the UI plots them.
    observations = result.asset_observations_for_node(HQ_RECONCILIATION_CHECKS)
    plotted = {o.asset_key.to_user_string(): o.metadata for o in observations}
    assert plotted[RUNS]["parity_gap_rows"].value == 0
    assert "lag_minutes" in plotted[RUNS] and "failed_share" in plotted[RUNS]
    assert "null_rate_canonical_domain" in plotted["dx_company_entities_v1"]


def _seed_drift(env, dsn: str) -> dict[str, str]:
    """A late row in window 00, a row changed in place in window 01, a row deleted from the
    export of window 00; returns the three run_ids."""
    lake, _, _ = env
    with psycopg.connect(dsn) as conn:
        table = f"{SCHEMA}.operation_runs"
        conn.execute(
            f"INSERT INTO {table} SELECT 'late-run-0001', pipeline_run_id, workflow_id, "
            "operation_id, action_id, entity_type, entity_id, org_id, company_id, source_provider, "
            "status, attempt_count, started_at, ended_at, duration_ms, cost_usd, error_code, "
            f"error_message, created_at FROM {table} WHERE status = 'succeeded' AND org_id = "
            "'org-alpha' AND created_at < '2026-02-17 01:00+00' ORDER BY run_id LIMIT 1"
        )
        (changed,) = conn.execute(
            f"SELECT run_id FROM {table} WHERE status = 'succeeded' AND org_id = 'org-bravo' AND "
            "created_at >= '2026-02-17 01:00+00' AND created_at < '2026-02-17 02:00+00' "
            "ORDER BY run_id LIMIT 1"
        ).fetchone()
        conn.execute(
            f"UPDATE {table} SET attempt_count = attempt_count + 7 WHERE run_id = %s", (changed,)
        )
    (path,) = [
        f
        for f in window_files(str(lake), RUNS, [WINDOWS[0]])[WINDOWS[0]]
        if "org-charlie" in str(f)
    ]
    table = pq.read_table(path)
    deleted = table.column("run_id")[0].as_py()
    pq.write_table(table.slice(1), path)
    return {"late": "late-run-0001", "changed": changed, "deleted": deleted}


def test_drift_is_found_by_key_healed_and_recorded(env, exported, pg_dsn):
    lake, defs, instance = env
    seeded = _seed_drift(env, pg_dsn)

    found = _reconcile(env)
    results = _results(found)
    assert not results[(RUNS, "row_count_parity")].passed
    checksum = results[(RUNS, "checksum_parity")]
    assert not checksum.passed and checksum.severity == dg.AssetCheckSeverity.ERROR
    figures = checksum.metadata["figures"].value
    assert figures["missing_in_export"] == sorted(
        [
            {"window": WINDOWS[0], "run_id": seeded["late"]},
            {"window": WINDOWS[0], "run_id": seeded["deleted"]},
        ],
        key=lambda k: (k["window"], k["run_id"]),
    )
    assert figures["different"] == [{"window": WINDOWS[1], "run_id": seeded["changed"]}]
    assert figures["extra_in_export"] == []
    gaps = results[(RUNS, "row_count_parity")].metadata["figures"].value["count_gaps"]
    assert {(g["window"], g["org_id"], g["source_rows"] - g["export_rows"]) for g in gaps} == {
        (WINDOWS[0], "org-alpha", 1),
        (WINDOWS[0], "org-charlie", 1),
    }
    # Only the runs dataset drifted.
    assert all(e.passed for (asset, _), e in results.items() if asset != RUNS)
    report = _report(lake, found)
    assert report["heal_windows"] == WINDOWS[:2]
    markdown = (lake / "hq/_reconciliation" / report["report_file"]).with_suffix(".md").read_text()
    assert seeded["late"] in markdown and seeded["changed"] in markdown

    # The healing sensor asks for one export run per failing window, once per report.
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    heal = hq_reconciliation_heal(context)
    assert sorted(r.partition_key for r in heal.run_requests) == WINDOWS[:2]
    assert all(r.tags[HEALING_TAG] == report["report_file"] for r in heal.run_requests)
    again = hq_reconciliation_heal(
        dg.build_sensor_context(instance=instance, definitions=defs, cursor=heal.cursor)
    )
    assert not again.run_requests
    for request in heal.run_requests:
        run = _export(env, request.partition_key, tags=request.tags)
        assert run.success

    healed = _reconcile(env)
    assert all(e.passed for e in _results(healed).values())
    record = _report(lake, healed)["healed"]
    assert record["previous_report"] == report["report_file"]
    assert record["windows"] == WINDOWS[:2] and record["still_failing"] == []
    assert all(record["runs"][w] for w in WINDOWS[:2])


def test_a_lag_beyond_the_sla_fails_its_check(env, exported, pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        table = f"{SCHEMA}.operation_runs"
        conn.execute(
            f"INSERT INTO {table} SELECT 'fresh-run-0001', pipeline_run_id, workflow_id, "
            "operation_id, action_id, entity_type, entity_id, org_id, company_id, source_provider, "
            "status, attempt_count, started_at, ended_at, duration_ms, cost_usd, error_code, "
            f"error_message, created_at + interval '4 hours' FROM {table} WHERE status = "
            "'succeeded' ORDER BY created_at DESC LIMIT 1"
        )
    try:
        result = _reconcile(env, end="2026-02-17T08:00:00Z")
        lag = _results(result)[(RUNS, "max_lag_within_sla")]
        assert not lag.passed
        assert lag.metadata["lag_minutes"].value > 180
        assert lag.metadata["lag_limit_minutes"].value == 60
        # Datasets whose source holds nothing newer than their export do not lag.
        assert _results(result)[("dx_operation_events_v1", "max_lag_within_sla")].passed
    finally:
        with psycopg.connect(pg_dsn) as conn:
            conn.execute(f"DELETE FROM {SCHEMA}.operation_runs WHERE run_id = 'fresh-run-0001'")
