"""HQ export contract v1: the five `dx_*_v1` datasets exported from the operational Postgres, and
the dead letter of the rows that break them.

Source of truth: `spec/hq-export-contract-v1.md`. Every required field is here with its type;
types keep their meaning in Parquet: `timestamptz` as `timestamp[us, tz=UTC]`, `numeric` as an
exact `decimal128`, `jsonb` as JSON text (tagged `logical_type=json`), `uuid/text` as text.

Governance (spec "Schema Governance"): v1 allows additive columns only. An additive column is
allowed once it is declared here (a new optional field and a minor version bump, `1.1.0`); a
removed or renamed column needs `dx_*_v2` and a dual-publish window. The export's blocking check
compares every written file with these definitions, so an undeclared change fails the run.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, ClassVar, Literal

from pydantic import Field

from contracts.core import ContractInfo, ContractModel

EXPORT_SCHEMA_VERSION = "v1"
ENTITY_TYPES = ("company", "person")
RUN_STATUSES = ("succeeded", "failed", "skipped", "canceled")

# Exact decimals: money to the micro-dollar (below 10^12), confidences to six places (below 1000).
COST_DIGITS = (18, 6)
CONFIDENCE_DIGITS = (9, 6)

_VERSION = Field(..., description="Always 'v1': the export schema version of the row.")
_ORG = Field(..., description="Tenant id (uuid/text); every exported row has one.")
_APPEND_NOTE = (
    " Append-only: partitioned by UTC hour windows of {time}, in folders by the date of {time} "
    "and org_id, as the export contract recommends (`date=<YYYY-MM-DD>/hour=<HH>/org_id=<org>/`); "
    "materializing a window rewrites it whole from the source, so a replay gives byte-identical "
    "files."
)
_UPSERT_NOTE = (
    " Upsert snapshot: one row per (org_id, entity_id) across the dataset. Of all versions of an "
    "entity in the source, the valid one with the highest record_version is exported (ties: the "
    "first by updated_at); every other version is kept out and goes to the dead letter with reason "
    "`stale_version`, so an older record_version never overwrites a newer one in whatever order "
    "windows are exported. Rows live in the UTC hour window of their updated_at, in folders by "
    "the date of updated_at and org_id (`date=<YYYY-MM-DD>/hour=<HH>/org_id=<org>/`)."
)


class DxOperationRunsV1(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_operation_runs_v1",
        version="1.0.0",
        title="HQ export: operation runs (v1)",
        description="One row per operation invocation." + _APPEND_NOTE.format(time="created_at"),
        write_semantics="append",
        primary_key=("run_id",),
    )

    export_schema_version: Literal["v1"] = _VERSION
    run_id: str = Field(..., description="Unique operation run id (uuid/text).")
    pipeline_run_id: str | None = Field(
        None, description="Parent execution id; null for a standalone run."
    )
    workflow_id: str | None = Field(None, description="Workflow id, if any.")
    operation_id: str = Field(
        ..., description="Canonical operation id (e.g. company.enrich.profile)."
    )
    action_id: str = Field(..., description="Concrete implementation id.")
    entity_type: Literal["company", "person"] = Field(..., description="'company' or 'person'.")
    entity_id: str = Field(..., description="Entity the run worked on (uuid/text).")
    org_id: str = _ORG
    company_id: str | None = Field(None, description="Company id, where applicable.")
    source_provider: str | None = Field(None, description="Provider used, e.g. 'prospeo'.")
    status: Literal["succeeded", "failed", "skipped", "canceled"] = Field(
        ..., description="'succeeded', 'failed', 'skipped' or 'canceled'."
    )
    attempt_count: int = Field(..., description="Attempts made.")
    started_at: dt.datetime = Field(..., description="When the run started (UTC).")
    ended_at: dt.datetime | None = Field(None, description="When the run ended (UTC), if it has.")
    duration_ms: int | None = Field(None, description="Duration in milliseconds.")
    cost_usd: decimal.Decimal | None = Field(
        None,
        max_digits=COST_DIGITS[0],
        decimal_places=COST_DIGITS[1],
        description="Cost in USD, exact to 6 decimal places.",
    )
    error_code: str | None = Field(None, description="Error code of a failed run.")
    error_message: str | None = Field(
        None, description="Error message; credential-looking values are redacted."
    )
    created_at: dt.datetime = Field(
        ..., description="When the row was created (UTC); its partition window."
    )


class DxOperationEventsV1(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_operation_events_v1",
        version="1.0.0",
        title="HQ export: operation events (v1)",
        description=(
            "Detailed event log for retries, provider interactions and state transitions."
            + _APPEND_NOTE.format(time="occurred_at")
            + " Of events sharing (run_id, event_sequence) one is kept (the first by event_id); "
            "the others go to the dead letter."
        ),
        write_semantics="append",
        primary_key=("event_id",),
        unique=(("run_id", "event_sequence"),),
    )

    export_schema_version: Literal["v1"] = _VERSION
    event_id: str = Field(..., description="Unique event id (uuid/text).")
    run_id: str = Field(..., description="The operation run the event belongs to.")
    event_type: str = Field(
        ...,
        description="request_sent, response_received, retry_scheduled, state_change, error, etc.",
    )
    event_sequence: int = Field(..., description="Monotonic within run_id.")
    occurred_at: dt.datetime = Field(
        ..., description="When the event happened (UTC); its partition window."
    )
    org_id: str = _ORG
    company_id: str | None = Field(None, description="Company id, where applicable.")
    entity_type: Literal["company", "person"] = Field(..., description="'company' or 'person'.")
    entity_id: str = Field(..., description="Entity the event concerns (uuid/text).")
    provider: str | None = Field(None, description="Provider called, if any.")
    http_status: int | None = Field(None, description="HTTP status of a provider response.")
    raw_request_ref: str | None = Field(None, description="Pointer/key to the raw request object.")
    raw_response_ref: str | None = Field(
        None, description="Pointer/key to the raw response object."
    )
    payload_hash: str | None = Field(None, description="Hash of the payload.")
    error_code: str | None = Field(None, description="Error code, if any.")
    error_message: str | None = Field(
        None, description="Error message; credential-looking values are redacted."
    )
    metadata_json: dict[str, Any] | None = Field(
        None,
        description=(
            "Event metadata (jsonb) as canonical JSON text (sorted keys); values under "
            "credential-looking keys are replaced by '[REDACTED]'."
        ),
    )


class DxCompanyEntitiesV1(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_company_entities_v1",
        version="1.0.0",
        title="HQ export: company entities (v1)",
        description="Current canonical company state for analytics." + _UPSERT_NOTE,
        write_semantics="upsert",
        primary_key=("org_id", "entity_id"),
    )

    export_schema_version: Literal["v1"] = _VERSION
    org_id: str = _ORG
    company_id: str = Field(..., description="Company id (uuid/text).")
    entity_id: str = Field(..., description="Canonical company entity id.")
    canonical_name: str | None = Field(None, description="Canonical company name.")
    canonical_domain: str | None = Field(None, description="Canonical web domain.")
    linkedin_url: str | None = Field(None, description="LinkedIn company URL.")
    linkedin_page_id: str | None = Field(None, description="LinkedIn page id.")
    industry: str | None = Field(None, description="Industry.")
    employee_count: int | None = Field(None, description="Employee count.")
    revenue_band: str | None = Field(None, description="Revenue band.")
    hq_country: str | None = Field(None, description="Headquarters country.")
    enrichment_confidence: decimal.Decimal | None = Field(
        None,
        max_digits=CONFIDENCE_DIGITS[0],
        decimal_places=CONFIDENCE_DIGITS[1],
        description="Enrichment confidence, exact to 6 decimal places.",
    )
    last_enriched_at: dt.datetime | None = Field(None, description="Last enrichment (UTC).")
    last_operation_id: str | None = Field(None, description="Last operation applied.")
    last_run_id: str | None = Field(None, description="Last run applied.")
    source_priority: str | None = Field(None, description="Source priority.")
    record_version: int = Field(..., description="Monotonic per entity; the upsert rule's key.")
    updated_at: dt.datetime = Field(
        ..., description="When this version was written (UTC); its partition window."
    )


class DxPersonEntitiesV1(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_person_entities_v1",
        version="1.0.0",
        title="HQ export: person entities (v1)",
        description="Current canonical person state for analytics." + _UPSERT_NOTE,
        write_semantics="upsert",
        primary_key=("org_id", "entity_id"),
    )

    export_schema_version: Literal["v1"] = _VERSION
    org_id: str = _ORG
    company_id: str | None = Field(None, description="Company id, where known.")
    entity_id: str = Field(..., description="Canonical person entity id.")
    full_name: str | None = Field(None, description="Full name.")
    first_name: str | None = Field(None, description="First name.")
    last_name: str | None = Field(None, description="Last name.")
    linkedin_url: str | None = Field(None, description="LinkedIn profile URL.")
    title: str | None = Field(None, description="Job title.")
    seniority: str | None = Field(None, description="Seniority.")
    department: str | None = Field(None, description="Department.")
    work_email: str | None = Field(None, description="Work email.")
    email_status: str | None = Field(None, description="Email verification status.")
    phone_e164: str | None = Field(None, description="Phone number in E.164.")
    contact_confidence: decimal.Decimal | None = Field(
        None,
        max_digits=CONFIDENCE_DIGITS[0],
        decimal_places=CONFIDENCE_DIGITS[1],
        description="Contact confidence, exact to 6 decimal places.",
    )
    last_enriched_at: dt.datetime | None = Field(None, description="Last enrichment (UTC).")
    last_operation_id: str | None = Field(None, description="Last operation applied.")
    last_run_id: str | None = Field(None, description="Last run applied.")
    record_version: int = Field(..., description="Monotonic per entity; the upsert rule's key.")
    updated_at: dt.datetime = Field(
        ..., description="When this version was written (UTC); its partition window."
    )


class DxEntitySnapshotsV1(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_entity_snapshots_v1",
        version="1.0.0",
        title="HQ export: entity snapshots (v1)",
        description=(
            "Historical canonical snapshots (append-only SCD) for drift and time-travel analytics."
            + _APPEND_NOTE.format(time="captured_at")
        ),
        write_semantics="append",
        primary_key=("snapshot_id",),
        unique=(("org_id", "entity_type", "entity_id", "record_version"),),
    )

    export_schema_version: Literal["v1"] = _VERSION
    snapshot_id: str = Field(..., description="Unique snapshot id (uuid/text).")
    org_id: str = _ORG
    entity_type: Literal["company", "person"] = Field(..., description="'company' or 'person'.")
    entity_id: str = Field(..., description="Entity id (uuid/text).")
    record_version: int = Field(..., description="The entity's record_version captured.")
    canonical_payload_json: dict[str, Any] = Field(
        ...,
        description=(
            "The canonical payload (jsonb) as canonical JSON text (sorted keys); values under "
            "credential-looking keys are replaced by '[REDACTED]'."
        ),
    )
    captured_at: dt.datetime = Field(
        ..., description="When the snapshot was captured (UTC); its partition window."
    )
    source_run_id: str | None = Field(None, description="The run that produced it, if known.")


DeadLetterReason = Literal[
    "missing_org_id",
    "null_key",
    "invalid_status",
    "invalid_entity_type",
    "null_required_field",
    "numeric_out_of_range",
    "invalid_json",
    "duplicate_key",
    "duplicate_unique_guard",
    "stale_version",
]


class DxDeadLetter(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="dx_dead_letter",
        version="1.0.0",
        title="HQ export: dead letter",
        description=(
            "Source rows that break export contract v1, kept out of the datasets with the reason: "
            "no org_id, a null key, status or entity_type outside its set, a required field null, "
            "a numeric value that does not fit its exact type, a duplicate primary key or "
            "uniqueness guard, a stale record_version. Nothing is dropped silently. Written per "
            "window beside the datasets (`hq/dx_dead_letter/date=<…>/hour=<…>/dataset=<…>/`), "
            "rewritten with them, so a replay gives the same rows. Only contract columns are "
            "kept, with credential-looking values redacted."
        ),
        write_semantics="append",
        primary_key=("dataset", "source_key", "occurrence"),
    )

    dataset: str = Field(..., description="The dx_*_v1 dataset the row was meant for.")
    source_table: str = Field(..., description="The source table (schema.table) it came from.")
    source_key: str = Field(
        ...,
        description="The row's key columns as JSON text (primary key; nulls as null).",
    )
    occurrence: int = Field(
        ...,
        description="1 for the first dead-lettered row with this key in the window, 2 for the next...",
    )
    org_id: str | None = Field(None, description="The row's org_id, when it has one.")
    reason: DeadLetterReason = Field(..., description="Why the row was kept out (a code).")
    detail: str = Field(
        ..., description="The field, what was expected and what was found, in words."
    )
    batch: str = Field(
        ...,
        description="The batch: the partition window key (UTC hour start) the row was read in.",
    )
    window_start: dt.datetime = Field(..., description="Start of the batch window (UTC).")
    window_end: dt.datetime = Field(..., description="End of the batch window (UTC), exclusive.")
    row_json: str = Field(
        ...,
        description=(
            "The row's contract columns as JSON text, credential-looking values redacted, for "
            "repair and replay."
        ),
    )


DATASET_CONTRACTS: tuple[type[ContractModel], ...] = (
    DxOperationRunsV1,
    DxOperationEventsV1,
    DxCompanyEntitiesV1,
    DxPersonEntitiesV1,
    DxEntitySnapshotsV1,
)

CONTRACTS: tuple[type[ContractModel], ...] = (*DATASET_CONTRACTS, DxDeadLetter)
