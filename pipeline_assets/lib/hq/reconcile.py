"""The HQ reconciliation: source against export over a range of hour windows, as plain functions.

`reconcile` compares every dataset over [start, end) and returns a report (a dict): per dataset
the row counts per window and org on both sides, the checksum parity with the differing keys
(`reconcile_hashdiff`), the export lag and the critical null rates (`reconcile_quality`); for
`dx_operation_runs_v1` the status-distribution anomaly test of each day; one entry per check with
its severity and result; the windows to heal (those failing a parity check), and the windows a
previous report asked to heal that pass now (healed). `write_report` writes it as JSON and
Markdown under `hq/_reconciliation/`, each with its chain-of-custody sidecar.

Severity: ERROR for parity and keys (row counts, checksums) and the lag SLA (stale data in HQ);
WARN for rates and anomalies (null rates, status mix).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from upath import UPath

from contracts.custody import ParentRef
from contracts.hq_reconciliation import REPORT_NAME, REPORT_VERSION, HqReconciliationReport
from pipeline_assets.lib.custody import (
    SIDECAR_SUFFIX,
    CustodyError,
    MetadataFactory,
    read_sidecar,
    write_sidecar,
)
from pipeline_assets.lib.files import as_upath, write_bytes_atomic
from pipeline_assets.lib.hq.datasets import DATASETS, RUNS, SOURCE_SCHEMA
from pipeline_assets.lib.hq.lake_files import LAYER, window_files
from pipeline_assets.lib.hq.reconcile_hashdiff import (
    DEFAULT_LEAF_ROWS,
    KeyDiff,
    export_side,
    hashdiff,
    source_side,
)
from pipeline_assets.lib.hq.reconcile_quality import (
    ANOMALY_ALPHA,
    ANOMALY_BASELINE_DAYS,
    ANOMALY_MIN_SHIFT,
    NULL_FIELDS,
    as_plain,
    days_of,
    export_lag,
    null_rates,
    status_anomalies,
    status_counts_by_day,
)
from pipeline_assets.lib.hq.windows import KEY_FORMAT, WINDOW, window_key

REPORT_FOLDER = "_reconciliation"
REPORT_PREFIX = "reconciliation_"
TRANSFORMATION_NAME = "hq_reconciliation"

ROW_COUNT_PARITY = "row_count_parity"
CHECKSUM_PARITY = "checksum_parity"
MAX_LAG_WITHIN_SLA = "max_lag_within_sla"
CRITICAL_NULL_RATES = "critical_null_rates"
STATUS_DISTRIBUTION_STABLE = "status_distribution_stable"

ERROR, WARN = "ERROR", "WARN"
SEVERITY = {
    ROW_COUNT_PARITY: ERROR,
    CHECKSUM_PARITY: ERROR,
    MAX_LAG_WITHIN_SLA: ERROR,
    CRITICAL_NULL_RATES: WARN,
    STATUS_DISTRIBUTION_STABLE: WARN,
}


def checks_of(dataset: str) -> tuple[str, ...]:
    """The reconciliation checks of one dataset."""
    names = [ROW_COUNT_PARITY, CHECKSUM_PARITY, MAX_LAG_WITHIN_SLA]
    if dataset in NULL_FIELDS:
        names.append(CRITICAL_NULL_RATES)
    if dataset == RUNS.name:
        names.append(STATUS_DISTRIBUTION_STABLE)
    return tuple(names)


@dataclass(frozen=True)
class ReconcileOptions:
    max_lag_minutes: float = 60.0
    key_cap: int = 100
    null_rate_limits: Mapping[str, float] = field(default_factory=dict)
    leaf_rows: int = DEFAULT_LEAF_ROWS
    baseline_days: int = ANOMALY_BASELINE_DAYS


def range_windows(start: dt.datetime, end: dt.datetime) -> list[str]:
    """The hour windows overlapping [start, end)."""
    first = dt.datetime.strptime(window_key(start), KEY_FORMAT).replace(tzinfo=dt.UTC)
    keys = []
    moment = first
    while moment < end:
        keys.append(moment.strftime(KEY_FORMAT))
        moment += WINDOW
    return keys


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _check(
    dataset: str, name: str, passed: bool, summary: str, figures: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "check": name,
        "severity": SEVERITY[name],
        "passed": bool(passed),
        "summary": summary,
        "figures": dict(figures),
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


def reconcile(
    conn: psycopg.Connection,
    lake_root: str | UPath,
    start: dt.datetime,
    end: dt.datetime,
    *,
    as_of: dt.datetime,
    options: ReconcileOptions,
    schema: str = SOURCE_SCHEMA,
    previous: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Compare source and export over the windows of [start, end); see the module docstring."""
    windows = range_windows(start, end)
    datasets: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    heal: set[str] = set()
    source_digest: dict[str, Any] = {}
    export_files: dict[str, list[str]] = {}
    for spec in DATASETS:
        files = window_files(lake_root, spec.name, windows)
        export_files[spec.name] = sorted((f for fs in files.values() for f in fs), key=str)
        diff: KeyDiff = hashdiff(
            spec,
            windows,
            source_side(conn, spec, schema=schema),
            export_side(spec, lambda key, files=files: files.get(key, [])),
            max_keys=options.key_cap,
            leaf_rows=options.leaf_rows,
        )
        source_digest[spec.name] = diff.source_summaries
        gaps = diff.count_gaps()
        heal.update(g["window"] for g in gaps)
        heal.update(diff.mismatched_windows)
        log(
            f"{spec.name}: {len(windows)} windows, {diff.segments_compared} segments compared, "
            f"{len(diff.mismatched_windows)} mismatched, differing keys {diff.counts}"
        )
        entry: dict[str, Any] = {"parity": diff.as_dict()}
        checks.append(
            _check(
                spec.name,
                ROW_COUNT_PARITY,
                not gaps,
                "row counts equal in every window and org"
                if not gaps
                else f"{len(gaps)} (window, org) pairs differ by {diff.parity_gap_rows} rows in all",
                {
                    "source_rows": entry["parity"]["source_rows"],
                    "export_rows": entry["parity"]["export_rows"],
                    "parity_gap_rows": diff.parity_gap_rows,
                    "count_gaps": gaps[: options.key_cap],
                },
            )
        )
        checks.append(
            _check(
                spec.name,
                CHECKSUM_PARITY,
                diff.checksum_ok,
                "checksums equal in every window"
                if diff.checksum_ok
                else (
                    f"{len(diff.mismatched_windows)} windows differ: "
                    f"{diff.counts['missing_in_export']} keys missing in the export, "
                    f"{diff.counts['extra_in_export']} extra, {diff.counts['different']} different"
                    + (" (key list capped)" if diff.keys_truncated else "")
                ),
                {
                    "mismatched_windows": diff.mismatched_windows,
                    "differing_keys": sum(diff.counts.values()),
                    "counts": diff.counts,
                    "missing_in_export": diff.missing_in_export,
                    "extra_in_export": diff.extra_in_export,
                    "different": diff.different,
                    "keys_truncated": diff.keys_truncated,
                    "segments_compared": diff.segments_compared,
                    "segments_by_level": diff.segments_by_level,
                    "key_columns": list(spec.primary_key),
                    "compared_columns": diff.compared_columns,
                },
            )
        )
        lag = export_lag(conn, lake_root, spec, as_of, options.max_lag_minutes, schema=schema)
        entry["lag"] = as_plain(lag)
        checks.append(
            _check(
                spec.name,
                MAX_LAG_WITHIN_SLA,
                lag.passed,
                (
                    "nothing exported while the source has rows"
                    if lag.lag_minutes is None
                    else f"export trails the source by {lag.lag_minutes:.1f} min "
                    f"(SLA {options.max_lag_minutes:g} min)"
                ),
                as_plain(lag),
            )
        )
        if spec.name in NULL_FIELDS:
            rates = null_rates(export_files[spec.name], spec, options.null_rate_limits)
            entry["null_rates"] = {**as_plain(rates), "passed": rates.passed}
            checks.append(
                _check(
                    spec.name,
                    CRITICAL_NULL_RATES,
                    rates.passed,
                    "null rates within their limits"
                    if rates.passed
                    else "over the limit: "
                    + ", ".join(
                        f"{f} {r:.1%} > {rates.limits[f]:.1%}" for f, r in rates.over_limit.items()
                    ),
                    entry["null_rates"],
                ),
            )
        datasets[spec.name] = entry

    # Status mix of each day in the range against the days before it (read from the export).
    days = days_of(start, end)
    first_day = dt.date.fromisoformat(days[0]) - dt.timedelta(days=options.baseline_days)
    baseline_start = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    span_files = window_files(lake_root, RUNS.name, range_windows(baseline_start, end))
    counts = status_counts_by_day([f for fs in span_files.values() for f in fs])
    tests = status_anomalies(counts, days, baseline_days=options.baseline_days)
    anomalous = [t.day for t in tests if t.anomalous]
    tested = [t for t in tests if t.tested]
    datasets[RUNS.name]["status_anomaly"] = [as_plain(t) for t in tests]
    checks.append(
        _check(
            RUNS.name,
            STATUS_DISTRIBUTION_STABLE,
            not anomalous,
            (
                f"anomalous status mix on {', '.join(anomalous)}"
                if anomalous
                else f"{len(tested)} of {len(tests)} days tested, none anomalous"
            ),
            {
                "test": (
                    f"Pearson chi-square test of homogeneity, day against the {options.baseline_days} "
                    f"days before it; anomalous when p < {ANOMALY_ALPHA} and a status share moves "
                    f"by >= {ANOMALY_MIN_SHIFT:.0%}"
                ),
                "anomalous_days": anomalous,
                "days": [as_plain(t) for t in tests],
            },
        )
    )

    healed, still_failing = [], []
    if previous:
        for window in previous.get("heal_windows", []):
            if window not in windows:
                continue
            (still_failing if window in heal else healed).append(window)
    return {
        "contract_name": REPORT_NAME,
        "contract_version": REPORT_VERSION,
        "range": {"start": _iso(start), "end": _iso(end)},
        "as_of": _iso(as_of),
        "source_schema": schema,
        "windows_compared": len(windows),
        "options": {
            "max_lag_minutes": options.max_lag_minutes,
            "key_cap": options.key_cap,
            "null_rate_limits": dict(options.null_rate_limits),
            "leaf_rows": options.leaf_rows,
            "baseline_days": options.baseline_days,
        },
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "datasets": datasets,
        "heal_windows": sorted(heal),
        "healed": {
            "previous_report": previous.get("report_file") if previous else None,
            "windows": sorted(healed),
            "still_failing": sorted(still_failing),
        },
        "source_sha256": _digest(source_digest),
        "export_files": export_files,
    }


# --- the report files ---------------------------------------------------------------------------


def report_folder(lake_root: str | UPath) -> UPath:
    return as_upath(lake_root).joinpath(LAYER, REPORT_FOLDER)


def _report_names(lake_root: str | UPath) -> list[str]:
    """Report file names, oldest first (they are named by the time they were written)."""
    folder = report_folder(lake_root)
    if not folder.exists():
        return []
    return sorted(
        p.name for p in folder.glob(f"{REPORT_PREFIX}*.json") if not p.name.endswith(SIDECAR_SUFFIX)
    )


def latest_report(lake_root: str | UPath) -> dict[str, Any] | None:
    """The newest report written, or None."""
    names = _report_names(lake_root)
    return json.loads((report_folder(lake_root) / names[-1]).read_bytes()) if names else None


def reports_after(lake_root: str | UPath, name: str | None) -> list[dict[str, Any]]:
    """Reports written after the one named `name` (all when None), oldest first."""
    folder = report_folder(lake_root)
    return [
        json.loads((folder / n).read_bytes())
        for n in _report_names(lake_root)
        if name is None or n > name
    ]


def _file_parent(factory: MetadataFactory, path: str) -> ParentRef:
    try:
        # The file's own sidecar already holds its hash: no need to read the file again.
        return factory.file_parent(path, sha256=read_sidecar(as_upath(path)).file_sha256)
    except CustodyError:
        return factory.file_parent(path)


def _markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# HQ reconciliation {report['range']['start']} .. {report['range']['end']}",
        "",
        (
            f"As of {report['as_of']}; {report['windows_compared']} hour windows compared; "
            f"source schema `{report['source_schema']}`; "
            f"{'all checks passed' if report['passed'] else 'some checks failed'}."
        ),
        "",
        "## Checks",
        "",
        "| dataset | check | severity | result | summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in report["checks"]:
        lines.append(
            f"| {c['dataset']} | {c['check']} | {c['severity']} | "
            f"{'passed' if c['passed'] else 'FAILED'} | {c['summary']} |"
        )
    lines += ["", "## What differed", ""]
    any_diff = False
    for name, entry in report["datasets"].items():
        parity = entry["parity"]
        for kind in ("missing_in_export", "extra_in_export", "different"):
            keys = parity[kind]
            if not keys:
                continue
            any_diff = True
            lines.append(f"- `{name}` {kind.replace('_', ' ')} ({parity['counts'][kind]}):")
            for key in keys:
                lines.append("  - " + ", ".join(f"{k}={v}" for k, v in key.items()))
        if parity["keys_truncated"]:
            lines.append(f"- `{name}`: key list capped at {report['options']['key_cap']}")
    if not any_diff:
        lines.append("Nothing: every window's rows and checksums agree.")
    lines += ["", "## Healing", ""]
    heal = report["heal_windows"]
    lines.append(
        f"Windows to re-export: {', '.join(heal)}." if heal else "No window needs re-exporting."
    )
    healed = report["healed"]
    if healed["previous_report"]:
        lines.append(
            f"Since `{healed['previous_report']}`: healed {', '.join(healed['windows']) or 'none'}; "
            f"still failing {', '.join(healed['still_failing']) or 'none'}."
        )
    lines += [
        "",
        "## Segments compared",
        "",
        "| dataset | windows | segments | by level | rows fetched | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["datasets"].items():
        p = entry["parity"]
        lines.append(
            f"| {name} | {p['windows_compared']} | {p['segments_compared']} | "
            f"{json.dumps(p['segments_by_level'])} | {p['rows_fetched']} | {p['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    lake_root: str | UPath,
    report: dict[str, Any],
    *,
    source_dsn: str,
    run_id: str,
    code_version: str,
) -> tuple[UPath, UPath]:
    """Write the report as JSON and Markdown with sidecars; returns both paths.

    The JSON's parents are the source (a query parent: the redacted DSN and schema, hashed over the
    source's per-window summaries) and every export file compared; the Markdown's parent is the JSON.
    """
    folder = report_folder(lake_root)
    folder.mkdir(parents=True, exist_ok=True)
    # Named by the time of writing, so that names sort in the order reports were made.
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    base = f"{REPORT_PREFIX}{stamp}_{run_id[:8]}"
    json_path, md_path = folder / f"{base}.json", folder / f"{base}.md"
    report["report_file"] = json_path.name
    report["run_id"] = run_id
    factory = MetadataFactory(lake_root, code_version=code_version)
    files = sorted({f for fs in report["export_files"].values() for f in fs}, key=str)
    parents = [
        ParentRef(
            kind="query",
            path=f"{source_dsn}#{report['source_schema']}",
            sha256=report["source_sha256"],
            details={
                "relations": [f"{report['source_schema']}.{s.table}" for s in DATASETS],
                "range": report["range"],
                "encoding": "per window and org: rows and both 60-bit row-hash sums, as JSON",
            },
        ),
        *(_file_parent(factory, f) for f in files),
    ]
    body = {k: v for k, v in report.items() if k != "export_files"}
    body["export_files_compared"] = len(files)
    body = json.loads(json.dumps(body, default=str))
    # The published contract of the report: a report that does not follow it is not written.
    HqReconciliationReport.model_validate(body)
    data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    sha = write_bytes_atomic(json_path, data)
    params = {"range": report["range"], "as_of": report["as_of"]}
    write_sidecar(
        json_path,
        factory.processed(
            json_path,
            sha256=sha,
            size_bytes=len(data),
            parents=parents,
            transformation_name=TRANSFORMATION_NAME,
            transformation_params=params,
            asset_key=TRANSFORMATION_NAME,
            run_id=run_id,
        ),
    )
    text = _markdown(report).encode()
    md_sha = write_bytes_atomic(md_path, text)
    write_sidecar(
        md_path,
        factory.processed(
            md_path,
            sha256=md_sha,
            size_bytes=len(text),
            parents=[factory.file_parent(json_path, sha256=sha)],
            transformation_name=f"{TRANSFORMATION_NAME}_markdown",
            transformation_params=params,
            asset_key=TRANSFORMATION_NAME,
            run_id=run_id,
        ),
    )
    return json_path, md_path


def windows_in(keys: Sequence[str], start: dt.datetime, end: dt.datetime) -> list[str]:
    """The keys whose window starts in [start, end)."""
    return [
        k for k in keys if start <= dt.datetime.strptime(k, KEY_FORMAT).replace(tzinfo=dt.UTC) < end
    ]
