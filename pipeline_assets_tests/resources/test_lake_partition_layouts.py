"""Hive-style folders for every kind of partition (a time window over several folders with
`lake/partition_levels`), and keys that cannot escape their folder."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.lib.parquet_lake import (
    LakeError,
    LakeOutput,
    hive_folder,
    hive_segment,
    parse_hive_folder,
    time_levels,
)
from pipeline_assets_tests.lake_assets import SOURCE_PARENT

TABLE = pa.table({"x": [1, 2, 3]})


def _materialize_one(partitions_def, key, lake_io, instance, dynamic_keys=()):
    @dg.asset(partitions_def=partitions_def, metadata={"lake/layer": "gold"})
    def gold_layout_probe() -> LakeOutput:
        return LakeOutput(TABLE, parents=[SOURCE_PARENT])

    if dynamic_keys:
        instance.add_dynamic_partitions(partitions_def.name, list(dynamic_keys))
    result = dg.materialize(
        [gold_layout_probe], resources={"io_manager": lake_io}, instance=instance, partition_key=key
    )
    assert result.success
    return (
        result.get_asset_materialization_events()[0].materialization.metadata["output_files"].value
    )


@pytest.mark.parametrize(
    ("partitions_def", "key", "expected"),
    [
        (dg.DailyPartitionsDefinition("2026-01-01"), "2026-01-02", "date=2026-01-02"),
        (
            dg.HourlyPartitionsDefinition("2026-01-01-00:00"),
            "2026-01-02-05:00",
            "window_start=2026-01-02-05%3A00",
        ),
        (dg.StaticPartitionsDefinition(["NQ", "SPX"]), "SPX", "partition=SPX"),
        (
            dg.MultiPartitionsDefinition(
                {
                    "date": dg.DailyPartitionsDefinition("2026-01-01"),
                    "ticker": dg.StaticPartitionsDefinition(["NQ", "SPX"]),
                }
            ),
            "2026-01-02|NQ",
            "date=2026-01-02/ticker=NQ",
        ),
    ],
)
def test_partition_kinds_get_hive_folders(partitions_def, key, expected, lake_io, instance):
    files = _materialize_one(partitions_def, key, lake_io, instance)
    assert files == [f"gold/gold_layout_probe/{expected}/data.parquet"]


def test_dynamic_partition_keys_are_escaped_inside_their_folder(lake_root, lake_io, instance):
    jobs = dg.DynamicPartitionsDefinition(name="job")
    key = "../../etc/passwd"
    files = _materialize_one(jobs, key, lake_io, instance, dynamic_keys=[key])
    assert files == ["gold/gold_layout_probe/job=..%2F..%2Fetc%2Fpasswd/data.parquet"]
    written = [p for p in lake_root.rglob("*.parquet")]
    assert len(written) == 1 and lake_root in written[0].parents


def test_unpartitioned_asset_writes_one_file_in_its_folder(lake_io, instance):
    @dg.asset(metadata={"lake/layer": "silver"})
    def silver_whole() -> LakeOutput:
        return LakeOutput(TABLE, parents=[SOURCE_PARENT])

    result = dg.materialize([silver_whole], resources={"io_manager": lake_io}, instance=instance)
    assert result.get_asset_materialization_events()[0].materialization.metadata[
        "output_files"
    ].value == ["silver/silver_whole/data.parquet"]


def test_layer_comes_from_the_asset_name_prefix(lake_io, instance):
    @dg.asset
    def dx_layer_probe() -> LakeOutput:
        return LakeOutput(TABLE, parents=[SOURCE_PARENT])

    result = dg.materialize([dx_layer_probe], resources={"io_manager": lake_io}, instance=instance)
    files = (
        result.get_asset_materialization_events()[0].materialization.metadata["output_files"].value
    )
    assert files == ["hq/dx_layer_probe/data.parquet"]


@given(st.text(min_size=1, max_size=40))
def test_hive_segment_round_trips_and_stays_one_folder(value):
    segment = hive_segment("key", value)
    assert "/" not in segment and "\\" not in segment
    assert segment not in (".", "..")
    assert parse_hive_folder(segment) == {"key": value}


@pytest.mark.parametrize("name", ["", "Date", "a/b", "..", "1st"])
def test_bad_partition_folder_names_are_refused(name):
    with pytest.raises(LakeError, match="partition folder name"):
        hive_segment(name, "x")


HOUR_LEVELS = ["date=%Y-%m-%d", "hour=%H"]


def test_partition_levels_lay_a_time_window_over_several_folders(lake_io, instance):
    @dg.asset(
        partitions_def=dg.HourlyPartitionsDefinition("2026-01-01-00:00"),
        metadata={"lake/layer": "gold", "lake/partition_levels": HOUR_LEVELS},
    )
    def gold_level_probe() -> LakeOutput:
        return LakeOutput(TABLE, parents=[SOURCE_PARENT])

    result = dg.materialize(
        [gold_level_probe],
        resources={"io_manager": lake_io},
        instance=instance,
        partition_key="2026-01-02-05:00",
    )
    files = (
        result.get_asset_materialization_events()[0].materialization.metadata["output_files"].value
    )
    assert files == ["gold/gold_level_probe/date=2026-01-02/hour=05/data.parquet"]


def test_partition_levels_are_refused_for_partitions_without_time_windows(lake_io, instance):
    @dg.asset(
        partitions_def=dg.StaticPartitionsDefinition(["NQ"]),
        metadata={"lake/layer": "gold", "lake/partition_levels": HOUR_LEVELS},
    )
    def gold_static_levels() -> LakeOutput:
        return LakeOutput(TABLE, parents=[SOURCE_PARENT])

    with pytest.raises(LakeError, match="lake/partition_levels.*time-window partitions"):
        dg.materialize(
            [gold_static_levels],
            resources={"io_manager": lake_io},
            instance=instance,
            partition_key="NQ",
        )


_HOURS = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2199, 12, 31)).map(
    lambda t: t.replace(minute=0, second=0, microsecond=0, tzinfo=dt.UTC)
)


@given(_HOURS, _HOURS)
def test_time_levels_name_each_window_by_its_own_folders(first, second):
    folders = [hive_folder(time_levels(t, HOUR_LEVELS)) for t in (first, second)]
    for start, folder in zip((first, second), folders):
        values = parse_hive_folder(folder)
        assert list(values) == ["date", "hour"]
        parsed = dt.datetime.strptime(f"{values['date']} {values['hour']}", "%Y-%m-%d %H")
        assert parsed == start.replace(tzinfo=None)
    assert (folders[0] == folders[1]) == (first == second)


@pytest.mark.parametrize(
    "levels", [["date=%Y-%m-%d"], ["hour=%H"], ["date=%Y-%m", "hour=%H"], ["date"], []]
)
def test_time_levels_that_lose_part_of_the_window_are_refused(levels):
    with pytest.raises(LakeError, match="partition level"):
        time_levels(dt.datetime(2026, 2, 17, 10, tzinfo=dt.UTC), levels)
