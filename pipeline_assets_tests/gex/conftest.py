"""Shared GEX fixtures: an importer on a temporary data root, and helpers to write source files."""

import json
from pathlib import Path

import pytest

from pipeline_assets.lib.gex.imports import GexConfig, GexImporter

FIXTURES = Path(__file__).parent / "fixtures"


def snapshot(ts: int = 1771511400, ticker: str = "SPX", strikes: int = 3, **extra) -> dict:
    """A gex_zero record with the live probe's fields."""
    record = {
        "timestamp": ts,
        "ticker": ticker,
        "min_dte": 0,
        "sec_min_dte": 1,
        "spot": 6050.25,
        "zero_gamma": 6032.5,
        "major_pos_vol": 6100.0,
        "major_pos_oi": 6075.0,
        "major_neg_vol": 6000.0,
        "major_neg_oi": 5990.0,
        "strikes": [
            [6000.0 + 5 * i, 1.5 * i, -2.25 * i, [0.1 * i, 0.2, None]] for i in range(strikes)
        ],
        "sum_gex_vol": 12.5,
        "sum_gex_oi": -3.75,
        "delta_risk_reversal": 0.042,
        "max_priors": [[6000.0, 1.25], [6005.0, None]],
    }
    record.update(extra)
    return record


def write_json(folder: Path, name: str, obj) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def importer(data_root: Path) -> GexImporter:
    config = GexConfig(
        max_download_bytes=2_000_000, download_timeout=2.0, download_attempts=2, backoff_base=0.01
    )
    return GexImporter(data_root, config)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return tmp_path / "remote"
