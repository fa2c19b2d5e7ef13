"""`gex_strikes` in a real Dagster instance: the sensor turns pending jobs into partitions and
runs, a range run imports them with the checks, and each check fails on the property it tests;
the demo enqueues, skips one file and imports the rest."""

import dataclasses
import datetime as dt

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_assets.defs.gex import assets, checks, jobs, sensors
from pipeline_assets.demo import run_demo
from pipeline_assets.lib.gex.demo_sources import write_demo_gex_files
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.gex_store import GexStore
from pipeline_assets_tests.gex.conftest import snapshot, write_json

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _defs(store: GexStore) -> dg.Definitions:
    return dg.Definitions(
        assets=[assets.gex_strikes],
        jobs=[jobs.gex_import_job],
        sensors=[sensors.gex_pending_jobs],
        resources={"gex_store": store},
    )


def test_the_sensor_adds_partitions_and_a_range_run_imports_them_with_passing_checks(
    data_root, tmp_path, instance
):
    store = GexStore(data_root=str(data_root))
    importer = store.importer()
    for path, ticker, endpoint in write_demo_gex_files(tmp_path / "remote", [dt.date(2026, 2, 17)]):
        importer.enqueue(path.as_uri(), ticker, endpoint)
    defs = _defs(store)
    context = dg.build_sensor_context(
        instance=instance, resources={"gex_store": store}, definitions=defs
    )
    result = sensors.gex_pending_jobs(context)
    keys = [r.partition_key for r in result.run_requests]
    assert (
        keys == ["1", "2", "3", "4"] and next(r.run_key for r in result.run_requests) == "gex-job-1"
    )
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    instance.add_dynamic_partitions("gex_import_jobs", keys)
    run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("gex_strikes")],
        tags=dict(zip(RANGE, (keys[0], keys[-1]), strict=True)),
    )
    assert run.success
    rows = {
        e.materialization.partition: e.materialization.metadata["dagster/row_count"].value
        for e in run.get_asset_materialization_events()
    }
    assert rows == {"1": 3120, "2": 3120, "3": 78, "4": 78}
    # A range run is a mass import: the job store was snapshotted before it, all jobs pending.
    (backup,) = (data_root / "backups/gex").iterdir()
    con = duckdb.connect(str(backup / "gex_history.db"), read_only=True)
    try:
        statuses = con.execute("SELECT DISTINCT status FROM import_jobs").fetchall()
    finally:
        con.close()
    assert statuses == [("pending",)]
    assert {c.check_name: c.passed for c in run.get_asset_check_evaluations()} == dict.fromkeys(
        [
            checks.GEX_REQUIRED_COLUMNS,
            checks.GEX_NO_NULL_TIMESTAMPS,
            checks.GEX_SPOT_POSITIVE,
            checks.GEX_STRIKES_UNIQUE_PER_SNAPSHOT,
            checks.GEX_SOURCE_FIELDS_PRESENT,
        ],
        True,
    )
    # Nothing pending any more: the sensor skips.
    assert sensors.gex_pending_jobs(context).run_requests == []


def test_a_failed_job_fails_its_run_with_the_reason(data_root, sources, instance):
    store = GexStore(data_root=str(data_root))
    job = store.importer().enqueue(
        write_json(sources, "x.json", [{"timestamp": 1771511400, "ticker": "SPX"}]).as_uri(),
        "SPX",
        "gex_zero",
    )
    instance.add_dynamic_partitions("gex_import_jobs", [job.partition_key])
    run = (
        _defs(store)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("gex_strikes")],
            partition_key=job.partition_key,
            raise_on_error=False,
        )
    )
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
    assert "required field 'spot' is missing" in failure.event_specific_data.error.message


def _results(data_root, job):
    return {r.check_name: r for r in checks.gex_check_results("gex_strikes", data_root, [job])}


def test_each_check_fails_on_the_property_it_tests(importer, data_root, sources):
    job = importer.import_job(
        importer.enqueue(
            write_json(sources, "a.json", [snapshot(extra_field=1)]).as_uri(), "SPX", "gex_zero"
        ).id
    )
    assert all(r.passed for r in _results(data_root, job).values())
    path = data_root / job.canonical_files[0]
    table = pq.read_table(path)
    # Duplicate strikes and a non-positive spot, written over the canonical file (as a bug would).
    doubled = table.slice(0, 1)
    bad = pa.concat_tables([table, doubled]).set_column(
        table.schema.get_field_index("spot"), "spot", pa.array([-1.0] * (table.num_rows + 1))
    )
    pq.write_table(
        bad.drop_columns(["extra_fields"]).append_column(
            table.schema.field("extra_fields"), pa.nulls(bad.num_rows, pa.string())
        ),
        path,
    )
    results = _results(data_root, job)
    assert not results[checks.GEX_SPOT_POSITIVE].passed
    assert not results[checks.GEX_STRIKES_UNIQUE_PER_SNAPSHOT].passed
    assert not results[checks.GEX_SOURCE_FIELDS_PRESENT].passed  # extra_field is gone
    assert results[checks.GEX_SOURCE_FIELDS_PRESENT].metadata["failing_jobs"].value == {
        str(job.id): {"missing_fields": ["extra_field"]}
    }
    assert results[checks.GEX_NO_NULL_TIMESTAMPS].passed
    pq.write_table(bad.drop_columns(["ticker"]), path)
    assert not _results(data_root, job)[checks.GEX_REQUIRED_COLUMNS].passed
    ts = bad.schema.get_field_index("timestamp")
    pq.write_table(
        bad.set_column(
            ts, pa.field("timestamp", pa.float64()), pa.nulls(bad.num_rows, pa.float64())
        ),
        path,
    )
    assert not _results(data_root, dataclasses.replace(job))[checks.GEX_NO_NULL_TIMESTAMPS].passed


def test_the_demo_enqueues_skips_one_and_imports_the_rest(tmp_path):
    settings = Settings.from_env({"PIPELINE_DATA_ROOT": str(tmp_path / "data")})
    store = GexStore.from_settings(settings)
    defs = dg.Definitions(assets=[assets.gex_strikes], resources={"gex_store": store})
    lines: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        report = run_demo(settings, instance, defs, log=lines.append)
        assert report.success, lines
        summary = report.assets["gex_strikes"]
        assert len(summary.partitions) == 8 and summary.checks_failed == 0
        jobs_ = store.importer().store.jobs()
        assert [j.status for j in jobs_].count("skipped") == 1 and [j.status for j in jobs_].count(
            "completed"
        ) == 8
        assert any("1 skipped by checksum" in line for line in lines)
        # A second demo run adds no job and imports nothing new.
        again = run_demo(settings, instance, defs, log=lines.append)
        assert again.success and len(store.importer().store.jobs()) == 9
