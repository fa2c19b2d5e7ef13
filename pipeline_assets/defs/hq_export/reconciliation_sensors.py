"""Self-healing: `hq_reconciliation_heal` re-exports the windows a reconciliation found failing.

Each reconciliation report (`hq/_reconciliation/reconciliation_*.json`) lists `heal_windows`: the
windows whose row counts or checksums differ. The sensor requests one `hq_export_job` run per such
window (run key: report and window, so each report heals a window once), tagged with the report.
Re-exporting rewrites the window whole from the source, so late rows land, rows changed in place
are refreshed and rows lost from the export come back. The next reconciliation records the windows
that pass again under `healed` (with the run that re-exported each) and those still failing.
The cursor is the newest report handled.
"""

import dagster as dg

from pipeline_assets.defs.hq_export import jobs
from pipeline_assets.defs.hq_export.partitions import hq_hourly_partitions
from pipeline_assets.defs.hq_export.reconciliation_checks import HQ_RECONCILIATION_CHECKS
from pipeline_assets.lib.hq.reconcile import reports_after
from pipeline_assets.lib.settings import Settings

HQ_RECONCILIATION_HEAL = "hq_reconciliation_heal"
HEALING_TAG = "hq/healing_report"


@dg.sensor(
    name=HQ_RECONCILIATION_HEAL,
    job=jobs.hq_export_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-exports (hq_export_job, one run per window) the windows each new reconciliation "
        "report found failing row-count or checksum parity."
    ),
)
def hq_reconciliation_heal(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    lake_root = Settings.from_env().lake_path()
    reports = reports_after(lake_root, context.cursor)
    if not reports:
        return dg.SensorResult(skip_reason="no new reconciliation report", cursor=context.cursor)
    requests = []
    for report in reports:
        name = report["report_file"]
        schema = report.get("source_schema", "public")
        config = {"config": {"source_schema": schema}}
        for window in report.get("heal_windows", []):
            if not hq_hourly_partitions.has_partition_key(window):
                context.log.warning(f"{name}: window {window} has no partition; not re-exported")
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"heal:{name}:{window}",
                    partition_key=window,
                    run_config={"ops": {"hq_export": config, HQ_RECONCILIATION_CHECKS: config}},
                    tags={HEALING_TAG: name},
                )
            )
        if report.get("heal_windows"):
            context.log.info(f"{name}: re-exporting {', '.join(report['heal_windows'])}")
    cursor = reports[-1]["report_file"]
    if not requests:
        return dg.SensorResult(skip_reason="no window to heal", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
