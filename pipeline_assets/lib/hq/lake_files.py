"""Where the export's files are in the lake, for the checks and for readers (the same layout the
lake IO manager writes: `<lake root>/hq/<asset>/date=<YYYY-MM-DD>/hour=<HH>/<split>=<value>/data.parquet`,
the date and hour of the window's start in UTC, then `org_id` for the datasets or `dataset` for the
dead letter).

Paths are `UPath`s of the lake root given, so a root on object storage carries its storage options
(endpoint, credentials) to whoever reads the files (see `verify.connect`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence
from typing import Union

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from pipeline_assets.lib.files import as_upath, is_local
from pipeline_assets.lib.hq.windows import KEY_FORMAT, window_bounds
from pipeline_assets.lib.parquet_lake import (
    DATA_FILE_NAME,
    EMPTY_MARKER,
    hive_folder,
    parse_hive_folder,
    time_levels,
)

LAYER = "hq"
# The folders of a window, outermost first (the assets give them to the lake IO manager as metadata
# `lake/partition_levels`): the UTC date of the window's start, as the contract's partition
# recommendation asks (`date(created_at)`; `updated_at` for the upsert datasets), then its hour.
# The split level below them (`org_id`, or `dataset` in the dead letter) is the asset's
# `lake/split_by`. A window is one folder, so rewriting it is rewriting that folder.
PARTITION_LEVELS: tuple[str, ...] = ("date=%Y-%m-%d", "hour=%H")
# The layout before the date level (`window_start=<YYYY-MM-DD-HH:MM>/...`), still found in lakes
# written before it; `remove_legacy_windows` clears a window of it once the window is re-exported.
LEGACY_WINDOW_FOLDER = "window_start"


def asset_folder(lake_root: str | UPath, asset: str) -> UPath:
    return as_upath(lake_root).joinpath(LAYER, asset)


def window_levels(key: str) -> list[tuple[str, str]]:
    """The `(folder name, value)` pairs of window `key`: `[("date", "2026-02-17"), ("hour", "10")]`."""
    return time_levels(window_bounds(key)[0], PARTITION_LEVELS)


def window_folder(lake_root: str | UPath, asset: str, key: str) -> UPath:
    return asset_folder(lake_root, asset).joinpath(*hive_folder(window_levels(key)).split("/"))


def window_files(lake_root: str | UPath, asset: str, keys: Sequence[str]) -> dict[str, list[UPath]]:
    """The data files of each window (one per split value), sorted; [] for an empty window."""
    out = {}
    for key in keys:
        folder = window_folder(lake_root, asset, key)
        out[key] = sorted(folder.glob(f"*/{DATA_FILE_NAME}"), key=str) if folder.exists() else []
    return out


def dataset_files(lake_root: str | UPath, asset: str) -> list[UPath]:
    """Every data file of the dataset."""
    folder = asset_folder(lake_root, asset)
    if not folder.exists():
        return []
    return sorted(folder.glob(_window_glob(f"*/{DATA_FILE_NAME}")), key=str)


def _window_glob(below: str) -> str:
    names = [level.partition("=")[0] for level in PARTITION_LEVELS]
    return "/".join([f"{name}=*" for name in names] + [below])


def _key_of(window: UPath) -> str | None:
    """The window key of a window folder, or None when the folder is not one."""
    values = parse_hive_folder("/".join(window.parts[-len(PARTITION_LEVELS) :]))
    try:
        text = "\x1f".join(values[level.partition("=")[0]] for level in PARTITION_LEVELS)
        start = dt.datetime.strptime(
            text, "\x1f".join(lvl.partition("=")[2] for lvl in PARTITION_LEVELS)
        )
    except (KeyError, ValueError):
        return None
    return start.strftime(KEY_FORMAT)


def window_keys(lake_root: str | UPath, asset: str) -> list[str]:
    """The keys of the windows written to the lake (with rows, or marked empty), oldest first.

    Found from the files, not the folders, so the answer is the same on object storage, which has
    no folders."""
    folder = asset_folder(lake_root, asset)
    if not folder.exists():
        return []
    found = [
        *folder.glob(_window_glob(f"*/{DATA_FILE_NAME}")),
        *folder.glob(_window_glob(EMPTY_MARKER)),
    ]
    keys = set()
    for path in found:
        window = path.parent.parent if path.name == DATA_FILE_NAME else path.parent
        key = _key_of(window)
        if key is not None:
            keys.add(key)
    return sorted(keys)


def remove_legacy_windows(lake_root: str | UPath, asset: str, keys: Sequence[str]) -> list[UPath]:
    """Remove the folders of windows `keys` in the layout before the date level
    (`<asset>/window_start=<key>/`), once the windows have been written again in today's layout;
    returns the folders removed. Their rows are those just rewritten, so nothing is lost, and
    readers of `**/*.parquet` no longer see a window twice."""
    folder = asset_folder(lake_root, asset)
    if not folder.exists():
        return []
    # One listing per asset, however many windows the run wrote.
    wanted = {hive_folder([(LEGACY_WINDOW_FOLDER, key)]) for key in keys}
    removed = []
    for old in sorted(folder.glob(f"{LEGACY_WINDOW_FOLDER}=*"), key=str):
        if old.name in wanted:
            # A run rewriting the same window at the same time may have removed it first.
            with contextlib.suppress(FileNotFoundError):
                old.fs.rm(old.path, recursive=True)
            removed.append(old)
    return removed


LakeFile = Union[str, "os.PathLike[str]", UPath]


def register_filesystems(con: duckdb.DuckDBPyConnection, files: Sequence[LakeFile]) -> None:
    """Let `con` read `files` on object storage through their own fsspec filesystem (endpoint and
    credentials included), so no DuckDB extension has to be downloaded."""
    registered = set(con.list_filesystems())
    for f in files:
        if isinstance(f, UPath) and not is_local(f) and f.protocol not in registered:
            # DuckDB names a registered filesystem by its protocol: one per protocol.
            con.register_filesystem(f.fs)
            registered.update(con.list_filesystems())


def connect(files: Sequence[LakeFile] = ()) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read `files`, wherever they are stored."""
    con = duckdb.connect()
    register_filesystems(con, files)
    return con


def read_schema(path: LakeFile) -> pa.Schema:
    """The Parquet schema of one file, read from its footer."""
    if isinstance(path, UPath) and not is_local(path):
        with path.open("rb") as handle:
            return pq.read_schema(handle)
    return pq.read_schema(str(path) if isinstance(path, UPath) else os.fspath(path))


def files_sql(files: Sequence[LakeFile]) -> str:
    """A DuckDB list literal of the files."""
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
