"""The upsert rule (property tests): whatever order the windows are exported in, the company
dataset holds one row per (org_id, entity_id) with the version a plain-Python upsert in write
order keeps, and every version written after one at least as new is dead-lettered as stale."""

from __future__ import annotations

import datetime as dt

import psycopg
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.hq.datasets import COMPANIES
from pipeline_assets.lib.hq.extract import read_window
from pipeline_assets.lib.hq.source_tables import insert_rows
from pipeline_assets.lib.hq.windows import window_bounds, windows_of_other_versions

WINDOWS = ("2026-02-17-10:00", "2026-02-17-11:00", "2026-02-17-12:00")
START = window_bounds(WINDOWS[0])[0]


def model_upsert(rows: list[dict]) -> tuple[dict[tuple, dict], list[tuple]]:
    """Apply rows in write order (updated_at): a row replaces the stored one only when its
    record_version is higher; otherwise it is stale. Written independently of the SQL."""
    state: dict[tuple, dict] = {}
    stale: list[tuple] = []
    for row in sorted(rows, key=lambda r: r["updated_at"]):
        key = (row["org_id"], row["entity_id"])
        if key in state and row["record_version"] <= state[key]["record_version"]:
            stale.append((*key, row["record_version"]))
        else:
            state[key] = row
    return state, stale


_version = st.fixed_dictionaries(
    {
        "org_id": st.sampled_from(["org-a", "org-b"]),
        "entity_id": st.sampled_from(["e1", "e2", "e3"]),
        "record_version": st.integers(1, 4),
        "minute": st.integers(0, 179),
    }
)


@given(versions=st.lists(_version, max_size=14), order=st.permutations(WINDOWS))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_an_older_version_never_replaces_a_newer_one_in_any_window_order(
    pg_dsn, connect, schema, versions, order
):
    rows = [
        {
            "org_id": v["org_id"],
            "company_id": "c-" + v["entity_id"],
            "entity_id": v["entity_id"],
            "canonical_name": f"name v{v['record_version']} #{i}",
            "record_version": v["record_version"],
            # distinct write times: the model needs a strict write order
            "updated_at": START + dt.timedelta(minutes=v["minute"], microseconds=i),
        }
        for i, v in enumerate(versions)
    ]
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"TRUNCATE {schema}.company_entities")
        insert_rows(conn, "company_entities", rows, schema)

    exported: list[dict] = []
    dead: list[dict] = []
    for key in order:
        start, end = window_bounds(key)
        window, _ = read_window(connect, COMPANIES, key, start, end, schema=schema)
        exported += pa.Table.from_batches(
            list(window.batches()), schema=COMPANIES.schema
        ).to_pylist()
        dead += window.result.dead

    state, stale = model_upsert(rows)
    got = {(r["org_id"], r["entity_id"]): r for r in exported}
    assert len(got) == len(exported), "one row per (org_id, entity_id) across the windows"
    assert {k: (r["record_version"], r["canonical_name"]) for k, r in got.items()} == {
        k: (r["record_version"], r["canonical_name"]) for k, r in state.items()
    }
    assert all(d["reason"] == "stale_version" for d in dead)
    assert sorted(
        (d["org_id"], d["source_key"].split('"')[7], int(d["detail"].split()[1])) for d in dead
    ) == sorted(stale)


def test_the_windows_of_replaced_versions_are_found(pg_dsn, schema):
    rows = [
        {
            "org_id": "org-a",
            "company_id": "c1",
            "entity_id": "e1",
            "record_version": 1,
            "updated_at": START,
        },
        {
            "org_id": "org-a",
            "company_id": "c1",
            "entity_id": "e1",
            "record_version": 2,
            "updated_at": START + dt.timedelta(hours=2),
        },
        {
            "org_id": "org-a",
            "company_id": "c2",
            "entity_id": "e2",
            "record_version": 1,
            "updated_at": START + dt.timedelta(hours=1),
        },
    ]
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"TRUNCATE {schema}.company_entities")
        insert_rows(conn, "company_entities", rows, schema)
        found = windows_of_other_versions(conn, COMPANIES, [WINDOWS[2]], schema=schema)
    assert found == {WINDOWS[0], WINDOWS[2]}
