"""The operational source tables (DESIGN.md, "Operational Postgres source schema"), and the demo rows.

The tables hold the columns of their `dx_*_v1` datasets (without `export_schema_version`) and,
as an operational database does, a column that must never leave it (`internal_notes`,
`provider_credential`). The entity tables keep every version written (no unique key), which is
where stale versions come from. `create_source_tables` makes them; `insert_rows` loads rows
through COPY; `seed_demo_source` writes the demo's rows once (a marker table makes it idempotent).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

DDL = {
    "operation_runs": """
        run_id text, pipeline_run_id text, workflow_id text, operation_id text, action_id text,
        entity_type text, entity_id text, org_id text, company_id text, source_provider text,
        status text, attempt_count integer, started_at timestamptz, ended_at timestamptz,
        duration_ms integer, cost_usd numeric, error_code text, error_message text,
        created_at timestamptz, internal_notes text""",
    "operation_events": """
        event_id text, run_id text, event_type text, event_sequence integer, occurred_at timestamptz,
        org_id text, company_id text, entity_type text, entity_id text, provider text,
        http_status integer, raw_request_ref text, raw_response_ref text, payload_hash text,
        error_code text, error_message text, metadata_json jsonb, provider_credential text""",
    "company_entities": """
        org_id text, company_id text, entity_id text, canonical_name text, canonical_domain text,
        linkedin_url text, linkedin_page_id text, industry text, employee_count integer,
        revenue_band text, hq_country text, enrichment_confidence numeric,
        last_enriched_at timestamptz, last_operation_id text, last_run_id text,
        source_priority text, record_version bigint, updated_at timestamptz""",
    "person_entities": """
        org_id text, company_id text, entity_id text, full_name text, first_name text,
        last_name text, linkedin_url text, title text, seniority text, department text,
        work_email text, email_status text, phone_e164 text, contact_confidence numeric,
        last_enriched_at timestamptz, last_operation_id text, last_run_id text,
        record_version bigint, updated_at timestamptz""",
    "entity_snapshots": """
        snapshot_id text, org_id text, entity_type text, entity_id text, record_version bigint,
        canonical_payload_json jsonb, captured_at timestamptz, source_run_id text""",
}
TIME_INDEX = {
    "operation_runs": "created_at",
    "operation_events": "occurred_at",
    "company_entities": "updated_at",
    "person_entities": "updated_at",
    "entity_snapshots": "captured_at",
}
DEMO_MARKER = "hq_demo_seed"
# Planted by the demo in a non-contract column, in metadata_json and in an error message; the
# export must never carry it (tests grep every output byte for it).
DEMO_SECRET = "sk_live_DEMOhq0export0secret0do0not0ship"


def create_source_tables(conn: psycopg.Connection, schema: str = "public") -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for table, columns in DDL.items():
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                sql.Identifier(schema, table), sql.SQL(columns)
            )
        )
        ts = TIME_INDEX[table]
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{table}_{ts}_idx"),
                sql.Identifier(schema, table),
                sql.Identifier(ts),
            )
        )


def insert_rows(
    conn: psycopg.Connection, table: str, rows: Iterable[Mapping[str, Any]], schema: str = "public"
) -> int:
    """COPY rows (dicts; missing columns are NULL, dict values become JSON) into a source table."""
    rows = list(rows)
    if not rows:
        return 0
    columns = sorted({k for r in rows for k in r})
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(v) if isinstance(v, dict | list) else v
                    for v in (row.get(c) for c in columns)
                ]
            )
    return len(rows)


# --- demo ----------------------------------------------------------------------------------------

ORGS = ("org-alpha", "org-bravo", "org-charlie")
PROVIDERS = ("prospeo", "clearbit", "apollo", None)
OPERATIONS = ("company.enrich.profile", "person.enrich.contact", "company.resolve.domain")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def demo_rows(
    days: Sequence[dt.date], seed: int = 6, hours: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """A few thousand realistic rows over three orgs and the given UTC days, with flaws planted:
    rows without org_id, statuses and entity types outside their sets, a null key, duplicate
    events, stale entity versions, late rows and credentials in free text and JSON. With
    `hours`, every row falls in the first `hours` hours of the first day (small test windows)."""
    rng = random.Random(seed)
    start = dt.datetime.combine(days[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(days[-1], dt.time(), dt.UTC) + dt.timedelta(days=1)
    span = int((end - start).total_seconds()) if hours is None else hours * 3600

    def at(offset: float | None = None) -> dt.datetime:
        seconds = rng.uniform(0, span - 3600) if offset is None else offset
        return (start + dt.timedelta(seconds=seconds)).replace(microsecond=rng.randrange(1_000_000))

    out: dict[str, list[dict[str, Any]]] = {t: [] for t in DDL}
    companies: list[dict[str, Any]] = []
    for org in ORGS:
        for i in range(60):
            companies.append(
                {"org_id": org, "entity_id": _uuid(rng), "company_id": _uuid(rng), "i": i}
            )
    persons = [
        {"org_id": c["org_id"], "entity_id": _uuid(rng), "company_id": c["company_id"]}
        for c in companies
        for _ in range(2)
    ]

    for n in range(1400):
        entity = rng.choice(companies + persons)
        etype = "company" if "i" in entity else "person"
        created = at()
        status = rng.choices(["succeeded", "failed", "skipped", "canceled"], [80, 12, 5, 3])[0]
        duration = rng.randrange(50, 20_000)
        run = {
            "run_id": _uuid(rng),
            "pipeline_run_id": _uuid(rng) if rng.random() < 0.7 else None,
            "workflow_id": f"wf-{rng.randrange(20)}" if rng.random() < 0.5 else None,
            "operation_id": rng.choice(OPERATIONS),
            "action_id": f"action.v{rng.randrange(1, 4)}",
            "entity_type": etype,
            "entity_id": entity["entity_id"],
            "org_id": entity["org_id"],
            "company_id": entity["company_id"],
            "source_provider": rng.choice(PROVIDERS),
            "status": status,
            "attempt_count": rng.randrange(1, 4),
            "started_at": created,
            "ended_at": created + dt.timedelta(milliseconds=duration),
            "duration_ms": duration,
            "cost_usd": f"{rng.randrange(0, 50_000) / 10_000:.4f}",
            "error_code": "PROVIDER_TIMEOUT" if status == "failed" else None,
            "error_message": "provider timed out after 3 attempts" if status == "failed" else None,
            "created_at": created,
            "internal_notes": f"routing key {DEMO_SECRET}" if n % 97 == 0 else "ok",
        }
        out["operation_runs"].append(run)
        for seq in range(1, 3):
            meta: dict[str, Any] = {
                "latency_ms": rng.randrange(20, 900),
                "region": rng.choice(["eu", "us"]),
            }
            if n % 50 == 0:
                meta["headers"] = {"Authorization": f"Bearer {DEMO_SECRET}", "accept": "json"}
                meta["provider_api_key"] = DEMO_SECRET
            out["operation_events"].append(
                {
                    "event_id": _uuid(rng),
                    "run_id": run["run_id"],
                    "event_type": "request_sent" if seq == 1 else "response_received",
                    "event_sequence": seq,
                    "occurred_at": created + dt.timedelta(milliseconds=seq * duration // 2),
                    "org_id": run["org_id"],
                    "company_id": run["company_id"],
                    "entity_type": etype,
                    "entity_id": run["entity_id"],
                    "provider": run["source_provider"],
                    "http_status": 200 if status != "failed" or seq == 1 else 504,
                    "raw_request_ref": f"s3://raw/{run['run_id']}/{seq}.json",
                    "raw_response_ref": None,
                    "payload_hash": f"{rng.getrandbits(64):016x}",
                    "metadata_json": meta,
                    "provider_credential": DEMO_SECRET,
                }
            )

    # Contract breakers (dead letter): no org_id, enum violations, a null key, a duplicate event.
    runs = out["operation_runs"]
    runs[3] = {**runs[3], "org_id": None}
    runs[7] = {**runs[7], "status": "running"}
    runs[11] = {**runs[11], "entity_type": "deal"}
    runs[13] = {**runs[13], "run_id": None}
    runs[17] = {
        **runs[17],
        "status": "failed",
        "error_code": "AUTH",
        "error_message": f"provider rejected Authorization: Bearer {DEMO_SECRET} (401)",
    }
    events = out["operation_events"]
    events.append({**events[20], "event_id": _uuid(rng)})  # same (run_id, event_sequence)
    events.append(dict(events[30]))  # the same event delivered twice
    events[41] = {**events[41], "metadata_json": {"note": f"password={DEMO_SECRET}"}}
    # Late rows: created in the first hours, written last.
    for row in runs[:5]:
        runs.append({**row, "run_id": _uuid(rng), "created_at": at(rng.uniform(0, 7200))})

    for table, entities in (("company_entities", companies), ("person_entities", persons)):
        for entity in entities:
            versions = rng.randrange(1, 4)
            t = at(rng.uniform(0, span / 2))
            for version in range(1, versions + 1):
                limit = start + dt.timedelta(seconds=span - 900)
                t = max(
                    min(t + dt.timedelta(minutes=rng.randrange(5, 600)), limit),
                    t + dt.timedelta(seconds=1),
                )
                out[table].append(_entity_row(table, entity, version, t, rng))
                out["entity_snapshots"].append(
                    {
                        "snapshot_id": _uuid(rng),
                        "org_id": entity["org_id"],
                        "entity_type": "company" if table == "company_entities" else "person",
                        "entity_id": entity["entity_id"],
                        "record_version": version,
                        "canonical_payload_json": {"version": version, "source": "demo"},
                        "captured_at": t,
                        "source_run_id": None,
                    }
                )
        rows = out[table]
        # A stale write: version 1 written again after newer versions exist.
        newest = max(rows, key=lambda r: r["record_version"])
        rows.append(
            {
                **newest,
                "record_version": 1,
                "updated_at": newest["updated_at"] + dt.timedelta(minutes=1),
            }
        )
        rows.append({**rows[5], "org_id": None})
    snapshots = out["entity_snapshots"]
    snapshots.append({**snapshots[2], "snapshot_id": _uuid(rng)})  # guard repeated
    return out


def _entity_row(
    table: str, entity: dict[str, Any], version: int, t: dt.datetime, rng: random.Random
) -> dict[str, Any]:
    common = {
        "org_id": entity["org_id"],
        "company_id": entity["company_id"],
        "entity_id": entity["entity_id"],
        "linkedin_url": f"https://www.linkedin.com/in/{entity['entity_id'][:8]}",
        "last_enriched_at": t,
        "last_operation_id": rng.choice(OPERATIONS),
        "last_run_id": None,
        "record_version": version,
        "updated_at": t,
    }
    if table == "company_entities":
        return {
            **common,
            "canonical_name": f"Company {entity['entity_id'][:6]}"
            if version > 1 or rng.random() < 0.9
            else None,
            "canonical_domain": f"{entity['entity_id'][:6]}.example.com",
            "linkedin_page_id": str(rng.randrange(10**6, 10**7)),
            "industry": rng.choice(["software", "finance", "retail"]),
            "employee_count": rng.randrange(5, 50_000),
            "revenue_band": rng.choice(["<1M", "1-10M", "10-100M"]),
            "hq_country": rng.choice(["US", "DE", "GB"]),
            "enrichment_confidence": f"{rng.random():.4f}",
            "source_priority": "primary",
        }
    first, last = rng.choice(["Ada", "Lin", "Sam"]), rng.choice(["Ito", "Kahn", "Berg"])
    return {
        **common,
        "full_name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "title": "Engineer",
        "seniority": "senior",
        "department": "engineering",
        "work_email": f"{first.lower()}@example.com",
        "email_status": "verified",
        "phone_e164": f"+1555{rng.randrange(10**6, 10**7)}",
        "contact_confidence": f"{rng.random():.4f}",
    }


def seed_demo_source(conn: psycopg.Connection, days: Sequence[dt.date]) -> dict[str, int] | None:
    """Create the source tables and write the demo rows once; None when they were already there."""
    create_source_tables(conn)
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (seeded_at timestamptz)").format(
            sql.Identifier(DEMO_MARKER)
        )
    )
    if conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(DEMO_MARKER))
    ).fetchone()[0]:
        return None
    counts = {table: insert_rows(conn, table, rows) for table, rows in demo_rows(days).items()}
    conn.execute(sql.SQL("INSERT INTO {} VALUES (now())").format(sql.Identifier(DEMO_MARKER)))
    conn.commit()
    return counts


def write_demo_source(dsn: str, days: Sequence[dt.date]) -> str:
    """Seed the demo rows into the source at `dsn` (once) and say what is there."""
    with psycopg.connect(dsn) as conn:
        counts = seed_demo_source(conn, days)
    if counts is None:
        return "operational Postgres: demo rows already seeded"
    total = sum(counts.values())
    return (
        f"operational Postgres: {total:,} rows over {len(ORGS)} orgs for {days[0]}..{days[-1]} "
        f"({', '.join(f'{t} {n:,}' for t, n in counts.items())}), with contract breakers, stale "
        "versions, late rows and planted credentials"
    )
