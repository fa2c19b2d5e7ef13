"""The market data's daily partitions: one per UTC event date, all symbols of a day in one."""

import datetime as dt

import dagster as dg
from upath import UPath

from pipeline_assets.lib.settings import Settings


def _market_start_date() -> str:
    # Partitions are part of the asset definitions: the UI lists them and backfills address them
    # as soon as the code location loads, before any resource exists. So the first day is read
    # from the environment here, once, when this module is imported (by the definitions loader),
    # through the same Settings every other path uses.
    return Settings.from_env().market_start_date.isoformat()


# end_offset=1: today's partition exists while the day is still filling, so the watcher can land
# the ticks of the current day as they arrive.
market_daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_market_start_date(), end_offset=1
)


def market_day_folder(io_manager: object, asset: str, day: dt.date, layer: str) -> UPath:
    """The lake folder of one market asset's day, as the lake IO manager lays it out."""
    return io_manager.partition_folder(  # type: ignore[attr-defined]
        dg.AssetKey(asset), market_daily_partitions, day.isoformat(), {"lake/layer": layer}
    )
