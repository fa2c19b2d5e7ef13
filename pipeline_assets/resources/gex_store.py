"""The GEX store resource: the job store, staging folder, DuckDB files and canonical Parquet of
the GEX import under the data root, with the import's limits.

It hands out `GexImporter`s (plain code in `lib/gex/imports.py`): the asset, the sensor, the
retention job, the CLI and the HTTP server all import through the same code. DuckDB connections
are opened by the importer inside its file lock (`<data root>/gex.lock`), never held by the
resource, so runs, the CLI and the server never meet DuckDB's one-writer lock.
"""

from collections.abc import Callable

import dagster as dg
from pydantic import Field

from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.settings import Settings


class GexStore(dg.ConfigurableResource):
    """`gex_history.db`, `gex_data.db`, `source/gexbot/` and `parquet/gex/` under `data_root`."""

    data_root: str = Field(description="The data root (PIPELINE_DATA_ROOT).")
    max_download_bytes: int = Field(
        512 * 1024 * 1024, description="Largest file a job may download."
    )
    download_timeout_s: float = Field(
        30.0, description="Time-out of one connect or read, in seconds."
    )
    retention_days: int = Field(
        14, description="Staged JSON older than this is removed by the retention job."
    )
    archive: bool = Field(
        False, description="Copy staged JSON to archive/gex/staged/ before removing it."
    )
    backups_kept: int = Field(
        5, description="Snapshots of the GEX databases kept under backups/gex/ (the newest)."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "GexStore":
        return cls(
            data_root=str(settings.data_root),
            max_download_bytes=settings.gex_max_download_bytes,
            download_timeout_s=settings.gex_download_timeout_s,
            retention_days=settings.gex_retention_days,
            archive=settings.gex_archive,
            backups_kept=settings.gex_backups_kept,
        )

    def config(self) -> GexConfig:
        return GexConfig(
            max_download_bytes=self.max_download_bytes,
            download_timeout=self.download_timeout_s,
            retention_days=self.retention_days,
            archive=self.archive,
            backups_kept=self.backups_kept,
        )

    def importer(
        self, *, log: Callable[[str], None] | None = None, run_id: str | None = None
    ) -> GexImporter:
        return GexImporter(self.data_root, self.config(), log=log, run_id=run_id)
