"""`gex_strikes`: the canonical Parquet of the GEX imports, one dynamic partition per import job.

The asset runs `GexImporter.import_job` (`safe_import`, in `lib/gex/imports.py`) for each job
of its run: the same code `pipeline gex import` runs. It writes its files itself, under
`parquet/gex/YYYY/MM/<ticker>/<endpoint>/` (the governance spec's layout, outside the lake's
bronze/silver/gold layers), with their sidecars, and returns a `MaterializeResult`: there is no
IO manager output, because the files belong to the job store's history (immutable per job,
rewritten only by a recorded correction), not to a partition folder a rerun could overwrite.
Downstream code reads the folder with DuckDB or pyarrow.
"""

from collections.abc import Iterator

import dagster as dg

from contracts.core import arrow_schema
from contracts.gex import GexStrikeRow
from pipeline_assets.defs.gex.checks import gex_check_results, gex_check_specs
from pipeline_assets.defs.gex.partitions import gex_job_partitions
from pipeline_assets.lib.gex.store import FAILED
from pipeline_assets.lib.run_record import utc_now
from pipeline_assets.resources.gex_store import GexStore
from pipeline_assets.utils.file_links import file_links
from pipeline_assets.utils.run_metadata import run_metadata
from pipeline_assets.utils.table_schema import column_schema

GEX_STRIKES = "gex_strikes"
GROUP = "gex"
OWNERS = ["team:gex"]


@dg.asset(
    name=GEX_STRIKES,
    partitions_def=gex_job_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="gex_duckdb",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "parquet", "json"},
    check_specs=gex_check_specs(GEX_STRIKES),
    metadata={
        "dagster/column_schema": column_schema(arrow_schema(GexStrikeRow)),
        "contract": f"{GexStrikeRow.contract.name} {GexStrikeRow.contract.version}",
        "folder": "parquet/gex/YYYY/MM/<ticker>/<endpoint>/strikes_job<id>.parquet",
    },
    description=(
        "GEX snapshots from gexbot, one row per strike with the snapshot's fields (every source "
        "field kept), imported per job of the job store gex_history.db: the staged JSON is "
        "validated, loaded through gex_data.db and written as immutable canonical Parquet under "
        "parquet/gex/YYYY/MM/<ticker>/<endpoint>/. Partition key: the import job id. A file whose "
        "SHA256 matches a completed import is skipped."
    ),
)
def gex_strikes(
    context: dg.AssetExecutionContext, gex_store: GexStore
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    started = utc_now()
    importer = gex_store.importer(log=context.log.info, run_id=context.run.run_id)
    keys = context.partition_keys
    for key in keys:
        if not key.isdigit():
            raise dg.Failure(description=f"partition {key!r} is not an import job id")
    # A run that imports several pending jobs is a mass import: the spec asks for a snapshot of
    # both databases first (a rerun of completed jobs changes nothing and takes none).
    pending = {j.partition_key for j in importer.pending_jobs()}
    backup = importer.backup_databases() if len(pending.intersection(keys)) > 1 else None
    jobs = [importer.import_job(int(key)) for key in keys]
    failed = [j for j in jobs if j.status == FAILED]
    if failed:
        raise dg.Failure(
            description="; ".join(f"job {j.id} failed: {j.last_error}" for j in failed)
            + ". The staged files are kept; fix the source and enqueue again (or file a correction).",
            metadata={
                "failed_jobs": dg.MetadataValue.json({str(j.id): j.last_error for j in failed})
            },
        )
    per_partition = {
        j.partition_key: {
            "dagster/row_count": dg.MetadataValue.int(j.rows_written or 0),
            "status": dg.MetadataValue.text(j.status),
            "skipped": dg.MetadataValue.bool(j.skipped),
            "records_processed": dg.MetadataValue.int(j.records_processed or 0),
            "staged_file": dg.MetadataValue.path(j.staged_path or "-"),
            "checksum": dg.MetadataValue.text(j.checksum or "-"),
            "output_files": dg.MetadataValue.json(j.canonical_files),
            "ticker": dg.MetadataValue.text(j.ticker),
            "endpoint": dg.MetadataValue.text(j.endpoint),
            **file_links(
                j.canonical_files,
                importer.paths.data_root,
                heading=(
                    f"**{j.rows_written or 0:,} strikes** of {j.ticker} {j.endpoint} from job "
                    f"{j.id}" + (" (skipped: already imported)" if j.skipped else "") + "."
                ),
            ),
        }
        for j in jobs
    }
    files = [f for j in jobs for f in j.canonical_files]
    metadata = run_metadata(
        context,
        started_utc=started,
        source_files=[j.staged_path for j in jobs if j.staged_path],
        row_counts={
            "strikes": sum(j.rows_written or 0 for j in jobs),
            "records": sum(j.records_processed or 0 for j in jobs),
            "skipped_jobs": sum(1 for j in jobs if j.skipped),
        },
        output_files=files,
        finished=True,
    )
    if backup is not None:
        metadata["backup"] = dg.MetadataValue.json(backup.copies)
        metadata["backups_removed"] = dg.MetadataValue.json(backup.removed)
    if len(jobs) == 1:
        metadata.update(per_partition[jobs[0].partition_key])
    else:
        for key, values in per_partition.items():
            context.add_asset_metadata(values, partition_key=key)
    yield dg.MaterializeResult(metadata=metadata)
    yield from gex_check_results(GEX_STRIKES, importer.paths.data_root, jobs)
