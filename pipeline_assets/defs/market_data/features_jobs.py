"""The features job: silver features and gold bars of the chosen UTC day(s) (the features watcher's target)."""

import dagster as dg

from pipeline_assets.defs.market_data.features_checks import GOLD_BARS_1M
from pipeline_assets.defs.market_data.silver import SILVER_ASSET_KEYS

market_features_job = dg.define_asset_job(
    "market_features_job",
    selection=dg.AssetSelection.assets(*SILVER_ASSET_KEYS, dg.AssetKey(GOLD_BARS_1M)),
    description=(
        "Computes the silver features and gold bars of the chosen UTC day(s), with their checks; "
        "a range runs as one run, each day starting from the state the previous one left."
    ),
)
