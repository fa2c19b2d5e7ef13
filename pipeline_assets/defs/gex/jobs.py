"""Jobs of the GEX import: `gex_import_job` (the sensor's target) and `gex_retention_job`."""

import dagster as dg

from pipeline_assets.defs.gex.assets import GEX_STRIKES
from pipeline_assets.resources.gex_store import GexStore

gex_import_job = dg.define_asset_job(
    "gex_import_job",
    selection=dg.AssetSelection.assets(GEX_STRIKES),
    description="Imports the chosen GEX import jobs (partitions of gex_strikes), with the checks.",
)


@dg.op(
    pool="gex_duckdb",
    out=dg.Out(dg.Nothing),
    description=(
        "Removes staged GEX JSON older than the retention period (PIPELINE_GEX_RETENTION_DAYS, "
        "default 14) whose jobs are all completed or skipped, archiving first when "
        "PIPELINE_GEX_ARCHIVE is on; logs every file removed and every old file kept, and why."
    ),
)
def gex_retention(context: dg.OpExecutionContext, gex_store: GexStore) -> dg.Output:
    report = gex_store.importer(log=context.log.info, run_id=context.run.run_id).retention()
    # A Nothing output: the metadata shows in the UI, and no IO manager stores anything.
    return dg.Output(
        None,
        metadata={
            "removed": dg.MetadataValue.json(report.removed),
            "archived": dg.MetadataValue.json(report.archived),
            "kept": dg.MetadataValue.json(report.kept),
            "retention_days": dg.MetadataValue.int(gex_store.retention_days),
        },
    )


@dg.job(
    name="gex_retention_job",
    description="Retention of the staged GEX JSON files (source/gexbot/); see docs/gex.md.",
)
def gex_retention_job() -> None:
    gex_retention()
