"""The demo (the main job behind `make demo`): generate demo sources, materialize every asset, run
every check, and print a summary table.

It works from the loaded definitions, not from a list kept here: a new asset is in the demo as
soon as it is in `defs/`. Assets are run in dependency order, one run per partitioning (a
single-run backfill of the demo days for daily assets), on the instance under `DAGSTER_HOME`, so
`make dev` shows the demo's runs, materializations and checks afterwards.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from pipeline_assets.lib.gex.demo_sources import demo_gex_partition_keys, write_demo_gex_jobs
from pipeline_assets.lib.gex.imports import GexConfig, GexImporter
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.lib.settings import Settings

# Fixed days, so that two demo runs on two machines produce the same files.
DEMO_DAYS: tuple[dt.date, ...] = (dt.date(2026, 2, 17), dt.date(2026, 2, 18), dt.date(2026, 2, 19))
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _market_workers(settings: Settings) -> str:
    files = write_demo_worker_files(settings.workers_dir, list(DEMO_DAYS))
    return f"collector SQLite: {len(files)} worker files for {DEMO_DAYS[0]}..{DEMO_DAYS[-1]} in {settings.workers_dir}"


def _hq_source(settings: Settings) -> str:
    from pipeline_assets.lib.hq.source_tables import write_demo_source
    from pipeline_assets.lib.postgres import embedded_dsn

    return write_demo_source(
        settings.dx_source_dsn or embedded_dsn(settings.postgres_dir), list(DEMO_DAYS)
    )


def _gex_jobs(settings: Settings) -> str:
    return write_demo_gex_jobs(
        GexImporter(settings.data_root, GexConfig.from_settings(settings)), list(DEMO_DAYS)
    )


# Each generator writes its pipeline's demo sources idempotently and says what it wrote.
DEMO_SOURCE_GENERATORS: tuple[Callable[[Settings], str], ...] = (
    _market_workers,
    _gex_jobs,
    _hq_source,
)

# Dynamic partitions the demo adds to the instance before it materializes (definition name ->
# the keys its sources call for), as the domains' sensors would.
DEMO_DYNAMIC_PARTITIONS: dict[str, Callable[[Settings], list[str]]] = {
    "gex_import_jobs": lambda s: demo_gex_partition_keys(
        GexImporter(s.data_root, GexConfig.from_settings(s))
    ),
}

# Run config for assets whose defaults do not fit the fixed demo days (keyed by asset key; used
# only when the asset is in the run): the staging export covers the demo days, not the last 24 h.
DEMO_ASSET_CONFIG: dict[str, dict] = {
    "staging_export": {
        "hours": 24.0 * len(DEMO_DAYS),
        "end_utc": f"{DEMO_DAYS[-1] + dt.timedelta(days=1)}T00:00:00Z",
        "output_format": "sqlite",
    },
}


def _demo_run_config(keys: Sequence[dg.AssetKey]) -> dict:
    ops = {
        k.to_user_string(): {"config": DEMO_ASSET_CONFIG[k.to_user_string()]}
        for k in keys
        if k.to_user_string() in DEMO_ASSET_CONFIG
    }
    return {"ops": ops} if ops else {}


@dataclass
class AssetSummary:
    asset: str
    partitions: set[str] = field(default_factory=set)
    rows: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    output_folder: str = "-"


@dataclass
class DemoReport:
    sources: list[str]
    assets: dict[str, AssetSummary]
    runs: list[tuple[str, bool]]
    seconds: float

    @property
    def success(self) -> bool:
        return all(ok for _, ok in self.runs) and not any(
            a.checks_failed for a in self.assets.values()
        )


def generate_demo_sources(settings: Settings) -> list[str]:
    return [generate(settings) for generate in DEMO_SOURCE_GENERATORS]


def _demo_partition_keys(
    partitions_def: dg.PartitionsDefinition | None, instance: dg.DagsterInstance
) -> list[str] | None:
    """The partitions the demo materializes; None for an unpartitioned asset."""
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return [d.isoformat() for d in DEMO_DAYS]
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        # Finer time windows (hourly, 15-minute): those of the demo days, where the demo sources
        # put their rows, not every window since the definition's start.
        start = dt.datetime.combine(DEMO_DAYS[0], dt.time(), dt.UTC)
        end = dt.datetime.combine(DEMO_DAYS[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)
        return list(partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, end)))
    return list(partitions_def.get_partition_keys(dynamic_partitions_store=instance))


def _run_groups(
    defs: dg.Definitions,
) -> list[tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]]:
    """Materializable assets grouped by partitioning, groups in dependency order."""
    graph = defs.resolve_asset_graph()
    order = {key: i for i, key in enumerate(graph.toposorted_asset_keys)}
    groups: dict[int, tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]] = {}
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable:
            continue
        partitions_def = node.partitions_def
        groups.setdefault(id(partitions_def), (partitions_def, []))[1].append(key)
    return sorted(groups.values(), key=lambda group: min(order[k] for k in group[1]))


def demo_targets(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> list[tuple[list[dg.AssetKey], list[str] | None]]:
    """What the demo materializes: each group of assets sharing a partitioning, with its partition
    keys (None: unpartitioned), in dependency order; groups with no partition to run are left out.

    A deployment that launches the demo as a backfill (deploy/, docs/deploy.md) targets the same.
    """
    targets = []
    for partitions_def, keys in _run_groups(defs):
        partition_keys = _demo_partition_keys(partitions_def, instance)
        if partition_keys != []:
            targets.append((keys, partition_keys))
    return targets


def _folder_of(files: Sequence[str]) -> str:
    parts = files[0].split("/") if files else []
    # The dataset folder: `bronze/bronze_trades/` of a lake file, `staging/` of a staging export.
    return "/".join(parts[: min(2, len(parts) - 1)]) + "/" if len(parts) >= 2 else "-"


def run_demo(
    settings: Settings,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    log: Callable[[str], None] = print,
) -> DemoReport:
    started = time.monotonic()
    sources = generate_demo_sources(settings)
    for line in sources:
        log(f"demo source  {line}")
    for name, keys_of in DEMO_DYNAMIC_PARTITIONS.items():
        known = set(instance.get_dynamic_partitions(name))
        instance.add_dynamic_partitions(name, [k for k in keys_of(settings) if k not in known])
    job = defs.resolve_implicit_global_asset_job_def()
    summaries: dict[str, AssetSummary] = {}
    runs: list[tuple[str, bool]] = []
    for partitions_def, keys in _run_groups(defs):
        partition_keys = _demo_partition_keys(partitions_def, instance)
        if partition_keys == []:
            log(
                f"skipping {', '.join(k.to_user_string() for k in keys)}: no partitions to materialize"
            )
            continue
        tags = (
            {}
            if partition_keys is None
            else {RANGE_START_TAG: partition_keys[0], RANGE_END_TAG: partition_keys[-1]}
        )
        label = ", ".join(k.to_user_string() for k in keys)
        span = "" if partition_keys is None else f" for {partition_keys[0]}..{partition_keys[-1]}"
        log(f"materializing {label}{span}")
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            tags=tags,
            run_config=_demo_run_config(keys),
            raise_on_error=False,
        )
        runs.append((result.run_id, result.success))
        for key in keys:
            summaries.setdefault(key.to_user_string(), AssetSummary(key.to_user_string()))
        for event in result.get_asset_materialization_events():
            mat = event.materialization
            summary = summaries.setdefault(
                mat.asset_key.to_user_string(), AssetSummary(mat.asset_key.to_user_string())
            )
            metadata = mat.metadata
            if "dagster/row_count" in metadata:
                summary.rows += int(metadata["dagster/row_count"].value)
            files = metadata["output_files"].value if "output_files" in metadata else []
            summary.output_folder = _folder_of(files) if files else summary.output_folder
            if mat.partition:
                summary.partitions.add(mat.partition)
            elif isinstance(metadata.get("row_counts_by_partition"), dg.JsonMetadataValue):
                summary.partitions.update(metadata["row_counts_by_partition"].value)
        for evaluation in result.get_asset_check_evaluations():
            summary = summaries.setdefault(
                evaluation.asset_key.to_user_string(),
                AssetSummary(evaluation.asset_key.to_user_string()),
            )
            if evaluation.passed:
                summary.checks_passed += 1
            else:
                summary.checks_failed += 1
                log(
                    f"check failed: {evaluation.asset_key.to_user_string()}:{evaluation.check_name} {evaluation.description or ''}"
                )
        if not result.success:
            for failure in result.get_step_failure_events():
                error = failure.step_failure_data.error
                message = error.message.strip() if error else "no error recorded"
                log(f"step {failure.step_key} failed: {message}")
            log(f"run {result.run_id} failed; see it in the UI (make dev) or the log above")
    return DemoReport(sources, summaries, runs, time.monotonic() - started)


def format_summary(report: DemoReport, data_root: str) -> str:
    header = ("asset", "partitions", "rows", "checks passed", "checks failed", "output folder")
    rows = [
        (
            s.asset,
            str(len(s.partitions)) if s.partitions else "-",
            f"{s.rows:,}",
            str(s.checks_passed),
            str(s.checks_failed),
            s.output_folder,
        )
        for s in sorted(report.assets.values(), key=lambda s: s.asset)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    failed_runs = [run_id for run_id, ok in report.runs if not ok]
    out = [line(header), line(["-" * w for w in widths]), *map(line, rows)]
    out.append("")
    out.append(
        f"{len(report.assets)} assets, {sum(s.rows for s in report.assets.values()):,} rows, "
        f"{sum(s.checks_passed for s in report.assets.values())} checks passed, "
        f"{sum(s.checks_failed for s in report.assets.values())} failed, "
        f"{len(report.runs)} runs ({len(failed_runs)} failed) in {report.seconds:.1f}s; data under {data_root}"
    )
    return "\n".join(out)


def main(settings: Settings | None = None) -> int:
    from pipeline_assets.definitions import defs

    settings = settings or Settings.from_env()
    loaded = defs()
    with dg.DagsterInstance.get() as instance:
        report = run_demo(settings, instance, loaded)
    print()
    print(format_summary(report, str(settings.data_root)))
    return 0 if report.success else 1
