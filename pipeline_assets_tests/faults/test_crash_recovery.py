"""Runs killed with SIGKILL at seeded random moments (staging export, bronze/silver/gold, GEX
import, HQ export) leave no partial canonical file and no watermark ahead of the data, and their
reruns lose no row, duplicate none and equal a clean run; the many-crash part is marked slow."""

from __future__ import annotations

import pytest

from pipeline_assets_tests.faults.campaign import CrashTally, run_campaign
from pipeline_assets_tests.faults.crash_scenarios import GexCrash, HqCrash, LakeCrash, StagingCrash


def assert_clean(tally: CrashTally, crashes: int) -> None:
    found = tally.found
    assert tally.crashes >= crashes, tally
    assert found.partial_files == 0, found.problems
    assert found.watermarks_ahead == 0, found.problems
    assert found.rows_lost == 0, found.problems
    assert found.rows_duplicated == 0, found.problems
    assert found.rerun_differs == 0, found.problems
    assert tally.recovered == tally.runs_tried


def test_killed_staging_exports_recover(base):
    assert_clean(run_campaign(StagingCrash(), base, crashes=2, seed=10), 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "crashes"),
    [(StagingCrash, 6), (GexCrash, 4), (LakeCrash, 2), (HqCrash, 2)],
    ids=["staging", "gex", "lake", "hq"],
)
def test_many_killed_runs_recover(base, scenario, crashes):
    assert_clean(run_campaign(scenario(), base, crashes=crashes, seed=20), crashes)


def test_inspection_sees_a_partial_file(base):
    """The inspection is not blind: a truncated canonical file is counted as partial."""
    scenario = StagingCrash()
    root = scenario.setup(base)
    victim = next(p for p in sorted((root / "staging").glob("*.sqlite")))
    victim.write_bytes(victim.read_bytes()[:1000])
    assert scenario.after_kill(root).partial_files == 1
