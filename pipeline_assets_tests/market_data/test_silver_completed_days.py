"""Silver days made from the same bronze files, starting checkpoint, parameters and code version
are kept, not computed again (the reason in the run's metadata, `recompute: true` forcing them);
a changed bronze file, starting state or silver file makes the day computed again; and the refusal
to recompute a day alone under later days built from its old state still holds."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest
from upath import UPath

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.features_jobs import market_features_job
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.jobs import bronze_job
from pipeline_assets.defs.market_data.silver import silver_market_features
from pipeline_assets.lib.custody import read_sidecar
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAYS = ["2026-02-17", "2026-02-18"]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}
SILVER = "silver_trade_features"


def _files(root: Path) -> dict[str, str]:
    """SHA256 of every silver file, checkpoint and their sidecars (a rewrite changes a sidecar)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "silver").rglob("*"))
        if p.is_file()
    }


def _run_features(root: Path, recompute: bool = False, **kwargs) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=[bronze_market_data, silver_market_features, gold_bars_1m],
        jobs=[bronze_job, market_features_job],
        resources=market_resources(root, staleness_limit_s=120.0),
    )
    config = {"ops": {"silver_market_features": {"config": {"recompute": recompute}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("market_features_job").execute_in_process(
            instance=instance, run_config=config, raise_on_error=False, **kwargs
        )


def _completed(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    (mat, *_) = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path == [SILVER]
    ]
    return mat.materialization.metadata["days_completed_earlier"].value


@pytest.fixture(scope="module")
def computed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days landed in bronze and computed once, as one range run."""
    root = tmp_path_factory.mktemp("silver-completed")
    write_demo_worker_files(
        root / "source/workers", [dt.date.fromisoformat(d) for d in DAYS], rows_per_day=300
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data],
            resources=market_resources(root),
            instance=instance,
            tags=RANGE,
        )
        assert result.success
    assert _run_features(root, tags=RANGE).success
    return root


@pytest.fixture
def lake(computed: Path, tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(computed, root)
    return root


def test_days_made_from_the_same_inputs_are_kept_with_the_reason(lake: Path) -> None:
    before = _files(lake)
    result = _run_features(lake, tags=RANGE)
    assert result.success
    completed = _completed(result)
    assert sorted(completed) == DAYS
    assert all("same" in reason and "input files" in reason for reason in completed.values())
    kept = {
        m.partition: m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key.path == [SILVER]
    }
    assert all("completed_earlier" in kept[day] for day in DAYS)
    assert all(kept[day]["state_origin"].value == "completed_earlier" for day in DAYS)
    assert _files(lake) == before  # no file and no sidecar written again
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)


def test_recompute_computes_every_day_and_writes_the_same_data(lake: Path) -> None:
    before = _files(lake)
    result = _run_features(lake, recompute=True, tags=RANGE)
    assert result.success and _completed(result) == {}
    after = _files(lake)
    data = [p for p in before if p.endswith(".parquet")]
    assert data and all(after[p] == before[p] for p in data)  # the same bytes
    sidecars = [p for p in before if p.endswith(".meta.json")]
    assert any(after[p] != before[p] for p in sidecars)  # written again, by the new run


def test_a_changed_silver_file_is_computed_again(lake: Path) -> None:
    before = _files(lake)
    target = min((lake / "silver" / SILVER / f"date={DAYS[1]}").rglob("data.parquet"))
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    result = _run_features(lake, partition_key=DAYS[1])
    assert result.success and _completed(result) == {}
    assert _files(lake)[str(target.relative_to(lake))] == before[str(target.relative_to(lake))]


def test_a_new_starting_state_computes_the_later_day_and_a_day_alone_is_still_refused(
    lake: Path,
) -> None:
    # One symbol's trades of the first day gone from bronze: that day ends in another state.
    trades = lake / "bronze" / "bronze_trades" / f"date={DAYS[0]}"
    shutil.rmtree(min(trades.glob("symbol=*")))
    before = _files(lake)
    alone = _run_features(lake, partition_key=DAYS[0])
    assert not alone.success
    (failure,) = [e for e in alone.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"materialize {DAYS[0]} to {DAYS[1]} in one range run" in (
        failure.step_failure_data.user_failure_data.description
    )
    assert _files(lake) == before  # nothing written
    result = _run_features(lake, tags=RANGE)
    assert result.success and _completed(result) == {}  # the second day starts elsewhere now
    state = lake / "silver" / "_state" / "market_features"
    new_sha = hashlib.sha256((state / f"date={DAYS[0]}" / "state.parquet").read_bytes()).hexdigest()
    assert new_sha in {
        p.sha256 for p in read_sidecar(UPath(state / f"date={DAYS[1]}" / "state.parquet")).parents
    }
    # And now both days are complete again.
    assert sorted(_completed(_run_features(lake, tags=RANGE))) == DAYS
