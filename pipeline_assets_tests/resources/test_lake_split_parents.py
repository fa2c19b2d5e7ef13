"""Parents are exact: each file of a split partition names the parents of its own value (a parent
split by the same column with another value is left out, every other parent stays;
`lake/split_parents: all` keeps the partition's whole list), and each output of a multi-asset
names only the inputs its own asset depends on. Through the IO manager, on real files and sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from contracts.custody import ParentRef
from pipeline_assets.lib.parquet_lake import LakeOutput
from pipeline_assets.resources.lake_io_manager import LakeIOManager, parents_of_split_file

SHA = "a" * 64
BTC = ParentRef(
    kind="file", path="bronze/b/date=2026-02-17/symbol=BTC-USD/data.parquet", sha256=SHA
)
ETH = ParentRef(
    kind="file", path="bronze/b/date=2026-02-17/symbol=ETH-USD/data.parquet", sha256=SHA
)
EVENTS = ParentRef(kind="file", path="bronze/e/date=2026-02-17/data.parquet", sha256=SHA)
QUERY = ParentRef(kind="query", path="postgresql://h/db#public.t", sha256=SHA)
ENCODED = ParentRef(
    kind="file", path="hq/x/window_start=2026-02-17-00%3A00/o=1/data.parquet", sha256=SHA
)


def test_a_parent_of_another_value_of_the_split_column_is_left_out() -> None:
    kept = parents_of_split_file([BTC, ETH, EVENTS, QUERY], {"symbol": "BTC-USD"})
    assert kept == [BTC, EVENTS, QUERY]


def test_a_parent_split_by_another_column_stays() -> None:
    assert parents_of_split_file([BTC, ETH], {"org_id": "org-1"}) == [BTC, ETH]


def test_folder_values_are_compared_decoded() -> None:
    assert parents_of_split_file([ENCODED], {"window_start": "2026-02-17-00:00"}) == [ENCODED]
    assert parents_of_split_file([ENCODED, EVENTS], {"window_start": "2026-02-18-00:00"}) == [
        EVENTS
    ]


@pytest.mark.parametrize(("split_parents", "expected"), [(None, 2), ("all", 3)])
def test_the_io_manager_writes_exact_or_whole_parent_lists(
    tmp_path: Path, split_parents: str | None, expected: int
) -> None:
    metadata = {"lake/layer": "silver", "lake/split_by": "symbol"}
    if split_parents:
        metadata["lake/split_parents"] = split_parents

    @dg.asset(name="silver_split_parents", metadata=metadata)
    def silver_split_parents() -> LakeOutput:
        table = pa.table({"symbol": ["BTC-USD", "ETH-USD"], "x": [1, 2]})
        return LakeOutput(table, parents=[BTC, ETH, EVENTS])

    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(
            [silver_split_parents],
            resources={"io_manager": LakeIOManager(lake_root=str(tmp_path))},
            instance=instance,
        )
    sidecar = tmp_path / "silver/silver_split_parents/symbol=BTC-USD/data.parquet.meta.json"
    parents = [p["path"] for p in json.loads(sidecar.read_text())["parents"]]
    assert len(parents) == expected and BTC.path in parents and EVENTS.path in parents


def test_each_output_of_a_multi_asset_names_only_its_own_inputs(tmp_path: Path) -> None:
    @dg.asset(name="bronze_left", metadata={"lake/layer": "bronze"})
    def bronze_left() -> LakeOutput:
        return LakeOutput(pa.table({"x": [1]}), parents=[QUERY])

    @dg.asset(name="bronze_right", metadata={"lake/layer": "bronze"})
    def bronze_right() -> LakeOutput:
        return LakeOutput(pa.table({"x": [2]}), parents=[QUERY])

    @dg.multi_asset(
        outs={
            "silver_left": dg.AssetOut(metadata={"lake/layer": "silver"}),
            "silver_right": dg.AssetOut(metadata={"lake/layer": "silver"}),
        },
        ins={"left": dg.AssetIn("bronze_left"), "right": dg.AssetIn("bronze_right")},
        internal_asset_deps={
            "silver_left": {dg.AssetKey("bronze_left")},
            "silver_right": {dg.AssetKey("bronze_right")},
        },
    )
    def silver_pair(left: pa.Table, right: pa.Table):
        return left, right

    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(
            [bronze_left, bronze_right, silver_pair],
            resources={"io_manager": LakeIOManager(lake_root=str(tmp_path))},
            instance=instance,
        )
    for side in ("left", "right"):
        sidecar = tmp_path / f"silver/silver_{side}/data.parquet.meta.json"
        parents = [p["path"] for p in json.loads(sidecar.read_text())["parents"]]
        assert parents == [f"bronze/bronze_{side}/data.parquet"]
