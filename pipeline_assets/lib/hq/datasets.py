"""The five HQ export datasets: where each comes from, and the one query that exports a window of it.

Everything a dataset needs is derived from its contract (`contracts.hq`): the columns to select
(only the contract's, so nothing else leaves the source), how each travels (timestamps as ISO
text in UTC, numerics as text then exact decimals, jsonb as text), the required fields, the keys.

The window query classifies every source row of the window in Postgres, in one pass, and returns
the contract columns plus three bookkeeping columns:

- `_reason` / `_detail`: NULL for a row that is exported; otherwise why it is dead-lettered, the
  first that applies of: missing_org_id, null_key, invalid_status, invalid_entity_type,
  null_required_field, numeric_out_of_range, invalid_json, then duplicate_key,
  duplicate_unique_guard (append datasets: the first valid row of a key is kept, ordered by the
  dataset's rank order), or stale_version (upsert datasets: of all valid versions of an
  (org_id, entity_id) anywhere in the source, only the highest record_version is kept, ties to
  the first by updated_at);
- `_key`: the primary key as JSON text, for dead-lettered rows.

Rows come ordered by primary key (nulls last), validity, the rank order and then every contract
column as the tie-break (the ranking window's own order, so Postgres sorts once; later columns are
compared only between rows equal so far): the same source rows always give the same order, the
same row kept among duplicates, and the same file bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from psycopg import sql

from contracts.core import JSON_LOGICAL_TYPE, ContractModel, arrow_schema
from contracts.hq import (
    ENTITY_TYPES,
    RUN_STATUSES,
    DxCompanyEntitiesV1,
    DxEntitySnapshotsV1,
    DxOperationEventsV1,
    DxOperationRunsV1,
    DxPersonEntitiesV1,
)

SOURCE_SCHEMA = "public"


@functools.cache
def _schema(model: type[ContractModel]) -> pa.Schema:
    return arrow_schema(model)


VERSION_COLUMN = "export_schema_version"
BOOKKEEPING = ("_reason", "_detail", "_key")


@dataclass(frozen=True)
class DatasetSpec:
    """One dx_*_v1 dataset and its source table."""

    name: str
    model: type[ContractModel]
    table: str
    time_column: str
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Append datasets: duplicates keep the first valid row in this order (after the key itself).
    rank_order: tuple[str, ...] = ()

    @property
    def upsert(self) -> bool:
        return self.model.contract.write_semantics == "upsert"

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.model.contract.primary_key

    @property
    def guards(self) -> tuple[tuple[str, ...], ...]:
        return self.model.contract.unique

    @property
    def schema(self) -> pa.Schema:
        return _schema(self.model)

    @property
    def source_columns(self) -> list[str]:
        """The contract's columns, which are all the source is asked for."""
        return [f.name for f in self.schema if f.name != VERSION_COLUMN]

    def field(self, name: str) -> pa.Field:
        return self.schema.field(name)

    def is_json(self, name: str) -> bool:
        return (self.field(name).metadata or {}).get(b"logical_type") == JSON_LOGICAL_TYPE

    @property
    def required(self) -> list[str]:
        return [c for c in self.source_columns if not self.field(c).nullable]

    @property
    def json_columns(self) -> list[str]:
        return [c for c in self.source_columns if self.is_json(c)]

    @property
    def free_text_columns(self) -> list[str]:
        return [c for c in self.source_columns if c.endswith("_message")]


RUNS = DatasetSpec(
    "dx_operation_runs_v1",
    DxOperationRunsV1,
    "operation_runs",
    "created_at",
    enums={"status": RUN_STATUSES, "entity_type": ENTITY_TYPES},
    rank_order=("created_at",),
)
EVENTS = DatasetSpec(
    "dx_operation_events_v1",
    DxOperationEventsV1,
    "operation_events",
    "occurred_at",
    enums={"entity_type": ENTITY_TYPES},
    rank_order=("event_id",),
)
COMPANIES = DatasetSpec(
    "dx_company_entities_v1", DxCompanyEntitiesV1, "company_entities", "updated_at"
)
PERSONS = DatasetSpec("dx_person_entities_v1", DxPersonEntitiesV1, "person_entities", "updated_at")
SNAPSHOTS = DatasetSpec(
    "dx_entity_snapshots_v1",
    DxEntitySnapshotsV1,
    "entity_snapshots",
    "captured_at",
    enums={"entity_type": ENTITY_TYPES},
    rank_order=("captured_at",),
)

DATASETS: tuple[DatasetSpec, ...] = (RUNS, EVENTS, COMPANIES, PERSONS, SNAPSHOTS)
DATASETS_BY_NAME: dict[str, DatasetSpec] = {d.name: d for d in DATASETS}


# --- SQL -----------------------------------------------------------------------------------------


def _ident(name: str) -> sql.Composable:
    return sql.Identifier(name)


def _or(parts: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")


def _decimal_bounds(spec: DatasetSpec, column: str) -> tuple[int, int]:
    t = spec.field(column).type
    return t.precision, t.scale


def transport_expression(spec: DatasetSpec, column: str) -> sql.Composable:
    """How a column travels through COPY: text, integers, ISO timestamps in UTC, numeric text."""
    t = spec.field(column).type
    col = sql.SQL("b.") + _ident(column)
    if pa.types.is_timestamp(t):
        return col  # ISO text in the session's UTC (`2026-02-17 10:00:00.123456+00`)
    if pa.types.is_integer(t):
        return sql.SQL("{c}::bigint").format(c=col)
    if pa.types.is_decimal(t):
        return sql.SQL("{c}::numeric::text").format(c=col)
    return sql.SQL("{c}::text").format(c=col)


def _base_reason(spec: DatasetSpec, alias: str = "t") -> tuple[sql.Composable, sql.Composable]:
    """(reason, detail) CASE expressions of the row-level rules, over source alias `t`."""

    def c(name: str) -> sql.Composable:
        return sql.SQL(alias + ".") + _ident(name)

    whens: list[tuple[sql.Composable, str, sql.Composable]] = []
    whens.append(
        (
            sql.SQL("{o} IS NULL").format(o=c("org_id")),
            "missing_org_id",
            sql.Literal("org_id is null; every exported row needs its tenant"),
        )
    )
    key_nulls = [sql.SQL("{k} IS NULL").format(k=c(k)) for k in spec.primary_key]
    whens.append(
        (
            _or(key_nulls),
            "null_key",
            sql.SQL("concat_ws(', ', {parts}) || ' (primary key {pk})'").format(
                parts=sql.SQL(", ").join(
                    sql.SQL("CASE WHEN {k} IS NULL THEN {msg} END").format(
                        k=c(k), msg=sql.Literal(f"{k} is null")
                    )
                    for k in spec.primary_key
                ),
                pk=sql.SQL(", ".join(spec.primary_key)),
            ),
        )
    )
    for column, allowed in spec.enums.items():
        whens.append(
            (
                sql.SQL("{v} IS NULL OR {v}::text NOT IN ({allowed})").format(
                    v=c(column), allowed=sql.SQL(", ").join(sql.Literal(a) for a in allowed)
                ),
                f"invalid_{column}" if column != "entity_type" else "invalid_entity_type",
                sql.SQL(
                    "{name} || ' ' || coalesce(quote_literal(left({v}::text, 60)), 'null') || {tail}"
                ).format(
                    name=sql.Literal(column),
                    v=c(column),
                    tail=sql.Literal(" is not one of " + ", ".join(allowed)),
                ),
            )
        )
    others = [
        r
        for r in spec.required
        if r not in spec.primary_key and r != "org_id" and r not in spec.enums
    ]
    if others:
        whens.append(
            (
                _or([sql.SQL("{v} IS NULL").format(v=c(r)) for r in others]),
                "null_required_field",
                sql.SQL("'required field null: ' || concat_ws(', ', {parts})").format(
                    parts=sql.SQL(", ").join(
                        sql.SQL("CASE WHEN {v} IS NULL THEN {n} END").format(
                            v=c(r), n=sql.Literal(r)
                        )
                        for r in others
                    )
                ),
            )
        )
    for column in spec.source_columns:
        t = spec.field(column).type
        if pa.types.is_decimal(t):
            precision, scale = t.precision, t.scale
            whens.append(
                (
                    sql.SQL(
                        "{v} IS NOT NULL AND ({v}::numeric <> round({v}::numeric, {s}) "
                        "OR abs({v}::numeric) >= {limit} OR {v}::numeric = 'NaN')"
                    ).format(
                        v=c(column),
                        s=sql.Literal(scale),
                        limit=sql.Literal(10 ** (precision - scale)),
                    ),
                    "numeric_out_of_range",
                    sql.SQL("{n} || ' ' || {v}::text || {tail}").format(
                        n=sql.Literal(column),
                        v=c(column),
                        tail=sql.Literal(f" does not fit decimal({precision}, {scale}) exactly"),
                    ),
                )
            )
    for column in spec.json_columns:
        whens.append(
            (
                sql.SQL("{v} IS NOT NULL AND jsonb_typeof({v}::jsonb) <> 'object'").format(
                    v=c(column)
                ),
                "invalid_json",
                sql.SQL(
                    "{n} || ' is a JSON ' || jsonb_typeof({v}::jsonb) || ', expected an object'"
                ).format(n=sql.Literal(column), v=c(column)),
            )
        )
    reason = sql.SQL("CASE {w} END").format(
        w=sql.SQL(" ").join(
            sql.SQL("WHEN {cond} THEN {code}").format(cond=cond, code=sql.Literal(code))
            for cond, code, _ in whens
        )
    )
    detail = sql.SQL("CASE {w} END").format(
        w=sql.SQL(" ").join(
            sql.SQL("WHEN {cond} THEN {d}").format(cond=cond, d=d) for cond, _, d in whens
        )
    )
    return reason, detail


def _cols(names: tuple[str, ...] | list[str], alias: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(alias + ".") + _ident(n) for n in names)


def window_query(
    spec: DatasetSpec, start: dt.datetime, end: dt.datetime, *, schema: str = SOURCE_SCHEMA
) -> sql.Composed:
    """The SELECT that exports the rows of [start, end) of the dataset's time column, classified."""
    return _classified(spec, [(start, end)], schema, labelled=False)


def windows_query(
    spec: DatasetSpec,
    bounds: Sequence[tuple[dt.datetime, dt.datetime]],
    *,
    schema: str = SOURCE_SCHEMA,
) -> sql.Composed:
    """The rows of several windows, each classified exactly as `window_query` classifies it alone,
    in one scan of the source, plus `_window`: the 1-based position in `bounds` of the row's window.
    Unordered (its readers aggregate or join the rows).

    `bounds` are disjoint [start, end) ranges in ascending order. Append datasets rank duplicates
    within each window (the window leads every ranking partition); the upsert rule already ranks
    all versions of a key wherever they lie, so its classification does not depend on the window.
    One scan instead of one per window matters where a window's rows are spread over the table:
    each window query then reads every page (the reconciliation's checksums over many windows).
    """
    if not bounds:
        raise ValueError("windows_query needs at least one window")
    if any(lo >= hi for lo, hi in bounds) or any(
        bounds[i][1] > bounds[i + 1][0] for i in range(len(bounds) - 1)
    ):
        raise ValueError(f"windows must be disjoint, non-empty and ascending: {bounds}")
    return _classified(spec, bounds, schema, labelled=True)


def _classified(
    spec: DatasetSpec,
    bounds: Sequence[tuple[dt.datetime, dt.datetime]],
    schema: str,
    *,
    labelled: bool,
) -> sql.Composed:
    table = sql.Identifier(schema, spec.table)
    ts = _ident(spec.time_column)
    reason, _ = _base_reason(spec)
    # The words are only worked out for the rows that are dead-lettered, after ranking.
    _, detail = _base_reason(spec, "b")
    pk = spec.primary_key

    # Adjacent windows make one range: the scan tests a row against each range.
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for lo, hi in bounds:
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))

    def within_bounds(alias: str) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("{a}.{ts} >= {lo} AND {a}.{ts} < {hi}").format(
                a=sql.SQL(alias), ts=ts, lo=sql.Literal(lo), hi=sql.Literal(hi)
            )
            for lo, hi in ranges
        )

    in_window = within_bounds("t")
    if len(ranges) > 1:
        in_window = sql.SQL("({w})").format(w=in_window)
    # The window of a row in scope: the last start at or before its time (windows are disjoint).
    label = (
        sql.SQL(", width_bucket(t.{ts}, ARRAY[{starts}]::timestamptz[]) AS _window").format(
            ts=ts, starts=sql.SQL(", ").join(sql.Literal(lo) for lo, _ in bounds)
        )
        if labelled
        else sql.SQL("")
    )
    # Append datasets rank within a window: with several windows, the window leads each partition.
    by_window = {
        alias: sql.SQL(alias + "._window, ") if labelled else sql.SQL("") for alias in ("b0", "r1")
    }

    if spec.upsert:
        # Every version of the window's keys, wherever in time it lies, competes for the key.
        scope = sql.SQL(
            "({w}) OR (t.org_id, t.entity_id) IN "
            "(SELECT org_id, entity_id FROM {table} t WHERE {w} AND org_id IS NOT NULL AND entity_id IS NOT NULL)"
        ).format(w=in_window, table=table)
        ranking = sql.SQL(
            "row_number() OVER kw AS _rank1, "
            "first_value(b0.record_version) OVER kw AS _best_version, "
            "first_value(b0.updated_at) OVER kw AS _best_at, "
            "max(b0.record_version) OVER (PARTITION BY b0.org_id, b0.entity_id, (b0._base IS NULL) "
            "ORDER BY b0.updated_at, {tie} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _prev_max"
        ).format(tie=_cols(spec.source_columns, "b0"))
        window_clause = sql.SQL(
            " WINDOW kw AS (PARTITION BY b0.org_id, b0.entity_id, (b0._base IS NULL) "
            "ORDER BY b0.record_version DESC, b0.updated_at ASC, {tie})"
        ).format(tie=_cols(spec.source_columns, "b0"))
        # A version written after one at least as new is stale (the upsert rule keeps it out);
        # a version replaced later by a higher one is superseded: applied, then replaced.
        dup_reason = sql.SQL(
            "WHEN b._rank1 > 1 AND b._prev_max >= b.record_version THEN 'stale_version' "
            "WHEN b._rank1 > 1 THEN 'superseded'"
        )
        dup_detail = sql.SQL(
            "WHEN b._rank1 > 1 AND b._prev_max >= b.record_version THEN 'record_version ' || "
            "b.record_version || ' was written after version ' || b._prev_max || ' of this "
            "(org_id, entity_id); the version kept is ' || b._best_version || ' (updated_at ' || "
            "to_char(b._best_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ')' "
            "WHEN b._rank1 > 1 THEN 'superseded by record_version ' || b._best_version"
        )
        ranked_filter = sql.SQL("WHERE {w}").format(w=within_bounds("b"))
        order_tail = sql.SQL(
            "(b._base IS NULL), b.record_version DESC, b.updated_at, {tie}"
        ).format(tie=_cols(spec.source_columns, "b"))
    else:
        scope = in_window
        order = _cols(list(spec.rank_order), "b0")
        rank_parts = [
            sql.SQL(
                "row_number() OVER (PARTITION BY {w}{k}, (b0._base IS NULL) ORDER BY {o}, {tie}) AS _rank1"
            ).format(
                w=by_window["b0"], k=_cols(pk, "b0"), o=order, tie=_cols(spec.source_columns, "b0")
            )
        ]
        guard_cond = sql.SQL("false")
        guard_detail = sql.SQL("")
        if spec.guards:
            (guard,) = spec.guards
            rank_parts.append(
                sql.SQL("NULL::bigint AS _best_version, NULL::timestamptz AS _best_at")
            )
            guard_cond = sql.SQL("b._rank2 > 1")
            guard_detail = sql.Literal(
                f"({', '.join(guard)}) repeats a row already exported in this window "
                f"(uniqueness guard of {spec.name})"
            )
        else:
            rank_parts.append(
                sql.SQL("NULL::bigint AS _best_version, NULL::timestamptz AS _best_at")
            )
        ranking = sql.SQL(", ").join(rank_parts)
        window_clause = sql.SQL("")
        dup_reason = sql.SQL(
            "WHEN b._rank1 > 1 THEN 'duplicate_key' WHEN {g} THEN 'duplicate_unique_guard'"
        ).format(g=guard_cond)
        dup_detail = sql.SQL("WHEN b._rank1 > 1 THEN {pkmsg} WHEN {g} THEN {gd}").format(
            pkmsg=sql.Literal(
                f"primary key ({', '.join(pk)}) repeats a row already exported in this window"
            ),
            g=guard_cond,
            gd=guard_detail if spec.guards else sql.Literal(""),
        )
        ranked_filter = sql.SQL("")
        order_tail = sql.SQL(", ").join(
            [
                sql.SQL("(b._base IS NULL)"),
                _cols(list(spec.rank_order), "b"),
                _cols(spec.source_columns, "b"),
            ]
        )

    # Stage 2 for a uniqueness guard: ranked among the rows that survived the key rule only.
    if not spec.upsert and spec.guards:
        (guard,) = spec.guards
        stage2 = sql.SQL(
            ", r2 AS (SELECT r1.*, row_number() OVER (PARTITION BY {w}{g}, (r1._base IS NULL AND r1._rank1 = 1) "
            "ORDER BY {o}, {tie}) AS _rank2 FROM r1)"
        ).format(
            w=by_window["r1"],
            g=_cols(guard, "r1"),
            o=_cols(list(spec.rank_order), "r1"),
            tie=_cols(spec.source_columns, "r1"),
        )
        last = sql.SQL("r2")
    else:
        stage2 = (
            sql.SQL(", r2 AS (SELECT r1.*, 0::bigint AS _rank2 FROM r1)")
            if not spec.upsert
            else sql.SQL("")
        )
        last = sql.SQL("r2") if not spec.upsert else sql.SQL("r1")

    full_reason = sql.SQL("CASE WHEN b._base IS NOT NULL THEN b._base {dr} END").format(
        dr=dup_reason
    )
    full_detail = sql.SQL("CASE WHEN b._base IS NOT NULL THEN {detail} {dd} END").format(
        detail=detail, dd=dup_detail
    )
    key_json = sql.SQL("json_build_object({pairs})::text").format(
        pairs=sql.SQL(", ").join(
            sql.SQL("{n}, b.{c}").format(n=sql.Literal(k), c=_ident(k)) for k in pk
        )
    )
    select_cols = sql.SQL(", ").join(transport_expression(spec, c) for c in spec.source_columns)
    ranked_cols = sql.SQL("b0.*, ") + ranking

    query = sql.SQL(
        "WITH b0 AS (SELECT {src_cols}, {reason} AS _base{label} "
        "FROM {table} t WHERE {scope}), "
        "r1 AS (SELECT {ranked_cols} FROM b0{window_clause}){stage2}, "
        "c AS (SELECT b.*, {full_reason} AS _reason, {full_detail} AS _detail "
        "FROM {last} b {ranked_filter}) "
        "SELECT {select_cols}, b._reason, b._detail, "
        "CASE WHEN b._reason IS NOT NULL THEN {key_json} END AS _key{window_out} "
        "FROM c b{order}"
    ).format(
        src_cols=_cols(spec.source_columns, "t"),
        reason=reason,
        label=label,
        window_out=sql.SQL(", b._window") if labelled else sql.SQL(""),
        table=table,
        scope=scope,
        ranked_cols=ranked_cols,
        window_clause=window_clause,
        stage2=stage2,
        full_reason=full_reason,
        full_detail=full_detail,
        key_json=key_json,
        last=last,
        ranked_filter=ranked_filter,
        select_cols=select_cols,
        # The order of the ranking window itself, so Postgres sorts once.
        # Several windows are read for their hashes, in no order; one window is exported, ordered.
        order=sql.SQL("")
        if labelled
        else sql.SQL(" ORDER BY ")
        + sql.SQL(", ").join([*(sql.SQL("b.{k}").format(k=_ident(k)) for k in pk), order_tail]),
    )
    return query


def copy_statement(query: sql.Composable) -> sql.Composed:
    """COPY of a query in the transport encoding: CSV, NULL as an empty unquoted field."""
    return sql.SQL("COPY ({q}) TO STDOUT WITH (FORMAT csv)").format(q=query)


def transport_schema(spec: DatasetSpec) -> dict[str, pa.DataType]:
    """Arrow types of the COPY columns as they arrive (before conversion to the contract)."""
    types: dict[str, pa.DataType] = {}
    for column in spec.source_columns:
        t = spec.field(column).type
        if pa.types.is_timestamp(t):
            types[column] = t
        else:
            types[column] = pa.int64() if pa.types.is_integer(t) else pa.string()
    types.update({"_reason": pa.string(), "_detail": pa.string(), "_key": pa.string()})
    return types
