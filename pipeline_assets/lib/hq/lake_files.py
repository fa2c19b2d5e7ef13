"""Where the export's files are in the lake, for the checks and for readers (the same layout the
lake IO manager writes: `<lake root>/hq/<asset>/window_start=<hour>/<split>=<value>/data.parquet`)."""

from __future__ import annotations

from collections.abc import Sequence

from upath import UPath

from pipeline_assets.lib.files import as_upath
from pipeline_assets.lib.parquet_lake import DATA_FILE_NAME, hive_segment

LAYER = "hq"
WINDOW_FOLDER = "window_start"


def asset_folder(lake_root: str, asset: str) -> UPath:
    return as_upath(lake_root).joinpath(LAYER, asset)


def window_folder(lake_root: str, asset: str, key: str) -> UPath:
    return asset_folder(lake_root, asset) / hive_segment(WINDOW_FOLDER, key)


def window_files(lake_root: str, asset: str, keys: Sequence[str]) -> dict[str, list[str]]:
    """The data files of each window (one per split value), sorted; [] for an empty window."""
    out = {}
    for key in keys:
        folder = window_folder(lake_root, asset, key)
        out[key] = (
            sorted(str(p) for p in folder.glob(f"*/{DATA_FILE_NAME}")) if folder.exists() else []
        )
    return out


def dataset_files(lake_root: str, asset: str) -> list[str]:
    """Every data file of the dataset."""
    folder = asset_folder(lake_root, asset)
    return sorted(str(p) for p in folder.glob(f"*/*/{DATA_FILE_NAME}")) if folder.exists() else []
