"""What the instance already holds: the latest materialization of each partition of an asset.

Sensors whose cursor is empty (a new instance, a reset sensor, the first daemon after `make demo`)
seed it from here, so that they request only what changed since those materializations, not
everything their source holds.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import dagster as dg

PAGE = 1_000


def latest_metadata_by_partition(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    metadata_key: str,
    partitions: Collection[str] | None = None,
) -> dict[str, Any]:
    """Partition key -> the value of `metadata_key` on that partition's latest materialization.

    Only the given partitions (all materialized ones when None). A partition whose latest
    materialization lacks the key maps to None: what it recorded is unknown.
    """
    wanted = None if partitions is None else set(partitions)
    if wanted is not None and not wanted:
        return {}
    found: dict[str, Any] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=asset_key,
                asset_partitions=sorted(wanted) if wanted is not None else None,
            ),
            limit=PAGE,
            cursor=cursor,
            ascending=False,
        )
        for record in result.records:
            key = record.partition_key
            if key is None or key in found:
                continue  # newest first: a partition's first record is its latest
            value = record.asset_materialization.metadata.get(metadata_key)
            found[key] = getattr(value, "value", value)
        if not result.has_more or (wanted is not None and wanted <= found.keys()):
            return found
        cursor = result.cursor
