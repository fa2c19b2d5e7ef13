"""The whole code location loads and validates, through Python and through `workspace.yaml`."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipeline_assets.definitions import build_resources, defs
from pipeline_assets.lib.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent

# The asset keys DESIGN.md fixes; each must, once it exists, sit in its group.
FIXED_GROUPS = {
    "staging_export": "market_data",
    "bronze_orderbook": "market_data",
    "bronze_trades": "market_data",
    "bronze_ticker": "market_data",
    "silver_orderbook_features": "market_data",
    "silver_trade_features": "market_data",
    "silver_ticker_features": "market_data",
    "gold_bars_1m": "market_data",
    "gex_strikes": "gex",
    "dx_operation_runs_v1": "hq_export",
    "dx_operation_events_v1": "hq_export",
    "dx_company_entities_v1": "hq_export",
    "dx_person_entities_v1": "hq_export",
    "dx_entity_snapshots_v1": "hq_export",
}


@pytest.fixture
def loaded(tmp_path, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("PIPELINE_DATA_ROOT", str(tmp_path / "data"))
    return defs()


def test_definitions_validate(loaded):
    dg.Definitions.validate_loadable(loaded)
    assert {"io_manager", "source_postgres"} <= set(loaded.resources)


def test_fixed_assets_sit_in_their_groups_and_explain_themselves(loaded):
    graph = loaded.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        if name in FIXED_GROUPS:
            assert node.group_name == FIXED_GROUPS[name], name
        assert node.description, f"{name} has no description"


def test_workspace_yaml_validates_with_the_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(REPO), "PIPELINE_DATA_ROOT": str(tmp_path / "data")}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_settings_defaults_and_errors(tmp_path):
    settings = Settings.from_env({})
    assert settings.data_root == (Path.cwd() / "data").resolve()
    assert settings.lake_root == str(settings.data_root)
    assert settings.dx_source_dsn is None and str(settings.market_start_date) == "2020-01-01"
    s3 = Settings.from_env(
        {"PIPELINE_DATA_ROOT": str(tmp_path), "PIPELINE_LAKE_ROOT": "s3://bucket/lake/"}
    )
    assert s3.lake_root == "s3://bucket/lake" and s3.data_root == tmp_path
    with pytest.raises(
        SettingsError, match="PIPELINE_MARKET_START_DATE='yesterday': expected a date"
    ):
        Settings.from_env({"PIPELINE_MARKET_START_DATE": "yesterday"})
    with pytest.raises(SettingsError, match="expected a local folder"):
        Settings.from_env({"PIPELINE_DATA_ROOT": "s3://bucket/data"})


def test_secrets_are_bound_through_env_vars_not_values(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DX_SOURCE_DSN", "postgresql://app:hunter2@db.internal/ops")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    resources = build_resources(Settings.from_env({"PIPELINE_DATA_ROOT": str(tmp_path)}))
    # The resources hold references to the variables, so the values never enter run config or the UI.
    assert isinstance(resources["source_postgres"].dsn, dg.EnvVar)
    assert isinstance(resources["io_manager"].aws_secret_access_key, dg.EnvVar)
    assert "hunter2" not in repr(resources) and "s3cr3t-value" not in repr(resources)
