"""Checks of written export files, read back independently of the writer.

Each function tests one property of a set of Parquet files (the windows one run wrote) and returns
`(passed, figures)`. Values are read with DuckDB (keys, counts) or streamed with pyarrow in
batches (the secret scan), so a check holds one batch in memory, however large the window.
Files are paths or `UPath`s; on object storage they are read through the `UPath`'s own filesystem
(DuckDB through fsspec), so no DuckDB extension has to be downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from contracts.core import ContractModel, schema_violations
from contracts.hq import EXPORT_SCHEMA_VERSION
from pipeline_assets.lib.hq.lake_files import LakeFile, connect, files_sql, read_schema
from pipeline_assets.lib.hq.redaction import KV_PATTERN, REDACTED, TOKEN_PATTERN

Figures = dict[str, Any]


def _query(files: Sequence[LakeFile], select: str, tail: str = "") -> list[tuple[Any, ...]]:
    con = connect(files)
    try:
        return con.execute(
            f"SELECT {select} FROM read_parquet({files_sql(files)}, hive_partitioning = false) {tail}"
        ).fetchall()
    finally:
        con.close()


def columns_match_contract(
    files: Sequence[LakeFile], model: type[ContractModel]
) -> tuple[bool, Figures]:
    """Every file's columns are exactly the contract's (names, types, nullability)."""
    problems: dict[str, list[str]] = {}
    for path in files:
        found = schema_violations(read_schema(path), model)
        if found:
            problems[str(path)] = found
    return not problems, {
        "contract": f"{model.contract.name} {model.contract.version}",
        "files_checked": len(files),
        "violations": problems,
    }


def schema_version_is_v1(files: Sequence[LakeFile]) -> tuple[bool, Figures]:
    """Every row carries export_schema_version = 'v1'."""
    if not files:
        return True, {"rows": 0, "rows_not_v1": 0}
    ((rows, bad),) = _query(
        files,
        f"count(*), count(*) FILTER (WHERE export_schema_version IS DISTINCT FROM '{EXPORT_SCHEMA_VERSION}')",
    )
    return bad == 0, {"rows": rows, "rows_not_v1": bad}


def org_id_present(files: Sequence[LakeFile]) -> tuple[bool, Figures]:
    """Every row has an org_id (tenant scope)."""
    if not files:
        return True, {"rows": 0, "rows_without_org_id": 0}
    ((rows, bad),) = _query(
        files, "count(*), count(*) FILTER (WHERE org_id IS NULL OR org_id = '')"
    )
    return bad == 0, {"rows": rows, "rows_without_org_id": bad}


def unique(
    files: Sequence[LakeFile], columns: Sequence[str], limit: int = 5
) -> tuple[bool, Figures]:
    """The column tuple is unique over all rows of the files."""
    if not files:
        return True, {"rows": 0, "columns": list(columns), "duplicates": []}
    cols = ", ".join(f'"{c}"' for c in columns)
    dupes = _query(
        files,
        f"{cols}, count(*) AS n",
        f"GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC LIMIT {limit}",
    )
    ((rows,),) = _query(files, "count(*)")
    return not dupes, {
        "rows": rows,
        "columns": list(columns),
        "duplicates": [{**dict(zip(columns, map(str, d[:-1]))), "count": d[-1]} for d in dupes],
    }


def rows_by_org(files: Sequence[LakeFile]) -> dict[str, int]:
    """Rows per org_id over the files."""
    if not files:
        return {}
    return dict(_query(files, "org_id, count(*)", "GROUP BY org_id ORDER BY org_id"))


def no_secrets(files: Sequence[LakeFile]) -> tuple[bool, Figures]:
    """No text value of the files holds a credential-looking value (outside `[REDACTED]`).

    One DuckDB pass (RE2, the same patterns the redaction uses): a value fails when it matches a
    token shape, or when redacting its `key=value` pairs again would change it.
    """
    if not files:
        return True, {"rows_scanned": 0, "values_with_secrets_by_column": {}}
    text = sorted(
        {f.name for path in files for f in read_schema(path) if pa.types.is_string(f.type)}
    )
    token, kv = _sql_string(TOKEN_PATTERN), _sql_string(KV_PATTERN)
    marker = _sql_string(REDACTED)
    quoted = _sql_string(f'"{REDACTED}"')
    terms = []
    for name in text:
        col = f'"{name}"'
        plain = f"replace({col}, {quoted}, {marker})"
        terms.append(
            f"count(*) FILTER (WHERE regexp_matches({col}, {token}) OR "
            f"regexp_replace({plain}, {kv}, '\\1' || {marker}, 'g') <> {plain})"
        )
    con = connect(files)
    try:
        row = con.execute(
            f"SELECT count(*), {', '.join(terms)} FROM read_parquet({files_sql(files)}, "
            "hive_partitioning = false, union_by_name = true)"
        ).fetchone()
    finally:
        con.close()
    hits = {name: n for name, n in zip(text, row[1:]) if n}
    # Never the values themselves: only where they are.
    return not hits, {"rows_scanned": row[0], "values_with_secrets_by_column": hits}


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
