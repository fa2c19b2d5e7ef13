"""Incremental staging exports: a second run exports exactly the rows ingested since the first
(none twice, none missing), and run 1's new watermark is run 2's previous one."""

import json

from pipeline_assets.lib.market.staging_export import export_options, read_export_rows
from pipeline_assets_tests.market_data.staging_helpers import (
    export,
    insert_ticks,
    make_root,
    worker_files,
)

END = "2026-02-21T00:00:00Z"


def ids(result) -> list[tuple[str, int]]:
    return [(r["source_file"], r["source_id"]) for r in read_export_rows(result)]


def test_second_incremental_run_exports_exactly_the_new_rows(tmp_path):
    root = make_root(tmp_path)
    options = export_options(
        hours=72,
        end_utc=END,
        incremental=True,
        update_state=True,
        state_key="t",
        output_format="json",
    )
    first = export(root, options)
    w1, w2 = worker_files(root)
    new_ts = ["2026-02-20T01:00:00.000001Z", "2026-02-20T01:00:00.000002Z"]
    insert_ticks(w1, new_ts)
    insert_ticks(w2, ["2026-02-20T02:00:00.000000Z"], exchange="coinbase", symbol="ETH-USD")
    second = export(root, options)

    run1, run2 = ids(first), ids(second)
    assert len(run1) == len(set(run1)) and not set(run1) & set(run2)
    # Golden: the new rows are the highest ids of each file, by plain SQL.
    import sqlite3

    expected = set()
    for path, count in ((w1, 2), (w2, 1)):
        conn = sqlite3.connect(path)
        expected |= {
            (path.name, i)
            for (i,) in conn.execute(f"SELECT id FROM market_ticks ORDER BY id DESC LIMIT {count}")
        }
        conn.close()
    assert set(run2) == expected
    m1, m2 = first.metadata, second.metadata
    assert m1["watermarks"]["new"] == m2["watermarks"]["previous"]
    assert (
        m2["query_bounds"]["market_ticks"]["lower_utc"]
        == m1["watermarks"]["new"]["market_ticks_ingestion_ts_utc"]
    )
    assert m2["query_bounds"]["market_ticks"]["lower_inclusive"] is False
    assert m1["query_bounds"]["market_ticks"]["lower_inclusive"] is True
    assert m2["watermarks"]["new"]["market_ticks_ingestion_ts_utc"] == "2026-02-20T02:00:00Z"
    state = json.loads((root / "staging/staging_export_state.json").read_text())
    assert state["profiles"]["t"]["last_run_id"] == second.run_id


def test_without_update_state_the_watermark_does_not_move(tmp_path):
    root = make_root(tmp_path)
    options = export_options(hours=72, end_utc=END, incremental=True, update_state=False)
    first, second = export(root, options), export(root, options)
    assert ids(first) == ids(second) and ids(first)
    assert second.metadata["state"]["updated"] is False
    assert second.metadata["watermarks"]["previous"]["market_ticks_ingestion_ts_utc"] is None
    assert not (root / "staging/staging_export_state.json").exists()


def test_state_profiles_are_independent(tmp_path):
    root = make_root(tmp_path)
    a = export_options(hours=72, end_utc=END, incremental=True, update_state=True, state_key="a")
    b = export_options(
        hours=72,
        end_utc=END,
        incremental=True,
        update_state=True,
        state_key="b",
        exchanges=["BINANCE"],
    )
    export(root, a)
    first_b = export(root, b)
    assert first_b.metadata["watermarks"]["previous"]["market_ticks_ingestion_ts_utc"] is None
    assert {r["exchange"] for r in read_export_rows(first_b)} == {"binance"}
    assert export(root, a).metadata["row_counts"]["market_ticks"] == 0
