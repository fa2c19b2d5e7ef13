"""The run-metadata fields of `spec/staging-run-contract.md` that apply to any materialization.

One plain function builds them, so the staging exporter's `<export_base>_metadata.json` and the
metadata a user reads on an asset in the UI say the same thing in the same words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc_iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone; expected UTC")
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def run_record(
    *,
    run_id: str,
    run_started_utc: dt.datetime,
    run_finished_utc: dt.datetime | None = None,
    partition_keys: Sequence[str] = (),
    window: Mapping[str, Any] | None = None,
    query_bounds: Mapping[str, Any] | None = None,
    watermarks: Mapping[str, Any] | None = None,
    source_files: Sequence[str] = (),
    input_glob: str | None = None,
    row_counts: Mapping[str, int] | None = None,
    output_files: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The applicable run-contract fields, with the contract's names; absent ones are left out."""
    if run_finished_utc is not None and run_finished_utc < run_started_utc:
        raise ValueError(
            f"run_finished_utc {run_finished_utc} is before run_started_utc {run_started_utc}"
        )
    record: dict[str, Any] = {"run_id": run_id, "run_started_utc": utc_iso(run_started_utc)}
    if run_finished_utc is not None:
        record["run_finished_utc"] = utc_iso(run_finished_utc)
    if partition_keys:
        keys = list(partition_keys)
        record["partitions"] = {"first": keys[0], "last": keys[-1], "count": len(keys)}
    if window is not None:
        record["window"] = dict(window)
    if query_bounds is not None:
        record["query_bounds"] = dict(query_bounds)
    if watermarks is not None:
        record["watermarks"] = dict(watermarks)
    if source_files or input_glob:
        record["source"] = {
            "input_glob": input_glob,
            "worker_db_count": len(source_files),
            "worker_db_files": list(source_files),
        }
    if row_counts is not None:
        negative = {k: v for k, v in row_counts.items() if v < 0}
        if negative:
            raise ValueError(f"row counts must be >= 0, got {negative}")
        record["row_counts"] = dict(row_counts)
    if output_files is not None:
        record["output_files"] = list(output_files)
    return record
