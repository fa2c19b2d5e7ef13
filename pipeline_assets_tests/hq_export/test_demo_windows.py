"""The demo materializes only the windows its sources cover: the hours of the demo days for hourly
partitions (not every hour since the definition's start), the days themselves for daily ones; and
the HQ demo rows cover several orgs, flaws included, over exactly those days."""

import datetime as dt

import dagster as dg

from pipeline_assets.defs.hq_export.partitions import hq_hourly_partitions
from pipeline_assets.demo import DEMO_DAYS, _demo_partition_keys
from pipeline_assets.lib.hq.source_tables import DEMO_SECRET, ORGS, TIME_INDEX, demo_rows


def test_hourly_partitions_are_limited_to_the_demo_days():
    with dg.DagsterInstance.ephemeral() as instance:
        keys = _demo_partition_keys(hq_hourly_partitions, instance)
        daily = _demo_partition_keys(dg.DailyPartitionsDefinition("2020-01-01"), instance)
        quarter = _demo_partition_keys(
            dg.TimeWindowPartitionsDefinition(
                cron_schedule="*/15 * * * *", start="2026-01-01-00:00", fmt="%Y-%m-%d-%H:%M"
            ),
            instance,
        )
    assert len(keys) == 24 * len(DEMO_DAYS)
    assert keys[0] == f"{DEMO_DAYS[0]}-00:00" and keys[-1] == f"{DEMO_DAYS[-1]}-23:00"
    assert daily == [d.isoformat() for d in DEMO_DAYS]
    assert len(quarter) == 96 * len(DEMO_DAYS)


def test_demo_rows_fall_on_the_demo_days_with_orgs_and_flaws():
    rows = demo_rows(list(DEMO_DAYS))
    start = dt.datetime.combine(DEMO_DAYS[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(DEMO_DAYS[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)
    for table, column in TIME_INDEX.items():
        assert rows[table] and all(start <= r[column] < end for r in rows[table]), table
    assert {r["org_id"] for r in rows["operation_runs"]} == {*ORGS, None}
    assert sum(len(v) for v in rows.values()) > 3000
    assert any(DEMO_SECRET in str(r["metadata_json"]) for r in rows["operation_events"])
    assert demo_rows(list(DEMO_DAYS)) == rows  # deterministic
