"""Each day's materialization of a silver and gold range run carries that day's own state-reset
and row counts (what the UI plots per partition), equal to the rows in the day's files as DuckDB
reads them; the run's figures by day stay in `run_state_resets`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.silver import SILVER_OUTPUTS, silver_market_features
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAYS = ["2026-02-17", "2026-02-18"]
RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


def _silver_counts(root: Path, asset: str, day: str) -> tuple[int, int]:
    """(reset rows, rows) of one day of a silver asset, read from its files by DuckDB."""
    files = f"{root}/silver/{asset}/date={day}/*/data.parquet"
    with duckdb.connect() as con:
        resets, rows = con.execute(
            f"SELECT count(state_reset), count(*) FROM read_parquet('{files}')"
        ).fetchone()
    return resets, rows


@pytest.fixture(scope="module")
def range_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("silver-metadata")
    # The first day starts every stream cold (`no_prior_state`); the second continues them.
    write_demo_worker_files(
        root / "source/workers", [dt.date.fromisoformat(d) for d in DAYS], rows_per_day=300
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data, silver_market_features, gold_bars_1m],
            resources=market_resources(root, staleness_limit_s=120.0),
            instance=instance,
            tags=RANGE_TAGS,
        )
        assert result.success
        metadata = {
            (m.asset_key.to_user_string(), m.partition): m.materialization.metadata
            for m in result.get_asset_materialization_events()
        }
    return root, metadata


@pytest.mark.parametrize("asset", sorted(SILVER_OUTPUTS))
def test_each_day_carries_its_own_reset_count(range_run, asset: str) -> None:
    root, metadata = range_run
    counted = {day: _silver_counts(root, asset, day) for day in DAYS}
    for day in DAYS:
        recorded = metadata[(asset, day)]
        assert recorded["state_resets_total"].value == counted[day][0], day
        assert recorded["state_resets"].value[SILVER_OUTPUTS[asset]] == counted[day][0], day
        assert recorded[f"rows_{SILVER_OUTPUTS[asset]}"].value == counted[day][1], day


def test_the_two_days_differ_and_the_run_keeps_both(range_run) -> None:
    _, metadata = range_run
    asset = "silver_trade_features"
    first, second = (metadata[(asset, day)]["state_resets_total"].value for day in DAYS)
    # The days really have different counts, so a run total on both would be caught above.
    assert first != second
    assert metadata[(asset, DAYS[0])]["state_origin"].value == "cold_start"
    assert metadata[(asset, DAYS[1])]["state_origin"].value == "this_run"
    for day in DAYS:
        by_day = metadata[(asset, day)]["run_state_resets"].value
        assert {d: v["trades"] for d, v in by_day.items()} == {DAYS[0]: first, DAYS[1]: second}


def test_each_gold_day_carries_its_own_bar_count(range_run) -> None:
    root, metadata = range_run
    with duckdb.connect() as con:
        counts = {
            day: con.execute(
                f"SELECT count(*) FROM read_parquet('{root}/gold/gold_bars_1m/date={day}/*/data.parquet')"
            ).fetchone()[0]
            for day in DAYS
        }
    assert counts[DAYS[0]] != counts[DAYS[1]]
    for day in DAYS:
        assert metadata[("gold_bars_1m", day)]["rows_bars"].value == counts[day], day
