"""What the UI shows of each materialization: null rates per nullable column of a lake asset (from
the files' footers, checked against DuckDB counting the rows), the `pipeline trace` command of
each file (run, it traces the file), a markdown summary naming every file, the staging export's
lag, and a failed check's explanation."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from contracts.custody import ParentRef
from pipeline_assets.defs.market_data.staging_checks import (
    WINDOW_START_NOT_AFTER_END,
    staging_check_results,
)
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets_tests.lake_assets import DAILY, bronze_demo_ticks, range_tags
from pipeline_assets_tests.lake_assets import SOURCE_PARENT as TICKS_SOURCE
from pipeline_assets_tests.market_data.staging_helpers import END, make_root
from pipeline_assets_tests.market_data.test_staging_asset import materialize as materialize_staging

DAYS = ["2026-01-03", "2026-01-04"]
SOURCE_PARENT = ParentRef(kind="url", path="file:///demo/quotes.csv", sha256="1" * 64)
NULLABLE_FLAT = ("bid", "venue")


def _quotes(day: str) -> pa.Table:
    # Different null patterns per day and per column, so that rates differ and can be mixed up.
    seed = int(day[-1])
    rows = 200
    return pa.table(
        {
            "symbol": pa.array(["BTC-USDT" if i % 2 else "ETH-USDT" for i in range(rows)]),
            "bid": pa.array([None if i % (seed + 2) == 0 else i * 0.5 for i in range(rows)]),
            "venue": pa.array([None if i % 7 < seed else "binance" for i in range(rows)]),
            "levels": pa.array([None if i % 5 == 0 else [1.0, 2.0] for i in range(rows)]),
        },
        schema=pa.schema(
            [
                pa.field("symbol", pa.string(), nullable=False),
                pa.field("bid", pa.float64()),
                pa.field("venue", pa.string()),
                pa.field("levels", pa.list_(pa.float64())),
            ]
        ),
    )


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"lake/layer": "bronze", "lake/split_by": "symbol"},
    kinds={"parquet"},
)
def bronze_demo_quotes(context: dg.AssetExecutionContext) -> dict[str, LakeOutput]:
    """Quotes with nulls, one file per day and symbol."""
    return {
        key: LakeOutput(_quotes(key), parents=[SOURCE_PARENT], params={"day": key})
        for key in context.partition_keys
    }


@pytest.fixture
def materializations(lake_io, instance) -> dict[str, dict[str, dg.MetadataValue]]:
    result = dg.materialize(
        [bronze_demo_quotes],
        resources={"io_manager": lake_io},
        instance=instance,
        tags=range_tags(DAYS[0], DAYS[-1]),
    )
    assert result.success
    return {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def test_null_rates_of_nullable_columns_match_duckdb(lake_root: Path, materializations) -> None:
    for day, metadata in materializations.items():
        files = f"{lake_root}/bronze/bronze_demo_quotes/date={day}/**/*.parquet"
        expected = duckdb.sql(
            f"select avg((bid is null)::int), avg((venue is null)::int) from read_parquet('{files}')"
        ).fetchall()[0]
        for column, rate in zip(NULLABLE_FLAT, expected):
            assert metadata[f"null_rate/{column}"].value == pytest.approx(rate, abs=1e-6), column
            assert rate > 0  # the data has nulls in every nullable column, so 0 would be a miss
        assert metadata["null_rate_max"].value == pytest.approx(max(expected), abs=1e-6)
        # A non-nullable column has no rate, nor has a nested one (its leaves do not count rows).
        assert "null_rate/symbol" not in metadata and "null_rate/levels" not in metadata
    rates = [m["null_rate/bid"].value for m in materializations.values()]
    assert rates[0] != rates[1], "each partition must carry its own figures"


def test_summary_lists_every_file_with_its_trace_command(lake_root: Path, materializations) -> None:
    for metadata in materializations.values():
        summary = metadata["summary"].value
        assert isinstance(metadata["summary"], dg.MarkdownMetadataValue)
        assert f"**{metadata['dagster/row_count'].value:,} rows** in 2 files" in summary
        for relative in metadata["output_files"].value:
            assert f"`{relative}`" in summary
            assert f"`pipeline trace {lake_root / relative}`" in summary


def test_trace_command_of_a_materialization_traces_its_file(lake_root: Path, lake_io, instance):
    result = dg.materialize(
        [bronze_demo_ticks],
        resources={"io_manager": lake_io},
        instance=instance,
        partition_key=DAYS[0],
    )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    data = lake_root / "bronze/bronze_demo_ticks" / f"date={DAYS[0]}" / "data.parquet"
    assert metadata["path"].value == str(data)
    assert metadata["trace"].value == f"pipeline trace {data}"
    program, verb, path = metadata["trace"].value.split(" ", 2)
    traced = subprocess.run(
        [str(Path(sys.executable).parent / program), verb, path, "--json"],
        env={**os.environ, "PIPELINE_DATA_ROOT": str(lake_root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert traced.returncode == 0, traced.stdout[-2000:] + traced.stderr[-2000:]
    # The trace reaches the asset's source, the parent it named.
    assert TICKS_SOURCE.path in traced.stdout


def test_staging_export_names_its_trace_and_plots_its_lag(tmp_path: Path, instance) -> None:
    root = make_root(tmp_path)
    result = materialize_staging(root, instance, hours=24, end_utc=END, output_format="sqlite")
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    doc = json.loads((root / metadata["metadata_file"].value).read_text())
    (export,) = doc["output_files"]
    assert metadata["trace"].value == f"pipeline trace {root / export}"
    assert f"`pipeline trace {root / export}`" in metadata["summary"].value
    newest = doc["watermarks"]["new"]["market_ticks_ingestion_ts_utc"]
    lag = dt.datetime.fromisoformat(doc["run_finished_utc"]) - dt.datetime.fromisoformat(newest)
    assert metadata["export_lag_s"].value == pytest.approx(lag.total_seconds(), abs=1e-3)
    assert metadata["export_lag_s"].value > 0
    traced = subprocess.run(
        [str(Path(sys.executable).parent / "pipeline"), "trace", str(root / export), "--json"],
        env={**os.environ, "PIPELINE_DATA_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert traced.returncode == 0, traced.stdout[-2000:] + traced.stderr[-2000:]
    # The export's trace reaches the worker files it read.
    assert "source/workers/" in traced.stdout


def test_a_failed_staging_check_explains_itself(tmp_path: Path, instance) -> None:
    root = make_root(tmp_path)
    result = materialize_staging(root, instance, hours=24, end_utc=END, output_format="sqlite")
    metadata_file = (
        root
        / result.get_asset_materialization_events()[0]
        .materialization.metadata["metadata_file"]
        .value
    )
    doc = json.loads(metadata_file.read_text())
    # The window ends before it starts: one rule broken, and the JSON Schema still met.
    doc["window"]["default_start_utc"] = "2030-01-01T00:00:00Z"
    broken = tmp_path / "broken_metadata.json"
    broken.write_text(json.dumps(doc))
    results = {r.check_name: r for r in staging_check_results("staging_export", broken)}
    failed = {name for name, r in results.items() if not r.passed}
    assert failed == {WINDOW_START_NOT_AFTER_END}
    description = results[WINDOW_START_NOT_AFTER_END].description
    assert description.startswith("broken_metadata.json breaks the run contract's rule `")
    assert all(r.description is None for r in results.values() if r.passed)
