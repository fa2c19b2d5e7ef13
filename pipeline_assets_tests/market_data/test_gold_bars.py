"""Gold one-minute bars equal an independent DuckDB SQL aggregation of the silver files they were
made from; minutes without trades hold what the contract says; files carry custody sidecars naming
their own symbol's silver files; a day whose bars were made from the same silver files is not
computed again (the reason in the metadata), unless its files or inputs changed or `recompute`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.defs.market_data.gold import gold_bars_1m
from pipeline_assets.defs.market_data.silver import silver_market_features
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets_tests.market_data.feature_reference import market_resources

DAYS = ["2026-02-17", "2026-02-18"]

REFERENCE_SQL = """
SET TimeZone = 'UTC';
WITH t AS (
  SELECT exchange, symbol, date_trunc('minute', event_ts_utc) AS minute, price, size,
         aggressor_side AS side, state_reset, (event_ts_utc, source_file, source_id) AS ord
  FROM read_parquet('{silver}/silver_trade_features/**/*.parquet', hive_partitioning = true)
), tb AS (
  SELECT exchange, symbol, minute,
         arg_min(price, ord) AS open, max(price) AS high, min(price) AS low, arg_max(price, ord) AS close,
         sum(size) AS volume,
         sum(CASE WHEN side = 'buy' THEN size ELSE 0 END) AS buy_volume,
         sum(CASE WHEN side = 'sell' THEN size ELSE 0 END) AS sell_volume,
         count(*) AS trade_count, sum(price * size) AS notional, count(state_reset) AS resets
  FROM t GROUP BY ALL
), b AS (
  SELECT exchange, symbol, date_trunc('minute', event_ts_utc) AS minute, ofi, spread, mid,
         mid_log_return AS r, state_reset, (event_ts_utc, source_file, source_id) AS ord
  FROM read_parquet('{silver}/silver_orderbook_features/**/*.parquet', hive_partitioning = true)
), bb AS (
  SELECT exchange, symbol, minute, count(*) AS book_count, sum(coalesce(ofi, 0)) AS ofi_sum,
         avg(spread) AS mean_spread, arg_max(mid, ord) FILTER (WHERE mid IS NOT NULL) AS last_mid,
         sum(r * r) AS realized_variance, count(state_reset) AS resets
  FROM b GROUP BY ALL
)
SELECT coalesce(tb.exchange, bb.exchange) AS exchange, coalesce(tb.symbol, bb.symbol) AS symbol,
       coalesce(tb.minute, bb.minute) AS minute_start_utc,
       open, high, low, close, coalesce(volume, 0) AS volume, coalesce(buy_volume, 0) AS buy_volume,
       coalesce(sell_volume, 0) AS sell_volume, coalesce(trade_count, 0) AS trade_count,
       notional / nullif(volume, 0) AS vwap, (buy_volume - sell_volume) / nullif(volume, 0) AS tfi,
       coalesce(ofi_sum, 0) AS ofi_sum, coalesce(book_count, 0) AS book_count, mean_spread,
       last_mid, realized_variance, coalesce(tb.resets, 0) + coalesce(bb.resets, 0) AS state_resets
FROM tb FULL OUTER JOIN bb USING (exchange, symbol, minute)
ORDER BY exchange, symbol, minute_start_utc
"""


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    root = tmp_path_factory.mktemp("gold")
    write_demo_worker_files(
        root / "source/workers", [dt.date.fromisoformat(d) for d in DAYS], rows_per_day=1500
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data, silver_market_features, gold_bars_1m],
            resources=market_resources(root),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAYS[0],
                "dagster/asset_partition_range_end": DAYS[-1],
            },
        )
    return root, result


def _gold_rows(root: Path) -> list[dict]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return (
        con.execute(
            f"SELECT * EXCLUDE (date) FROM read_parquet('{root}/gold/gold_bars_1m/**/*.parquet', hive_partitioning = true) "
            "ORDER BY exchange, symbol, minute_start_utc"
        )
        .to_arrow_table()
        .to_pylist()
    )


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_bars_equal_a_duckdb_aggregation_of_the_silver_files(lake) -> None:
    root, result = lake
    assert result.success
    con = duckdb.connect()
    *_, reference = [
        con.execute(s) for s in REFERENCE_SQL.format(silver=root / "silver").split(";") if s.strip()
    ]
    expected = reference.to_arrow_table().to_pylist()
    actual = _gold_rows(root)
    assert len(actual) == len(expected) > 100
    for got, want in zip(actual, expected):
        for name, value in want.items():
            assert _same(got[name], value), (
                got["exchange"],
                got["minute_start_utc"],
                name,
                got[name],
                value,
            )
        assert _same(got["unknown_volume"], got["volume"] - got["buy_volume"] - got["sell_volume"])


def test_a_minute_without_trades_has_zero_volume_and_null_prices(lake) -> None:
    rows = _gold_rows(lake[0])
    quiet = [r for r in rows if r["trade_count"] == 0]
    assert quiet, "the demo has minutes with only book snapshots"
    for r in quiet:
        assert r["volume"] == r["buy_volume"] == r["sell_volume"] == r["unknown_volume"] == 0.0
        assert r["open"] is r["high"] is r["low"] is r["close"] is r["vwap"] is r["tfi"] is None
        assert r["book_count"] > 0


def test_gold_files_name_the_silver_files_they_came_from(lake) -> None:
    root, _ = lake
    for data in (root / "gold" / "gold_bars_1m").rglob("data.parquet"):
        sidecar = json.loads(data.with_name("data.parquet.meta.json").read_text())
        parents = {p["path"] for p in sidecar["parents"]}
        symbol_folder = data.parent.name
        date_folder = data.parent.parent.name
        # Exactly the silver files of its own day and symbol, not those of the other symbols.
        assert parents == {
            f"silver/{asset}/{date_folder}/{symbol_folder}/data.parquet"
            for asset in ("silver_orderbook_features", "silver_trade_features")
            if (root / "silver" / asset / date_folder / symbol_folder / "data.parquet").exists()
        }


def test_silver_files_name_their_own_symbols_bronze_and_the_day_wide_inputs(lake) -> None:
    root, _ = lake
    for data in (root / "silver").glob("silver_*/date=*/symbol=*/data.parquet"):
        sidecar = json.loads(data.with_name("data.parquet.meta.json").read_text())
        parents = {p["path"] for p in sidecar["parents"]}
        symbol_folder, date_folder = data.parent.name, data.parent.parent.name
        bronze = {p for p in parents if p.startswith("bronze/bronze_") and "/symbol=" in p}
        assert bronze and all(f"/{date_folder}/{symbol_folder}/" in p for p in bronze)
        # The connection events of the day (not split) are a parent of every symbol's file, and
        # from the second day on the checkpoint of the day before (its date is not the file's).
        assert f"bronze/bronze_connection_events/{date_folder}/data.parquet" in parents
        if date_folder != f"date={DAYS[0]}":
            assert any(p.startswith("silver/_state/market_features/date=") for p in parents)


def test_every_gold_check_ran_and_passed(lake) -> None:
    evaluations = [
        e
        for e in lake[1].get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("gold_bars_1m")
    ]
    assert len(evaluations) == 7 and all(e.passed for e in evaluations)


def _gold_run(root: Path, **run_config) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [gold_bars_1m],
            resources=market_resources(root),
            instance=instance,
            run_config={"ops": {"gold_bars_1m": {"config": run_config}}} if run_config else None,
            tags={
                "dagster/asset_partition_range_start": DAYS[0],
                "dagster/asset_partition_range_end": DAYS[-1],
            },
        )


def _gold_files(root: Path) -> dict[str, tuple[str, str]]:
    """Each gold file's SHA256 and the run its sidecar names."""
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            json.loads(p.with_name("data.parquet.meta.json").read_text())["run_id"],
        )
        for p in sorted((root / "gold").rglob("data.parquet"))
    }


def test_a_day_made_from_the_same_silver_files_is_not_computed_again(lake, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(lake[0], root)
    before = _gold_files(root)
    result = _gold_run(root)
    assert result.success
    assert _gold_files(root) == before  # same bytes, same run in the sidecars: nothing rewritten
    (mat, *_) = [m.materialization for m in result.get_asset_materialization_events()]
    completed = mat.metadata["days_completed_earlier"].value
    assert sorted(completed) == DAYS
    assert all("same silver files" in reason for reason in completed.values())
    per_partition = {
        m.partition: m.materialization.metadata for m in result.get_asset_materialization_events()
    }
    assert all("completed_earlier" in per_partition[d] for d in DAYS)
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_day_whose_files_changed_or_recompute_is_computed_again(lake, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(lake[0], root)
    before = _gold_files(root)
    # One symbol's bars of the first day are gone: that day is computed, the other kept.
    gone = min((root / "gold" / "gold_bars_1m" / f"date={DAYS[0]}").glob("symbol=*"))
    shutil.rmtree(gone)
    result = _gold_run(root)
    after = _gold_files(root)
    assert {p: sha for p, (sha, _) in after.items()} == {p: sha for p, (sha, _) in before.items()}
    changed_runs = {p for p in after if after[p][1] != before[p][1]}
    assert changed_runs == {p for p in after if f"date={DAYS[0]}" in p}
    (mat, *_) = [m.materialization for m in result.get_asset_materialization_events()]
    assert sorted(mat.metadata["days_completed_earlier"].value) == [DAYS[1]]
    # `recompute: true` computes every day again, to the same bytes.
    result = _gold_run(root, recompute=True)
    (mat, *_) = [m.materialization for m in result.get_asset_materialization_events()]
    assert mat.metadata["days_completed_earlier"].value == {}
    assert {p: sha for p, (sha, _) in _gold_files(root).items()} == {
        p: sha for p, (sha, _) in before.items()
    }
