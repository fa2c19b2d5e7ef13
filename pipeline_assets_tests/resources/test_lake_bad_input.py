"""Bad lake input gets an error that names the file and what was expected."""

import dagster as dg
import pyarrow as pa
import pytest

from pipeline_assets.lib.custody import CustodyError
from pipeline_assets.lib.parquet_lake import LakeError, LakeOutput
from pipeline_assets_tests.lake_assets import bronze_demo_ticks, silver_demo_prices

DAY = "2026-01-07"


def _bronze_file(lake_root, day=DAY):
    return lake_root / "bronze/bronze_demo_ticks" / f"date={day}" / "data.parquet"


def _run_silver(lake_io, instance, day=DAY):
    return dg.materialize(
        [bronze_demo_ticks, silver_demo_prices],
        selection=[silver_demo_prices],
        resources={"io_manager": lake_io},
        instance=instance,
        partition_key=day,
        raise_on_error=False,
    )


def _error_text(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "the run should have failed"
    return "\n".join(str(e.event_specific_data.error) for e in failures)


@pytest.fixture
def bronze_day(lake_root, lake_io, instance):
    dg.materialize(
        [bronze_demo_ticks], resources={"io_manager": lake_io}, instance=instance, partition_key=DAY
    )
    return _bronze_file(lake_root)


def test_missing_partition_names_the_expected_file(lake_root, lake_io, instance):
    result = _run_silver(lake_io, instance)
    text = _error_text(result)
    assert f"partition {DAY} of asset bronze_demo_ticks is missing" in text
    assert str(_bronze_file(lake_root)) in text


def test_corrupt_parquet_file_is_named(bronze_day, lake_io, instance):
    bronze_day.chmod(0o644)
    bronze_day.write_bytes(b"this is not parquet")
    text = _error_text(_run_silver(lake_io, instance))
    assert str(bronze_day) in text
    assert "SHA256 is" in text and "sidecar records" in text


def test_corrupt_parquet_with_verification_off_is_named(bronze_day, lake_root, instance):
    from pipeline_assets.resources.lake_io_manager import LakeIOManager

    bronze_day.write_bytes(b"PAR1 garbage PAR1")
    text = _error_text(
        _run_silver(LakeIOManager(lake_root=str(lake_root), verify_on_load=False), instance)
    )
    assert str(bronze_day) in text and "not a readable Parquet file" in text


def test_one_changed_byte_breaks_the_sidecar_match(bronze_day, lake_io, instance):
    data = bytearray(bronze_day.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bronze_day.write_bytes(bytes(data))
    text = _error_text(_run_silver(lake_io, instance))
    assert str(bronze_day) in text and "the file was changed after it was written" in text


def test_missing_sidecar_is_named(bronze_day, lake_io, instance):
    (bronze_day.parent / "data.parquet.meta.json").unlink()
    text = _error_text(_run_silver(lake_io, instance))
    assert "data.parquet.meta.json is missing" in text and str(bronze_day) in text


def test_sidecar_of_another_contract_is_refused(bronze_day, lake_io, instance):
    sidecar = bronze_day.parent / "data.parquet.meta.json"
    sidecar.write_text(sidecar.read_text().replace('"processed_metadata"', '"weather_report"'))
    text = _error_text(_run_silver(lake_io, instance))
    assert str(sidecar) in text and "expected one of" in text


def test_output_without_parents_is_refused(lake_root, lake_io, instance):
    @dg.asset(metadata={"lake/layer": "gold"})
    def gold_orphan() -> pa.Table:
        return pa.table({"x": [1]})

    result = dg.materialize(
        [gold_orphan], resources={"io_manager": lake_io}, instance=instance, raise_on_error=False
    )
    assert "without any parent" in _error_text(result)


def test_range_output_must_cover_the_run(lake_io, instance):
    @dg.asset(partitions_def=bronze_demo_ticks.partitions_def, metadata={"lake/layer": "gold"})
    def gold_partial(context) -> dict:
        return {context.partition_keys[0]: LakeOutput(pa.table({"x": [1]}), parents=[])}

    result = dg.materialize(
        [gold_partial],
        resources={"io_manager": lake_io},
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-01-01",
            "dagster/asset_partition_range_end": "2026-01-02",
        },
        raise_on_error=False,
    )
    assert "do not match the run's (missing ['2026-01-02']" in _error_text(result)


def test_unknown_object_type_is_refused():
    from upath import UPath

    from pipeline_assets.lib.parquet_lake import write_parquet

    with pytest.raises(LakeError, match="cannot write int to Parquet"):
        write_parquet(UPath("/tmp/never-written.parquet"), 42)
    with pytest.raises(CustodyError):
        from pipeline_assets.lib.custody import combined_parent_sha256

        combined_parent_sha256([])
