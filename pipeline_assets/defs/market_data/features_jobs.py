"""The features job: silver features and gold bars of the chosen UTC day(s) (the features watcher's target)."""

import dagster as dg

from pipeline_assets.defs.market_data.features_checks import GOLD_BARS_1M
from pipeline_assets.defs.market_data.silver import SILVER_ASSET_KEYS

# The run queue admits one run with this tag at a time (`tag_concurrency_limits` in dagster.yaml):
# the days of the state chain must not be computed by two runs at once.
STATE_CHAIN_TAG = "market_data/state_chain"
STATE_CHAIN_TAG_VALUE = "market_features"

market_features_job = dg.define_asset_job(
    "market_features_job",
    selection=dg.AssetSelection.assets(*SILVER_ASSET_KEYS, dg.AssetKey(GOLD_BARS_1M)),
    tags={STATE_CHAIN_TAG: STATE_CHAIN_TAG_VALUE},
    description=(
        "Computes the silver features and gold bars of the chosen UTC day(s), with their checks; "
        "a range runs as one run, each day starting from the state the previous one left. One "
        "run of it at a time: the run queue holds a second one back."
    ),
)
