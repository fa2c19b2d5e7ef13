"""Time windows of the export, and per-window questions to the source: what changed, how many rows,
which hash. Plain functions, shared by the micro-batch sensor and (issue 7) the reconciliation.

Windows are UTC hours, keyed as Dagster's hourly partitions key them (`2026-02-17-10:00`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from pipeline_assets.lib.hq.datasets import SOURCE_SCHEMA, DatasetSpec

WINDOW = dt.timedelta(hours=1)
KEY_FORMAT = "%Y-%m-%d-%H:%M"
_PG_KEY_FORMAT = "YYYY-MM-DD-HH24:MI"


def window_bounds(key: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a window key, in UTC."""
    start = dt.datetime.strptime(key, KEY_FORMAT).replace(tzinfo=dt.UTC)
    return start, start + WINDOW


def window_key(moment: dt.datetime) -> str:
    """The key of the window holding `moment`."""
    moment = moment.astimezone(dt.UTC)
    return moment.replace(minute=0, second=0, microsecond=0).strftime(KEY_FORMAT)


def window_activity(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    since: dt.datetime | None,
    *,
    schema: str = SOURCE_SCHEMA,
) -> dict[str, tuple[int, int]]:
    """Per window with rows at or after `since` (all windows when None): (row count, newest xmin).

    The pair changes whenever a row of the window is inserted, updated or deleted (xmin is the
    writing transaction's id), so it fingerprints the window cheaply through the time index.
    The export records the same pair per window (`window_fingerprint`) for the sensor to compare.
    """
    where = (
        sql.SQL("WHERE {ts} >= {since}").format(
            ts=sql.Identifier(spec.time_column), since=sql.Literal(since)
        )
        if since is not None
        else sql.SQL("WHERE {ts} IS NOT NULL").format(ts=sql.Identifier(spec.time_column))
    )
    query = sql.SQL(
        "SELECT to_char(date_trunc('hour', {ts} AT TIME ZONE 'UTC'), {fmt}), count(*), "
        "max(xmin::text::bigint) FROM {table} {where} GROUP BY 1"
    ).format(
        ts=sql.Identifier(spec.time_column),
        fmt=sql.Literal(_PG_KEY_FORMAT),
        table=sql.Identifier(schema, spec.table),
        where=where,
    )
    return {key: (int(count), int(xmin)) for key, count, xmin in conn.execute(query)}


def window_fingerprint(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    start: dt.datetime,
    end: dt.datetime,
    *,
    schema: str = SOURCE_SCHEMA,
) -> tuple[int, int]:
    """`window_activity`'s (row count, newest xmin) of the one window [start, end), (0, 0) when it
    is empty: what an export records for the sensor. Not grouped, so a third of the cost."""
    query = sql.SQL(
        "SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM {table} "
        "WHERE {ts} >= {lo} AND {ts} < {hi}"
    ).format(
        table=sql.Identifier(schema, spec.table),
        ts=sql.Identifier(spec.time_column),
        lo=sql.Literal(start),
        hi=sql.Literal(end),
    )
    count, xmin = conn.execute(query).fetchone()
    return int(count), int(xmin)


def newest_time(
    conn: psycopg.Connection, spec: DatasetSpec, *, schema: str = SOURCE_SCHEMA
) -> dt.datetime | None:
    """The newest value of the dataset's time column (the sensor's watermark)."""
    query = sql.SQL("SELECT max({ts}) FROM {table}").format(
        ts=sql.Identifier(spec.time_column), table=sql.Identifier(schema, spec.table)
    )
    return conn.execute(query).fetchone()[0]


def windows_of_other_versions(
    conn: psycopg.Connection, spec: DatasetSpec, keys: Sequence[str], *, schema: str = SOURCE_SCHEMA
) -> set[str]:
    """Upsert datasets: the windows holding any version of an entity that has a version in `keys`.

    When a newer version lands in one window, the window of the version it replaces must be
    exported again too, so that the dataset keeps one row per (org_id, entity_id).
    """
    if not spec.upsert or not keys:
        return set()
    bounds = [window_bounds(k) for k in keys]
    ts = sql.Identifier(spec.time_column)
    in_windows = sql.SQL(" OR ").join(
        sql.SQL("({ts} >= {lo} AND {ts} < {hi})").format(
            ts=ts, lo=sql.Literal(lo), hi=sql.Literal(hi)
        )
        for lo, hi in bounds
    )
    table = sql.Identifier(schema, spec.table)
    query = sql.SQL(
        "SELECT DISTINCT to_char(date_trunc('hour', t.{ts} AT TIME ZONE 'UTC'), {fmt}) FROM {table} t "
        "WHERE t.{ts} IS NOT NULL AND (t.org_id, t.entity_id) IN "
        "(SELECT org_id, entity_id FROM {table} WHERE {in_windows})"
    ).format(ts=ts, fmt=sql.Literal(_PG_KEY_FORMAT), table=table, in_windows=in_windows)
    return {row[0] for row in conn.execute(query)}


# --- counts and hashes per window and org (for reconciliation) ---------------------------------


def source_counts_by_org(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    start: dt.datetime,
    end: dt.datetime,
    *,
    schema: str = SOURCE_SCHEMA,
) -> dict[str | None, int]:
    """Source rows of [start, end) per org_id (None for rows without one), before classification."""
    query = sql.SQL(
        "SELECT org_id, count(*) FROM {table} WHERE {ts} >= {lo} AND {ts} < {hi} GROUP BY 1"
    ).format(
        table=sql.Identifier(schema, spec.table),
        ts=sql.Identifier(spec.time_column),
        lo=sql.Literal(start),
        hi=sql.Literal(end),
    )
    return {org: int(n) for org, n in conn.execute(query)}


def key_hash(keys: Iterable[Sequence[Any]]) -> str:
    """SHA256 of key tuples in a canonical encoding: sorted, fields tab-separated, one per line,
    NULL as `\\N`. The source side and the lake side call this same function."""
    lines = sorted("\t".join("\\N" if v is None else str(v) for v in key) for key in keys)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def table_key_hash(table: pa.Table, columns: Sequence[str]) -> str:
    """`key_hash` of the given columns of an exported table (e.g. read back from the lake)."""
    return key_hash(zip(*(table.column(c).to_pylist() for c in columns)))


def source_key_hash(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    start: dt.datetime,
    end: dt.datetime,
    org_id: str,
    *,
    schema: str = SOURCE_SCHEMA,
) -> str:
    """`key_hash` of the primary keys of the source rows of [start, end) and one org."""
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE org_id = {org} AND {ts} >= {lo} AND {ts} < {hi}"
    ).format(
        cols=sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c)) for c in spec.primary_key
        ),
        table=sql.Identifier(schema, spec.table),
        org=sql.Literal(org_id),
        ts=sql.Identifier(spec.time_column),
        lo=sql.Literal(start),
        hi=sql.Literal(end),
    )
    return key_hash(conn.execute(query))
