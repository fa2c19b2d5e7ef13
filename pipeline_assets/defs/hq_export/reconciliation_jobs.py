"""The `hq_reconciliation` job: the reconciliation checks alone, over a range given in run config.

    dagster job execute -m pipeline_assets.definitions -j hq_reconciliation \
      --config-json '{"ops": {"hq_reconciliation_checks": {"config":
        {"start_utc": "2026-02-17T00:00:00Z", "end_utc": "2026-02-20T00:00:00Z"}}}}'

Without a range it covers the last PIPELINE_HQ_RECONCILIATION_LOOKBACK_DAYS days.
"""

import dagster as dg

from pipeline_assets.defs.hq_export.reconciliation_checks import hq_reconciliation_checks

HQ_RECONCILIATION = "hq_reconciliation"

hq_reconciliation_job = dg.define_asset_job(
    HQ_RECONCILIATION,
    selection=dg.AssetSelection.checks(hq_reconciliation_checks),
    description=(
        "Reconciles the HQ export with the operational Postgres over a range of hour windows "
        "(run config start_utc / end_utc): parity, checksums drilled down to the differing keys, "
        "lag SLA, null rates, status anomaly; writes the report under hq/_reconciliation/."
    ),
    tags={"hq/reconciliation": "range"},
)
