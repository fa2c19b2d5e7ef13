"""The features watcher: which range of days it requests after bronze lands, and that it requests
nothing for days whose silver is already newer than their bronze."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.features_sensors import (
    features_range,
    market_features_watcher,
)
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.silver import silver_market_features
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

D1, D2, D3, D4 = "2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20"


def test_a_landed_day_reruns_every_later_day_that_has_silver() -> None:
    assert features_range({D2}, {D1, D2, D3}, {D1, D2, D3}) == (D2, D3)


def test_an_earlier_day_without_silver_is_computed_first() -> None:
    assert features_range({D3}, {D1, D2, D3}, {D1}) == (D2, D3)


def test_the_range_stops_before_a_day_without_bronze() -> None:
    assert features_range({D1}, {D1, D2, D4}, {D1, D2, D4}) == (D1, D2)
    assert features_range(set(), {D1}, set()) is None


def test_days_computed_in_the_same_run_as_their_bronze_are_not_requested_again(
    tmp_path: Path,
) -> None:
    write_demo_worker_files(tmp_path / "source/workers", [dt.date(2026, 2, 17)], rows_per_day=200)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data, silver_market_features, gold_bars_1m],
            resources=market_resources(tmp_path),
            instance=instance,
            partition_key=D1,
        )
        assert result.success
        evaluation = market_features_watcher(dg.build_sensor_context(instance=instance))
        assert not evaluation.run_requests
        assert "already has newer silver" in evaluation.skip_reason.skip_message
        again = market_features_watcher(
            dg.build_sensor_context(instance=instance, cursor=evaluation.cursor)
        )
        assert not again.run_requests and "no bronze landed" in again.skip_reason.skip_message
