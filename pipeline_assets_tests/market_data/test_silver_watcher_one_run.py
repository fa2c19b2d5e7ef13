"""The features watcher never starts a second run on the state chain: while a run computing silver
features is queued or in progress on a real instance, it skips naming that run and keeps its
cursor, then requests the landed days once the run has finished; the run queue of `dagster.yaml`
admits one tagged features run at a time."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.features_jobs import (
    STATE_CHAIN_TAG,
    STATE_CHAIN_TAG_VALUE,
    market_features_job,
)
from pipeline_assets.defs.market_data.features_sensors import market_features_watcher
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.jobs import bronze_job
from pipeline_assets.defs.market_data.silver import SILVER_ASSET_KEYS, silver_market_features
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAY = "2026-02-17"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def landed(tmp_path: Path):
    """An instance where bronze landed DAY (and nothing computed its features yet)."""
    write_demo_worker_files(
        tmp_path / "source/workers", [dt.date.fromisoformat(DAY)], rows_per_day=100
    )
    defs = dg.Definitions(
        assets=[bronze_market_data, silver_market_features, gold_bars_1m],
        jobs=[bronze_job, market_features_job],
        resources=market_resources(tmp_path),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("bronze_job").execute_in_process(
            instance=instance, partition_key=DAY
        )
        assert result.success
        yield defs, instance


def _evaluate(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    return market_features_watcher(dg.build_sensor_context(instance=instance, cursor=cursor))


# (A QUEUED run needs a code-location origin the ephemeral instance cannot give; the sensor
# treats QUEUED, NOT_STARTED, STARTING, STARTED and CANCELING alike.)
@pytest.mark.parametrize(
    "status",
    [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED],
    ids=lambda s: s.value,
)
def test_a_features_run_in_progress_holds_the_request_back(landed, status) -> None:
    defs, instance = landed
    run = instance.create_run_for_job(
        defs.resolve_job_def("market_features_job"), status=status, tags={}
    )
    held = _evaluate(instance, cursor=None)
    assert not held.run_requests
    assert run.run_id in held.skip_reason.skip_message
    assert status.value in held.skip_reason.skip_message
    assert held.cursor is None  # the landed day is not forgotten
    instance.report_run_failed(run)
    released = _evaluate(instance, cursor=held.cursor)
    (request,) = released.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == DAY
    assert request.tags[STATE_CHAIN_TAG] == STATE_CHAIN_TAG_VALUE


def test_a_ui_run_selecting_silver_holds_it_back_and_other_runs_do_not(landed) -> None:
    defs, instance = landed
    asset_job = defs.resolve_implicit_global_asset_job_def()
    bronze_run = instance.create_run_for_job(
        defs.resolve_job_def("bronze_job"), status=dg.DagsterRunStatus.STARTED
    )
    assert _evaluate(instance).run_requests  # a bronze run does not touch the state chain
    silver_run = instance.create_run_for_job(
        asset_job, status=dg.DagsterRunStatus.STARTED, asset_selection=set(SILVER_ASSET_KEYS)
    )
    held = _evaluate(instance)
    assert not held.run_requests and silver_run.run_id in held.skip_reason.skip_message
    instance.report_run_canceled(silver_run)
    instance.report_run_failed(bronze_run)
    assert _evaluate(instance).run_requests


def test_the_run_queue_admits_one_features_run_at_a_time() -> None:
    # The instance the README's commands use, loaded as Dagster loads it.
    home = Path(tempfile.mkdtemp(prefix="dagster-home-"))
    try:
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert {"key": STATE_CHAIN_TAG, "value": STATE_CHAIN_TAG_VALUE, "limit": 1} in limits
    assert market_features_job.tags[STATE_CHAIN_TAG] == STATE_CHAIN_TAG_VALUE
