"""The HQ reconciliation report: what a reconciliation compared, what differed, what it healed.

Written as `hq/_reconciliation/reconciliation_<UTC time>_<run id>.json` (with a Markdown twin and
both sidecars) by the `hq_reconciliation` job; read by the healing sensor. See
`docs/hq_reconciliation.md`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.core import ContractInfo, ContractModel

REPORT_NAME = "hq_reconciliation_report"
REPORT_VERSION = "1.0.0"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportRange(_Part):
    start: str = Field(..., description="Start of the range compared (UTC, ISO 8601, inclusive).")
    end: str = Field(..., description="End of the range compared (UTC, ISO 8601, exclusive).")


class ReportOptions(_Part):
    max_lag_minutes: float = Field(..., description="The lag SLA, minutes.")
    key_cap: int = Field(..., description="Most differing keys listed per dataset.")
    null_rate_limits: dict[str, float] = Field(..., description="Null-rate limit per field.")
    leaf_rows: int = Field(..., description="Largest segment whose rows are listed and compared.")
    baseline_days: int = Field(..., description="Days before a day that form its status baseline.")


class ReportCheck(_Part):
    dataset: str = Field(..., description="The dx_*_v1 dataset (asset) checked.")
    check: Literal[
        "row_count_parity",
        "checksum_parity",
        "max_lag_within_sla",
        "critical_null_rates",
        "status_distribution_stable",
    ] = Field(..., description="The check's name (as in Dagster).")
    severity: Literal["ERROR", "WARN"] = Field(..., description="Severity of a failure.")
    passed: bool = Field(..., description="Whether the check passed.")
    summary: str = Field(..., description="One line on the result.")
    figures: dict[str, Any] = Field(..., description="The check's figures (as in its metadata).")


class ReportHealed(_Part):
    previous_report: str | None = Field(
        ..., description="The report whose heal_windows were re-checked (the newest before)."
    )
    windows: list[str] = Field(..., description="Windows it asked to heal that pass now.")
    still_failing: list[str] = Field(..., description="Windows it asked to heal that still fail.")
    runs: dict[str, str | None] = Field(
        default_factory=dict, description="The run that last exported each healed window."
    )


class HqReconciliationReport(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name=REPORT_NAME,
        version=REPORT_VERSION,
        title="HQ reconciliation report",
        description=(
            "One reconciliation of the HQ export against the operational Postgres over a range of "
            "hour windows: every check with its result and figures; per dataset the row counts "
            "per window and org on both sides, the differing keys (missing in the export, extra "
            "in the export, different), the segments compared, the lag, the null rates and the "
            "status anomaly tests; the windows to re-export and those healed since the last report."
        ),
    )

    contract_name: Literal["hq_reconciliation_report"] = Field(
        REPORT_NAME, description="Fixed value `hq_reconciliation_report`."
    )
    contract_version: Literal["1.0.0"] = Field(
        REPORT_VERSION, description="Contract version, currently `1.0.0`."
    )
    report_file: str = Field(..., description="File name of this report.")
    run_id: str = Field(..., description="The Dagster run that made it.")
    range: ReportRange = Field(..., description="The range of hour windows compared.")
    as_of: str = Field(..., description="The time lag is measured at (now, or the range's end).")
    source_schema: str = Field(..., description="Postgres schema of the source tables.")
    windows_compared: int = Field(..., ge=0, description="Hour windows compared.")
    options: ReportOptions = Field(..., description="Limits and sizes used.")
    passed: bool = Field(..., description="Whether every check passed.")
    checks: list[ReportCheck] = Field(..., description="Every check of every dataset.")
    datasets: dict[str, dict[str, Any]] = Field(
        ...,
        description=(
            "Per dataset: `parity` (rows per window and org on both sides, count gaps, mismatched "
            "windows, differing keys and their counts, segments compared by level, rows fetched), "
            "`lag`, and `null_rates` or `status_anomaly` where they apply."
        ),
    )
    heal_windows: list[str] = Field(
        ..., description="Windows failing row-count or checksum parity, to be re-exported."
    )
    healed: ReportHealed = Field(..., description="What the previous report's healing achieved.")
    source_sha256: str = Field(
        ..., description="SHA256 of the source's per-window summaries (the custody parent)."
    )
    export_files_compared: int = Field(..., ge=0, description="Parquet files compared.")


CONTRACTS: tuple[type[ContractModel], ...] = (HqReconciliationReport,)
