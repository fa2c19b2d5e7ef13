"""Silver, gold and checkpoint files are byte-identical (sha256) whether the days are materialized
one at a time, as one single-run backfill of the range, or by the watchers as the worker files
grow day by day; D+1 before D is refused, naming the day to materialize first; and recomputing a
day alone is refused when a later, computed day started from its old state. Marked slow (about 35 s
of Dagster runs); the stale-state rule is also tested fast in `test_silver_stale_later_days.py`."""

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
from pipeline_assets.defs.market_data.features_sensors import market_features_watcher
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.jobs import bronze_job
from pipeline_assets.defs.market_data.sensors import bronze_watcher
from pipeline_assets.defs.market_data.silver import silver_market_features
from pipeline_assets.lib.custody import read_sidecar
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAYS = ["2026-02-17", "2026-02-18", "2026-02-19"]
ROWS = 400
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

pytestmark = pytest.mark.slow


def _defs(root: Path, staleness_limit_s: float = 120.0) -> dg.Definitions:
    return dg.Definitions(
        assets=[bronze_market_data, silver_market_features, gold_bars_1m],
        jobs=[bronze_job, market_features_job],
        sensors=[bronze_watcher, market_features_watcher],
        resources=market_resources(root, staleness_limit_s),
    )


def _write_days(root: Path, days: list[str]) -> None:
    write_demo_worker_files(
        root / "source/workers", [dt.date.fromisoformat(d) for d in days], rows_per_day=ROWS
    )


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for layer in ("silver", "gold")
        for p in sorted((root / layer).rglob("*.parquet"))
    }


def _parents(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Each silver, gold and checkpoint file's parents (path, SHA256) as its sidecar records them."""
    return {
        str(p.relative_to(root)): sorted(
            (ref.path, ref.sha256 or "") for ref in read_sidecar(UPath(p)).parents
        )
        for layer in ("silver", "gold")
        for p in sorted((root / layer).rglob("*.parquet"))
    }


def _run(job: dg.JobDefinition, instance: dg.DagsterInstance, **kwargs) -> None:
    result = job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    assert result.success, [e.message for e in result.all_events if e.is_failure]


@pytest.fixture(scope="module")
def one_day_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("daily")
    _write_days(root, DAYS)
    defs = _defs(root)
    with dg.DagsterInstance.ephemeral() as instance:
        for day in DAYS:
            _run(defs.resolve_job_def("bronze_job"), instance, partition_key=day)
        for day in DAYS:
            _run(defs.resolve_job_def("market_features_job"), instance, partition_key=day)
    return root


@pytest.fixture(scope="module")
def single_run_range(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("range")
    _write_days(root, DAYS)
    defs = _defs(root)
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        _run(job, instance, tags={RANGE_START: DAYS[0], RANGE_END: DAYS[-1]})
    return root


@pytest.fixture(scope="module")
def watcher_driven(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    root = tmp_path_factory.mktemp("watcher")
    defs = _defs(root)
    sources = MarketSources(workers_dir=str(root / "source/workers"))
    requested: list[tuple[str, str]] = []
    with dg.DagsterInstance.ephemeral() as instance:
        bronze_cursor = features_cursor = None
        for day in DAYS:
            _write_days(root, [day])  # the collectors' files grow by one day
            result = bronze_watcher(
                dg.build_sensor_context(
                    instance=instance, cursor=bronze_cursor, resources={"market_sources": sources}
                )
            )
            bronze_cursor = result.cursor
            for request in result.run_requests:
                _run(
                    defs.resolve_job_def("bronze_job"),
                    instance,
                    partition_key=request.partition_key,
                )
            result = market_features_watcher(
                dg.build_sensor_context(instance=instance, cursor=features_cursor)
            )
            features_cursor = result.cursor
            for request in result.run_requests:
                requested.append((request.tags[RANGE_START], request.tags[RANGE_END]))
                _run(defs.resolve_job_def("market_features_job"), instance, tags=dict(request.tags))
    return root, requested


def test_the_three_paths_write_byte_identical_silver_and_gold(
    one_day_at_a_time, single_run_range, watcher_driven
) -> None:
    daily, ranged = _hashes(one_day_at_a_time), _hashes(single_run_range)
    watched, requested = _hashes(watcher_driven[0]), watcher_driven[1]
    assert requested == [(d, d) for d in DAYS]
    assert len(daily) == 3 * 4 * 4 + 3  # 3 days x (3 silver + 1 gold) x 4 symbols + 3 checkpoints
    assert daily == ranged
    assert daily == watched
    # The chain of custody agrees too: a day started in the same run names the checkpoint it
    # started from, exactly as a day that read the checkpoint file.
    assert _parents(one_day_at_a_time) == _parents(single_run_range) == _parents(watcher_driven[0])


def test_checks_passed_and_resets_are_in_the_metadata(single_run_range) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = (
            _defs(single_run_range)
            .resolve_job_def("market_features_job")
            .execute_in_process(
                instance=instance,
                tags={RANGE_START: DAYS[0], RANGE_END: DAYS[-1]},
                # Computed again (not kept as completed earlier), so every day has its figures.
                run_config={"ops": {"silver_market_features": {"config": {"recompute": True}}}},
            )
        )
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [
        (e.asset_key, e.check_name) for e in evaluations if not e.passed
    ]
    metadata = {
        m.partition: m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("silver_trade_features")
    }
    resets = metadata[DAYS[0]]["run_state_resets"].value
    assert sorted(resets) == DAYS and resets[DAYS[0]]["trades"] >= 4  # every stream starts once
    assert metadata[DAYS[0]]["state_resets_total"].value == resets[DAYS[0]]["trades"]
    assert metadata[DAYS[1]]["state_origin"].value == "this_run"


def test_the_day_after_before_the_day_is_refused_with_the_day_to_run_first(tmp_path: Path) -> None:
    _write_days(tmp_path, DAYS[:2])
    defs = _defs(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        _run(
            defs.resolve_job_def("bronze_job"),
            instance,
            tags={RANGE_START: DAYS[0], RANGE_END: DAYS[1]},
        )
        result = defs.resolve_job_def("market_features_job").execute_in_process(
            instance=instance, partition_key=DAYS[1], raise_on_error=False
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert f"end of {DAYS[0]}" in message and f"for {DAYS[0]} first" in message
    assert not (tmp_path / "silver" / "silver_trade_features" / f"date={DAYS[1]}").exists()


def test_a_checkpoint_written_with_other_settings_is_refused(
    one_day_at_a_time: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(one_day_at_a_time, root)
    defs = _defs(root, staleness_limit_s=30.0)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("market_features_job").execute_in_process(
            instance=instance, partition_key=DAYS[1], raise_on_error=False
        )
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "written with" in failure.step_failure_data.user_failure_data.description


def test_recomputing_a_day_alone_with_an_unchanged_state_keeps_the_same_bytes(
    one_day_at_a_time: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(one_day_at_a_time, root)
    with dg.DagsterInstance.ephemeral() as instance:
        _run(_defs(root).resolve_job_def("market_features_job"), instance, partition_key=DAYS[1])
    assert _hashes(root) == _hashes(one_day_at_a_time)


def test_recomputing_a_day_alone_that_changes_its_state_is_refused_naming_the_later_days(
    one_day_at_a_time: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(one_day_at_a_time, root)
    # One symbol's trades of the second day gone from bronze: that day ends in another state.
    trades = root / "bronze" / "bronze_trades" / f"date={DAYS[1]}"
    shutil.rmtree(min(trades.glob("symbol=*")))
    before = _hashes(root)
    defs = _defs(root)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("market_features_job").execute_in_process(
            instance=instance, partition_key=DAYS[1], raise_on_error=False
        )
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        message = failure.step_failure_data.user_failure_data.description
        assert f"the silver features of {DAYS[2]} were computed from the old one" in message
        assert f"materialize {DAYS[1]} to {DAYS[2]} in one range run" in message
        assert _hashes(root) == before  # nothing written
        _run(
            defs.resolve_job_def("market_features_job"),
            instance,
            tags={RANGE_START: DAYS[1], RANGE_END: DAYS[2]},
        )
    # The chain is whole again: the last day started from the second day's new checkpoint.
    state = root / "silver" / "_state" / "market_features"
    new_sha = hashlib.sha256((state / f"date={DAYS[1]}" / "state.parquet").read_bytes()).hexdigest()
    assert _hashes(root) != before
    assert new_sha in {
        p.sha256 for p in read_sidecar(UPath(state / f"date={DAYS[2]}" / "state.parquet")).parents
    }
