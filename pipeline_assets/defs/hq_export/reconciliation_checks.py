"""The HQ reconciliation as asset checks on the five dx_*_v1 assets (one multi-asset check).

Where it runs, and over which windows:
- in every run that exports windows (`hq_export_job` from the micro-batch sensor, a UI backfill,
  the healing runs): the checks select with their assets, run after the export step and compare
  the run's windows (per-batch checks; no report file);
- in the `hq_reconciliation` job (the daily schedule, or on demand with run config `start_utc` /
  `end_utc`): over the given range, or the last `PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS` days,
  and it writes the JSON and Markdown report under `hq/_reconciliation/` that the healing sensor
  reads.

Results are one per dataset and check over the whole range (a run covers many hourly windows,
and Dagster's partitioned check results need a single-partition step), with the failing windows
and keys in the metadata; numeric figures (lag, parity gap, null rates, failed-status share) go
into the check metadata and an observation of each asset, which the UI plots over time. Severity:
ERROR for parity, keys and the lag SLA; WARN for null rates and the status anomaly.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from pipeline_assets.lib.hq.datasets import DATASETS, SOURCE_SCHEMA
from pipeline_assets.lib.hq.extract import session_setup
from pipeline_assets.lib.hq.reconcile import (
    CHECKSUM_PARITY,
    CRITICAL_NULL_RATES,
    MAX_LAG_WITHIN_SLA,
    ROW_COUNT_PARITY,
    STATUS_DISTRIBUTION_STABLE,
    WARN,
    ReconcileOptions,
    checks_of,
    latest_report,
    reconcile,
    write_report,
)
from pipeline_assets.lib.hq.windows import window_bounds
from pipeline_assets.lib.settings import Settings
from pipeline_assets.lib.versions import CODE_VERSION
from pipeline_assets.resources.source_postgres import SourcePostgres

HQ_RECONCILIATION_CHECKS = "hq_reconciliation_checks"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"

_DESCRIPTIONS = {
    ROW_COUNT_PARITY: (
        "ERROR. Passes when, in every window and org, the rows the source says the export should "
        "hold (the export's own classification: dead-lettered and superseded rows excluded) equal "
        "the rows in the exported Parquet."
    ),
    CHECKSUM_PARITY: (
        "ERROR. Passes when every window's hash aggregate over the key and the columns the export "
        "carries unchanged is equal in Postgres and in the Parquet (DuckDB). On a mismatch, "
        "bisects by window, org and key-hash range down to the keys: missing in the export, extra "
        "in the export, different (capped at PIPELINE_HQ_MISMATCH_KEY_CAP)."
    ),
    MAX_LAG_WITHIN_SLA: (
        "ERROR. Passes when the export trails the source by at most PIPELINE_HQ_MAX_LAG_MINUTES: "
        "min(now, newest source row) - newest exported row (an idle source is not lagging)."
    ),
    CRITICAL_NULL_RATES: (
        "WARN. Passes when the null rates of the contract's critical fields (company: "
        "canonical_domain, canonical_name; person: full_name, or first_name and last_name) in the "
        "windows compared are within PIPELINE_HQ_NULL_RATE_LIMITS."
    ),
    STATUS_DISTRIBUTION_STABLE: (
        "WARN. Passes when no day's status mix differs from the 7 days before it: Pearson "
        "chi-square test of homogeneity, anomalous when p < 0.001 and a status share moves by at "
        "least 5 percentage points."
    ),
}


class HqReconciliationConfig(dg.Config):
    start_utc: str | None = Field(
        None,
        description=(
            "Start of the range (ISO 8601, UTC when no offset). Unset: the run's windows in an "
            "export run, else end_utc minus PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS."
        ),
    )
    end_utc: str | None = Field(
        None, description="End of the range, exclusive (ISO 8601). Unset: now (to the hour above)."
    )
    source_schema: str = Field(SOURCE_SCHEMA, description="Postgres schema of the source tables.")
    write_report: bool | None = Field(
        None,
        description=(
            "Write the JSON and Markdown report under hq/_reconciliation/ (which the healing "
            "sensor reads). Unset: yes in the hq_reconciliation job, no after an export."
        ),
    )


def _parse(value: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise dg.Failure(
            f"{name}={value!r}: expected an ISO 8601 time such as 2026-02-17T00:00:00Z"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def reconciliation_range(
    config: HqReconciliationConfig, tags: dict[str, str], now: dt.datetime, lookback_days: int
) -> tuple[dt.datetime, dt.datetime, bool]:
    """(start, end, in an export run) of the reconciliation."""
    first = tags.get(RANGE_START_TAG) or tags.get(PARTITION_TAG)
    last = tags.get(RANGE_END_TAG) or tags.get(PARTITION_TAG)
    if config.start_utc is None and config.end_utc is None and first and last:
        return window_bounds(first)[0], window_bounds(last)[1], True
    hour = now.replace(minute=0, second=0, microsecond=0)
    end = _parse(config.end_utc, "end_utc") if config.end_utc else hour + dt.timedelta(hours=1)
    start = (
        _parse(config.start_utc, "start_utc")
        if config.start_utc
        else end - dt.timedelta(days=lookback_days)
    )
    if start >= end:
        raise dg.Failure(f"start_utc {start.isoformat()} is not before end_utc {end.isoformat()}")
    return start, end, False


def _numeric(check: dict[str, Any]) -> dict[str, Any]:
    """The figures of a check the UI plots (floats and ints only)."""
    f = check["figures"]
    name = check["check"]
    out: dict[str, Any] = {}
    if name == ROW_COUNT_PARITY:
        out = {
            "parity_gap_rows": f["parity_gap_rows"],
            "source_rows": f["source_rows"],
            "export_rows": f["export_rows"],
        }
    elif name == CHECKSUM_PARITY:
        out = {
            "differing_keys": f["differing_keys"],
            "mismatched_windows_count": len(f["mismatched_windows"]),
            "segments_compared": f["segments_compared"],
        }
    elif name == MAX_LAG_WITHIN_SLA:
        if f["lag_minutes"] is not None:
            out["lag_minutes"] = float(f["lag_minutes"])
        out["lag_limit_minutes"] = float(f["limit_minutes"])
    elif name == CRITICAL_NULL_RATES:
        out = {f"null_rate_{k}": float(v) for k, v in f["rates"].items()}
    elif name == STATUS_DISTRIBUTION_STABLE:
        days = f["days"]
        if days:
            out["failed_share"] = float(days[-1]["failed_share"])
            tested = [d for d in days if d["tested"]]
            if tested:
                out["status_p_value"] = float(tested[-1]["p_value"])
                out["status_chi_square"] = float(tested[-1]["chi_square"])
    return out


def _healed_by(context: dg.AssetCheckExecutionContext, windows: list[str]) -> dict[str, str | None]:
    """The run that last exported each healed window."""
    out: dict[str, str | None] = {}
    for window in windows:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(DATASETS[0].name), asset_partitions=[window]
            ),
            limit=1,
        ).records
        out[window] = records[0].event_log_entry.run_id if records else None
    return out


@dg.multi_asset_check(
    name=HQ_RECONCILIATION_CHECKS,
    specs=[
        dg.AssetCheckSpec(name, asset=spec.name, description=_DESCRIPTIONS[name], blocking=False)
        for spec in DATASETS
        for name in checks_of(spec.name)
    ],
    pool="source_postgres",
    description=(
        "Reconciles the HQ export with the operational Postgres: row-count and checksum parity "
        "(with the differing keys), lag SLA, critical null rates, status-mix anomaly."
    ),
)
def hq_reconciliation_checks(
    context: dg.AssetCheckExecutionContext,
    config: HqReconciliationConfig,
    source_postgres: SourcePostgres,
) -> Iterator[dg.AssetCheckResult]:
    settings = Settings.from_env()
    now = dt.datetime.now(dt.UTC)
    start, end, in_export_run = reconciliation_range(
        config, dict(context.run.tags), now, settings.hq_reconciliation_lookback_days
    )
    as_of = min(now, end)
    write = config.write_report if config.write_report is not None else not in_export_run
    previous = latest_report(settings.lake_path()) if write else None
    context.log.info(
        f"reconciling {start.isoformat()} .. {end.isoformat()} (schema {config.source_schema}, "
        f"{'after an export' if in_export_run else 'reconciliation run'})"
    )
    options = ReconcileOptions(
        max_lag_minutes=settings.hq_max_lag_minutes,
        key_cap=settings.hq_mismatch_key_cap,
        null_rate_limits=settings.hq_null_rate_limits,
    )
    with source_postgres.connection() as conn:
        session_setup(conn)
        report = reconcile(
            conn,
            settings.lake_path(),
            start,
            end,
            as_of=as_of,
            options=options,
            schema=config.source_schema,
            previous=previous,
            log=context.log.info,
        )
        conn.rollback()
    report["healed"]["runs"] = _healed_by(context, report["healed"]["windows"])
    report_meta: dict[str, Any] = {}
    if write:
        json_path, md_path = write_report(
            settings.lake_path(),
            report,
            source_dsn=source_postgres.redacted_dsn(),
            run_id=context.run.run_id,
            code_version=CODE_VERSION,
        )
        report_meta = {
            "report_json": dg.MetadataValue.path(str(json_path)),
            "report_markdown": dg.MetadataValue.path(str(md_path)),
        }
        context.log.info(f"reconciliation report: {json_path}")
    if report["heal_windows"]:
        context.log.warning(
            f"windows failing parity: {', '.join(report['heal_windows'])}"
            + (" (the healing sensor re-exports them)" if write else "")
        )
    plotted: dict[str, dict[str, Any]] = {}
    for check in report["checks"]:
        numeric = _numeric(check)
        plotted.setdefault(check["dataset"], {}).update(numeric)
        yield dg.AssetCheckResult(
            asset_key=check["dataset"],
            check_name=check["check"],
            passed=check["passed"],
            severity=dg.AssetCheckSeverity.WARN
            if check["severity"] == WARN
            else dg.AssetCheckSeverity.ERROR,
            description=check["summary"][:2000],
            metadata={
                "range_start": dg.MetadataValue.text(report["range"]["start"]),
                "range_end": dg.MetadataValue.text(report["range"]["end"]),
                "windows_compared": dg.MetadataValue.int(report["windows_compared"]),
                **{k: v for k, v in numeric.items()},
                "figures": dg.MetadataValue.json(check["figures"]),
                "heal_windows": dg.MetadataValue.json(report["heal_windows"]),
                **report_meta,
            },
        )
    for dataset, numeric in plotted.items():
        context.op_execution_context.log_event(
            dg.AssetObservation(
                asset_key=dataset,
                metadata={
                    **numeric,
                    "reconciliation_range": dg.MetadataValue.text(
                        f"{report['range']['start']} .. {report['range']['end']}"
                    ),
                },
            )
        )
