"""Asset checks of the HQ export: each tests one property of the windows a run wrote, read back.

Declared as `check_specs` on the `hq_export` multi-asset and evaluated inside its step after the
files are written (as the bronze checks are): a single-run backfill is one step over many windows,
and the result then covers every window of the run, naming the failing ones. The checks read the
written files back (DuckDB, or pyarrow in batches), not the writer's in-memory rows.

Blocking (governance, keys, tenancy, security): a failure fails the step after every result is
reported, so nothing downstream trusts a window that broke contract v1.
"""

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from contracts.core import ContractModel
from contracts.hq import DxDeadLetter
from pipeline_assets.lib.hq import verify
from pipeline_assets.lib.hq.datasets import DATASETS_BY_NAME

COLUMNS_MATCH_CONTRACT_V1 = "columns_match_contract_v1"
EXPORT_SCHEMA_VERSION_IS_V1 = "export_schema_version_is_v1"
PRIMARY_KEY_UNIQUE = "primary_key_unique"
UNIQUENESS_GUARD_HOLDS = "uniqueness_guard_holds"
EVERY_ROW_HAS_ORG_ID = "every_row_has_org_id"
NO_SECRETS_IN_TEXT = "no_secrets_in_text"

DEAD_LETTER = "dx_dead_letter"

_DESCRIPTIONS = {
    COLUMNS_MATCH_CONTRACT_V1: (
        "Passes when every file written has exactly the columns of contract v1 (names, types, "
        "nullability). An additive column passes only once the contract declares it; a missing, "
        "renamed or retyped column fails and is named."
    ),
    EXPORT_SCHEMA_VERSION_IS_V1: "Passes when every row written has export_schema_version = 'v1'.",
    PRIMARY_KEY_UNIQUE: (
        "Passes when the contract's primary key is unique: within the windows written for an "
        "append dataset, across the whole dataset for an upsert dataset (one row per "
        "(org_id, entity_id))."
    ),
    UNIQUENESS_GUARD_HOLDS: "Passes when the contract's uniqueness guard holds in the windows written.",
    EVERY_ROW_HAS_ORG_ID: "Passes when every row written has an org_id (every row is tenant-scoped).",
    NO_SECRETS_IN_TEXT: (
        "Passes when no text value written holds a credential-looking value (api_key=..., "
        "Bearer tokens, sk_live_..., AKIA..., JWTs) other than the '[REDACTED]' marker."
    ),
}


def checks_for(asset: str) -> tuple[str, ...]:
    if asset == DEAD_LETTER:
        return (COLUMNS_MATCH_CONTRACT_V1, NO_SECRETS_IN_TEXT)
    spec = DATASETS_BY_NAME[asset]
    names = [COLUMNS_MATCH_CONTRACT_V1, EXPORT_SCHEMA_VERSION_IS_V1, PRIMARY_KEY_UNIQUE]
    if spec.guards:
        names.append(UNIQUENESS_GUARD_HOLDS)
    return (*names, EVERY_ROW_HAS_ORG_ID, NO_SECRETS_IN_TEXT)


def hq_check_specs(assets: Sequence[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=_DESCRIPTIONS[name], blocking=True)
        for asset in assets
        for name in checks_for(asset)
    ]


def _model(asset: str) -> type[ContractModel]:
    return DxDeadLetter if asset == DEAD_LETTER else DATASETS_BY_NAME[asset].model


def _evaluate(
    name: str, asset: str, files: list[str], dataset_files: Callable[[], list[str]]
) -> tuple[bool, dict[str, Any]]:
    if name == COLUMNS_MATCH_CONTRACT_V1:
        return verify.columns_match_contract(files, _model(asset))
    if name == EXPORT_SCHEMA_VERSION_IS_V1:
        return verify.schema_version_is_v1(files)
    if name == EVERY_ROW_HAS_ORG_ID:
        return verify.org_id_present(files)
    if name == NO_SECRETS_IN_TEXT:
        return verify.no_secrets(files)
    spec = DATASETS_BY_NAME[asset]
    if name == PRIMARY_KEY_UNIQUE:
        return verify.unique(dataset_files() if spec.upsert else files, spec.primary_key)
    (guard,) = spec.guards
    return verify.unique(files, guard)


def hq_check_results(
    assets: Sequence[str],
    files_by_asset: Mapping[str, Mapping[str, list[str]]],
    dataset_files: Callable[[str], list[str]],
) -> Iterator[dg.AssetCheckResult]:
    """One result per asset and check over every window of the run; failing windows named.

    `files_by_asset[asset][window]` are the files the run wrote; `dataset_files(asset)` lists
    every file of the dataset (for the upsert key, which spans windows).
    """
    for asset in assets:
        windows = files_by_asset.get(asset, {})
        all_files = [f for files in windows.values() for f in files]
        for name in checks_for(asset):
            passed, figures = _evaluate(
                name, asset, all_files, functools.partial(dataset_files, asset)
            )
            metadata: dict[str, Any] = {
                "windows_checked": dg.MetadataValue.int(len(windows)),
                "files_checked": dg.MetadataValue.int(len(all_files)),
                "figures": dg.MetadataValue.json(figures),
            }
            if not passed and name != PRIMARY_KEY_UNIQUE and len(windows) > 1:
                failing = [
                    w for w, files in windows.items() if not _evaluate(name, asset, files, list)[0]
                ]
                metadata["failed_windows"] = dg.MetadataValue.json(failing)
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=passed,
                metadata=metadata,
                description=None if passed else f"{name} failed for {asset}: {figures}"[:2000],
            )
