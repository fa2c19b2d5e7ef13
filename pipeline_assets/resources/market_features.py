"""The settings of the stateful market features (silver): the staleness limit and book depth."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipeline_assets.lib.market.features import (
    DEFAULT_DEPTH_LEVELS,
    DEFAULT_STALENESS_LIMIT_S,
    FeatureParams,
)


class MarketFeatureSettings(dg.ConfigurableResource):
    """Parameters every silver feature run uses; a checkpoint written with other values is refused."""

    staleness_limit_s: float = Field(
        DEFAULT_STALENESS_LIMIT_S,
        description=(
            "A stream whose previous event is older than this many seconds restarts its state "
            "(`state_reset = 'stale_gap'`); a quote older than this is not used for a trade. "
            "From PIPELINE_MARKET_STALENESS_LIMIT_S."
        ),
    )
    depth_levels: int = Field(
        DEFAULT_DEPTH_LEVELS, description="Levels per side summed by depth_imbalance."
    )

    def params(self) -> FeatureParams:
        return FeatureParams(
            staleness_limit_s=self.staleness_limit_s, depth_levels=self.depth_levels
        )
