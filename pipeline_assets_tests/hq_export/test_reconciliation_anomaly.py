"""The status-distribution anomaly test and the null rates (lib/hq/reconcile_quality.py): the
chi-square tail against published table values, the test's properties (hypothesis), a day whose
failed-run share jumps is flagged while ordinary days stay quiet (runs read back from Parquet
with DuckDB), and null rates of the critical fields against their limits."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_assets.lib.hq.datasets import COMPANIES, PERSONS
from pipeline_assets.lib.hq.reconcile_quality import (
    chi2_sf,
    chi_square_homogeneity,
    null_rates,
    status_anomalies,
    status_counts_by_day,
)

STATUSES = ["succeeded", "failed", "skipped", "canceled"]


@pytest.mark.parametrize(
    ("critical", "df", "alpha"),
    # Critical values from the standard chi-square table (NIST/SEMATECH e-Handbook, 1.3.6.7.4).
    [
        (3.841, 1, 0.05),
        (10.828, 1, 0.001),
        (7.815, 3, 0.05),
        (16.266, 3, 0.001),
        (18.307, 10, 0.05),
    ],
)
def test_chi_square_tail_matches_the_published_table(critical, df, alpha):
    assert chi2_sf(critical, df) == pytest.approx(alpha, rel=2e-3)


counts = st.dictionaries(st.sampled_from(STATUSES), st.integers(0, 5000), min_size=1)


@given(day=counts, baseline=counts)
def test_the_homogeneity_test_gives_a_probability(day, baseline):
    stat, df, p = chi_square_homogeneity(day, baseline)
    assert stat >= 0 and 0.0 <= p <= 1.0
    assert df <= len(set(day) | set(baseline)) - 1 or df == 0


@given(day=counts, factor=st.integers(1, 9))
def test_a_baseline_with_the_same_mix_is_never_anomalous(day, factor):
    stat, _, p = chi_square_homogeneity(day, {k: v * factor for k, v in day.items()})
    assert stat == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0)


def _runs_files(folder: Path, daily: dict[str, list[str]]) -> list[str]:
    """One Parquet file per day of exported runs (created_at, status), as the lake holds them."""
    files = []
    for day, statuses in daily.items():
        start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        table = pa.table(
            {
                "created_at": pa.array(
                    [start + dt.timedelta(seconds=i * 80) for i in range(len(statuses))],
                    pa.timestamp("us", tz="UTC"),
                ),
                "status": statuses,
            }
        )
        path = folder / f"{day}.parquet"
        pq.write_table(table, path)
        files.append(str(path))
    return files


def _day(rng: random.Random, failed_share: float, n: int = 480) -> list[str]:
    rest = 1 - failed_share
    weights = [0.85 * rest, failed_share, 0.10 * rest, 0.05 * rest]
    return rng.choices(STATUSES, weights, k=n)


def test_a_jump_in_the_failed_share_fires_and_ordinary_days_stay_quiet(tmp_path):
    rng = random.Random(7)
    first = dt.date(2026, 3, 1)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(22)]
    daily = {d: _day(rng, 0.12) for d in days[:-1]}
    daily[days[-1]] = _day(rng, 0.30)  # the failed share jumps from 12% to 30%
    counts = status_counts_by_day(_runs_files(tmp_path, daily))
    assert {d: sum(c.values()) for d, c in counts.items()} == {d: 480 for d in days}

    tests = status_anomalies(counts, days)
    by_day = {t.day: t for t in tests}
    assert not by_day[days[0]].tested  # no baseline before the first day
    ordinary = [by_day[d] for d in days[7:-1]]
    assert all(t.tested and not t.anomalous for t in ordinary)
    jump = by_day[days[-1]]
    assert jump.anomalous and jump.p_value < 1e-6
    assert jump.failed_share > 0.25 and jump.baseline_failed_share < 0.15


def test_a_small_shift_on_a_busy_day_is_not_anomalous():
    base = {"succeeded": 80_000, "failed": 12_000, "skipped": 5_000, "canceled": 3_000}
    day = {"succeeded": 11_100, "failed": 2_050, "skipped": 550, "canceled": 300}
    counts = {"2026-03-01": base, "2026-03-02": day}
    (test,) = status_anomalies(counts, ["2026-03-02"], baseline_days=1)
    # Significant for the test (p tiny on 14,000 runs), but no share moved by 5 points.
    assert test.p_value < 0.001 and test.max_shift < 0.05 and not test.anomalous


def test_null_rates_of_the_critical_fields_against_their_limits(tmp_path):
    companies = pa.table(
        {
            "canonical_domain": ["a.com", None, "c.com", "d.com"],
            "canonical_name": [None, None, "C", "D"],
        }
    )
    persons = pa.table(
        {
            "full_name": [None, None, "Ada Ito", None],
            "first_name": ["Lin", None, None, "Sam"],
            "last_name": ["Berg", "Kahn", None, None],
        }
    )
    pq.write_table(companies, tmp_path / "c.parquet")
    pq.write_table(persons, tmp_path / "p.parquet")
    limits = {"canonical_domain": 0.3, "canonical_name": 0.3, "person_name": 0.6}
    company = null_rates([str(tmp_path / "c.parquet")], COMPANIES, limits)
    assert company.rates == {"canonical_domain": 0.25, "canonical_name": 0.5}
    assert company.over_limit == {"canonical_name": 0.5} and not company.passed
    # A person is named by full_name or by first and last name: rows 2 and 4 have neither.
    person = null_rates([str(tmp_path / "p.parquet")], PERSONS, limits)
    assert person.rates == {"person_name": 0.5} and person.passed
