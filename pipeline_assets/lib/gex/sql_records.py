"""Parse and validate a staged gexbot file in DuckDB: the fast path of `safe_import`.

DuckDB's JSON reader (built into the duckdb wheel, nothing downloaded) reads the file on every
core, each known field as JSON text. SQL then checks each field's type against the rules of the
Python parser (`records.py`, the reference): numbers, strikes items, pairs and `max_priors` are
matched against patterns of their minified JSON text, so a string, a boolean, NaN, infinity, an
integer too large for a double or an item of the wrong shape never passes. The strikes are
unnested with their positions into the strike rows of the staging tables (the snapshots' own
fields are a table of their own, below); no value passes through Python.

Whatever the SQL path is not sure of goes to the Python parser, which names the record and the
field or, when the file is valid after all, builds the same rows:
- any record or strikes item that breaks a rule, and any error of DuckDB's reader (malformed
  JSON, a record that is not an object, a duplicate key);
- files whose first byte is not `[` or `{`, that are not UTF-8, that hold JSON string escapes
  (`\\`), or that have fields the contract does not name (they go to `extra_fields`, formatted by
  the Python parser so that both paths write the same bytes).
The property tests in `pipeline_assets_tests/gex/test_sql_records.py` check that both paths give
the same table, or both refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline_assets.lib.gex.records import (
    FLOAT_FIELDS,
    INT_FIELDS,
    KNOWN_FIELDS,
    MAX_UNIX_SECONDS,
    PAIR_FIELDS,
    SCHEMA,
    required_fields,
)

# Every object key of the file (keys hold no escapes: those files take the Python path). In valid
# JSON a quoted run of characters followed by `:` is a key; anything else this finds has
# structural characters in it and is not a known name, which only sends the file to Python.
_KEY = re.compile(rb'"([^"\\]*)"\s*:')
_KNOWN_KEYS = frozenset(name.encode() for name in KNOWN_FIELDS)
_JSON_SPACE = b" \t\r\n"

# A number as DuckDB writes it back (minified): at most 15 integer digits, so an integer is
# exact as a double (below 2**53), and a positive exponent of at most two digits, so the value
# is finite (a negative one only rounds towards zero, as in the Python parser).
_NUM = r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]+)?(?:[eE](?:-[0-9]{1,3}|\+?[0-9]{1,2}))?"
_NUM_OR_NULL = rf"(?:{_NUM}|null)"
_WHOLE = r"-?(?:0|[1-9][0-9]{0,14})(?:\.0+)?"
_PAIR = rf"\[{_NUM_OR_NULL},{_NUM_OR_NULL}\]"
_PAIR_LIST = rf"\[(?:{_PAIR}(?:,{_PAIR})*)?\]"
_PRIORS = rf"\[(?:{_NUM_OR_NULL}(?:,{_NUM_OR_NULL})*)?\]"
_STRIKE_ITEM = rf"\[{_NUM},{_NUM_OR_NULL},{_NUM_OR_NULL}(?:,(?:null|{_PRIORS}))?\]"

_READ_COLUMNS = {
    **{name: "JSON" for name in ("timestamp", "ticker", *FLOAT_FIELDS, *INT_FIELDS)},
    **{name: "JSON" for name in (*PAIR_FIELDS, "max_priors")},
    "strikes": "JSON[]",
}
_MAX_OBJECT_BYTES = 1 << 30
_MICROS = "CAST(round_even(timestamp::DOUBLE * CAST(1000000 AS DOUBLE), 0) AS BIGINT)"


def sql_path_refusal(data: bytes) -> str | None:
    """Why these file bytes (decompressed) need the Python parser, or None for the SQL path."""
    head = data[:4096].lstrip(_JSON_SPACE)[:1]
    if head not in (b"[", b"{"):
        return "does not start with a JSON object or list"
    if b"\\" in data:
        return "holds JSON string escapes"
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "is not UTF-8"
    if set(_KEY.findall(data)) - _KNOWN_KEYS:
        return "has fields the contract does not name (kept in extra_fields)"
    return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _matches(column: str, pattern: str) -> str:
    return f"regexp_full_match({column}::VARCHAR, {_literal(pattern)})"


def _record_rules(endpoint: str) -> str:
    """One boolean per record: true when every known field follows the Python parser's rules."""
    rules = [
        f"timestamp IS NOT NULL AND {_matches('timestamp', _NUM)}",
        f"timestamp::DOUBLE > 0 AND timestamp::DOUBLE < {MAX_UNIX_SECONDS!r}",
        # A string with a letter or digit is not blank (Python's strip() knows more whitespace
        # than SQL's trim(); a ticker without either goes to the Python parser).
        "json_type(ticker) = 'VARCHAR' AND regexp_matches(ticker ->> '$', '[A-Za-z0-9]')",
        *[f"({f} IS NULL OR {_matches(f, _NUM)})" for f in FLOAT_FIELDS],
        *[f"({f} IS NULL OR {_matches(f, _WHOLE)})" for f in INT_FIELDS],
        *[f"({f} IS NULL OR {_matches(f, _PAIR)})" for f in PAIR_FIELDS],
        f"(max_priors IS NULL OR {_matches('max_priors', _PAIR_LIST)})",
    ]
    rules += [f"{f} IS NOT NULL" for f in required_fields(endpoint) if f not in ("timestamp",)]
    return " AND ".join(f"coalesce({r}, false)" for r in rules)


# The two staging tables of an import, and the `strikes` and `snapshots` tables of gex_data.db,
# hold the contract's rows normalized: a snapshot's fields once (`snapshots`), its strikes as rows
# keyed by (job_id, record_index) (`strikes`). Repeating some thirty snapshot fields on every
# strike row in DuckDB (staging, insert, fetch) cost about a quarter of the import's CPU; the
# canonical Parquet, where downstream readers want them, is joined back in Arrow (`contract_rows`).
STRIKE_COLUMNS: tuple[str, ...] = (
    "job_id", "record_index", "strike_index", "strike", "gex_vol", "gex_oi", "priors",
)  # fmt: skip
SNAPSHOT_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in SCHEMA if f.name in ("job_id", "record_index") or f.name not in STRIKE_COLUMNS
)


@dataclass(frozen=True)
class StagingTables:
    """The staging tables of one import: its strike rows and its snapshots."""

    strikes: str
    snapshots: str

    @classmethod
    def for_job(cls, job_id: int, catalog: str | None = None) -> StagingTables:
        prefix = f"{catalog}." if catalog else ""
        return cls(
            f"{prefix}staging_strikes_{int(job_id)}", f"{prefix}staging_snapshots_{int(job_id)}"
        )

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        for table in (self.strikes, self.snapshots):
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _strike_columns() -> str:
    """The strike rows' columns."""
    computed = {
        "job_id": "CAST($job_id AS BIGINT)",
        "record_index": "record_index",
        "strike_index": "CASE WHEN has_strikes THEN position - 1 ELSE -1 END",
        # A strikes item that breaks its pattern aborts the statement (the Python parser then
        # names it): checking here saves a second pass over every item.
        "strike": "CASE WHEN item_ok THEN item_values[1] ELSE error('a strikes item breaks a rule') END",
        "gex_vol": "item_values[2]",
        "gex_oi": "item_values[3]",
        # The priors list, if any, is the only `[` after the first in a matched item.
        "priors": (
            "CASE WHEN priors_at > 0 THEN json_transform(substr(item, priors_at + 1, "
            "length(item) - priors_at - 1), '[\"DOUBLE\"]') END"
        ),
    }
    return ", ".join(f"{computed[name]} AS {name}" for name in STRIKE_COLUMNS)


def _snapshot_columns() -> str:
    """The snapshots' columns, typed."""
    typed = {
        "job_id": "CAST($job_id AS BIGINT)",
        "endpoint": "CAST($endpoint AS VARCHAR)",
        "record_index": "record_index",
        "ticker": "ticker ->> '$'",
        "timestamp": "timestamp::DOUBLE",
        # Half to even, as pyarrow's round in the Python parser.
        "snapshot_ts_utc": f"make_timestamp({_MICROS})::TIMESTAMPTZ",
        **{f: f"{f}::DOUBLE" for f in FLOAT_FIELDS},
        **{f: f"{f}::DOUBLE::BIGINT" for f in INT_FIELDS},
        **{f: f"{f}::DOUBLE[]" for f in PAIR_FIELDS},
        "max_priors": "max_priors::DOUBLE[][]",
        "extra_fields": "CAST(NULL AS VARCHAR)",
    }
    return ", ".join(f"{typed[name]} AS {name}" for name in SNAPSHOT_COLUMNS)


def stage_with_sql(
    con: duckdb.DuckDBPyConnection,
    json_path: Path,
    *,
    tables: StagingTables,
    job_id: int,
    endpoint: str,
    single_object: bool,
) -> int | None:
    """Create the staging tables from the JSON file at `json_path`; the number of records, or None.

    None means the Python parser must decide (a rule broken, or DuckDB refused the file); then
    the tables do not exist. They (and `<strikes table>_json` and `_items`, the file as read and
    its strikes unnested, dropped before returning) should be in an in-memory catalog: the import attaches one to its connection to
    gex_data.db. The connection's time zone is set to UTC (snapshot times).
    """
    raw, items = f"{tables.strikes}_json", f"{tables.strikes}_items"
    fmt = "unstructured" if single_object else "array"
    columns = (
        "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in _READ_COLUMNS.items()) + "}"
    )
    params = {"job_id": job_id, "endpoint": endpoint}
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {raw} AS SELECT ordinality - 1 AS record_index, * "
            f"FROM read_json({_literal(str(json_path))}, columns = {columns}, format = '{fmt}', "
            f"maximum_object_size = {_MAX_OBJECT_BYTES}) WITH ORDINALITY"
        )
        records, bad_records = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE NOT ({_record_rules(endpoint)})) FROM {raw}"
        ).fetchall()[0]
        if records == 0 or bad_records or (single_object and records != 1):
            return None
        con.execute(
            f"CREATE OR REPLACE TABLE {tables.snapshots} AS SELECT {_snapshot_columns()} FROM {raw}",
            params,
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {items} AS
            SELECT record_index, has_strikes, generate_subscripts(items, 1) AS position,
                unnest(items)::VARCHAR AS item
            FROM (
                SELECT record_index, coalesce(len(strikes) > 0, false) AS has_strikes,
                    CASE WHEN len(strikes) > 0 THEN strikes ELSE [NULL::JSON] END AS items
                FROM {raw}
            )
            """
        )
        # A second statement over the unnested items, not one over the records: DuckDB splits
        # a scan by row groups of 122,880 rows, so a day's few thousand records would be parsed
        # on one core, its strikes on all of them.
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {tables.strikes} AS
            WITH parsed AS (
                -- Where an item matches its pattern, its first three values are numbers or
                -- null, so a lenient transform to doubles reads them exactly.
                SELECT *, json_transform(item, '["DOUBLE"]') AS item_values,
                    strpos(item, ',[') AS priors_at,
                    NOT has_strikes OR coalesce({_matches("item", _STRIKE_ITEM)}, false) AS item_ok
                FROM {items}
            )
            SELECT {_strike_columns()} FROM parsed
            """,
            {"job_id": job_id},
        )
    except duckdb.Error:
        tables.drop(con)
        return None
    finally:
        con.execute(f"DROP TABLE IF EXISTS {raw}")
        con.execute(f"DROP TABLE IF EXISTS {items}")
    return int(records)


def stage_parsed(con: duckdb.DuckDBPyConnection, rows: pa.Table, *, tables: StagingTables) -> None:
    """Create the staging tables from the Python parser's rows (the contract's rows).

    A snapshot's fields are taken from its first row (`strike_index` 0, or -1 without strikes),
    the only one that carries `max_priors`.
    """
    con.register("batch_df", rows)
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {tables.snapshots} AS SELECT {', '.join(SNAPSHOT_COLUMNS)} "
            "FROM batch_df WHERE strike_index <= 0 ORDER BY record_index"
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {tables.strikes} AS SELECT {', '.join(STRIKE_COLUMNS)} "
            "FROM batch_df"
        )
    finally:
        con.unregister("batch_df")


def canonical_rows_sql(strikes: str, snapshots: str) -> str:
    """SQL for the contract's rows (as the canonical Parquet holds them) of two normalized tables."""
    columns = [
        f"CASE WHEN s.strike_index <= 0 THEN n.{name} END AS {name}"
        if name == "max_priors"
        else f"s.{name}"
        if name in STRIKE_COLUMNS
        else f"n.{name}"
        for name in SCHEMA.names
    ]
    return (
        f"SELECT {', '.join(columns)} FROM {strikes} AS s "
        f"JOIN {snapshots} AS n USING (job_id, record_index)"
    )


def read_staging(
    con: duckdb.DuckDBPyConnection, tables: StagingTables
) -> tuple[pa.Table, pa.Table]:
    """The strike rows (in file order) and the snapshots of the staging tables, as Arrow."""
    strikes = con.sql(f"SELECT * FROM {tables.strikes}").to_arrow_table()
    order = pc.add(pc.multiply(strikes["record_index"], 1 << 32), strikes["strike_index"])
    if len(order) > 1 and not pc.all(pc.greater(order[1:], order[:-1])).as_py():
        strikes = strikes.sort_by([("record_index", "ascending"), ("strike_index", "ascending")])
    snapshots = con.sql(f"SELECT * FROM {tables.snapshots} ORDER BY record_index").to_arrow_table()
    return strikes, snapshots


def contract_rows(strikes: pa.Table, snapshots: pa.Table) -> pa.Table:
    """The contract's rows: each strike row with its snapshot's fields (`max_priors` on the
    snapshot's first row only), in the strike rows' order, with the contract's schema."""
    at = pc.index_in(strikes["record_index"], value_set=snapshots["record_index"])
    first = pc.if_else(pc.less_equal(strikes["strike_index"], 0), at, None)
    arrays = [
        strikes[name]
        if name in STRIKE_COLUMNS
        else pc.take(snapshots[name], first if name == "max_priors" else at)
        for name in SCHEMA.names
    ]
    return pa.Table.from_arrays(arrays, names=SCHEMA.names).cast(SCHEMA)


def table_rows(con: duckdb.DuckDBPyConnection, tables: StagingTables) -> pa.Table:
    """The contract's rows of the staging tables, in file order."""
    return contract_rows(*read_staging(con, tables))
