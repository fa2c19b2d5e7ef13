"""Jobs of the market data: `bronze_job` lands one day of the collector files (the watcher's target);
`staging_export_job` runs the staging export (the micro-batch schedule's target)."""

import dagster as dg

from pipeline_assets.defs.market_data.bronze import BRONZE_ASSET_KEYS

bronze_job = dg.define_asset_job(
    "bronze_job",
    # Partitioned by the assets' own market_daily_partitions (`partitions_def=` here is deprecated
    # in Dagster 1.13: the job infers it from the selection).
    selection=dg.AssetSelection.assets(*BRONZE_ASSET_KEYS),
    description="Lands the collectors' SQLite files of the chosen UTC day(s) as the five bronze assets, with their checks.",
)

staging_export_job = dg.define_asset_job(
    "staging_export_job",
    selection=dg.AssetSelection.assets("staging_export"),
    description="Runs the staging export (with its checks); the micro-batch schedule runs it incrementally.",
)
