"""Small assets that exercise the lake IO manager in real Dagster runs (shared by several tests)."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from contracts.custody import ParentRef
from pipeline_assets.lib.parquet_lake import LakeOutput

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-01")
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# A stand-in for a source file, so that outputs have a verifiable parent.
SOURCE_PARENT = ParentRef(kind="url", path="file:///demo/source.csv", sha256="0" * 64)


def range_tags(start: str, end: str) -> dict[str, str]:
    return dict(zip(RANGE_TAGS, (start, end)))


def day_rows(day: str, rows: int = 1000) -> pa.Table:
    """Deterministic rows for one day: the same day always gives the same table."""
    base = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    seed = int(day.replace("-", ""))
    return pa.table(
        {
            "event_ts": pa.array(
                [base + dt.timedelta(seconds=i * 17) for i in range(rows)],
                pa.timestamp("us", tz="UTC"),
            ),
            "symbol": pa.array(["BTC-USDT" if i % 3 else "ETH-USDT" for i in range(rows)]),
            "price": pa.array([(seed % 997) + i * 0.25 for i in range(rows)], pa.float64()),
            "day": pa.array([day] * rows),
        }
    )


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"lake/layer": "bronze"},
    kinds={"parquet"},
)
def bronze_demo_ticks(context: dg.AssetExecutionContext) -> dict[str, LakeOutput]:
    """One file per day; a range run returns every day of its range."""
    return {
        key: LakeOutput(day_rows(key), parents=[SOURCE_PARENT], params={"day": key})
        for key in context.partition_keys
    }


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"lake/layer": "silver"},
    kinds={"parquet"},
)
def silver_demo_prices(context: dg.AssetExecutionContext, bronze_demo_ticks: dict[str, pa.Table]):
    """Loads its range of bronze days and writes the same days, streaming record batches."""
    tables = bronze_demo_ticks

    def doubled(table: pa.Table) -> Iterator[pa.RecordBatch]:
        for batch in table.to_batches(max_chunksize=333):
            yield batch.set_column(2, "price", pc.multiply(batch.column(2), 2.0))

    return {key: LakeOutput(doubled(t), schema=t.schema) for key, t in tables.items()}
