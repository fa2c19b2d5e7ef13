"""Checksum parity between the source and the export, drilled down to the differing keys.

The same row encoding is computed on both sides, inside each engine: Postgres hashes the rows the
export should hold (the export's own classified window query, `_reason IS NULL`), DuckDB hashes the
rows the Parquet files do hold. For each row:

- `key_text`: the primary key columns as text, joined by U+001F, NULL as `\\N`;
- `row_text`: `key_text`, U+001E, then every compared column the same way. Integers as decimal
  text, exact decimals with the contract's scale (`1.500000`), timestamps as integer microseconds
  since the epoch (UTC), text as is;
- `key_md5 = md5(key_text)`: places the row in the key space (its hex prefix is its segment);
- `row_hash`: `md5(row_text)` read as two 60-bit integers (hex digits 1-15 and 16-30).

A segment (window, org, key-hash prefix) is summarised as `(count(*), sum of the first halves,
sum of the second halves)` on each side: order-independent, and equal summaries mean equal rows
up to a 120-bit hash collision. Per window, DuckDB summarises the Parquet straight from the files
by org and first key-hash byte (256 segments per org), keeping no rows; the summaries travel to
Postgres with one query that classifies the window once, aggregates its rows as they stream (no
copy kept) and returns only what differs: the per-org totals and the differing segments. A clean
window costs that one pass on each side. For a window that differs, DuckDB keeps the hashed rows
of the differing segments only, and one more Postgres pass fetches the rows of the differing
segments of at most `leaf_rows` rows. Where the classification ranks rows within partitions of
the key's columns (runs: by `run_id`), Postgres applies that pass's key-hash filter at the table
scan, so only those rows are ranked and hashed; elsewhere it classifies the window again. A larger differing segment is split by the next key-hash byte (another pass, restricted
to it), as data-diff's hashdiff splits a key range, until the rows can be listed. The rows of a
differing segment are compared: keys only in the source are missing from the export, keys only in
the export are extra, keys on both sides with different row hashes are different. Segments are by
window first (time: the export's unit of rewrite), then org, then key-hash range; a key-hash range
is uniform whatever the key's format (uuid, text, integers), so splits work evenly.

Columns the export rewrites on purpose are not compared: JSON (re-serialised canonically, secret
keys redacted) and free text (`*_message`, credential-looking values redacted). Everything else
leaves the source unchanged, so any difference there is drift.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from pipeline_assets.lib.hq.datasets import SOURCE_SCHEMA, VERSION_COLUMN, DatasetSpec, window_query
from pipeline_assets.lib.hq.lake_files import files_sql, register_filesystems
from pipeline_assets.lib.hq.windows import window_bounds

KEY_SEP = "\x1f"
ROW_SEP = "\x1e"
NULL_TEXT = "\\N"
PREFIX_STEP = 2  # hex digits per bisection level: 256 segments per split
MAX_PREFIX = 32
DEFAULT_LEAF_ROWS = 2048
WORK_MEM = "64MB"


def compared_columns(spec: DatasetSpec) -> list[str]:
    """The columns hashed besides the key: all contract columns the export carries unchanged."""
    skip = {*spec.primary_key, VERSION_COLUMN, *spec.json_columns, *spec.free_text_columns}
    return [c for c in spec.source_columns if c not in skip]


def _kind(spec: DatasetSpec, column: str) -> str:
    t = spec.field(column).type
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_integer(t):
        return "integer"
    return "text"


# --- Postgres side ------------------------------------------------------------------------------


def _pg_text(spec: DatasetSpec, column: str) -> sql.Composable:
    """Canonical text of a column of the window query's output (alias `q`)."""
    col = sql.SQL("q.") + sql.Identifier(column)
    kind = _kind(spec, column)
    if kind == "timestamp":
        expr = sql.SQL("(extract(epoch FROM {c}) * 1000000)::bigint::text").format(c=col)
    elif kind == "decimal":
        scale = spec.field(column).type.scale
        expr = sql.SQL("round({c}::numeric, {s})::text").format(c=col, s=sql.Literal(scale))
    else:
        expr = sql.SQL("{c}::text").format(c=col)
    return sql.SQL("coalesce({e}, {n})").format(e=expr, n=sql.Literal(NULL_TEXT))


def _pg_encoded(spec: DatasetSpec) -> tuple[sql.Composable, sql.Composable]:
    sep = sql.SQL(f" || chr({ord(KEY_SEP)}) || ")
    key = sep.join([_pg_text(spec, c) for c in spec.primary_key])
    parts = [_pg_text(spec, c) for c in compared_columns(spec)]
    row = sql.SQL("{k} || chr({rs}) || {rest}").format(
        k=key, rs=sql.Literal(ord(ROW_SEP)), rest=sep.join(parts) if parts else sql.Literal("")
    )
    return key, row


def _pg_hashed(
    spec: DatasetSpec, key: str, schema: str, *, all_rows: bool = False
) -> sql.Composable:
    """The expected rows of one window: org_id, key_text, key_md5, row_md5. With `all_rows`, every
    classified row with `exported` (whether the export keeps it) instead of the kept rows only."""
    start, end = window_bounds(key)
    key_text, row_text = _pg_encoded(spec)
    return sql.SQL(
        "SELECT q.org_id, {k} AS key_text, md5({k}) AS key_md5, md5({r}) AS row_md5{exported} "
        "FROM ({wq}) q{where}"
    ).format(
        k=key_text,
        r=row_text,
        wq=window_query(spec, start, end, schema=schema),
        exported=sql.SQL(", q._reason IS NULL AS exported" if all_rows else ""),
        where=sql.SQL("" if all_rows else " WHERE q._reason IS NULL"),
    )


def _pg_hash_values(column: str, server_version: int) -> tuple[str, str]:
    """The two 60-bit halves of an md5 hex digest (digits 1-15 and 16-30) as bigints. Postgres 16
    reads hexadecimal integer text directly, at about half the cost of going through bit(60)."""
    if server_version >= 160000:
        return (
            f"('0x' || substr({column}, 1, 15))::bigint",
            f"('0x' || substr({column}, 16, 15))::bigint",
        )
    return (
        f"('x' || substr({column}, 1, 15))::bit(60)::bigint",
        f"('x' || substr({column}, 16, 15))::bit(60)::bigint",
    )


def _pg_within(segments: Sequence[Segment], alias: str) -> sql.Composable:
    """Rows of the given segments (one prefix length). The `= ANY` test comes first and names
    the key hash once: Postgres inlines the subquery's `md5(key)` into every reference, so the
    exact (org, prefix) tests only run, and hash again, on the rows that passed it."""
    n = len(segments[0][1])
    prefix = sql.SQL("left({a}.key_md5, {n})").format(a=sql.Identifier(alias), n=sql.Literal(n))
    org = sql.SQL("{a}.org_id").format(a=sql.Identifier(alias))
    exact = sql.SQL(" OR ").join(
        sql.SQL("({org} IS NOT DISTINCT FROM {o} AND {p} = {v})").format(
            org=org, o=sql.Literal(o), p=prefix, v=sql.Literal(v)
        )
        for o, v in segments
    )
    return sql.SQL("{p} = ANY({vs}) AND ({exact})").format(
        p=prefix, vs=sql.Literal(sorted({v for _, v in segments})), exact=exact
    )


# --- DuckDB side --------------------------------------------------------------------------------


def _duck_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_text(spec: DatasetSpec, column: str) -> str:
    col = _duck_ident(column)
    kind = _kind(spec, column)
    if kind == "timestamp":
        expr = f"CAST(epoch_us({col}) AS VARCHAR)"
    else:
        expr = f"CAST({col} AS VARCHAR)"
    return f"coalesce({expr}, '{NULL_TEXT}')"


def _duck_encoded(spec: DatasetSpec) -> tuple[str, str]:
    sep = f" || chr({ord(KEY_SEP)}) || "
    key = sep.join(_duck_text(spec, c) for c in spec.primary_key)
    parts = [_duck_text(spec, c) for c in compared_columns(spec)]
    row = f"{key} || chr({ord(ROW_SEP)}) || " + (sep.join(parts) if parts else "''")
    return key, row


def _duck_hashed(spec: DatasetSpec, files: Sequence[str]) -> str:
    key_text, row_text = _duck_encoded(spec)
    return (
        f"SELECT org_id, {key_text} AS key_text, md5({key_text}) AS key_md5, "
        f"md5({row_text}) AS row_md5 FROM read_parquet({files_sql(files)}, hive_partitioning = false)"
    )


def _duck_hash_values(column: str) -> tuple[str, str]:
    return (
        f"CAST('0x' || substr({column}, 1, 15) AS BIGINT)",
        f"CAST('0x' || substr({column}, 16, 15) AS BIGINT)",
    )


# --- segments -----------------------------------------------------------------------------------

Segment = tuple[str | None, str]  # (org_id, key-hash prefix) within one window
Summary = tuple[int, int, int]  # (rows, sum of the first hash halves, sum of the second halves)
Rows = dict[Segment, list[tuple[str, str]]]  # segment -> [(key_text, row_md5)]


@dataclass
class SourcePass:
    """What one source query returns for a window: per-org totals, the summaries of the segments
    that differ from the export's, and (deeper levels only; None on the first pass) the rows of
    the differing segments small enough to fetch."""

    org_totals: dict[str | None, Summary]
    differing: dict[Segment, Summary | None]
    rows: Rows | None


class SourceSide:
    """Postgres: the rows the export of a window should hold, hashed and compared in the database.

    The export side's segment summaries travel to Postgres with the query, so that one pass over
    the window's (classified) rows returns only what differs. The window query is the dominant
    cost, so each pass classifies the window once: the first pass aggregates every row as it
    streams and keeps none (a clean window costs that one pass); a window that differs gets one
    more pass per level, restricted to the differing segments (and keeping only their rows).
    The session may be read-only (a replica): nothing is written.
    """

    def __init__(self, conn: psycopg.Connection, spec: DatasetSpec, schema: str = SOURCE_SCHEMA):
        self.conn, self.spec, self.schema = conn, spec, schema
        # Room for the window's sort in memory rather than spilled to disk.
        conn.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(WORK_MEM)))

    def compare(
        self,
        window: str,
        prefix_len: int,
        export: dict[Segment, Summary],
        within: Sequence[Segment] | None,
        leaf_rows: int,
    ) -> SourcePass:
        """Summarise the window (or the `within` segments of it) by org and key-hash prefix,
        compare with `export` and return what differs; with `within`, also the rows of the
        differing segments of at most `leaf_rows` rows."""
        orgs, prefixes, counts, sums1, sums2 = [], [], [], [], []
        for (org, prefix), (n, t1, t2) in export.items():
            orgs.append(org)
            prefixes.append(prefix)
            counts.append(str(n))
            sums1.append(str(t1))
            sums2.append(str(t2))
        h1, h2 = _pg_hash_values("x.row_md5", self.conn.info.server_version)
        if within is None:
            # Every row, aggregated as it streams; OFFSET 0 keeps the subquery from being inlined
            # so that each row's md5 is computed once, not once per reference. The rows the export
            # leaves out are skipped by FILTER rather than WHERE: Postgres cannot estimate the
            # classification's filter (it guesses ~0.5% of the rows) and would then sort the whole
            # window for the grouping instead of hashing it.
            exported = sql.SQL(" FILTER (WHERE x.exported)")
            summary = sql.SQL(
                "s AS (SELECT x.org_id, left(x.key_md5, {n}) AS seg, count(*){f} AS n, "
                "sum({h1}){f} AS t1, sum({h2}){f} AS t2 FROM ({hashed} OFFSET 0) x "
                "GROUP BY 1, 2 HAVING count(*){f} > 0), "
            ).format(
                n=sql.Literal(prefix_len),
                f=exported,
                h1=sql.SQL(h1),
                h2=sql.SQL(h2),
                hashed=_pg_hashed(self.spec, window, self.schema, all_rows=True),
            )
        else:
            # Only the rows of the segments being split, kept for the leaf rows below.
            summary = sql.SQL(
                "h AS MATERIALIZED (SELECT x.org_id, x.key_text, left(x.key_md5, {n}) AS seg, "
                "x.row_md5, {h1} AS h1, {h2} AS h2 FROM ({hashed}) x WHERE {within}), "
                "s AS (SELECT org_id, seg, count(*) AS n, sum(h1) AS t1, sum(h2) AS t2 FROM h "
                "GROUP BY 1, 2), "
            ).format(
                n=sql.Literal(prefix_len),
                h1=sql.SQL(h1),
                h2=sql.SQL(h2),
                hashed=_pg_hashed(self.spec, window, self.schema),
                within=_pg_within(within, "x"),
            )
        query = sql.SQL(
            "WITH {summary}"
            "e AS (SELECT * FROM unnest({eo}::text[], {ep}::text[], {en}::bigint[], "
            "{e1}::numeric[], {e2}::numeric[]) AS e(org_id, seg, n, t1, t2)), "
            "bad AS (SELECT coalesce(s.org_id, e.org_id) AS org_id, coalesce(s.seg, e.seg) AS seg, "
            "s.n AS sn, s.t1 AS st1, s.t2 AS st2, e.n AS en FROM s FULL JOIN e "
            "ON s.org_id IS NOT DISTINCT FROM e.org_id AND s.seg = e.seg "
            "WHERE s.n IS DISTINCT FROM e.n OR s.t1 IS DISTINCT FROM e.t1 "
            "OR s.t2 IS DISTINCT FROM e.t2) "
            "SELECT 'org', org_id, NULL, sum(n)::bigint, sum(t1)::text, sum(t2)::text, NULL, NULL "
            "FROM s GROUP BY 2 "
            "UNION ALL SELECT 'seg', org_id, seg, sn, st1::text, st2::text, NULL, NULL FROM bad"
            "{leaf_rows}"
        ).format(
            summary=summary,
            eo=sql.Literal(orgs),
            ep=sql.Literal(prefixes),
            en=sql.Literal(counts),
            e1=sql.Literal(sums1),
            e2=sql.Literal(sums2),
            leaf_rows=sql.SQL("")
            if within is None
            else sql.SQL(
                " UNION ALL SELECT 'row', h.org_id, h.seg, NULL, NULL, NULL, h.key_text, h.row_md5 "
                "FROM h JOIN bad ON h.org_id IS NOT DISTINCT FROM bad.org_id AND h.seg = bad.seg "
                "WHERE greatest(coalesce(bad.sn, 0), coalesce(bad.en, 0)) <= {leaf}"
            ).format(leaf=sql.Literal(leaf_rows)),
        )
        result = SourcePass({}, {}, None if within is None else {})
        for kind, org, seg, n, t1, t2, key_text, row_md5 in self.conn.execute(query):
            if kind == "org":
                result.org_totals[org] = (int(n), int(t1), int(t2))
            elif kind == "seg":
                result.differing[(org, seg)] = None if n is None else (int(n), int(t1), int(t2))
            elif result.rows is not None:
                result.rows.setdefault((org, seg), []).append((key_text, row_md5))
        return result

    def rows(self, window: str, segments: Sequence[Segment]) -> Rows:
        """The (key_text, row_md5) of every row of the given segments (one prefix length)."""
        if not segments:
            return {}
        query = sql.SQL(
            "SELECT x.org_id, left(x.key_md5, {n}), x.key_text, x.row_md5 FROM ({hashed}) x "
            "WHERE {within}"
        ).format(
            n=sql.Literal(len(segments[0][1])),
            hashed=_pg_hashed(self.spec, window, self.schema),
            within=_pg_within(segments, "x"),
        )
        out: Rows = {}
        for org, seg, key_text, row_md5 in self.conn.execute(query):
            out.setdefault((org, seg), []).append((key_text, row_md5))
        return out


def source_side(
    conn: psycopg.Connection, spec: DatasetSpec, *, schema: str = SOURCE_SCHEMA
) -> SourceSide:
    return SourceSide(conn, spec, schema)


class ExportSide:
    """DuckDB over the Parquet files of each window: the rows the export holds, hashed.

    A window's first summary is aggregated straight from its files, keeping no rows. When the
    window differs, `focus` keeps the hashed rows of its differing segments (a small share of
    it) in a DuckDB temporary table, from which the deeper levels and the leaf rows are read.
    """

    def __init__(self, spec: DatasetSpec, files_of: Callable[[str], list[str]]):
        self.spec, self.files_of = spec, files_of
        self.con = duckdb.connect()
        self.focused: str | None = None

    def _hashed(self, files: Sequence[str]) -> str:
        register_filesystems(self.con, files)
        h1, h2 = _duck_hash_values("row_md5")
        return (
            f"SELECT org_id, key_text, key_md5, row_md5, {h1} AS h1, {h2} AS h2 "
            f"FROM ({_duck_hashed(self.spec, files)})"
        )

    @staticmethod
    def _where(within: Sequence[Segment] | None) -> tuple[str, list[Any]]:
        if within is None:
            return "", []
        conds, params = [], []
        for org, prefix in within:
            conds.append(f"(org_id IS NOT DISTINCT FROM ? AND left(key_md5, {len(prefix)}) = ?)")
            params += [org, prefix]
        return " WHERE " + " OR ".join(conds), params

    def focus(self, window: str, segments: Sequence[Segment]) -> None:
        """Keep the hashed rows of these segments of the window (every later `within` and leaf
        lies inside them); the filter reaches the scan, so other rows' full hash is not taken."""
        where, params = self._where(segments)
        files = self.files_of(window)
        if files:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE hashed AS SELECT * FROM ({self._hashed(files)}){where}",
                params,
            )
        else:
            self.con.execute("DROP TABLE IF EXISTS hashed")
        self.focused = window if files else None

    def _source(self, window: str, within: Sequence[Segment] | None) -> str | None:
        if within is not None and self.focused == window:
            return "hashed"
        files = self.files_of(window)
        return f"({self._hashed(files)})" if files else None

    def summarise(
        self, window: str, prefix_len: int, within: Sequence[Segment] | None
    ) -> dict[Segment, Summary]:
        source = self._source(window, within)
        if source is None:
            return {}
        where, params = self._where(within)
        result = self.con.execute(
            f"SELECT org_id, left(key_md5, {prefix_len}), count(*), sum(h1), sum(h2) "
            f"FROM {source}{where} GROUP BY 1, 2",
            params,
        ).fetchall()
        return {(org, p): (int(n), int(t1), int(t2)) for org, p, n, t1, t2 in result}

    def rows(self, window: str, segments: Sequence[Segment]) -> Rows:
        source = self._source(window, segments) if segments else None
        if source is None:
            return {}
        where, params = self._where(segments)
        n = len(segments[0][1])
        out: Rows = {}
        for org, seg, key_text, row_md5 in self.con.execute(
            f"SELECT org_id, left(key_md5, {n}), key_text, row_md5 FROM {source}{where}", params
        ).fetchall():
            out.setdefault((org, seg), []).append((key_text, row_md5))
        return out


def export_side(spec: DatasetSpec, files_of: Callable[[str], list[str]]) -> ExportSide:
    return ExportSide(spec, files_of)


# --- the diff -----------------------------------------------------------------------------------


@dataclass
class KeyDiff:
    """Differing keys of one dataset over a range of windows (lists capped; counts complete for
    the segments drilled to the end)."""

    dataset: str
    key_columns: tuple[str, ...]
    compared_columns: list[str]
    windows: list[str]
    source_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # window -> org -> rows
    export_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    # window -> org -> [rows, sum of first hash halves, sum of second halves]: level-0 summaries.
    source_summaries: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    export_summaries: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    missing_in_export: list[dict[str, Any]] = field(default_factory=list)
    extra_in_export: list[dict[str, Any]] = field(default_factory=list)
    different: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"missing_in_export": 0, "extra_in_export": 0, "different": 0}
    )
    segments_compared: int = 0
    segments_by_level: dict[str, int] = field(default_factory=dict)
    mismatched_windows: list[str] = field(default_factory=list)
    rows_fetched: int = 0
    keys_truncated: bool = False
    seconds: float = 0.0

    @property
    def checksum_ok(self) -> bool:
        return not self.mismatched_windows

    def count_gaps(self) -> list[dict[str, Any]]:
        """(window, org) pairs whose row counts differ, source against export."""
        gaps = []
        for window in self.windows:
            src, exp = self.source_rows.get(window, {}), self.export_rows.get(window, {})
            for org in sorted(set(src) | set(exp), key=lambda o: (o is None, o or "")):
                if src.get(org, 0) != exp.get(org, 0):
                    gaps.append(
                        {
                            "window": window,
                            "org_id": org,
                            "source_rows": src.get(org, 0),
                            "export_rows": exp.get(org, 0),
                        }
                    )
        return gaps

    @property
    def parity_gap_rows(self) -> int:
        return sum(abs(g["source_rows"] - g["export_rows"]) for g in self.count_gaps())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "key_columns": list(self.key_columns),
            "compared_columns": self.compared_columns,
            "windows_compared": len(self.windows),
            "source_rows": sum(sum(v.values()) for v in self.source_rows.values()),
            "export_rows": sum(sum(v.values()) for v in self.export_rows.values()),
            "count_gaps": self.count_gaps(),
            "mismatched_windows": self.mismatched_windows,
            "counts": dict(self.counts),
            "missing_in_export": self.missing_in_export,
            "extra_in_export": self.extra_in_export,
            "different": self.different,
            "keys_truncated": self.keys_truncated,
            "segments_compared": self.segments_compared,
            "segments_by_level": dict(self.segments_by_level),
            "rows_fetched": self.rows_fetched,
            "seconds": round(self.seconds, 3),
        }


def _key_dict(columns: Sequence[str], key_text: str) -> dict[str, Any]:
    values = key_text.split(KEY_SEP)
    return {c: (None if v == NULL_TEXT else v) for c, v in zip(columns, values)}


def _diff_rows(
    source: Iterable[tuple[str, str]], export: Iterable[tuple[str, str]]
) -> tuple[list[str], list[str], list[str]]:
    """(missing in export, extra in export, different) keys of one leaf segment (multisets, so a
    key exported twice shows as extra)."""
    src = Counter(source)
    exp = Counter(export)
    only_src = src - exp
    only_exp = exp - src
    src_keys = Counter(k for k, _ in only_src.elements())
    exp_keys = Counter(k for k, _ in only_exp.elements())
    different = sorted(set(src_keys) & set(exp_keys))
    missing = sorted((src_keys - exp_keys).elements())
    extra = sorted((exp_keys - src_keys).elements())
    return missing, extra, different


def hashdiff(
    spec: DatasetSpec,
    windows: Sequence[str],
    source: SourceSide,
    export: ExportSide,
    *,
    max_keys: int = 100,
    leaf_rows: int = DEFAULT_LEAF_ROWS,
) -> KeyDiff:
    """Compare the windows of one dataset, bisecting mismatching segments down to the keys."""
    started = time.perf_counter()
    diff = KeyDiff(spec.name, spec.primary_key, compared_columns(spec), list(windows))
    reported = 0

    def record(window: str, src_rows: list[tuple[str, str]], exp_rows: list[tuple[str, str]]):
        nonlocal reported
        diff.rows_fetched += len(src_rows) + len(exp_rows)
        missing, extra, different = _diff_rows(src_rows, exp_rows)
        for name, keys in (
            ("missing_in_export", missing),
            ("extra_in_export", extra),
            ("different", different),
        ):
            diff.counts[name] += len(keys)
            for k in keys:
                if reported >= max_keys:
                    diff.keys_truncated = True
                    break
                getattr(diff, name).append({"window": window, **_key_dict(spec.primary_key, k)})
                reported += 1

    def count(level: str, n: int) -> None:
        diff.segments_compared += n
        diff.segments_by_level[level] = diff.segments_by_level.get(level, 0) + n

    for window in windows:
        prefix_len = PREFIX_STEP
        exp = export.summarise(window, prefix_len, None)
        first = source.compare(window, prefix_len, exp, None, leaf_rows)
        exp_orgs: dict[str | None, list[int]] = {}
        for (org, _), summary in exp.items():
            acc = exp_orgs.setdefault(org, [0, 0, 0])
            for i, value in enumerate(summary):
                acc[i] += value
        src_orgs = {org: list(v) for org, v in first.org_totals.items()}
        diff.source_rows[window] = {o: v[0] for o, v in src_orgs.items()}
        diff.export_rows[window] = {o: v[0] for o, v in exp_orgs.items()}
        diff.source_summaries[window] = {str(o): v for o, v in src_orgs.items()}
        diff.export_summaries[window] = {str(o): v for o, v in exp_orgs.items()}
        # Level 0: (window, org); level 1: the first key-hash byte within each org.
        count("window_org", len(set(src_orgs) | set(exp_orgs)))
        count(f"key_prefix_{prefix_len}", len(set(exp) | set(first.differing)))
        if not first.differing:
            continue
        diff.mismatched_windows.append(window)
        export.focus(window, list(first.differing))
        step = first
        exp_level = exp
        while step.differing:
            if reported >= max_keys:
                diff.keys_truncated = True
                break
            leaves, deeper = [], []
            for seg, src_summary in step.differing.items():
                size = max((src_summary or (0,))[0], exp_level.get(seg, (0,))[0])
                (leaves if size <= leaf_rows or len(seg[1]) >= MAX_PREFIX else deeper).append(seg)
            # The first pass keeps no rows: the leaves' source rows cost one more pass.
            src_rows = step.rows if step.rows is not None else source.rows(window, leaves)
            exp_rows = export.rows(window, leaves)
            for seg in leaves:
                record(window, src_rows.get(seg, []), exp_rows.get(seg, []))
            if not deeper:
                break
            prefix_len += PREFIX_STEP
            exp_level = export.summarise(window, prefix_len, deeper)
            step = source.compare(window, prefix_len, exp_level, deeper, leaf_rows)
            count(f"key_prefix_{prefix_len}", len(set(exp_level) | set(step.differing)))
    for name in ("missing_in_export", "extra_in_export", "different"):
        getattr(diff, name).sort(key=lambda k: tuple(str(v) for v in k.values()))
    diff.seconds = time.perf_counter() - started
    return diff


def full_key_diff(
    spec: DatasetSpec,
    windows: Sequence[str],
    conn: psycopg.Connection,
    files_of: Callable[[str], list[str]],
    *,
    schema: str = SOURCE_SCHEMA,
) -> dict[str, int]:
    """The baseline: every (key, row hash) of both sides fetched and compared in DuckDB, no
    segments. Returns the counts of missing, extra and different keys."""
    con = duckdb.connect()
    con.execute("CREATE TABLE src (key_text VARCHAR, row_md5 VARCHAR)")
    con.execute("CREATE TABLE exp (key_text VARCHAR, row_md5 VARCHAR)")
    for window in windows:
        query = sql.SQL(
            "COPY (SELECT h.key_text, h.row_md5 FROM ({hashed}) h) TO STDOUT WITH (FORMAT csv)"
        ).format(hashed=_pg_hashed(spec, window, schema))
        buffer = io.BytesIO()
        with conn.cursor() as cursor, cursor.copy(query) as copy:
            for chunk in copy:
                buffer.write(chunk)
        if buffer.tell():
            buffer.seek(0)
            fetched = pacsv.read_csv(  # noqa: F841 - read by name in the SQL below
                buffer,
                read_options=pacsv.ReadOptions(column_names=["key_text", "row_md5"]),
                convert_options=pacsv.ConvertOptions(
                    column_types={"key_text": pa.string(), "row_md5": pa.string()}
                ),
            )
            con.execute("INSERT INTO src SELECT * FROM fetched")
        files = files_of(window)
        if files:
            register_filesystems(con, files)
            key_text, row_text = _duck_encoded(spec)
            con.execute(
                f"INSERT INTO exp SELECT {key_text}, md5({row_text}) FROM "
                f"read_parquet({files_sql(files)}, hive_partitioning = false)"
            )
    ((missing, extra, different),) = con.execute(
        "SELECT count(*) FILTER (WHERE e.key_text IS NULL), count(*) FILTER (WHERE s.key_text IS NULL), "
        "count(*) FILTER (WHERE s.key_text IS NOT NULL AND e.key_text IS NOT NULL AND s.row_md5 <> e.row_md5) "
        "FROM src s FULL OUTER JOIN exp e ON s.key_text = e.key_text"
    ).fetchall()
    con.close()
    return {"missing_in_export": missing, "extra_in_export": extra, "different": different}
