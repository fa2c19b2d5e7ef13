"""Asset checks of `staging_export`: the run contract's validation rules, one property per check,
and the metadata file against the contract's published JSON Schema.

They are declared as `check_specs` on the asset and evaluated inside its step on the metadata file
as written to disk, before the exporter's commit point: every check is blocking, and when one
fails the run's files are removed and the state is not moved, so nothing downstream ever sees an
export whose metadata breaks its contract.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from pipeline_assets.lib.market.staging_export import VALIDATION_RULES, json_schema_errors

RUN_STARTED_NOT_AFTER_FINISHED = "run_started_not_after_finished"
WINDOW_START_NOT_AFTER_END = "window_start_not_after_end"
MARKET_TICKS_BOUNDS_ORDERED = "market_ticks_bounds_ordered"
CONNECTION_EVENTS_BOUNDS_ORDERED = "connection_events_bounds_ordered"
WORKER_DB_COUNT_MATCHES_FILES = "worker_db_count_matches_files"
MARKET_TICKS_ROW_COUNT_NON_NEGATIVE = "market_ticks_row_count_non_negative"
CONNECTION_EVENTS_ROW_COUNT_NON_NEGATIVE = "connection_events_row_count_non_negative"
METADATA_MATCHES_JSON_SCHEMA = "metadata_matches_json_schema"

RULE_CHECKS: tuple[str, ...] = (
    RUN_STARTED_NOT_AFTER_FINISHED,
    WINDOW_START_NOT_AFTER_END,
    MARKET_TICKS_BOUNDS_ORDERED,
    CONNECTION_EVENTS_BOUNDS_ORDERED,
    WORKER_DB_COUNT_MATCHES_FILES,
    MARKET_TICKS_ROW_COUNT_NON_NEGATIVE,
    CONNECTION_EVENTS_ROW_COUNT_NON_NEGATIVE,
)
STAGING_CHECKS: tuple[str, ...] = (*RULE_CHECKS, METADATA_MATCHES_JSON_SCHEMA)


def _description(name: str) -> str:
    if name == METADATA_MATCHES_JSON_SCHEMA:
        return (
            "Passes when the run's <export_base>_metadata.json, read back from disk, validates "
            "against the published JSON Schema of contract staging_export_run_metadata 1.0.0 "
            "(contracts/schemas/): every required field present, typed, nothing extra."
        )
    expression = VALIDATION_RULES[name].expression  # type: ignore[attr-defined]
    return f"Passes when the metadata file satisfies the run contract's rule `{expression}`."


def staging_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, description=_description(name), blocking=True)
        for name in STAGING_CHECKS
    ]


def staging_check_results(asset: str, metadata_path: Path) -> list[dg.AssetCheckResult]:
    """One result per check, evaluated on the metadata file as it is on disk."""
    doc = json.loads(metadata_path.read_bytes())
    results = []
    for name in RULE_CHECKS:
        passed, expression = VALIDATION_RULES[name](doc)
        results.append(
            dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=passed,
                description=None
                if passed
                else f"{metadata_path.name} breaks the run contract's rule `{expression}`",
                metadata={
                    "rule": dg.MetadataValue.text(expression),
                    "file": dg.MetadataValue.path(str(metadata_path)),
                },
            )
        )
    errors = json_schema_errors(doc)
    results.append(
        dg.AssetCheckResult(
            asset_key=asset,
            check_name=METADATA_MATCHES_JSON_SCHEMA,
            passed=not errors,
            description=_schema_failure(metadata_path, errors) if errors else None,
            metadata={
                "errors": dg.MetadataValue.json(errors[:50]),
                "file": dg.MetadataValue.path(str(metadata_path)),
            },
        )
    )
    return results


def _schema_failure(metadata_path: Path, errors: Sequence[object]) -> str:
    listed = "; ".join(map(str, errors[:5]))
    return f"{metadata_path.name} does not match its JSON Schema: {listed}"[:2000]


def all_passed(results: Sequence[dg.AssetCheckResult]) -> bool:
    return all(r.passed for r in results)
