"""Parse and validate a staged gexbot file in DuckDB: the fast path of `safe_import`.

DuckDB's JSON reader (built into the duckdb wheel, nothing downloaded) reads the file on every
core, each known field as JSON text. SQL then checks each field's type against the rules of the
Python parser (`records.py`, the reference): numbers, strikes items, pairs and `max_priors` are
matched against patterns of their minified JSON text, so a string, a boolean, NaN, infinity, an
integer too large for a double or an item of the wrong shape never passes. The strikes are
unnested with their positions into the rows of the `gex_strikes` contract, directly into the
staging table; no value passes through Python.

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


def _typed_record_columns() -> str:
    return ", ".join(
        [
            "ticker ->> '$' AS ticker",
            "timestamp::DOUBLE AS timestamp",
            # Half to even, as pyarrow's round in the Python parser.
            f"make_timestamp({_MICROS})::TIMESTAMPTZ AS snapshot_ts_utc",
            *[f"{f}::DOUBLE AS {f}" for f in FLOAT_FIELDS],
            *[f"{f}::DOUBLE::BIGINT AS {f}" for f in INT_FIELDS],
            *[f"{f}::DOUBLE[] AS {f}" for f in PAIR_FIELDS],
            "max_priors::DOUBLE[][] AS max_priors",
        ]
    )


def _output_columns() -> str:
    """The staging table's columns in the contract's order."""
    computed = {
        "job_id": "CAST($job_id AS BIGINT)",
        "endpoint": "CAST($endpoint AS VARCHAR)",
        "strike_index": "CASE WHEN has_strikes THEN position - 1 ELSE -1 END",
        "strike": "item_values[1]",
        "gex_vol": "item_values[2]",
        "gex_oi": "item_values[3]",
        # The priors list, if any, is the only `[` after the first in a matched item.
        "priors": (
            "CASE WHEN priors_at > 0 THEN json_transform(substr(item, priors_at + 1, "
            "length(item) - priors_at - 1), '[\"DOUBLE\"]') END"
        ),
        "extra_fields": "CAST(NULL AS VARCHAR)",
    }
    return ", ".join(f"{computed.get(f.name, f.name)} AS {f.name}" for f in SCHEMA)


def stage_with_sql(
    con: duckdb.DuckDBPyConnection,
    json_path: Path,
    *,
    table: str,
    job_id: int,
    endpoint: str,
    single_object: bool,
) -> int | None:
    """Create `table` from the JSON file at `json_path`; the number of records, or None.

    None means the Python parser must decide (a rule broken, or DuckDB refused the file); then
    `table` does not exist. The connection's time zone is set to UTC (snapshot times).
    """
    raw = f"{table}_json"
    fmt = "unstructured" if single_object else "array"
    columns = (
        "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in _READ_COLUMNS.items()) + "}"
    )
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {raw} AS SELECT ordinality - 1 AS record_index, * "
            f"FROM read_json({_literal(str(json_path))}, columns = {columns}, format = '{fmt}', "
            f"maximum_object_size = {_MAX_OBJECT_BYTES}) WITH ORDINALITY"
        )
        records, bad_records = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE NOT ({_record_rules(endpoint)})) FROM {raw}"
        ).fetchall()[0]
        if records == 0 or bad_records or (single_object and records != 1):
            return None
        (bad_items,) = con.execute(
            f"SELECT count(*) FROM (SELECT unnest(strikes) AS item FROM {raw} WHERE len(strikes) > 0) "
            f"WHERE item IS NULL OR NOT {_matches('item', _STRIKE_ITEM)}"
        ).fetchall()[0]
        if bad_items:
            return None
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {table} AS
            WITH snapshots AS MATERIALIZED (
                SELECT record_index, {_typed_record_columns()},
                    coalesce(len(strikes) > 0, false) AS has_strikes,
                    CASE WHEN len(strikes) > 0 THEN strikes ELSE [NULL::JSON] END AS items
                FROM {raw}
            ), exploded AS (
                SELECT * EXCLUDE (items), generate_subscripts(items, 1) AS position,
                    unnest(items)::VARCHAR AS item
                FROM snapshots
            ), parsed AS (
                -- The items matched their pattern: the first three values are numbers or
                -- null, so a lenient transform to doubles reads them exactly.
                SELECT *, json_transform(item, '["DOUBLE"]') AS item_values,
                    strpos(item, ',[') AS priors_at
                FROM exploded
            )
            SELECT {_output_columns()} FROM parsed
            """,
            {"job_id": job_id, "endpoint": endpoint},
        )
    except duckdb.Error:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        return None
    finally:
        con.execute(f"DROP TABLE IF EXISTS {raw}")
    return int(records)


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> pa.Table:
    """The rows of a staging table as an Arrow table of the contract's schema, in file order."""
    rows = con.sql(f"SELECT * FROM {table}").to_arrow_table()
    order = pc.add(pc.multiply(rows["record_index"], 1 << 32), rows["strike_index"])
    if len(order) > 1 and not pc.all(pc.greater(order[1:], order[:-1])).as_py():
        rows = rows.sort_by([("record_index", "ascending"), ("strike_index", "ascending")])
    return rows.cast(SCHEMA)
