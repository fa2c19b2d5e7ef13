"""The demo runner materializes every asset of the definitions it is given, runs their checks, and summarizes."""

import dagster as dg
import pyarrow as pa

from pipeline_assets.demo import DEMO_DAYS, format_summary, run_demo
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets_tests.lake_assets import bronze_demo_ticks, silver_demo_prices


@dg.asset(
    metadata={"lake/layer": "gold"},
    ins={"silver_demo_prices": dg.AssetIn(metadata={"allow_missing_partitions": True})},
)
def gold_demo_total(silver_demo_prices: pa.Table) -> LakeOutput:
    return LakeOutput(pa.table({"rows": [silver_demo_prices.num_rows]}))


@dg.asset_check(asset=gold_demo_total, blocking=True, description="the total is positive")
def gold_demo_total_positive(gold_demo_total: pa.Table) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=gold_demo_total.column("rows")[0].as_py() > 0)


@dg.asset_check(
    asset=bronze_demo_ticks, description="always fails, to show failures in the summary"
)
def bronze_demo_ticks_never_passes() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="seeded failure")


def test_demo_materializes_every_asset_in_dependency_order_and_counts_checks(
    demo_data_root, capsys
):
    settings = Settings.from_env({"PIPELINE_DATA_ROOT": str(demo_data_root)})
    # The daily test assets start in 2026-01; the demo's days are later, within their range
    # only if the definition allows it, so build one that covers them.
    defs = dg.Definitions(
        assets=[bronze_demo_ticks, silver_demo_prices, gold_demo_total],
        asset_checks=[gold_demo_total_positive, bronze_demo_ticks_never_passes],
        resources={"io_manager": LakeIOManager(lake_root=str(settings.lake_root))},
    )
    lines: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        report = run_demo(settings, instance, defs, log=lines.append)
    assert (demo_data_root / "source/workers").is_dir()
    summary = {s.asset: s for s in report.assets.values()}
    days = {d.isoformat() for d in DEMO_DAYS}
    assert summary["bronze_demo_ticks"].partitions == days
    assert summary["bronze_demo_ticks"].rows == 3000
    assert summary["silver_demo_prices"].output_folder == "silver/silver_demo_prices/"
    assert summary["gold_demo_total"].rows == 1
    assert (summary["gold_demo_total"].checks_passed, summary["gold_demo_total"].checks_failed) == (
        1,
        0,
    )
    assert summary["bronze_demo_ticks"].checks_failed == 1
    assert not report.success
    assert any("seeded failure" in line for line in lines)
    table = format_summary(report, str(settings.data_root))
    assert table.splitlines()[0].split() == [
        "asset",
        "partitions",
        "rows",
        "checks",
        "passed",
        "checks",
        "failed",
        "output",
        "folder",
    ]
    assert "3 assets, 6,001 rows, 1 checks passed, 1 failed, 2 runs (0 failed)" in table
