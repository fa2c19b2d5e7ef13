"""The Dagster UI in headless Chromium over an instance `pipeline demo` filled: every DESIGN.md asset
in its group with its partitions, a two-day backfill launched through GraphQL shown on its asset
page (materializations, run metadata, check results), a check failing on seeded bad data shown
with its explanation, and screenshots of the graph, an asset page and a check page."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline_assets_tests.test_definitions import FIXED_GROUPS
from pipeline_assets_tests.ui.conftest import DagsterUI

pytestmark = pytest.mark.slow

# The demo's last two days: the day before them (2026-02-17) holds the checkpoint silver needs.
BACKFILL_DAYS = ["2026-02-18", "2026-02-19"]
BAD_DAY = "2026-02-17"
MARKET_DAILY_ASSETS = [
    "bronze_orderbook",
    "bronze_trades",
    "bronze_ticker",
    "bronze_quarantine",
    "bronze_connection_events",
    "silver_orderbook_features",
    "silver_trade_features",
    "silver_ticker_features",
    "gold_bars_1m",
]
# The bronze multi-asset cannot be split, so a bronze run names all five.
BRONZE_ASSETS = MARKET_DAILY_ASSETS[:5]
ASSET_PAGE = "bronze_trades"
FAILING_CHECK = "no_duplicate_keys"
# Fields of the run-metadata contract every bronze materialization carries.
RUN_METADATA_FIELDS = (
    "run_id",
    "run_started_utc",
    "partitions",
    "source",
    "watermarks",
    "row_counts",
)
BACKFILL_TIMEOUT_S = 900
PAGE_TIMEOUT_MS = 180_000
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

ASSET_NODES = """
{ assetNodes { assetKey { path } groupName isPartitioned
  partitionKeysByDimension { name partitionKeys } } }
"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 50) { runId status } error { message } }
    ... on PythonError { message }
  }
}
"""
MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 20) { runId partition } }
  }
}
"""
CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 5) {
    runId status evaluation { success description }
  }
}
"""


def _launch_backfill(ui: DagsterUI, assets: list[str], days: list[str], title: str) -> str:
    result = ui.graphql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "partitionNames": days,
                "assetSelection": [{"path": [name]} for name in assets],
                "title": title,
            }
        },
    )["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _wait_for_backfill(ui: DagsterUI, backfill_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while time.monotonic() < deadline:
        backfill = ui.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill.get("status") in DONE and all(
            run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in backfill["runs"]
        ):
            return backfill
        time.sleep(2)
    pytest.fail(f"backfill {backfill_id} did not finish in {BACKFILL_TIMEOUT_S}s: {backfill}")


def _open(page: Any, ui: DagsterUI, path: str) -> None:
    page.goto(f"{ui.url}{path}", wait_until="domcontentloaded", timeout=PAGE_TIMEOUT_MS)


def _shot(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is too small to show a page"
    print(f"screenshot: {path}")
    return path


@pytest.fixture
def page(browser: Any) -> Any:
    from playwright.sync_api import expect

    # A page's data arrives over several GraphQL calls, slow on a busy machine.
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    page.close()


def test_asset_graph_lists_every_design_asset_in_its_group_with_partitions(
    dagster_ui: DagsterUI, page: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    nodes = {
        "/".join(n["assetKey"]["path"]): n for n in dagster_ui.graphql(ASSET_NODES)["assetNodes"]
    }
    missing = sorted(set(FIXED_GROUPS) - set(nodes))
    assert not missing, f"assets of DESIGN.md not in the webserver: {missing}"
    by_group: dict[str, list[str]] = {}
    for name, node in nodes.items():
        by_group.setdefault(node["groupName"], []).append(name)
    for group in sorted(set(FIXED_GROUPS.values())):
        names = sorted(by_group[group])
        # Tall enough that the graph renders every node of the group (it draws only what is in view).
        page.set_viewport_size({"width": 1800, "height": max(1200, 300 + 250 * len(names))})
        _open(page, dagster_ui, f"/locations/pipeline_assets/asset-groups/{group}")
        for name in names:
            box = page.locator('[class*="AssetNode_assetNodeBox"]').filter(
                has=page.get_by_text(name, exact=True)
            )
            expect(box).to_have_count(1)
            # Statuses load after the graph; a loaded node no longer says so.
            expect(box).not_to_contain_text("Loading", timeout=PAGE_TIMEOUT_MS)
            # The node's footer counts the partitions ("2,530 partitions"); none when unpartitioned.
            footer = box.get_by_text(re.compile(r"^[\d,]+ partitions$"))
            node = nodes[name]
            if node["isPartitioned"]:
                expected = sum(len(d["partitionKeys"]) for d in node["partitionKeysByDimension"])
                expect(footer).to_have_text(f"{expected:,} partitions")
            else:
                expect(footer).to_have_count(0)
            if name in FIXED_GROUPS:
                assert FIXED_GROUPS[name] == group, (
                    f"{name} is in {group}, DESIGN.md says {FIXED_GROUPS[name]}"
                )
        if group == "market_data":
            _shot(page, artifacts, "asset-graph-market_data.png")


def test_two_day_backfill_through_graphql_shows_on_the_asset_page(
    dagster_ui: DagsterUI, page: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    backfill_id = _launch_backfill(
        dagster_ui, MARKET_DAILY_ASSETS, BACKFILL_DAYS, "ui test: two market days"
    )
    backfill = _wait_for_backfill(dagster_ui, backfill_id)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    run_ids = {run["runId"] for run in backfill["runs"]}
    assert run_ids and all(run["status"] == "SUCCESS" for run in backfill["runs"]), backfill

    # Each day of each asset was materialized by the backfill's runs.
    for name in MARKET_DAILY_ASSETS:
        mats = dagster_ui.graphql(MATERIALIZATIONS, {"key": {"path": [name]}})["assetOrError"]
        days = {m["partition"] for m in mats["assetMaterializations"] if m["runId"] in run_ids}
        assert days == set(BACKFILL_DAYS), (name, mats)
    run_id = next(
        m["runId"]
        for m in dagster_ui.graphql(MATERIALIZATIONS, {"key": {"path": [ASSET_PAGE]}})[
            "assetOrError"
        ]["assetMaterializations"]
        if m["runId"] in run_ids
    )

    page.set_viewport_size({"width": 1600, "height": 1400})
    _open(page, dagster_ui, f"/assets/{ASSET_PAGE}?view=events")
    body = page.locator("body")
    # The latest event is the backfill's, with the run-metadata fields beside it.
    expect(body).to_contain_text(f"materialized in run {run_id[:8]}")
    for day in BACKFILL_DAYS:
        expect(body).to_contain_text(day)
    for field in RUN_METADATA_FIELDS:
        expect(page.get_by_text(field, exact=True).first).to_be_visible()
    expect(body).to_contain_text(run_id)
    # The partition's markdown summary names each file with the command that traces it.
    expect(body).to_contain_text(f"bronze/{ASSET_PAGE}/date={BACKFILL_DAYS[-1]}/")
    expect(body).to_contain_text(f"pipeline trace {dagster_ui.data}/bronze/{ASSET_PAGE}/")
    expect(page.get_by_text("null_rate_max", exact=True).first).to_be_visible()
    _shot(page, artifacts, f"asset-page-{ASSET_PAGE}-events.png")

    _open(page, dagster_ui, f"/assets/{ASSET_PAGE}?view=checks")
    checks = page.locator("body")
    for check in (
        "event_date_matches_partition",
        "no_duplicate_keys",
        "row_count_matches_source",
        "schema_matches_contract",
    ):
        expect(checks).to_contain_text(check)
    expect(checks.get_by_text("Succeeded", exact=True)).to_have_count(4)
    _shot(page, artifacts, f"asset-page-{ASSET_PAGE}-checks.png")


def _seed_duplicate_trade(workers: Path, day: str) -> tuple[Path, str]:
    """A new collector file recording one trade of `day` again at another price: the same
    primary key (exchange, symbol, trade_id) with other data, which no exact-duplicate rule drops."""
    source = min(workers.glob("*.db"))
    seeded = workers / "worker_seeded_bad.db"
    with contextlib.closing(sqlite3.connect(source)) as conn:
        tables = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        row = conn.execute(
            "SELECT exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload "
            "FROM market_ticks WHERE channel = 'trades' AND event_ts_utc LIKE ? ORDER BY id LIMIT 1",
            (f"{day}T%",),
        ).fetchone()
    assert row, f"no trade of {day} in {source}"
    payload = row[5].replace('"price": ', '"price": 1', 1)
    assert payload != row[5], row[5]
    with contextlib.closing(sqlite3.connect(seeded)) as conn, conn:
        for sql in tables:
            conn.execute(sql)
        conn.execute(
            "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, "
            "payload) VALUES (?, ?, ?, ?, ?, ?)",
            (*row[:5], payload),
        )
    return seeded, re.search(r'"trade_id": "([^"]+)"', row[5]).group(1)


def test_failing_check_on_seeded_bad_data_shows_failed_with_its_explanation(
    dagster_ui: DagsterUI, page: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    seeded, trade_id = _seed_duplicate_trade(dagster_ui.data / "source" / "workers", BAD_DAY)
    try:
        backfill_id = _launch_backfill(dagster_ui, BRONZE_ASSETS, [BAD_DAY], "ui test: bad day")
        backfill = _wait_for_backfill(dagster_ui, backfill_id)
    finally:
        seeded.unlink()
    run_ids = {run["runId"] for run in backfill["runs"]}
    executions = dagster_ui.graphql(
        CHECK_EXECUTIONS, {"key": {"path": [ASSET_PAGE]}, "check": FAILING_CHECK}
    )["assetCheckExecutions"]
    latest = executions[0]
    assert latest["runId"] in run_ids and latest["status"] == "FAILED", executions
    explanation = latest["evaluation"]["description"]
    assert explanation and trade_id in explanation and BAD_DAY in explanation, explanation
    # A blocking check failed, so its run failed (the backfill itself completes: the partition
    # was written, and the check's failure is what a reader must see).
    assert [run["status"] for run in backfill["runs"]] == ["FAILURE"], backfill

    page.set_viewport_size({"width": 1600, "height": 1400})
    _open(page, dagster_ui, f"/assets/{ASSET_PAGE}?view=checks&checkDetail={FAILING_CHECK}")
    body = page.locator("body")
    expect(body).to_contain_text("Failed")
    expect(body).to_contain_text(trade_id)
    expect(body).to_contain_text(f"{FAILING_CHECK} failed on {BAD_DAY}")
    _shot(page, artifacts, f"check-page-{ASSET_PAGE}-{FAILING_CHECK}-failed.png")
