"""A real materialization for the trace and audit tests: demo worker files, the bronze assets, and a
gold-layer asset made from bronze trades, all through the lake IO manager, with the lake in its
own root (as with `PIPELINE_LAKE_ROOT`) so that parents resolve across both roots."""

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.partitions import market_daily_partitions
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_sources import MarketSources

DAYS = ["2026-02-18", "2026-02-19"]
GOLD_ASSET = "gold_custody_probe"


@dg.asset(
    name=GOLD_ASSET,
    partitions_def=market_daily_partitions,
    metadata={"lake/layer": "gold"},
    kinds={"parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def gold_custody_probe(
    context: dg.AssetExecutionContext, bronze_trades: dict[str, pa.Table]
) -> dict[str, pa.Table]:
    """Trades per symbol and day, read from bronze through the IO manager (which names the bronze
    files as this file's parents)."""
    return {
        key: table.group_by("symbol")
        .aggregate([("price", "count"), ("price", "max")])
        .sort_by("symbol")
        for key, table in bronze_trades.items()
    }


@dataclass
class Landed:
    data_root: Path
    lake_root: Path
    workers: list[Path]

    def gold_files(self) -> list[Path]:
        return sorted((self.lake_root / "gold" / GOLD_ASSET).rglob("data.parquet"))

    def bronze_trade_files(self) -> list[Path]:
        return sorted((self.lake_root / "bronze" / "bronze_trades").rglob("data.parquet"))

    def copy(self, target: Path) -> "Landed":
        """A copy to tamper with (paths in sidecars are relative, so the copy traces the same)."""
        shutil.copytree(self.data_root, target / "data")
        shutil.copytree(self.lake_root, target / "lake")
        return Landed(
            target / "data",
            target / "lake",
            [target / "data" / "source/workers" / p.name for p in self.workers],
        )


@pytest.fixture(scope="session")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Landed:
    base = tmp_path_factory.mktemp("custody")
    data_root, lake_root = base / "data", base / "lake"
    workers = write_demo_worker_files(
        data_root / "source/workers", [dt.date.fromisoformat(d) for d in DAYS], rows_per_day=200
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data, gold_custody_probe],
            resources={
                "io_manager": LakeIOManager(lake_root=str(lake_root)),
                "market_sources": MarketSources(
                    workers_dir=str(data_root / "source/workers"), data_root=str(data_root)
                ),
            },
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAYS[0],
                "dagster/asset_partition_range_end": DAYS[-1],
            },
        )
    assert result.success
    return Landed(data_root, lake_root, workers)
