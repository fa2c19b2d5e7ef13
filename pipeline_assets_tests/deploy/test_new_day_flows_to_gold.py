"""A new worker file dropped into the source folder ends up in gold with nobody acting: a real
`dagster-daemon` runs the bronze watcher, which lands the file's days, and the features watcher,
which computes their silver features and gold bars; the bytes are those of a backfill."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import BRONZE_ASSET_KEYS
from pipeline_assets.defs.market_data.features_checks import GOLD_BARS_1M
from pipeline_assets.defs.market_data.features_sensors import MARKET_FEATURES_WATCHER
from pipeline_assets.defs.market_data.sensors import BRONZE_WATCHER
from pipeline_assets.defs.market_data.silver import SILVER_ASSET_KEYS
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.deploy.daemon import REPO, clean_env, running_daemon, stop_automation

DAYS = (dt.date(2026, 2, 17), dt.date(2026, 2, 18))
TIMEOUT_S = 900
ROWS_PER_DAY = 300


@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="automation-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _failed_runs(instance: dg.DagsterInstance) -> list[str]:
    failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    return [
        f"{run.job_name} {run.tags.get('dagster/partition', '')} {run.run_id}" for run in failed
    ]


def _wait_for(
    what: str, condition: Callable[[], bool], instance: dg.DagsterInstance, daemon, log: Path
) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert daemon.poll() is None, f"dagster-daemon exited:\n{log.read_text()[-4000:]}"
        # A failed run leaves its days short for good: say so now, not at the time-out.
        assert not _failed_runs(instance), f"{what}: runs failed: {_failed_runs(instance)}"
        assert time.monotonic() < deadline, (
            f"{what}: not within {TIMEOUT_S}s\n{log.read_text()[-4000:]}"
        )
        time.sleep(2)


def _has_ticked(instance: dg.DagsterInstance, sensor_name: str) -> bool:
    return any(
        state.instigator_name == sensor_name
        and instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        for state in instance.all_instigator_state()
    )


def _gold_files(data_root: Path) -> dict[str, str]:
    folder = data_root / "gold" / GOLD_BARS_1M
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def _backfill_gold(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The same worker files (the writer is seeded) landed by one single-run backfill of the days,
    bronze to gold, as a UI backfill runs it."""
    write_demo_worker_files(root / "source" / "workers", DAYS, rows_per_day=ROWS_PER_DAY)
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(root))
    from pipeline_assets.definitions import defs

    loaded = defs()
    with dg.DagsterInstance.ephemeral() as instance:
        result = loaded.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[*BRONZE_ASSET_KEYS, *SILVER_ASSET_KEYS, dg.AssetKey(GOLD_BARS_1M)],
            tags={
                "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
            },
        )
    assert result.success
    return _gold_files(root)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_dropped_worker_file_reaches_gold_through_the_daemon(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, data = scratch / "home", scratch / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    workers = data / "source" / "workers"
    workers.mkdir(parents=True)
    # Written beside the folder, then moved in, as a collector's finished file appears.
    incoming = scratch / "incoming"
    dropped = write_demo_worker_files(incoming, DAYS, rows_per_day=ROWS_PER_DAY)
    env = clean_env(DAGSTER_HOME=str(home), PIPELINE_DATA_ROOT=str(data))
    log = scratch / "daemon.log"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Only the market watchers run: the path under test, and nothing that needs other sources.
        stopped = stop_automation(instance, keep={BRONZE_WATCHER, MARKET_FEATURES_WATCHER})
        assert BRONZE_WATCHER not in stopped and MARKET_FEATURES_WATCHER not in stopped
        with running_daemon(env, log) as daemon:
            # The watcher has seen the empty folder: the files are new to a running system.
            _wait_for(
                "first bronze_watcher tick",
                lambda: _has_ticked(instance, BRONZE_WATCHER),
                instance,
                daemon,
                log,
            )
            for path in dropped:
                shutil.move(path, workers / path.name)
            days = {d.isoformat() for d in DAYS}
            _wait_for(
                "gold bars of the dropped file's days",
                lambda: days <= instance.get_materialized_partitions(dg.AssetKey(GOLD_BARS_1M)),
                instance,
                daemon,
                log,
            )
            _wait_for(
                "every launched run to finish",
                lambda: all(r.is_finished for r in instance.get_runs()),
                instance,
                daemon,
                log,
            )
        runs = instance.get_runs()

    # Every run was started by a watcher, and succeeded: nobody launched anything.
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
        (r.job_name, r.status) for r in runs
    ]
    by_sensor = {}
    for run in runs:
        by_sensor.setdefault(run.tags.get("dagster/sensor_name"), []).append(run)
    assert set(by_sensor) == {BRONZE_WATCHER, MARKET_FEATURES_WATCHER}
    assert {r.tags["dagster/partition"] for r in by_sensor[BRONZE_WATCHER]} == days
    assert {r.job_name for r in by_sensor[MARKET_FEATURES_WATCHER]} == {"market_features_job"}

    # Gold of each day is there, readable by an independent reader ...
    gold = _gold_files(data)
    # A connection of its own: a result left on DuckDB's default connection breaks later users.
    with duckdb.connect() as con:
        for day in days:
            ((rows,),) = con.execute(
                f"select count(*) from read_parquet('{data}/gold/{GOLD_BARS_1M}/date={day}/**/*.parquet')"
            ).fetchall()
            assert rows > 0, day
    # ... and byte for byte what a backfill of the same files writes.
    assert gold == _backfill_gold(scratch / "backfill", monkeypatch)
