"""When and over what the reconciliation runs: the daily schedule's range, the range of a run (an
export run's windows, run config, the lookback default, a bad range refused), and its settings
(defaults that work, bad values refused with the variable named)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from pipeline_assets.defs.hq_export.reconciliation_checks import (
    HQ_RECONCILIATION_CHECKS,
    HqReconciliationConfig,
    reconciliation_range,
)
from pipeline_assets.defs.hq_export.reconciliation_schedules import (
    daily_run_config,
    hq_reconciliation_daily,
)
from pipeline_assets.lib.hq.reconcile import range_windows
from pipeline_assets.lib.settings import Settings, SettingsError

NOW = dt.datetime(2026, 2, 20, 3, 17, tzinfo=dt.UTC)


def test_the_daily_run_covers_the_lookback_days_up_to_the_scheduled_hour():
    config = daily_run_config(dt.datetime(2026, 2, 20, 3, 0, tzinfo=dt.UTC), lookback_days=2)
    assert config["ops"][HQ_RECONCILIATION_CHECKS]["config"] == {
        "start_utc": "2026-02-18T03:00:00Z",
        "end_utc": "2026-02-20T03:00:00Z",
    }
    context = dg.build_schedule_context(scheduled_execution_time=NOW)
    request = hq_reconciliation_daily(context)
    assert request.run_config["ops"][HQ_RECONCILIATION_CHECKS]["config"]["end_utc"] == (
        "2026-02-20T03:00:00Z"
    )
    assert hq_reconciliation_daily.cron_schedule == "0 3 * * *"


def test_an_export_run_reconciles_its_own_windows():
    tags = {
        "dagster/asset_partition_range_start": "2026-02-17-00:00",
        "dagster/asset_partition_range_end": "2026-02-17-05:00",
    }
    start, end, in_export = reconciliation_range(HqReconciliationConfig(), tags, NOW, 2)
    assert in_export
    assert range_windows(start, end) == [f"2026-02-17-0{h}:00" for h in range(6)]
    single = {"dagster/partition": "2026-02-17-09:00"}
    start, end, _ = reconciliation_range(HqReconciliationConfig(), single, NOW, 2)
    assert range_windows(start, end) == ["2026-02-17-09:00"]


def test_run_config_and_the_lookback_default():
    config = HqReconciliationConfig(start_utc="2026-02-17T00:30:00Z", end_utc="2026-02-17T02:00")
    start, end, in_export = reconciliation_range(config, {}, NOW, 2)
    assert not in_export and end == dt.datetime(2026, 2, 17, 2, tzinfo=dt.UTC)
    # A range starting inside a window includes that window.
    assert range_windows(start, end) == ["2026-02-17-00:00", "2026-02-17-01:00"]
    start, end, _ = reconciliation_range(HqReconciliationConfig(), {}, NOW, 2)
    assert end == dt.datetime(2026, 2, 20, 4, tzinfo=dt.UTC)
    assert end - start == dt.timedelta(days=2)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-02-18T00:00:00Z", "2026-02-17T00:00:00Z", "is not before"),
        ("yesterday", None, "start_utc='yesterday': expected an ISO 8601 time"),
    ],
)
def test_a_bad_range_is_refused_with_a_clear_message(start, end, message):
    config = HqReconciliationConfig(start_utc=start, end_utc=end)
    with pytest.raises(dg.Failure, match=message):
        reconciliation_range(config, {}, NOW, 2)


def test_settings_have_working_defaults_and_refuse_bad_values():
    settings = Settings.from_env({})
    assert settings.hq_reconciliation_hour == 3
    assert settings.hq_reconciliation_lookback_days == 2
    assert settings.hq_max_lag_minutes == 60.0
    assert settings.hq_mismatch_key_cap == 100
    assert settings.hq_null_rate_limits == {
        "canonical_domain": 0.1,
        "canonical_name": 0.2,
        "person_name": 0.1,
    }
    custom = Settings.from_env({"PIPELINE_HQ_NULL_RATE_LIMITS": "canonical_name=0.5"})
    assert custom.hq_null_rate_limits["canonical_name"] == 0.5
    assert custom.hq_null_rate_limits["person_name"] == 0.1
    for name, value in [
        ("PIPELINE_HQ_RECONCILIATION_HOUR", "24"),
        ("PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS", "0"),
        ("PIPELINE_HQ_MAX_LAG_MINUTES", "-5"),
        ("PIPELINE_HQ_MISMATCH_KEY_CAP", "many"),
        ("PIPELINE_HQ_NULL_RATE_LIMITS", "full_name=0.5"),
        ("PIPELINE_HQ_NULL_RATE_LIMITS", "canonical_name=2"),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
