"""Jobs of the HQ export: `hq_export_job` exports chosen windows (the micro-batch sensor's target)."""

import dagster as dg

from pipeline_assets.defs.hq_export.assets import HQ_ASSET_KEYS

hq_export_job = dg.define_asset_job(
    "hq_export_job",
    selection=dg.AssetSelection.assets(*HQ_ASSET_KEYS),
    description=(
        "Exports the chosen UTC hour window(s) of the five dx_*_v1 datasets and their dead letter "
        "from the operational Postgres, with the blocking contract checks."
    ),
)
