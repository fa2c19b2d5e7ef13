"""Where the export's files are in the lake, for the checks and for readers (the same layout the
lake IO manager writes: `<lake root>/hq/<asset>/window_start=<hour>/<split>=<value>/data.parquet`).

Paths are `UPath`s of the lake root given, so a root on object storage carries its storage options
(endpoint, credentials) to whoever reads the files (see `verify.connect`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from pipeline_assets.lib.files import as_upath, is_local
from pipeline_assets.lib.parquet_lake import DATA_FILE_NAME, hive_segment

LAYER = "hq"
WINDOW_FOLDER = "window_start"


def asset_folder(lake_root: str | UPath, asset: str) -> UPath:
    return as_upath(lake_root).joinpath(LAYER, asset)


def window_folder(lake_root: str | UPath, asset: str, key: str) -> UPath:
    return asset_folder(lake_root, asset) / hive_segment(WINDOW_FOLDER, key)


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
    return sorted(folder.glob(f"*/*/{DATA_FILE_NAME}"), key=str) if folder.exists() else []


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
