"""Run metadata in the UI: one helper every asset uses to put the run-contract fields on its
materialization (the lake IO manager adds `output_files`, row counts and `run_finished_utc`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pipeline_assets.lib.run_record import run_record, utc_now


def run_metadata(
    context: dg.AssetExecutionContext,
    *,
    started_utc: dt.datetime,
    source_files: Sequence[str] = (),
    input_glob: str | None = None,
    row_counts: Mapping[str, int] | None = None,
    window: Mapping[str, Any] | None = None,
    query_bounds: Mapping[str, Any] | None = None,
    watermarks: Mapping[str, Any] | None = None,
    output_files: Sequence[str] | None = None,
    finished: bool = False,
) -> dict[str, dg.MetadataValue]:
    """Metadata values mirroring the run-metadata contract for this materialization."""
    partition_keys = (
        context.partition_keys
        if context.has_partition_key_range or context.has_partition_key
        else []
    )
    record = run_record(
        run_id=context.run.run_id,
        run_started_utc=started_utc,
        run_finished_utc=utc_now() if finished else None,
        partition_keys=partition_keys,
        window=window,
        query_bounds=query_bounds,
        watermarks=watermarks,
        source_files=source_files,
        input_glob=input_glob,
        row_counts=row_counts,
        output_files=output_files,
    )
    metadata: dict[str, dg.MetadataValue] = {}
    for key, value in record.items():
        if isinstance(value, str):
            metadata[key] = dg.MetadataValue.text(value)
        else:
            metadata[key] = dg.MetadataValue.json(value)
    for name, count in (row_counts or {}).items():
        # Plain numbers, so the UI plots each count over time.
        metadata[f"rows_{name}"] = dg.MetadataValue.int(count)
    return metadata
