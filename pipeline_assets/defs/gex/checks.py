"""Asset checks of `gex_strikes`: each tests one property of the canonical files a run wrote.

They are `check_specs` of the asset, evaluated in its step over the Parquet files of the jobs the
run completed, read back from disk (schema with pyarrow, rows with DuckDB), so they check what a
downstream reader gets. A range run reports one result per check covering all its jobs, with the
failing jobs named in the metadata.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from contracts.core import schema_violations
from contracts.gex import GexStrikeRow
from pipeline_assets.lib.gex.records import KNOWN_FIELDS, decode_bytes, load_json
from pipeline_assets.lib.gex.store import ImportJob

GEX_REQUIRED_COLUMNS = "required_columns"
GEX_NO_NULL_TIMESTAMPS = "no_null_timestamps"
GEX_SPOT_POSITIVE = "spot_positive"
GEX_STRIKES_UNIQUE_PER_SNAPSHOT = "strikes_unique_per_snapshot"
GEX_SOURCE_FIELDS_PRESENT = "every_source_field_present"

_SPECS: dict[str, tuple[str, bool]] = {
    GEX_REQUIRED_COLUMNS: (
        (
            "Passes when every canonical file has exactly the columns, types and nullability of the "
            "gex_strikes contract (timestamp, ticker, spot and the rest)."
        ),
        True,
    ),
    GEX_NO_NULL_TIMESTAMPS: (
        "Passes when no row of the canonical files has a null timestamp or snapshot time.",
        True,
    ),
    GEX_SPOT_POSITIVE: (
        (
            "Passes when spot is greater than zero on every row (maxchange endpoints, which carry no "
            "spot, may leave it null)."
        ),
        False,
    ),
    GEX_STRIKES_UNIQUE_PER_SNAPSHOT: (
        "Passes when no strike appears twice in one snapshot (ticker, endpoint, timestamp) of a job.",
        False,
    ),
    GEX_SOURCE_FIELDS_PRESENT: (
        (
            "Passes when every top-level field of each staged JSON file is found in its canonical "
            "Parquet, as a column or as a key of extra_fields: nothing the source sent was dropped."
        ),
        True,
    ),
}


def gex_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)
        for name, (description, blocking) in _SPECS.items()
    ]


def _files(root: Path, job: ImportJob) -> list[str]:
    return [str(root / f) for f in job.canonical_files]


def _sql_list(files: Sequence[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _required_columns(root: Path, job: ImportJob) -> dict[str, Any] | None:
    problems = [
        p for f in _files(root, job) for p in schema_violations(pq.read_schema(f), GexStrikeRow)
    ]
    return {"violations": problems} if problems else None


def _count(con: duckdb.DuckDBPyConnection, files: Sequence[str], where: str) -> int:
    sql = f"SELECT count(*) FROM read_parquet({_sql_list(files)}) WHERE {where}"
    return con.execute(sql).fetchone()[0]


def _no_null_timestamps(
    root: Path, job: ImportJob, con: duckdb.DuckDBPyConnection
) -> dict[str, Any] | None:
    n = _count(con, _files(root, job), "timestamp IS NULL OR snapshot_ts_utc IS NULL")
    return {"rows_without_timestamp": n} if n else None


def _spot_positive(
    root: Path, job: ImportJob, con: duckdb.DuckDBPyConnection
) -> dict[str, Any] | None:
    where = "spot <= 0" if job.endpoint.endswith("maxchange") else "spot IS NULL OR spot <= 0"
    n = _count(con, _files(root, job), where)
    return {"rows_with_spot_not_positive": n} if n else None


def _strikes_unique(
    root: Path, job: ImportJob, con: duckdb.DuckDBPyConnection
) -> dict[str, Any] | None:
    sql = (
        f"SELECT ticker, endpoint, timestamp, strike, count(*) AS n FROM read_parquet({_sql_list(_files(root, job))}) "
        "WHERE strike IS NOT NULL GROUP BY ALL HAVING count(*) > 1 LIMIT 5"
    )
    dupes = con.execute(sql).fetchall()
    return {"duplicate_strikes": [list(map(str, d)) for d in dupes]} if dupes else None


def _source_fields(
    root: Path, job: ImportJob, con: duckdb.DuckDBPyConnection
) -> dict[str, Any] | None:
    # The staged file, decoded again independently of the import.
    staged = root / (job.staged_path or "")
    document = load_json(
        decode_bytes(staged.read_bytes(), name=str(staged), max_bytes=1 << 40), name=str(staged)
    )
    records = document if isinstance(document, list) else [document]
    source = {k for r in records for k in r}
    files = _files(root, job)
    columns = {
        r[0]
        for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_list(files)})").fetchall()
    }
    held = {f for f in KNOWN_FIELDS if f in columns} | (
        {"strikes"} if "strike" in columns else set()
    )
    for (text,) in con.execute(
        f"SELECT DISTINCT extra_fields FROM read_parquet({_sql_list(files)}) WHERE extra_fields IS NOT NULL"
    ).fetchall():
        held.update(json.loads(text))
    missing = sorted(source - held)
    return {"missing_fields": missing} if missing else None


def _safely(evaluate: Any, job: ImportJob) -> dict[str, Any] | None:
    # A file too broken to query (a column gone, not Parquet) fails the check with the reason.
    try:
        return evaluate(job)
    except (duckdb.Error, OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def gex_check_results(
    asset: str, data_root: Path, jobs: Sequence[ImportJob]
) -> Iterator[dg.AssetCheckResult]:
    """One result per check over the completed jobs of the run (skipped jobs wrote nothing)."""
    checked = [j for j in jobs if j.canonical_files]
    con = duckdb.connect()
    try:
        evaluations = {
            GEX_REQUIRED_COLUMNS: lambda j: _required_columns(data_root, j),
            GEX_NO_NULL_TIMESTAMPS: lambda j: _no_null_timestamps(data_root, j, con),
            GEX_SPOT_POSITIVE: lambda j: _spot_positive(data_root, j, con),
            GEX_STRIKES_UNIQUE_PER_SNAPSHOT: lambda j: _strikes_unique(data_root, j, con),
            GEX_SOURCE_FIELDS_PRESENT: lambda j: _source_fields(data_root, j, con),
        }
        for name, evaluate in evaluations.items():
            failures = {str(j.id): problem for j in checked if (problem := _safely(evaluate, j))}
            _, blocking = _SPECS[name]
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=not failures,
                severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
                metadata={
                    "jobs_checked": dg.MetadataValue.json([j.id for j in checked]),
                    "failing_jobs": dg.MetadataValue.json(failures),
                },
                description=None if not failures else f"failing jobs: {', '.join(failures)}",
            )
    finally:
        con.close()
