"""The code location's one entry point: loads `defs/` and binds resources for the environment.

The environment is read here, when the definitions load, and nowhere at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pipeline_assets.lib.settings import Settings
from pipeline_assets.resources.gex_store import GexStore
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_features import MarketFeatureSettings
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets.resources.source_postgres import SourcePostgres


def _env_or_none(name: str) -> dg.EnvVar | None:
    # Bind a secret through EnvVar (so its value never lands in run config or the UI) only when
    # it is set; unset means "use the default credential chain".
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources for one environment, from its settings."""
    return {
        "io_manager": LakeIOManager(
            lake_root=settings.lake_root,
            s3_endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=_env_or_none("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env_or_none("AWS_SECRET_ACCESS_KEY"),
        ),
        "source_postgres": SourcePostgres(
            dsn=_env_or_none("PIPELINE_DX_SOURCE_DSN"),
            embedded_dir=str(settings.postgres_dir),
        ),
        "market_features": MarketFeatureSettings(
            staleness_limit_s=settings.market_staleness_limit_s
        ),
        "gex_store": GexStore.from_settings(settings),
        "market_sources": MarketSources(
            workers_dir=str(settings.workers_dir), data_root=str(settings.data_root)
        ),
    }


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
    return dg.Definitions.merge(loaded, dg.Definitions(resources=build_resources(settings)))
