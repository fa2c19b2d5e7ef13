"""The files of a materialization as the UI shows them: each with the command that traces it back
to its sources (`pipeline trace`), for assets that write their files themselves (the lake IO
manager does the same for the files it writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

# Files listed in a markdown summary; `output_files` lists them all.
SUMMARY_MAX_FILES = 50


def trace_command(path: str | Path) -> str:
    return f"pipeline trace {path}"


def file_links(
    files: Sequence[str], data_root: str | Path, *, heading: str
) -> dict[str, dg.MetadataValue]:
    """`summary` (markdown: `heading`, then each file with its trace command) and, for a single
    file, `trace` (its command) and `trace_path`; `files` are relative to the data root."""
    root = Path(data_root)
    lines = [heading, "", "| file | trace |", "| --- | --- |"]
    lines += [f"| `{f}` | `{trace_command(root / f)}` |" for f in files[:SUMMARY_MAX_FILES]]
    if len(files) > SUMMARY_MAX_FILES:
        lines.append(f"| … {len(files) - SUMMARY_MAX_FILES} more in `output_files` | |")
    metadata: dict[str, dg.MetadataValue] = {"summary": dg.MetadataValue.md("\n".join(lines))}
    if len(files) == 1:
        metadata["trace"] = dg.MetadataValue.text(trace_command(root / files[0]))
        metadata["trace_path"] = dg.MetadataValue.path(str(root / files[0]))
    return metadata
