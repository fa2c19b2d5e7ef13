"""Contract validation of a window (property tests): the rows Postgres classifies as exported or
dead-lettered equal those of an independent plain-Python model of contract v1, on the real server."""

from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter

import psycopg
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.hq.datasets import EVENTS, RUNS
from pipeline_assets.lib.hq.extract import read_window
from pipeline_assets.lib.hq.source_tables import insert_rows

START = dt.datetime(2026, 2, 17, 10, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=1)
STATUSES = ("succeeded", "failed", "skipped", "canceled")


def _export(dsn: str, connect, schema: str, spec, rows: list[dict]) -> tuple[pa.Table, list[dict]]:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"TRUNCATE {schema}.{spec.table}")
        insert_rows(conn, spec.table, rows, schema)
    window, _ = read_window(connect, spec, "2026-02-17-10:00", START, END, schema=schema)
    table = pa.Table.from_batches(list(window.batches()), schema=spec.schema)
    return table, window.result.dead


_times = st.integers(min_value=-600, max_value=4200).map(
    lambda s: START + dt.timedelta(seconds=s, microseconds=s % 7)
)
_costs = st.one_of(
    st.none(),
    st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False),
    st.sampled_from([decimal.Decimal("1.1234567"), decimal.Decimal("1e13")]),
)
_run = st.fixed_dictionaries(
    {
        "run_id": st.one_of(st.none(), st.sampled_from([f"r{i}" for i in range(6)])),
        "org_id": st.sampled_from(["org-a", "org-b", None]),
        "status": st.sampled_from([*STATUSES, "running", None]),
        "entity_type": st.sampled_from(["company", "person", "deal", None]),
        "operation_id": st.sampled_from(["company.enrich.profile", None]),
        "action_id": st.just("a1"),
        "entity_id": st.sampled_from(["e1", "e2"]),
        "attempt_count": st.sampled_from([1, 2, None]),
        "started_at": st.just(START),
        "cost_usd": _costs,
        "created_at": _times,
        "error_message": st.sampled_from([None, "timeout", "password=hunter2 leaked"]),
    }
)


def model_runs(rows: list[dict]) -> tuple[dict[str, dict], Counter]:
    """Plain Python reading of contract v1 for operation runs in [START, END)."""
    kept: dict[str, dict] = {}
    dead: Counter = Counter()
    candidates = []
    for row in rows:
        if not START <= row["created_at"] < END:
            continue
        if row["org_id"] is None:
            dead[(row["run_id"], "missing_org_id")] += 1
        elif row["run_id"] is None:
            dead[(None, "null_key")] += 1
        elif row["status"] not in STATUSES:
            dead[(row["run_id"], "invalid_status")] += 1
        elif row["entity_type"] not in ("company", "person"):
            dead[(row["run_id"], "invalid_entity_type")] += 1
        elif row["operation_id"] is None or row["attempt_count"] is None:
            dead[(row["run_id"], "null_required_field")] += 1
        elif row["cost_usd"] is not None and (
            row["cost_usd"] != round(row["cost_usd"], 6) or abs(row["cost_usd"]) >= 10**12
        ):
            dead[(row["run_id"], "numeric_out_of_range")] += 1
        else:
            candidates.append(row)
    for row in sorted(candidates, key=lambda r: r["created_at"]):
        if row["run_id"] in kept:
            dead[(row["run_id"], "duplicate_key")] += 1
        else:
            kept[row["run_id"]] = row
    return kept, dead


@given(rows=st.lists(_run, max_size=25))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_run_rows_are_exported_or_dead_lettered_as_the_model_says(pg_dsn, connect, schema, rows):
    # Equal created_at among duplicates makes "the first" ambiguous; the model needs it unique.
    seen: set = set()
    rows = [
        r
        for r in rows
        if (r["run_id"], r["created_at"]) not in seen
        and not seen.add((r["run_id"], r["created_at"]))
    ]
    table, dead = _export(pg_dsn, connect, schema, RUNS, rows)
    kept, expected_dead = model_runs(rows)

    assert sorted(table.column("run_id").to_pylist()) == sorted(kept)
    for got in table.to_pylist():
        want = kept[got["run_id"]]
        assert got["created_at"] == want["created_at"]
        assert got["cost_usd"] == want["cost_usd"]
        assert got["export_schema_version"] == "v1"
        assert "hunter2" not in (got["error_message"] or "")
    actual_dead = Counter(
        (
            None if '"run_id" : null' in d["source_key"] else d["source_key"].split('"')[3],
            d["reason"],
        )
        for d in dead
    )
    assert actual_dead == expected_dead
    assert all("hunter2" not in d["row_json"] for d in dead)


_event = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from([f"ev{i}" for i in range(8)]),
        "org_id": st.sampled_from(["org-a", None]),
        "entity_type": st.sampled_from(["company", "person", "robot"]),
        "occurred_at": _times,
        "provider": st.sampled_from(["prospeo", None]),
    }
)
# Each event id belongs to one (run_id, event_sequence): duplicates of an id repeat its identity.
_IDENTITY = {f"ev{i}": (f"r{i % 3}", i % 4) for i in range(8)}


@given(events=st.lists(_event, max_size=25))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_events_keep_one_row_per_event_and_per_run_sequence(pg_dsn, connect, schema, events):
    rows = [
        {
            **e,
            "run_id": _IDENTITY[e["event_id"]][0],
            "event_sequence": _IDENTITY[e["event_id"]][1],
            "event_type": "request_sent",
            "entity_id": "e1",
        }
        for e in events
    ]
    table, dead = _export(pg_dsn, connect, schema, EVENTS, rows)

    valid = [
        r
        for r in rows
        if START <= r["occurred_at"] < END
        and r["org_id"]
        and r["entity_type"] in ("company", "person")
    ]
    ids = sorted({r["event_id"] for r in valid})
    guards: dict[tuple, str] = {}
    for event_id in ids:  # the first by event_id keeps the (run_id, event_sequence)
        guards.setdefault(_IDENTITY[event_id], event_id)
    expected_ids = sorted(guards.values())

    assert sorted(table.column("event_id").to_pylist()) == expected_ids
    reasons = Counter(d["reason"] for d in dead)
    assert reasons["duplicate_key"] == len(valid) - len(ids)
    assert reasons["duplicate_unique_guard"] == len(ids) - len(expected_ids)
    in_window = [r for r in rows if START <= r["occurred_at"] < END]
    assert table.num_rows + len(dead) == len(in_window)  # nothing dropped silently
