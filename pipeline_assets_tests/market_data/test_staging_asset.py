"""The staging_export asset in a real Dagster instance: run config, blocking checks on the
metadata file, run metadata in the UI, failures naming the file, and the micro-batch schedule."""

import json

import dagster as dg
import pytest

from pipeline_assets.defs.market_data.schedules import (
    STAGING_MICRO_BATCH,
    build_staging_micro_batch,
)
from pipeline_assets.defs.market_data.staging import staging_export
from pipeline_assets.defs.market_data.staging_checks import STAGING_CHECKS
from pipeline_assets.lib.market.staging_export import validation_problems
from pipeline_assets.lib.settings import Settings, SettingsError
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets_tests.market_data.staging_helpers import END, make_root


def materialize(root, instance, **config):
    return dg.materialize(
        [staging_export],
        resources={"market_sources": MarketSources(workers_dir=str(root / "source/workers"))},
        instance=instance,
        run_config={"ops": {"staging_export": {"config": config}}},
        raise_on_error=False,
    )


def test_asset_exports_and_passes_every_check(tmp_path, instance):
    root = make_root(tmp_path)
    result = materialize(
        root,
        instance,
        hours=24,
        end_utc=END,
        output_format="csv",
        incremental=True,
        update_state=True,
        exchanges=["Binance"],
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert sorted(e.check_name for e in evaluations) == sorted(STAGING_CHECKS)
    assert all(e.passed for e in evaluations)
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    metadata_file = root / meta["metadata_file"].value
    doc = json.loads(metadata_file.read_text())
    assert validation_problems(doc) == []
    assert (
        meta["dagster/row_count"].value
        == doc["row_counts"]["market_ticks"] + doc["row_counts"]["connection_events"]
    )
    assert meta["output_files"].value == doc["output_files"]
    assert meta["query_bounds"].value == doc["query_bounds"]
    assert doc["filters"]["exchanges"] == ["binance"] and doc["state"]["updated"] is True
    again = materialize(root, instance, hours=24, end_utc=END, incremental=True, update_state=True)
    (mat2,) = again.get_asset_materialization_events()
    assert mat2.materialization.metadata["watermarks"].value["previous"] == doc["watermarks"]["new"]


def test_bad_worker_file_fails_the_run_naming_it(tmp_path, instance):
    root = make_root(tmp_path)
    bad = root / "source/workers/worker_03.db"
    bad.write_bytes(b"not sqlite" * 100)
    result = materialize(root, instance, hours=24, end_utc=END)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    text = failure.step_failure_data.user_failure_data.description
    assert str(bad) in text and "skip_unreadable_sources" in text
    ok = materialize(root, instance, hours=24, end_utc=END, skip_unreadable_sources=True)
    assert ok.success


def test_bad_run_config_fails_naming_the_option(tmp_path, instance):
    root = make_root(tmp_path)
    result = materialize(root, instance, output_format="parquet")
    (failure,) = result.get_step_failure_events()
    assert "output_format='parquet'" in failure.step_failure_data.user_failure_data.description


def test_micro_batch_schedule_runs_incrementally_every_15_minutes(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(tmp_path / "data"))
    from pipeline_assets.definitions import defs

    loaded = defs()
    schedule = next(s for s in loaded.schedules if s.name == STAGING_MICRO_BATCH)
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.job_name == "staging_export_job"
    with dg.build_schedule_context() as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    config = request.run_config["ops"]["staging_export"]["config"]
    assert config["incremental"] is True and config["update_state"] is True
    job = loaded.resolve_job_def("staging_export_job")
    assert [k.to_user_string() for k in job.asset_layer.executable_asset_keys] == ["staging_export"]


@pytest.mark.parametrize(
    "minutes,cron", [("5", "*/5 * * * *"), ("60", "0 * * * *"), ("", "*/15 * * * *")]
)
def test_micro_batch_interval_is_a_setting(minutes, cron):
    settings = Settings.from_env({"PIPELINE_STAGING_MICROBATCH_MINUTES": minutes})
    schedule = build_staging_micro_batch(settings.staging_microbatch_minutes)
    assert schedule.cron_schedule == cron
    assert schedule.name == STAGING_MICRO_BATCH
    with dg.build_schedule_context() as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["staging_export"]["config"]["incremental"] is True


@pytest.mark.parametrize("minutes", ["7", "0", "90", "ten", "-5"])
def test_micro_batch_interval_must_divide_the_hour(minutes):
    with pytest.raises(
        SettingsError, match="PIPELINE_STAGING_MICROBATCH_MINUTES=.*dividing the hour"
    ):
        Settings.from_env({"PIPELINE_STAGING_MICROBATCH_MINUTES": minutes})


def test_demo_config_exports_the_demo_days(tmp_path, instance):
    from pipeline_assets.demo import DEMO_ASSET_CONFIG, DEMO_DAYS, _folder_of
    from pipeline_assets.lib.market.demo_sources import write_demo_worker_files

    write_demo_worker_files(tmp_path / "source/workers", list(DEMO_DAYS), rows_per_day=60)
    result = materialize(tmp_path, instance, **DEMO_ASSET_CONFIG["staging_export"])
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["dagster/row_count"].value > 3 * 60 * 2 * 0.9
    assert _folder_of(meta["output_files"].value) == "staging/"
