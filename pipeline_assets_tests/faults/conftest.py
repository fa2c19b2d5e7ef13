"""Shared fixtures of the fault suite: a scratch folder outside pytest's basetemp (the embedded
PostgreSQL runs as its own user), and one seeded HQ source with its clean export per module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_assets_tests.faults.crash_scenarios import HqCrash


@pytest.fixture
def base() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="faults_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def hq_source() -> Iterator[HqCrash]:
    """The embedded PostgreSQL seeded with three demo hours, and the clean export's figures."""
    folder = Path(tempfile.mkdtemp(prefix="faults_hq_"))
    scenario = HqCrash()
    scenario.setup(folder)
    yield scenario
    scenario.teardown()
    shutil.rmtree(folder, ignore_errors=True)
