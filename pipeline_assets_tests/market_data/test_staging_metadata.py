"""Staging export metadata: the JSON file validates against the published contract for every
output format, carries every required field, and an empty window is a full, valid export."""

import json

import duckdb
import pytest

from pipeline_assets.lib.custody import verify_file
from pipeline_assets.lib.market.staging_export import (
    export_options,
    json_schema_errors,
    read_export_rows,
    validation_problems,
)
from pipeline_assets_tests.market_data.staging_helpers import END, export, make_root, source_ids

REQUIRED = [
    "run_id",
    "run_started_utc",
    "run_finished_utc",
    "mode",
    "window",
    "query_bounds",
    "source",
    "options",
    "filters",
    "uniques",
    "watermarks",
    "state",
    "row_counts",
    "output_files",
]


@pytest.mark.parametrize("fmt", ["sqlite", "csv", "json"])
def test_metadata_validates_for_every_format(tmp_path, fmt):
    root = make_root(tmp_path)
    result = export(root, export_options(hours=24, end_utc=END, output_format=fmt))
    doc = json.loads(result.metadata_path.read_text())
    assert json_schema_errors(doc) == []
    assert validation_problems(doc) == []
    assert all(k in doc for k in REQUIRED)
    assert (
        doc["contract_name"] == "staging_export_run_metadata" and doc["contract_version"] == "1.0.0"
    )
    assert result.metadata_path.name == f"{doc['run_id']}_metadata.json"
    assert doc["run_id"].startswith("staging_export_") and doc["run_id"].endswith("_last_24h")
    expected = source_ids(root, "2026-02-19T00:00:00.000000Z", "2026-02-20T00:00:00.000000Z")
    rows = list(read_export_rows(result))
    # Rejected rows (the demo's bad rows) are in the rejects output, not the export.
    rejected = {
        (r["source_file"], r["source_id"])
        for r in read_export_rows(result, "rejects")
        if r["source_table"] == "market_ticks"
    }
    assert {(r["source_file"], r["source_id"]) for r in rows} == expected - rejected
    assert doc["row_counts"]["market_ticks"] == len(rows)
    for path in doc["output_files"]:
        verify_file(root / path)  # each output has a matching custody sidecar
    # The metadata file has one too, whose parents are the outputs it describes.
    record = verify_file(result.metadata_path)
    assert sorted(p.path for p in record.parents) == sorted(doc["output_files"])


def test_exported_rows_carry_normalized_names(tmp_path):
    root = make_root(tmp_path)
    result = export(root, export_options(hours=24, end_utc=END, output_format="csv"))
    path = root / next(
        p for p in result.metadata["output_files"] if p.endswith("_market_ticks.csv")
    )
    pairs = duckdb.sql(
        f"SELECT DISTINCT exchange_raw, symbol_raw, exchange, symbol, base_asset, quote_asset FROM read_csv('{path}')"
    ).fetchall()
    assert ("Binance", "BTCUSDT", "binance", "BTC-USDT", "BTC", "USDT") in pairs
    assert ("coinbase", "BTC-USD", "coinbase", "BTC-USD", "BTC", "USD") in pairs
    for _, _, exchange, symbol, base, quote in pairs:
        assert exchange == exchange.lower() and symbol == f"{base}-{quote}"


@pytest.mark.parametrize("fmt", ["sqlite", "csv", "json"])
def test_empty_window_is_a_valid_export_with_zero_rows(tmp_path, fmt):
    root = make_root(tmp_path)
    result = export(
        root,
        export_options(
            hours=1, end_utc="2025-01-01T00:00:00Z", output_format=fmt, update_state=True
        ),
    )
    doc = json.loads(result.metadata_path.read_text())
    assert validation_problems(doc) == []
    assert doc["row_counts"] == {"market_ticks": 0, "connection_events": 0, "rejected": 0}
    assert doc["uniques"]["source"] == {"exchanges": [], "assets": []}
    assert doc["watermarks"]["new"]["market_ticks_ingestion_ts_utc"] is None
    assert doc["output_files"] and all((root / p).exists() for p in doc["output_files"])
    assert list(read_export_rows(result)) == []


def test_a_broken_metadata_document_is_reported(tmp_path):
    root = make_root(tmp_path)
    doc = json.loads(export(root, export_options(hours=24, end_utc=END)).metadata_path.read_text())
    doc["source"]["worker_db_count"] = 7
    doc["window"]["default_start_utc"] = "2030-01-01T00:00:00Z"
    del doc["row_counts"]
    problems = validation_problems(doc)
    assert any("worker_db_count_matches_files" in p for p in problems)
    assert any("window_start_not_after_end" in p for p in problems)
    assert any("row_counts" in p and "required" in p for p in json_schema_errors(doc))
