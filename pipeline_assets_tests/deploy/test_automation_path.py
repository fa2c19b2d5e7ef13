"""The market chain has one automation path, its watchers: they run by default, target the
bronze and the features jobs, and no asset carries an automation condition that would launch the
same days a second time; freshness policies sit where the contracts give a cadence."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS
from pipeline_assets.defs.hq_export.checks import DEAD_LETTER
from pipeline_assets.defs.market_data.features_sensors import MARKET_FEATURES_WATCHER
from pipeline_assets.defs.market_data.sensors import BRONZE_WATCHER
from pipeline_assets.defs.market_data.staging import STAGING_EXPORT


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from pipeline_assets.definitions import defs as load

    return load()


def test_no_asset_has_an_automation_condition_beside_the_watchers(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    conditioned = [
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).automation_condition is not None
    ]
    assert conditioned == []


def test_the_watchers_run_by_default_and_cover_bronze_to_gold(defs: dg.Definitions) -> None:
    bronze = defs.resolve_sensor_def(BRONZE_WATCHER)
    features = defs.resolve_sensor_def(MARKET_FEATURES_WATCHER)
    assert bronze.default_status == features.default_status == dg.DefaultSensorStatus.RUNNING
    covered = {
        key.to_user_string()
        for sensor in (bronze, features)
        for job in sensor.jobs
        for key in defs.resolve_job_def(job.name).asset_layer.executable_asset_keys
    }
    market = {
        key.to_user_string()
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if key.to_user_string().startswith(("bronze_", "silver_", "gold_"))
    }
    assert market and market <= covered


def test_the_assets_with_a_contract_cadence_have_a_freshness_policy(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    dx_datasets = [k for k in HQ_ASSET_KEYS if k.to_user_string() != DEAD_LETTER]
    assert len(dx_datasets) == 5
    for key in [*dx_datasets, dg.AssetKey(STAGING_EXPORT)]:
        policy = graph.get(key).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), key
