"""Shared fixtures: a temporary lake and a real ephemeral Dagster instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipeline_assets.resources.lake_io_manager import LakeIOManager


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture
def lake_io(lake_root: Path) -> LakeIOManager:
    return LakeIOManager(lake_root=str(lake_root))


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst
