"""Source faults: PostgreSQL stopped mid-export and started again (retried, completed, no row
twice), a collector writing its SQLite file during exports, worker files truncated or replaced by
garbage, and HTTP sources that time out, answer 500 or close mid-body."""

from __future__ import annotations

import pytest

from pipeline_assets_tests.faults import probes


def assert_ok(result: probes.ProbeResult) -> None:
    assert result.runs > 0
    assert (result.lost, result.duplicates, result.partial, result.errors) == (0, 0, 0, 0), (
        result.details
    )
    assert result.ok


@pytest.mark.slow
def test_postgres_stopped_mid_export_is_retried_without_duplicates(base, hq_source):
    result = probes.probe_postgres_restart(base, hq_source)
    assert_ok(result)
    assert any("retry logged: True" in d for d in result.details), result.details


def test_a_collector_writing_during_exports_loses_and_repeats_nothing(base):
    result = probes.probe_collector_writing(base, seconds=3.0)
    assert_ok(result)
    assert result.runs >= 2


def test_damaged_worker_files_are_refused_by_name_and_skipped_on_request(base):
    assert_ok(probes.probe_bad_worker_files(base))


def test_http_sources_that_time_out_fail_or_cut_off_fail_the_job_then_import(base):
    assert_ok(probes.probe_http_source_faults(base))
