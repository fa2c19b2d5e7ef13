"""`lake/split_by`: one file per value under the partition folder, stale values removed, empty partitions marked."""

import hashlib

import dagster as dg
import duckdb
import pyarrow as pa

from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets_tests.lake_assets import DAILY, SOURCE_PARENT, day_rows, range_tags

SYMBOLS = {"value": ["BTC-USDT", "ETH-USDT"]}


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"lake/layer": "bronze", "lake/split_by": "symbol"},
    config_schema={
        "symbols": dg.Field(list, default_value=SYMBOLS["value"]),
        "stream": dg.Field(bool, default_value=False),
    },
)
def bronze_split_ticks(context: dg.AssetExecutionContext) -> dict:
    symbols = set(context.op_execution_context.op_config["symbols"])
    out = {}
    for key in context.partition_keys:
        table = day_rows(key)
        table = table.filter(
            pa.compute.is_in(table["symbol"], pa.array(sorted(symbols), pa.string()))
        )
        data = (
            table.to_batches(max_chunksize=97)
            if context.op_execution_context.op_config["stream"]
            else table
        )
        out[key] = LakeOutput(data, schema=table.schema, parents=[SOURCE_PARENT])
    return out


@dg.asset(partitions_def=DAILY, metadata={"lake/layer": "silver"})
def silver_split_counts(bronze_split_ticks: pa.Table) -> LakeOutput:
    counts = bronze_split_ticks.group_by("symbol").aggregate([([], "count_all")]).sort_by("symbol")
    return LakeOutput(counts)


def _run(lake_io, instance, days=("2026-01-03", "2026-01-04"), **config):
    return dg.materialize(
        [bronze_split_ticks],
        resources={"io_manager": lake_io},
        instance=instance,
        tags=range_tags(days[0], days[-1]),
        run_config={"ops": {"bronze_split_ticks": {"config": config}}} if config else None,
    )


def _files(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def test_each_value_gets_its_folder_and_duckdb_reads_them_all(lake_root, lake_io, instance):
    _run(lake_io, instance)
    folder = lake_root / "bronze/bronze_split_ticks"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("data.parquet")) == [
        f"date={d}/symbol={s}/data.parquet"
        for d in ("2026-01-03", "2026-01-04")
        for s in ("BTC-USDT", "ETH-USDT")
    ]
    assert all((p.parent / "data.parquet.meta.json").exists() for p in folder.rglob("data.parquet"))
    got = duckdb.sql(
        f"select date::varchar, symbol, count(*) from read_parquet('{folder}/**/*.parquet', hive_partitioning=true) group by all order by all"
    ).fetchall()
    expected = []
    for day in ("2026-01-03", "2026-01-04"):
        symbols = day_rows(day).column("symbol").to_pylist()
        expected += [(day, s, symbols.count(s)) for s in ("BTC-USDT", "ETH-USDT")]
    assert got == expected


def test_streamed_and_whole_writes_give_the_same_bytes(lake_root, lake_io, instance):
    _run(lake_io, instance)
    whole = _files(lake_root)
    _run(lake_io, instance, stream=True)
    assert _files(lake_root) == whole


def test_a_value_gone_from_the_source_is_removed_on_rewrite(lake_root, lake_io, instance):
    _run(lake_io, instance)
    _run(lake_io, instance, symbols=["ETH-USDT"])
    folder = lake_root / "bronze/bronze_split_ticks/date=2026-01-03"
    assert sorted(p.name for p in folder.iterdir()) == ["symbol=ETH-USDT"]


def test_an_empty_partition_is_marked_and_loads_as_zero_rows(lake_root, lake_io, instance):
    _run(lake_io, instance, days=("2026-01-05",), symbols=[])
    folder = lake_root / "bronze/bronze_split_ticks/date=2026-01-05"
    assert [p.name for p in folder.iterdir()] == ["_empty.json"]
    result = dg.materialize(
        [bronze_split_ticks, silver_split_counts],
        selection=[silver_split_counts],
        resources={"io_manager": lake_io},
        instance=instance,
        partition_key="2026-01-05",
    )
    assert result.success
    silver = lake_root / "silver/silver_split_counts/date=2026-01-05/data.parquet"
    assert duckdb.sql(f"select count(*) from '{silver}'").fetchall() == [(0,)]
    # The marker is not a Parquet file, so globbing readers of the dataset are unaffected.
    _run(lake_io, instance)
    assert duckdb.sql(
        f"select count(*) from read_parquet('{lake_root}/bronze/bronze_split_ticks/**/*.parquet', hive_partitioning=true)"
    ).fetchall() == [(2000,)]


def test_downstream_of_an_empty_partition_names_its_marker_as_parent(lake_root, lake_io, instance):
    from upath import UPath

    from pipeline_assets.lib.custody import read_sidecar

    _run(lake_io, instance, days=("2026-01-06",), symbols=[])
    dg.materialize(
        [bronze_split_ticks, silver_split_counts],
        selection=[silver_split_counts],
        resources={"io_manager": lake_io},
        instance=instance,
        partition_key="2026-01-06",
    )
    marker = lake_root / "bronze/bronze_split_ticks/date=2026-01-06/_empty.json"
    record = read_sidecar(
        UPath(lake_root / "silver/silver_split_counts/date=2026-01-06/data.parquet")
    )
    assert [(p.path, p.sha256) for p in record.parents] == [
        (
            "bronze/bronze_split_ticks/date=2026-01-06/_empty.json",
            hashlib.sha256(marker.read_bytes()).hexdigest(),
        )
    ]
