"""The staleness limit comes from PIPELINE_MARKET_STALENESS_LIMIT_S into the features resource;
bad values are refused naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_assets.definitions import build_resources
from pipeline_assets.lib.settings import Settings, SettingsError


def test_the_staleness_limit_reaches_the_feature_parameters(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"PIPELINE_DATA_ROOT": str(tmp_path), "PIPELINE_MARKET_STALENESS_LIMIT_S": "90"}
    )
    params = build_resources(settings)["market_features"].params()
    assert params.staleness_limit_s == 90.0 and params.staleness_us == 90_000_000
    assert (
        Settings.from_env({"PIPELINE_DATA_ROOT": str(tmp_path)}).market_staleness_limit_s == 300.0
    )


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_a_bad_staleness_limit_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(
        SettingsError, match=f"PIPELINE_MARKET_STALENESS_LIMIT_S='{value}': expected"
    ):
        Settings.from_env(
            {"PIPELINE_DATA_ROOT": str(tmp_path), "PIPELINE_MARKET_STALENESS_LIMIT_S": value}
        )
