"""A 3-day single-run backfill of bronze: folders, custody, counts, checks, repeatable bytes."""

import collections
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import BRONZE_ASSET_TABLES, bronze_market_data
from pipeline_assets.defs.market_data.checks import CHECKS_BY_TABLE
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets_tests.market_data.source_sql import day_figures, landed_counts

DAYS = ["2026-02-17", "2026-02-18", "2026-02-19"]
SYMBOLS = ["BTC-USD", "BTC-USDT", "ETH-USD", "ETH-USDT"]
CHANNEL_ASSETS = {
    "orderbook": "bronze_orderbook",
    "trades": "bronze_trades",
    "ticker": "bronze_ticker",
}
RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


@dataclass
class Landed:
    root: Path
    workers: list[Path]
    result: dg.ExecuteInProcessResult


def materialize(root: Path, **kwargs: object) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [bronze_market_data],
            resources={
                "io_manager": LakeIOManager(lake_root=str(root)),
                "market_sources": MarketSources(workers_dir=str(root / "source/workers")),
            },
            instance=instance,
            **kwargs,
        )


def parquet_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "bronze").rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Landed:
    root = tmp_path_factory.mktemp("data")
    workers = write_demo_worker_files(
        root / "source/workers", [dt.date.fromisoformat(d) for d in DAYS], rows_per_day=300
    )
    return Landed(root, workers, materialize(root, tags=RANGE_TAGS))


def test_each_day_and_symbol_has_its_folder_with_a_sidecar_naming_the_worker_files(
    landed: Landed,
) -> None:
    assert landed.result.success
    worker_hashes = {
        f"source/workers/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in landed.workers
    }
    for asset in CHANNEL_ASSETS.values():
        folder = landed.root / "bronze" / asset
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("data.parquet")) == [
            f"date={d}/symbol={s}/data.parquet" for d in DAYS for s in SYMBOLS
        ]
    for asset in ("bronze_quarantine", "bronze_connection_events"):
        folder = landed.root / "bronze" / asset
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("data.parquet")) == [
            f"date={d}/data.parquet" for d in DAYS
        ]
    for data in (landed.root / "bronze").rglob("data.parquet"):
        sidecar = json.loads(data.with_name("data.parquet.meta.json").read_text())
        assert {p["path"]: p["sha256"] for p in sidecar["parents"]} == worker_hashes
        assert sidecar["partition_key"] == data.relative_to(landed.root).parts[2].removeprefix(
            "date="
        )


@pytest.mark.parametrize("channel", sorted(CHANNEL_ASSETS))
def test_duckdb_counts_per_day_and_symbol_equal_the_sources(landed: Landed, channel: str) -> None:
    glob = landed.root / "bronze" / CHANNEL_ASSETS[channel] / "**/*.parquet"
    rows = duckdb.sql(
        f"SELECT date::varchar, exchange_raw, symbol_raw, count(*) "
        f"FROM read_parquet('{glob}', hive_partitioning=true) GROUP BY ALL"
    ).fetchall()
    # Per channel, raw exchange and symbol, and day: the good source rows, an exact copy once.
    assert collections.Counter({(d, e, s): n for d, e, s, n in rows}) == landed_counts(
        landed.workers, channel
    )
    assert {d for d, *_ in rows} == set(DAYS)


def test_every_check_ran_once_over_the_whole_range_and_passed(landed: Landed) -> None:
    evaluations = landed.result.get_asset_check_evaluations()
    assert sorted((e.asset_key.to_user_string(), e.check_name) for e in evaluations) == sorted(
        (asset, check)
        for asset, table in BRONZE_ASSET_TABLES.items()
        for check in CHECKS_BY_TABLE[table]
    )
    for evaluation in evaluations:
        assert evaluation.passed, (evaluation.asset_key, evaluation.check_name, evaluation.metadata)
        assert sorted(evaluation.metadata["by_day"].value) == DAYS


def test_materializations_report_the_sources_and_row_counts(landed: Landed) -> None:
    (mat, *_) = [
        m
        for m in landed.result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("bronze_trades") and m.partition == DAYS[0]
    ]
    metadata = mat.materialization.metadata
    assert metadata["source"].value["worker_db_files"] == [str(p) for p in landed.workers]
    assert metadata["source"].value["input_glob"].endswith("source/workers/*.db")
    counts = metadata["row_counts"].value
    # Run-level totals, over the three days of the range.
    figures = [day_figures(landed.workers, day) for day in DAYS]
    assert counts["quarantined"] == sum(f["bad"] for f in figures) > 0
    assert counts["duplicates_dropped"] == sum(f["copies"] for f in figures) > 0
    assert counts["trades"] == sum(landed_counts(landed.workers, "trades").values())
    assert metadata["skipped_sources"].value == []


def test_a_rerun_and_a_single_day_run_write_the_same_bytes(landed: Landed) -> None:
    before = parquet_hashes(landed.root)
    assert materialize(landed.root, tags=RANGE_TAGS).success
    assert parquet_hashes(landed.root) == before
    assert materialize(landed.root, partition_key=DAYS[1]).success
    assert parquet_hashes(landed.root) == before
