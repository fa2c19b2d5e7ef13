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
up to a 120-bit hash collision.

Classifying the source rows (the export's own query, which ranks duplicates) dominates the cost,
and where a window's rows are spread over the table each window query reads every page. So every
pass covers all its windows at once (up to `WINDOWS_PER_PASS`): `windows_query` classifies them in
one scan, each exactly as the export classifies it alone. The first level is one aggregate per
engine, run at the same time (DuckDB in a thread, straight from the files; Postgres as the rows
stream, keeping none): every (window, org, first key-hash byte) summary, 256 segments per org.
Only the summaries leave the engines; they are compared here. Clean windows cost nothing more.
For the segments that differ, DuckDB keeps their hashed rows, and one Postgres pass over the
windows that differ returns the rows of the segments of at most `leaf_rows` rows and splits the
larger ones by the next key-hash byte (returning the rows of their small differing parts), as
data-diff's hashdiff splits a key range; the next level is another such pass, restricted to the
segments still open. Where the classification ranks rows within partitions of the key's columns
(runs: by `run_id`; upserts: by `(org_id, entity_id)`), Postgres applies the key-hash filter at the
table scan, so only those rows are ranked and hashed. The rows of a differing segment are
compared: keys only in the source are missing from the export, keys only in the export are extra,
keys on both sides with different row hashes are different. Segments are by window first (time:
the export's unit of rewrite), then org, then key-hash range; a key-hash range is uniform whatever
the key's format (uuid, text, integers), so splits work evenly.

Columns the export rewrites on purpose are not compared: JSON (re-serialised canonically, secret
keys redacted) and free text (`*_message`, credential-looking values redacted). Everything else
leaves the source unchanged, so any difference there is drift.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from pipeline_assets.lib.hq.datasets import (
    SOURCE_SCHEMA,
    VERSION_COLUMN,
    DatasetSpec,
    windows_query,
)
from pipeline_assets.lib.hq.lake_files import files_sql, register_filesystems
from pipeline_assets.lib.hq.windows import window_bounds

KEY_SEP = "\x1f"
ROW_SEP = "\x1e"
NULL_TEXT = "\\N"
PREFIX_STEP = 2  # hex digits per bisection level: 256 segments per split
MAX_PREFIX = 32
DEFAULT_LEAF_ROWS = 2048
WORK_MEM = "64MB"
# Windows classified by one source pass (and summarised by one DuckDB aggregate): bounds the
# size of one query, a week of hour windows.
WINDOWS_PER_PASS = 168


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
    spec: DatasetSpec, windows: Sequence[str], schema: str, *, all_rows: bool = False
) -> sql.Composable:
    """The expected rows of the windows (ascending keys), classified in one scan of the source:
    w (the window key), org_id, key_text, key_md5, row_md5. With `all_rows`, every classified row
    with `exported` (whether the export keeps it) instead of the kept rows only."""
    key_text, row_text = _pg_encoded(spec)
    return sql.SQL(
        "SELECT ({keys}::text[])[q._window] AS w, q.org_id, {k} AS key_text, md5({k}) AS key_md5, "
        "md5({r}) AS row_md5{exported} FROM ({wq}) q{where}"
    ).format(
        keys=sql.Literal(list(windows)),
        k=key_text,
        r=row_text,
        wq=windows_query(spec, [window_bounds(w) for w in windows], schema=schema),
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

Segment = tuple[str, str | None, str]  # (window, org_id, key-hash prefix)
Summary = tuple[int, int, int]  # (rows, sum of the first hash halves, sum of the second halves)
Rows = dict[Segment, list[tuple[str, str]]]  # segment -> [(key_text, row_md5)]


def _windows_of(segments: Iterable[Segment]) -> list[str]:
    return sorted({w for w, _, _ in segments})


def _sized(summaries: dict[Segment, Summary], segment: Segment) -> int:
    return summaries.get(segment, (0, 0, 0))[0]


@dataclass
class SourcePass:
    """What one deeper source pass returns: the summaries of the segments that differ from the
    export's (None where the source has no rows), and the rows of the segments it was asked to
    fetch and of the differing segments small enough."""

    differing: dict[Segment, Summary | None] = field(default_factory=dict)
    rows: Rows = field(default_factory=dict)


def _summary_arrays(summaries: dict[Segment, Summary]) -> dict[str, sql.Composable]:
    """The export's summaries as SQL array literals (they travel with the query)."""
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for (window, org, prefix), (n, t1, t2) in summaries.items():
        for column, value in zip(columns, (window, org, prefix, str(n), str(t1), str(t2))):
            column.append(value)
    return {
        name: sql.Literal(values)
        for name, values in zip(("ew", "eo", "ep", "en", "e1", "e2"), columns, strict=True)
    }


# The export's summaries beside the source's (`s`), and the segments where they differ (`bad`).
_COMPARE = (
    "e AS (SELECT * FROM unnest({ew}::text[], {eo}::text[], {ep}::text[], {en}::bigint[], "
    "{e1}::numeric[], {e2}::numeric[]) AS e(w, org_id, seg, n, t1, t2)), "
    "bad AS (SELECT coalesce(s.w, e.w) AS w, coalesce(s.org_id, e.org_id) AS org_id, "
    "coalesce(s.seg, e.seg) AS seg, s.n AS sn, s.t1 AS st1, s.t2 AS st2, e.n AS en "
    "FROM s FULL JOIN e ON s.w = e.w AND s.org_id IS NOT DISTINCT FROM e.org_id AND s.seg = e.seg "
    "WHERE s.n IS DISTINCT FROM e.n OR s.t1 IS DISTINCT FROM e.t1 OR s.t2 IS DISTINCT FROM e.t2)"
)
# Output rows of every source query: (kind, window, org, segment, n, t1, t2, key_text, row_md5).
_BAD_SEGMENTS = "SELECT 'seg', w, org_id, seg, sn, st1::text, st2::text, NULL, NULL FROM bad"


class SourceSide:
    """Postgres: the rows the export of the windows should hold, hashed and compared in the
    database.

    Classifying the rows (the export's own window query) is the dominant cost, so every pass
    classifies all its windows in one scan of the source (`windows_query`). The first pass
    aggregates every row of every window as it streams, keeps none and returns the summaries
    (a few per org and window); each deeper pass covers only the windows that differ, keeps only
    the rows of the differing segments, takes the export's finer summaries with the query and
    returns only what differs, and the rows asked for.
    The session may be read-only (a replica): nothing is written.
    """

    def __init__(self, conn: psycopg.Connection, spec: DatasetSpec, schema: str = SOURCE_SCHEMA):
        self.conn, self.spec, self.schema = conn, spec, schema
        # Room for the classification's sort and the grouping in memory rather than on disk.
        conn.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(WORK_MEM)))

    def _run(self, query: sql.Composable) -> SourcePass:
        result = SourcePass()
        for kind, window, org, seg, n, t1, t2, key_text, row_md5 in self.conn.execute(query):
            if kind == "seg":
                result.differing[(window, org, seg)] = (
                    None if n is None else (int(n), int(t1), int(t2))
                )
            else:
                result.rows.setdefault((window, org, seg), []).append((key_text, row_md5))
        return result

    def summarise_all(self, windows: Sequence[str], prefix_len: int) -> dict[Segment, Summary]:
        """Every window's expected rows summarised by org and key-hash prefix, in one pass that
        keeps no rows (segments without rows are left out)."""
        h1, h2 = _pg_hash_values("x.row_md5", self.conn.info.server_version)
        # OFFSET 0 keeps the subquery from being inlined, so each row's md5 is computed once,
        # not once per reference. The rows the export leaves out are skipped by FILTER rather
        # than WHERE: Postgres cannot estimate the classification's filter (it guesses ~0.5% of
        # the rows) and would then sort all the rows for the grouping instead of hashing it.
        exported = sql.SQL(" FILTER (WHERE x.exported)")
        query = sql.SQL(
            "SELECT x.w, x.org_id, left(x.key_md5, {n}), count(*){f}, sum({h1}){f}, "
            "sum({h2}){f} FROM ({hashed} OFFSET 0) x GROUP BY 1, 2, 3 HAVING count(*){f} > 0"
        ).format(
            n=sql.Literal(prefix_len),
            f=exported,
            h1=sql.SQL(h1),
            h2=sql.SQL(h2),
            hashed=_pg_hashed(self.spec, windows, self.schema, all_rows=True),
        )
        return {
            (w, o, p): (int(n), int(t1), int(t2)) for w, o, p, n, t1, t2 in self.conn.execute(query)
        }

    def descend(
        self,
        fetch: Sequence[Segment],
        split: Sequence[Segment],
        export: dict[Segment, Summary],
        leaf_rows: int,
    ) -> SourcePass:
        """One pass over the windows of `fetch` and `split` (segments of one prefix length):
        the rows of the `fetch` segments; the `split` segments summarised by the next key-hash
        prefix and compared with `export` (the export's summaries at that prefix), with the rows
        of the differing ones of at most `leaf_rows` rows."""
        segments = [*fetch, *split]
        if not segments:
            return SourcePass()
        n = len(segments[0][2])
        h1, h2 = _pg_hash_values("x.row_md5", self.conn.info.server_version)
        wanted = [*((w, o, p, True) for w, o, p in fetch), *((w, o, p, False) for w, o, p in split)]
        # The `= ANY` test names only the key hash, so Postgres applies it at the table scan
        # where the classification ranks rows by the key's columns (it inlines md5(key) there);
        # the join then keeps the exact (window, org, prefix) segments.
        query = sql.SQL(
            "WITH d AS (SELECT * FROM unnest({dw}::text[], {do}::text[], {dp}::text[], "
            "{dl}::boolean[]) AS d(w, org_id, seg, is_leaf)), "
            "h AS MATERIALIZED (SELECT x.w, x.org_id, x.key_text, d.seg, "
            "left(x.key_md5, {n2}) AS sub, x.row_md5, d.is_leaf, {h1} AS h1, {h2} AS h2 "
            "FROM ({hashed}) x JOIN d ON x.w = d.w "
            "AND coalesce(x.org_id, {null}) = coalesce(d.org_id, {null}) "
            "AND left(x.key_md5, {n}) = d.seg WHERE left(x.key_md5, {n}) = ANY({prefixes})), "
            "s AS (SELECT w, org_id, sub AS seg, count(*) AS n, sum(h1) AS t1, sum(h2) AS t2 "
            "FROM h WHERE NOT h.is_leaf GROUP BY 1, 2, 3), "
            + _COMPARE
            + " SELECT 'row', w, org_id, seg, NULL, NULL, NULL, key_text, row_md5 FROM h "
            "WHERE h.is_leaf UNION ALL "
            + _BAD_SEGMENTS
            + " UNION ALL SELECT 'row', h.w, h.org_id, h.sub, NULL, NULL, NULL, h.key_text, "
            "h.row_md5 FROM h JOIN bad ON h.w = bad.w AND h.org_id IS NOT DISTINCT FROM bad.org_id "
            "AND h.sub = bad.seg WHERE NOT h.is_leaf "
            "AND greatest(coalesce(bad.sn, 0), coalesce(bad.en, 0)) <= {leaf}"
        ).format(
            dw=sql.Literal([w for w, _, _, _ in wanted]),
            do=sql.Literal([o for _, o, _, _ in wanted]),
            dp=sql.Literal([p for _, _, p, _ in wanted]),
            dl=sql.Literal([f for _, _, _, f in wanted]),
            n=sql.Literal(n),
            n2=sql.Literal(n + PREFIX_STEP),
            h1=sql.SQL(h1),
            h2=sql.SQL(h2),
            null=sql.Literal(NULL_TEXT),
            hashed=_pg_hashed(self.spec, _windows_of(segments), self.schema),
            prefixes=sql.Literal(sorted({p for _, _, p in segments})),
            leaf=sql.Literal(leaf_rows),
            **_summary_arrays(export),
        )
        return self._run(query)


def source_side(
    conn: psycopg.Connection, spec: DatasetSpec, *, schema: str = SOURCE_SCHEMA
) -> SourceSide:
    return SourceSide(conn, spec, schema)


class ExportSide:
    """DuckDB over the Parquet files of the windows: the rows the export holds, hashed.

    The first summary of all the windows is one aggregate straight from their files, keeping no
    rows. Then `focus` keeps the hashed rows of the differing segments (a small share of them)
    in a DuckDB temporary table, from which the deeper levels and the leaf rows are read.
    """

    def __init__(self, spec: DatasetSpec, files_of: Callable[[str], list[str]]):
        self.spec, self.files_of = spec, files_of
        self.con = duckdb.connect()

    def _raw(self, windows: Sequence[str]) -> str | None:
        """The windows' Parquet rows with `w` (the window), `key_text` and `key_md5`; None when
        no window has files."""
        key_text, _ = _duck_encoded(self.spec)
        parts = []
        for window in windows:
            files = self.files_of(window)
            if not files:
                continue
            register_filesystems(self.con, files)
            label = window.replace("'", "''")
            parts.append(
                f"SELECT '{label}' AS w, *, {key_text} AS key_text, md5({key_text}) AS key_md5 "
                f"FROM read_parquet({files_sql(files)}, hive_partitioning = false)"
            )
        # By name: files written under different versions of the contract need not line up.
        return " UNION ALL BY NAME ".join(parts) if parts else None

    def _hash_columns(self, alias: str) -> str:
        _, row_text = _duck_encoded(self.spec)
        h1, h2 = _duck_hash_values("row_md5")
        return (
            f"SELECT w, org_id, key_text, key_md5, row_md5, {h1} AS h1, {h2} AS h2 FROM "
            f"(SELECT {alias}.w, {alias}.org_id, {alias}.key_text, {alias}.key_md5, "
            f"md5({row_text}) AS row_md5 FROM "
        )

    def summarise_all(self, windows: Sequence[str], prefix_len: int) -> dict[Segment, Summary]:
        """Every window's rows summarised by org and key-hash prefix, in one aggregate."""
        out: dict[Segment, Summary] = {}
        for batch in _batches(windows):
            raw = self._raw(batch)
            if raw is None:
                continue
            result = self.con.execute(
                f"SELECT w, org_id, left(key_md5, {prefix_len}), count(*), sum(h1), sum(h2) "
                f"FROM ({self._hash_columns('r')}({raw}) r)) GROUP BY 1, 2, 3"
            ).fetchall()
            out.update({(w, o, p): (int(n), int(t1), int(t2)) for w, o, p, n, t1, t2 in result})
        return out

    def _register(self, name: str, segments: Sequence[Segment]) -> None:
        self.con.register(
            name,
            pa.table(
                {
                    # Names unlike the files' columns, which the row encoding names bare.
                    "seg_window": pa.array([w for w, _, _ in segments], pa.string()),
                    "seg_org": pa.array([o for _, o, _ in segments], pa.string()),
                    "seg_prefix": pa.array([p for _, _, p in segments], pa.string()),
                }
            ),
        )

    def focus(self, segments: Sequence[Segment]) -> None:
        """Keep the hashed rows of these segments (one prefix length; every later level and leaf
        lies inside them); the full row hash is taken only of the rows that fall in them."""
        n = len(segments[0][2])
        raw = self._raw(_windows_of(segments))
        self._register("focus_segments", segments)
        if raw is None:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE hashed (w VARCHAR, org_id VARCHAR, key_text VARCHAR, "
                "key_md5 VARCHAR, row_md5 VARCHAR, h1 BIGINT, h2 BIGINT)"
            )
            return
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE hashed AS {self._hash_columns('r')}({raw}) r "
            "JOIN focus_segments d ON r.w = d.seg_window AND r.org_id IS NOT DISTINCT FROM d.seg_org "
            f"AND left(r.key_md5, {n}) = d.seg_prefix)"
        )

    def summarise(self, prefix_len: int, within: Sequence[Segment]) -> dict[Segment, Summary]:
        """The focused rows of `within` summarised by the key-hash prefix of `prefix_len`."""
        if not within:
            return {}
        self._register("within_segments", within)
        n = len(within[0][2])
        result = self.con.execute(
            f"SELECT h.w, h.org_id, left(h.key_md5, {prefix_len}), count(*), sum(h.h1), "
            "sum(h.h2) FROM hashed h JOIN within_segments d ON h.w = d.seg_window "
            f"AND h.org_id IS NOT DISTINCT FROM d.seg_org AND left(h.key_md5, {n}) = d.seg_prefix "
            "GROUP BY 1, 2, 3"
        ).fetchall()
        return {(w, o, p): (int(c), int(t1), int(t2)) for w, o, p, c, t1, t2 in result}

    def rows(self, segments: Sequence[Segment]) -> Rows:
        """The focused rows of the segments (one prefix length)."""
        if not segments:
            return {}
        self._register("row_segments", segments)
        n = len(segments[0][2])
        out: Rows = {}
        for w, org, seg, key_text, row_md5 in self.con.execute(
            f"SELECT h.w, h.org_id, left(h.key_md5, {n}), h.key_text, h.row_md5 FROM hashed h "
            "JOIN row_segments d ON h.w = d.seg_window AND h.org_id IS NOT DISTINCT FROM d.seg_org "
            f"AND left(h.key_md5, {n}) = d.seg_prefix"
        ).fetchall():
            out.setdefault((w, org, seg), []).append((key_text, row_md5))
        return out


def export_side(spec: DatasetSpec, files_of: Callable[[str], list[str]]) -> ExportSide:
    return ExportSide(spec, files_of)


def _batches(windows: Sequence[str]) -> list[list[str]]:
    """The windows (ascending, distinct) in batches of at most WINDOWS_PER_PASS."""
    ordered = sorted(set(windows))
    return [ordered[i : i + WINDOWS_PER_PASS] for i in range(0, len(ordered), WINDOWS_PER_PASS)]


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

    mismatched: set[str] = set()
    for batch in _batches(windows):
        prefix_len = PREFIX_STEP
        # Level 0: (window, org); level 1: the first key-hash byte within each org. One pass on
        # each side covers every window of the batch.
        # The two engines summarise at the same time (DuckDB in a thread); only the summaries
        # travel, and they are compared here.
        with ThreadPoolExecutor(max_workers=1) as pool:
            exp_future = pool.submit(export.summarise_all, batch, prefix_len)
            src = source.summarise_all(batch, prefix_len)
            exp = exp_future.result()
        first: dict[Segment, Summary | None] = {
            seg: src.get(seg) for seg in set(src) | set(exp) if src.get(seg) != exp.get(seg)
        }
        totals: dict[str, tuple[dict[str | None, list[int]], dict[str | None, list[int]]]] = {
            window: ({}, {}) for window in batch
        }
        for side, summaries in ((0, src), (1, exp)):
            for (window, org, _), summary in summaries.items():
                acc = totals[window][side].setdefault(org, [0, 0, 0])
                for i, value in enumerate(summary):
                    acc[i] += value
        for window, (src_orgs, exp_orgs) in totals.items():
            diff.source_rows[window] = {o: v[0] for o, v in src_orgs.items()}
            diff.export_rows[window] = {o: v[0] for o, v in exp_orgs.items()}
            diff.source_summaries[window] = {str(o): v for o, v in src_orgs.items()}
            diff.export_summaries[window] = {str(o): v for o, v in exp_orgs.items()}
            count("window_org", len(set(src_orgs) | set(exp_orgs)))
        count(f"key_prefix_{prefix_len}", len(set(exp) | set(src)))
        mismatched.update(w for w, _, _ in first)

        differing, exp_level = first, exp
        known: Rows = {}  # source rows already fetched, by segment
        if differing:
            export.focus(list(differing))
        while differing:
            if reported >= max_keys:
                diff.keys_truncated = True
                break
            leaves, deeper = [], []
            for seg, src_summary in differing.items():
                size = max((src_summary or (0,))[0], _sized(exp_level, seg))
                (leaves if size <= leaf_rows or len(seg[2]) >= MAX_PREFIX else deeper).append(seg)
            # One source pass per level fetches the leaves' rows (the first pass keeps none) and
            # splits the larger segments, returning the rows of their small differing parts.
            exp_next = export.summarise(prefix_len + PREFIX_STEP, deeper)
            fetch = [seg for seg in leaves if seg not in known]
            step = source.descend(fetch, deeper, exp_next, leaf_rows)
            exp_rows = export.rows(leaves)
            for seg in leaves:
                rows = known[seg] if seg in known else step.rows.get(seg, [])
                record(seg[0], rows, exp_rows.get(seg, []))
            if not deeper:
                break
            prefix_len += PREFIX_STEP
            count(f"key_prefix_{prefix_len}", len(set(exp_next) | set(step.differing)))
            differing, exp_level = step.differing, exp_next
            known = {
                seg: step.rows.get(seg, [])
                for seg, src_summary in differing.items()
                if max((src_summary or (0,))[0], _sized(exp_level, seg)) <= leaf_rows
            }
    diff.mismatched_windows = [w for w in windows if w in mismatched]
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
    one_scan: bool = True,
) -> dict[str, int]:
    """The baseline: every (key, row hash) of both sides fetched and compared in DuckDB, no
    segments. Returns the counts of missing, extra and different keys. With `one_scan` (as the
    bisection does) the source classifies all the windows in one scan and streams them out with
    one COPY; without, one query and COPY per window."""
    con = duckdb.connect()
    con.execute("CREATE TABLE src (key_text VARCHAR, row_md5 VARCHAR)")
    con.execute("CREATE TABLE exp (key_text VARCHAR, row_md5 VARCHAR)")
    passes = _batches(windows) if one_scan else [[w] for w in sorted(set(windows))]
    for batch in passes:
        query = sql.SQL(
            "COPY (SELECT h.key_text, h.row_md5 FROM ({hashed}) h) TO STDOUT WITH (FORMAT csv)"
        ).format(hashed=_pg_hashed(spec, batch, schema))
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
        for window in batch:
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
