"""Where the market collectors' SQLite files are: the one setting the bronze assets and the watcher read."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

WORKER_FILE_PATTERN = "*.db"


class MarketSources(dg.ConfigurableResource):
    """The folder of the collectors' worker files (`<data root>/source/workers` by default)."""

    workers_dir: str = Field(
        description="Folder holding one collector SQLite file (`*.db`) per worker."
    )
    data_root: str | None = Field(
        None,
        description=(
            "Root that sidecars name the worker files relative to (the data root); unset: the "
            "folder two levels above workers_dir, as in the `<root>/source/workers` layout."
        ),
    )

    @property
    def workers_path(self) -> Path:
        return Path(self.workers_dir).expanduser().resolve()

    @property
    def root_path(self) -> Path:
        if self.data_root:
            return Path(self.data_root).expanduser().resolve()
        return self.workers_path.parent.parent

    @property
    def input_glob(self) -> str:
        return str(self.workers_path / WORKER_FILE_PATTERN)

    def worker_files(self) -> list[Path]:
        """The worker files, by name; a missing folder has none."""
        folder = self.workers_path
        if not folder.is_dir():
            return []
        return sorted(
            (p for p in folder.glob(WORKER_FILE_PATTERN) if p.is_file()), key=lambda p: p.name
        )
