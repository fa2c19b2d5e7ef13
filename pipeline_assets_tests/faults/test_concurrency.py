"""Concurrency: GEX imports and enqueues from several processes at once, two overlapping market
backfills at once, an HQ micro-batch beside the reconciliation: no lock error, no lost job, and
the result of a run alone."""

from __future__ import annotations

import pytest

from pipeline_assets_tests.faults import probes
from pipeline_assets_tests.faults.test_source_faults import assert_ok


@pytest.mark.slow
def test_gex_imports_and_enqueues_from_several_processes(base):
    assert_ok(probes.probe_gex_concurrency(base, processes=3, files_each=2))


@pytest.mark.slow
def test_overlapping_market_backfills_at_once_equal_one_sequential_backfill(base):
    assert_ok(probes.probe_overlapping_backfills(base))


@pytest.mark.slow
def test_hq_microbatch_beside_the_reconciliation(base, hq_source):
    assert_ok(probes.probe_microbatch_and_reconciliation(base, hq_source))
