"""The reconciliation's rate and freshness measures: export lag, null rates of critical fields, and
the status-distribution anomaly test of `dx_operation_runs_v1`.

All read the exported Parquet back with DuckDB (and the source's newest time from Postgres for the
lag), so they describe what HQ receives.

The anomaly test: for a day D, the status counts of D against the summed counts of the
`baseline_days` days before it form a 2 x k contingency table (k = statuses seen); Pearson's
chi-square test of homogeneity gives a p-value (chi-square distribution, k - 1 degrees of
freedom). D is anomalous when p < `alpha` (0.001) AND some status's share moved by at least
`min_shift` (5 percentage points): with hundreds of runs a day, the test alone would flag shifts
too small to matter, and the share threshold alone would flag noise on quiet days. Days with fewer
than `min_day_rows` runs, or a baseline with fewer than `min_baseline_rows`, are not tested.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from upath import UPath

from pipeline_assets.lib.hq.datasets import COMPANIES, PERSONS, SOURCE_SCHEMA, DatasetSpec
from pipeline_assets.lib.hq.lake_files import (
    connect,
    files_sql,
    window_files,
    window_keys,
)
from pipeline_assets.lib.hq.windows import newest_time

# Critical fields of the contract (spec, "Data Quality & Reconciliation"), as SQL predicates that
# are true for a row missing them.
NULL_FIELDS: dict[str, dict[str, str]] = {
    COMPANIES.name: {
        "canonical_domain": "canonical_domain IS NULL",
        "canonical_name": "canonical_name IS NULL",
    },
    PERSONS.name: {
        # A person is named by full_name, or else by first_name and last_name together.
        "person_name": "full_name IS NULL AND (first_name IS NULL OR last_name IS NULL)",
    },
}
ANOMALY_ALPHA = 0.001
ANOMALY_MIN_SHIFT = 0.05
ANOMALY_BASELINE_DAYS = 7
ANOMALY_MIN_DAY_ROWS = 50
ANOMALY_MIN_BASELINE_ROWS = 100


def _minutes(delta: dt.timedelta) -> float:
    return round(delta.total_seconds() / 60.0, 3)


# --- lag ----------------------------------------------------------------------------------------


def exported_window_keys(lake_root: str | UPath, asset: str) -> list[str]:
    """Window keys that are in the lake, oldest first."""
    return window_keys(lake_root, asset)


def newest_exported(lake_root: str | UPath, spec: DatasetSpec) -> dt.datetime | None:
    """The newest value of the dataset's time column in the lake (from its newest window with rows)."""
    for key in reversed(exported_window_keys(lake_root, spec.name)):
        files = window_files(lake_root, spec.name, [key])[key]
        if not files:
            continue
        con = connect(files)
        try:
            (newest,) = con.execute(
                f'SELECT max("{spec.time_column}") FROM read_parquet({files_sql(files)}, '
                "hive_partitioning = false)"
            ).fetchone()
        finally:
            con.close()
        if newest is not None:
            return newest.astimezone(dt.UTC)
    return None


@dataclass
class LagResult:
    """How far the export trails: `lag_minutes` = min(as_of, newest source row) - newest exported
    row, so an idle source is not a lagging export; `behind_as_of_minutes` = as_of - newest
    exported (the spec's `now - latest_exported_timestamp`), reported alongside."""

    dataset: str
    as_of: str
    newest_exported: str | None
    newest_source: str | None
    lag_minutes: float | None
    behind_as_of_minutes: float | None
    limit_minutes: float
    passed: bool


def export_lag(
    conn: psycopg.Connection,
    lake_root: str | UPath,
    spec: DatasetSpec,
    as_of: dt.datetime,
    limit_minutes: float,
    *,
    schema: str = SOURCE_SCHEMA,
) -> LagResult:
    exported = newest_exported(lake_root, spec)
    source = newest_time(conn, spec, schema=schema)
    source = source.astimezone(dt.UTC) if source is not None else None
    lag: float | None
    if source is None:
        lag = 0.0  # nothing to export
    elif exported is None:
        lag = None  # the source has rows and nothing is exported at all
    else:
        lag = max(0.0, _minutes(min(as_of, source) - exported))
    return LagResult(
        dataset=spec.name,
        as_of=as_of.isoformat(),
        newest_exported=exported.isoformat() if exported else None,
        newest_source=source.isoformat() if source else None,
        lag_minutes=lag,
        behind_as_of_minutes=_minutes(as_of - exported) if exported else None,
        limit_minutes=limit_minutes,
        passed=lag is not None and lag <= limit_minutes,
    )


# --- null rates ---------------------------------------------------------------------------------


@dataclass
class NullRates:
    dataset: str
    rows: int
    rates: dict[str, float]
    limits: dict[str, float]
    over_limit: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.over_limit


def null_rates(files: Sequence[str], spec: DatasetSpec, limits: Mapping[str, float]) -> NullRates:
    """Null shares of the dataset's critical fields over the files (0 when there are no rows)."""
    fields = NULL_FIELDS.get(spec.name, {})
    if not files or not fields:
        return NullRates(spec.name, 0, dict.fromkeys(fields, 0.0), {f: limits[f] for f in fields})
    con = connect(files)
    try:
        row = con.execute(
            "SELECT count(*), "
            + ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in fields.values())
            + f" FROM read_parquet({files_sql(files)}, hive_partitioning = false)"
        ).fetchone()
    finally:
        con.close()
    total = int(row[0])
    rates = {name: (n / total if total else 0.0) for name, n in zip(fields, row[1:])}
    used = {f: float(limits[f]) for f in fields}
    over = {f: r for f, r in rates.items() if r > used[f]}
    return NullRates(spec.name, total, {f: round(r, 6) for f, r in rates.items()}, used, over)


# --- status anomaly -----------------------------------------------------------------------------


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with `df` degrees of freedom: the regularized upper
    incomplete gamma function Q(df/2, x/2), by its series or its continued fraction."""
    if x <= 0:
        return 1.0
    s, z = df / 2.0, x / 2.0
    log_front = s * math.log(z) - z - math.lgamma(s)
    if z < s + 1:
        term = total = 1.0 / s
        a = s
        for _ in range(1000):
            a += 1
            term *= z / a
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Lentz's continued fraction for Q.
    tiny = 1e-300
    b = z + 1 - s
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - s)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi_square_homogeneity(
    day: Mapping[str, int], baseline: Mapping[str, int]
) -> tuple[float, int, float]:
    """Pearson's chi-square test that two count vectors share one distribution: (statistic,
    degrees of freedom, p-value)."""
    categories = sorted(k for k in set(day) | set(baseline) if day.get(k, 0) + baseline.get(k, 0))
    n_day, n_base = sum(day.values()), sum(baseline.values())
    total = n_day + n_base
    if len(categories) < 2 or not n_day or not n_base:
        return 0.0, 0, 1.0
    stat = 0.0
    for k in categories:
        col = day.get(k, 0) + baseline.get(k, 0)
        for observed, row_total in ((day.get(k, 0), n_day), (baseline.get(k, 0), n_base)):
            expected = row_total * col / total
            stat += (observed - expected) ** 2 / expected
    df = len(categories) - 1
    return stat, df, chi2_sf(stat, df)


def status_counts_by_day(files: Sequence[str]) -> dict[str, dict[str, int]]:
    """Exported runs per UTC day of created_at and status."""
    if not files:
        return {}
    con = connect(files)
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            "SELECT strftime(created_at, '%Y-%m-%d'), status, count(*) FROM "
            f"read_parquet({files_sql(files)}, hive_partitioning = false) GROUP BY 1, 2"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, int]] = {}
    for day, status, n in rows:
        out.setdefault(day, {})[status] = int(n)
    return out


@dataclass
class DayTest:
    day: str
    rows: int
    baseline_days: list[str]
    baseline_rows: int
    shares: dict[str, float]
    baseline_shares: dict[str, float]
    failed_share: float
    baseline_failed_share: float | None
    chi_square: float | None
    degrees_of_freedom: int | None
    p_value: float | None
    max_shift: float | None
    tested: bool
    anomalous: bool
    note: str = ""


def status_anomalies(
    counts_by_day: Mapping[str, Mapping[str, int]],
    days: Sequence[str],
    *,
    baseline_days: int = ANOMALY_BASELINE_DAYS,
    alpha: float = ANOMALY_ALPHA,
    min_shift: float = ANOMALY_MIN_SHIFT,
    min_day_rows: int = ANOMALY_MIN_DAY_ROWS,
    min_baseline_rows: int = ANOMALY_MIN_BASELINE_ROWS,
) -> list[DayTest]:
    """The anomaly test of each day in `days` against the `baseline_days` days before it."""
    tests = []
    for day in days:
        today = dict(counts_by_day.get(day, {}))
        d = dt.date.fromisoformat(day)
        before = [(d - dt.timedelta(days=i)).isoformat() for i in range(baseline_days, 0, -1)]
        base: dict[str, int] = {}
        for b in before:
            for status, n in counts_by_day.get(b, {}).items():
                base[status] = base.get(status, 0) + n
        n_day, n_base = sum(today.values()), sum(base.values())
        statuses = sorted(set(today) | set(base))
        shares = {s: round(today.get(s, 0) / n_day, 6) if n_day else 0.0 for s in statuses}
        base_shares = {s: round(base.get(s, 0) / n_base, 6) if n_base else 0.0 for s in statuses}
        used = [b for b in before if counts_by_day.get(b)]
        if n_day < min_day_rows or n_base < min_baseline_rows:
            tests.append(
                DayTest(
                    day,
                    n_day,
                    used,
                    n_base,
                    shares,
                    base_shares,
                    shares.get("failed", 0.0),
                    base_shares.get("failed") if n_base else None,
                    None,
                    None,
                    None,
                    None,
                    tested=False,
                    anomalous=False,
                    note=(
                        f"not tested: {n_day} runs on the day (need {min_day_rows}) and {n_base} "
                        f"in the baseline (need {min_baseline_rows})"
                    ),
                )
            )
            continue
        stat, df, p = chi_square_homogeneity(today, base)
        shift = max(abs(shares[s] - base_shares[s]) for s in statuses)
        tests.append(
            DayTest(
                day,
                n_day,
                used,
                n_base,
                shares,
                base_shares,
                shares.get("failed", 0.0),
                base_shares.get("failed", 0.0),
                round(stat, 4),
                df,
                p,
                round(shift, 6),
                tested=True,
                anomalous=p < alpha and shift >= min_shift,
            )
        )
    return tests


def days_of(start: dt.datetime, end: dt.datetime) -> list[str]:
    """UTC days touched by [start, end)."""
    first = start.astimezone(dt.UTC).date()
    last = (end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def as_plain(obj: Any) -> Any:
    """A result dataclass as plain JSON-ready data."""
    return asdict(obj)
