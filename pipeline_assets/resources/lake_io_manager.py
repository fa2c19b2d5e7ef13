"""The Parquet lake IO manager: the one writer of `bronze/`, `silver/`, `gold/` and `hq/`.

Built on Dagster's `UPathIOManager`, so the same code writes local disk and object storage. On top
of it, this manager:

- lays files out as `<layer>/<asset_key>/<name>=<value>/.../data.parquet` (hive-style), for daily,
  time-window, static, dynamic and multi-dimensional partitions;
- writes every partition of a range in one run (a single-run backfill): the asset returns a dict
  `{partition_key: data}`, and loading a range returns such a dict;
- writes atomically and deterministically (`lib.parquet_lake`), accepting tables and record-batch
  streams alike;
- writes a chain-of-custody sidecar beside every file, with the input files of that partition as
  parents, and verifies the sidecar of every file it reads.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import typing
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.lib.custody import (
    CustodyError,
    MetadataFactory,
    read_sidecar,
    sidecar_path,
    verify_file,
    write_sidecar,
)
from pipeline_assets.lib.files import as_upath, is_local, write_bytes_atomic
from pipeline_assets.lib.parquet_lake import (
    DATA_FILE_NAME,
    DEFAULT_ROW_GROUP_SIZE,
    DEFAULT_ZSTD_LEVEL,
    EMPTY_MARKER,
    LakeError,
    LakeOutput,
    WriteResult,
    hive_folder,
    parse_hive_folder,
    read_parquet,
    stream_parquet,
    time_levels,
    write_parquet,
    write_split_parquet,
)
from pipeline_assets.lib.settings import LAKE_LAYERS
from pipeline_assets.lib.versions import CODE_VERSION
from pipeline_assets.utils.table_schema import column_schema

LAYER_METADATA_KEY = "lake/layer"
PARTITION_NAME_METADATA_KEY = "lake/partition_name"
PARTITION_LEVELS_METADATA_KEY = "lake/partition_levels"
SPLIT_BY_METADATA_KEY = "lake/split_by"
ROW_GROUP_SIZE_METADATA_KEY = "lake/row_group_size"
SPLIT_GROUPED_METADATA_KEY = "lake/split_grouped"
SPLIT_PARENTS_METADATA_KEY = "lake/split_parents"

_LAYER_BY_PREFIX = {"bronze_": "bronze", "silver_": "silver", "gold_": "gold", "dx_": "hq"}
# Files listed in a partition's markdown summary; `output_files` lists them all.
_SUMMARY_MAX_FILES = 50


def _null_rates(results: list[WriteResult], rows: int) -> dict[str, float]:
    """Null rate of each nullable top-level column of a partition, from the files' footers.

    The footers' statistics already count the nulls, so no data is read back. Nested columns
    (lists, structs) are left out: their leaf counts do not say how many rows are null.
    """
    if not results or not rows:
        return {}
    schema = results[0].schema
    wanted = {f.name for f in schema if f.nullable and not pa.types.is_nested(f.type)}
    nulls = dict.fromkeys(sorted(wanted), 0)
    for result in results:
        with result.path.open("rb") as handle:
            footer = pq.ParquetFile(handle).metadata
        for g in range(footer.num_row_groups):
            group = footer.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                name = chunk.path_in_schema
                if name not in nulls:
                    continue
                stats = chunk.statistics
                if stats is None or not stats.has_null_count:
                    nulls.pop(name)  # unknown: better absent than wrong
                    continue
                nulls[name] += stats.null_count
    return {name: round(count / rows, 6) for name, count in nulls.items()}


def _layer_of(asset_key: dg.AssetKey, definition_metadata: Mapping[str, Any]) -> str:
    layer = definition_metadata.get(LAYER_METADATA_KEY)
    if layer is None:
        name = asset_key.path[-1]
        layer = next(
            (lay for prefix, lay in _LAYER_BY_PREFIX.items() if name.startswith(prefix)), None
        )
    if layer not in LAKE_LAYERS:
        raise LakeError(
            f"asset {asset_key.to_user_string()}: cannot tell its lake layer; set metadata "
            f"{LAYER_METADATA_KEY!r} to one of {', '.join(LAKE_LAYERS)}"
        )
    return layer


def _dimension_name(
    partitions_def: dg.PartitionsDefinition, definition_metadata: Mapping[str, Any]
) -> str:
    override = definition_metadata.get(PARTITION_NAME_METADATA_KEY)
    if override:
        return str(override)
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return "date"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return "window_start"
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name:
        return partitions_def.name
    return "partition"


def partition_dimensions(
    partitions_def: dg.PartitionsDefinition,
    partition_key: str,
    definition_metadata: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """The `(folder name, value)` pairs of one partition, in folder order."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        key = partitions_def.get_partition_key_from_str(partition_key)
        return sorted(key.keys_by_dimension.items())
    levels = definition_metadata.get(PARTITION_LEVELS_METADATA_KEY)
    if levels:
        # A time window over several folders, from its start (`date=…/hour=…`).
        if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            raise LakeError(
                f"metadata {PARTITION_LEVELS_METADATA_KEY!r} needs time-window partitions, not "
                f"{type(partitions_def).__name__}"
            )
        start = partitions_def.time_window_for_partition_key(partition_key).start
        return time_levels(start, [levels] if isinstance(levels, str) else list(levels))
    return [(_dimension_name(partitions_def, definition_metadata), partition_key)]


def _split_by(definition_metadata: Mapping[str, Any]) -> list[str]:
    value = definition_metadata.get(SPLIT_BY_METADATA_KEY) or []
    return [value] if isinstance(value, str) else list(value)


def _step_identity(context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
    """(run id, op name) of the step an input is loaded into or an output is written from."""
    try:
        return context.step_context.run_id, context.step_context.op_def.name
    except dg.DagsterInvariantViolationError:  # built directly, outside a run
        return "<direct>", "<direct>"


def _upstream_keys(context: dg.OutputContext) -> set[dg.AssetKey] | None:
    """The assets the output's asset depends on (for a multi-asset: that output's own deps, from
    `internal_asset_deps` or its spec); None when there is no run to ask."""
    try:
        node = context.step_context.job_def.asset_layer.get(context.asset_key)
    except (dg.DagsterInvariantViolationError, KeyError):
        return None
    return set(node.parent_keys)


def _schema_of(data: Any) -> pa.Schema | None:
    return (
        getattr(data, "schema", None)
        if isinstance(getattr(data, "schema", None), pa.Schema)
        else None
    )


@dataclass(frozen=True)
class CompletedPartition:
    """Returned for a partition instead of its data: the files an earlier run made from the same
    inputs and parameters (`lib.custody.completed_output_reason` says so) are kept as they are,
    verified, and `reason` goes into the partition's materialization metadata (`completed_earlier`).
    """

    reason: str


def _hive_values(path: str) -> dict[str, str]:
    """The `name=value` folders of a path (decoded), by name."""
    return (
        parse_hive_folder("/".join(part for part in path.split("/")[:-1] if "=" in part))
        if "=" in path
        else {}
    )


def parents_of_split_file(
    parents: list[ParentRef], file_values: Mapping[str, str]
) -> list[ParentRef]:
    """The parents of one file of a split partition: those split by the same column with another
    value (`symbol=ETH-USD` for the file of `symbol=BTC-USD`) are left out; every other parent (a
    file not split that way, a query, a URL) stays."""
    kept = []
    for parent in parents:
        values = _hive_values(parent.path) if parent.kind == "file" else {}
        if all(values.get(name, value) == value for name, value in file_values.items()):
            kept.append(parent)
    return kept or parents


def _remove_empty_folders(start: UPath, *, stop: UPath) -> None:
    # Object stores have no folders; on local disk an emptied value folder would read as a value.
    current = start
    while (
        str(current) != str(stop)
        and is_local(current)
        and current.exists()
        and not any(current.iterdir())
    ):
        current.rmdir()
        current = current.parent


def _empty_schema(marker: UPath) -> pa.Schema:
    payload = json.loads(marker.read_bytes())
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(payload["arrow_schema"])))


class LakeParquetIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def __init__(
        self,
        base_path: UPath,
        *,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        fsync: bool = True,
        verify_on_load: bool = True,
    ):
        super().__init__(base_path=base_path)
        self.factory = MetadataFactory(base_path, code_version=CODE_VERSION)
        self.row_group_size = row_group_size
        self.zstd_level = zstd_level
        self.fsync = fsync
        self.verify_on_load = verify_on_load
        # Files each step has read, so the files it writes can name them as parents.
        self._loaded: dict[tuple[str, str], list[tuple[str | None, ParentRef]]] = defaultdict(list)
        # The asset each of those files belongs to, by path, so that an output of a multi-asset
        # names only the inputs its own asset depends on.
        self._loaded_from: dict[tuple[str, str], dict[str, dg.AssetKey]] = defaultdict(dict)

    # --- paths ---------------------------------------------------------------------------------

    def asset_folder(self, asset_key: dg.AssetKey, definition_metadata: Mapping[str, Any]) -> UPath:
        return self._base_path.joinpath(_layer_of(asset_key, definition_metadata), *asset_key.path)

    def partition_folder(
        self,
        asset_key: dg.AssetKey,
        partitions_def: dg.PartitionsDefinition | None,
        partition_key: str | None,
        definition_metadata: Mapping[str, Any],
    ) -> UPath:
        """The folder of one partition (of the whole asset, when it is unpartitioned)."""
        folder = self.asset_folder(asset_key, definition_metadata)
        if partitions_def is not None and partition_key is not None:
            folder = folder.joinpath(
                *hive_folder(
                    partition_dimensions(partitions_def, partition_key, definition_metadata)
                ).split("/")
            )
        return folder

    def partition_files(self, folder: UPath, split_by: list[str]) -> list[UPath] | None:
        """The data files of a partition in a stable order; None when the partition was never written."""
        if not split_by:
            target = folder / DATA_FILE_NAME
            return [target] if target.exists() else None
        if not folder.exists():
            return None
        files = sorted(folder.glob("/".join(["*"] * len(split_by) + [DATA_FILE_NAME])), key=str)
        if files or (folder / EMPTY_MARKER).exists():
            return files
        return None

    def _folders(
        self, context: dg.InputContext | dg.OutputContext, metadata: Mapping[str, Any]
    ) -> dict[str | None, UPath]:
        if not context.has_asset_partitions:
            return {None: self.partition_folder(context.asset_key, None, None, metadata)}
        return {
            key: self.partition_folder(
                context.asset_key, context.asset_partitions_def, key, metadata
            )
            for key in context.asset_partition_keys
        }

    # --- writing -------------------------------------------------------------------------------

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        self._write_partition(context, None, obj, path.parent)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        paths = self._folders(context, context.definition_metadata or {})
        if len(paths) > 1 or isinstance(obj, Mapping):
            if not isinstance(obj, Mapping):
                raise LakeError(
                    f"asset {context.asset_key.to_user_string()} ran for {len(paths)} partitions and "
                    f"returned a {type(obj).__name__}; return a dict {{partition_key: data}} with one "
                    "entry per partition of the run"
                )
            missing = sorted(set(paths) - set(obj))
            extra = sorted(set(obj) - set(paths))
            if missing or extra:
                raise LakeError(
                    f"asset {context.asset_key.to_user_string()}: the returned partitions do not match "
                    f"the run's (missing {missing[:5]}, not in the run {extra[:5]})"
                )
            items = [(key, obj[key], paths[key]) for key in paths]
        else:
            ((key, path),) = paths.items()
            items = [(key, obj, path)]

        results: list[tuple[str | None, WriteResult, UPath]] = []
        empty: list[str | None] = []
        completed = {
            key: data.reason for key, data, _ in items if isinstance(data, CompletedPartition)
        }
        for key, data, folder in items:
            context.log.debug(
                f"writing partition {key} of {context.asset_key.to_user_string()} to {folder}"
            )
            written = self._write_partition(context, key, data, folder)
            results.extend((key, result, sidecar) for result, sidecar in written)
            if not written:
                empty.append(key)
        run_level, by_partition = self._output_metadata(results, empty)
        for key, reason in completed.items():
            by_partition.setdefault(key, {})["completed_earlier"] = dg.MetadataValue.text(reason)
        if completed:
            run_level["partitions_completed_earlier"] = dg.MetadataValue.int(len(completed))
        context.add_output_metadata(run_level)
        if len(by_partition) > 1:
            # A range run makes one materialization per partition: each gets its own figures.
            for key, metadata in by_partition.items():
                context.step_context.add_asset_metadata(
                    metadata, asset_key=context.asset_key, partition_key=key
                )
        elif by_partition:
            context.add_output_metadata(next(iter(by_partition.values())))

    def _write_partition(
        self, context: dg.OutputContext, partition_key: str | None, data: Any, folder: UPath
    ) -> list[tuple[WriteResult, UPath]]:
        """Write one partition's files and their sidecars, then drop what an earlier run left."""
        if isinstance(data, CompletedPartition):
            return self._keep_partition(context, folder, data.reason)
        explicit = data if isinstance(data, LakeOutput) else LakeOutput(data=data)
        parents = [*explicit.parents, *self._parents_for(context, partition_key)]
        if not parents:
            raise CustodyError(
                f"asset {context.asset_key.to_user_string()} wrote {folder} without any parent: return "
                "LakeOutput(data, parents=[...]) naming the sources it read"
            )
        split_by = _split_by(context.definition_metadata or {})
        # Metadata `lake/row_group_size` bounds an asset's pending rows per open file (split outputs
        # hold one pending group per value), where the default would hold too much.
        row_group_size = int(
            (context.definition_metadata or {}).get(
                ROW_GROUP_SIZE_METADATA_KEY, self.row_group_size
            )
        )
        options = {
            "row_group_size": row_group_size,
            "zstd_level": self.zstd_level,
            "fsync": self.fsync,
        }
        if split_by:
            # Metadata `lake/split_grouped: true`: the asset streams each value's rows together, so
            # a value's file is finished when the next begins (one pending row group in all).
            grouped = bool(
                (context.definition_metadata or {}).get(SPLIT_GROUPED_METADATA_KEY, False)
            )
            results = write_split_parquet(
                folder, explicit.data, split_by, schema=explicit.schema, grouped=grouped, **options
            )
        else:
            results = [
                write_parquet(
                    folder / DATA_FILE_NAME, explicit.data, schema=explicit.schema, **options
                )
            ]
        # A split file names the parents of its own value only (metadata `lake/split_parents:
        # all` names every parent of the partition instead, for an asset that mixes values).
        exact = (
            split_by
            and (context.definition_metadata or {}).get(SPLIT_PARENTS_METADATA_KEY, "matching")
            != "all"
        )
        written = []
        for result in results:
            if exact:
                values = _hive_values(self.factory.relative(result.path))
                file_parents = parents_of_split_file(
                    parents, {name: values[name] for name in split_by if name in values}
                )
            else:
                file_parents = parents
            record = self.factory.processed(
                result.path,
                sha256=result.sha256,
                size_bytes=result.size_bytes,
                rows=result.rows,
                parents=file_parents,
                transformation_name=context.asset_key.to_user_string(),
                transformation_params=dict(explicit.params),
                asset_key=context.asset_key.to_user_string(),
                partition_key=partition_key,
                run_id=context.run_id,
            )
            written.append((result, write_sidecar(result.path, record, fsync=self.fsync)))
        if split_by:
            self._finish_split_partition(
                context,
                folder,
                [r.path for r in results],
                explicit.schema or _schema_of(explicit.data),
                parents,
            )
        return written

    def _keep_partition(
        self, context: dg.OutputContext, folder: UPath, reason: str
    ) -> list[tuple[WriteResult, UPath]]:
        """The files of a partition completed earlier, verified against their sidecars, as written."""
        files = self.partition_files(folder, _split_by(context.definition_metadata or {}))
        if not files:
            raise LakeError(
                f"asset {context.asset_key.to_user_string()}: {folder} was returned as completed "
                "earlier, but it holds no data file to keep"
            )
        kept = []
        for path in files:
            record = verify_file(path)
            with path.open("rb") as handle:
                footer = pq.ParquetFile(handle).metadata
            result = WriteResult(
                path=path,
                sha256=record.file_sha256,
                size_bytes=int(getattr(record, "size_bytes", 0) or 0),
                rows=footer.num_rows,
                row_groups=footer.num_row_groups,
                schema=footer.schema.to_arrow_schema(),
            )
            kept.append((result, sidecar_path(path)))
        context.log.info(f"kept {folder} as it is: {reason}")
        return kept

    def _finish_split_partition(
        self,
        context: dg.OutputContext,
        folder: UPath,
        kept: list[UPath],
        schema: pa.Schema | None,
        parents: list[ParentRef],
    ) -> None:
        """Remove files of values this run no longer has; mark a partition with no rows as empty."""
        keep = {str(p) for p in kept}
        for stale in sorted(folder.rglob(DATA_FILE_NAME), key=str):
            if str(stale) not in keep:
                context.log.info(f"removing {stale}: its value is no longer in the partition")
                sidecar_path(stale).unlink(missing_ok=True)
                stale.unlink(missing_ok=True)
                _remove_empty_folders(stale.parent, stop=folder)
        marker = folder / EMPTY_MARKER
        if kept:
            marker.unlink(missing_ok=True)
        else:
            if schema is None:
                raise LakeError(
                    f"{folder}: an empty partition needs a schema (LakeOutput(schema=...))"
                )
            folder.mkdir(parents=True, exist_ok=True)
            # The marker stands in for the partition's files in the chain of custody: it names the
            # partition's parents, and downstream files name the marker as theirs.
            write_bytes_atomic(
                marker,
                json.dumps(
                    {
                        "asset_key": context.asset_key.to_user_string(),
                        "run_id": context.run_id,
                        "parents": [p.model_dump(mode="json") for p in parents],
                        "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode(),
                    },
                    sort_keys=True,
                    indent=2,
                ).encode(),
                fsync=self.fsync,
            )

    def _parents_for(self, context: dg.OutputContext, partition_key: str | None) -> list[ParentRef]:
        loaded = self._loaded.get(_step_identity(context), [])
        if partition_key is None or len({k for k, _ in loaded}) <= 1:
            chosen = [ref for _, ref in loaded]
        else:
            # In a range run, partition P of the output is made from partition P of its inputs
            # (and from any unpartitioned input).
            chosen = [ref for key, ref in loaded if key in (partition_key, None)] or [
                ref for _, ref in loaded
            ]
        upstream = _upstream_keys(context)
        if upstream is not None:
            origin = self._loaded_from.get(_step_identity(context), {})
            chosen = [
                ref for ref in chosen if ref.path not in origin or origin[ref.path] in upstream
            ] or chosen
        unique = {ref.path: ref for ref in chosen}
        return [unique[p] for p in sorted(unique)]

    def _output_metadata(
        self, results: list[tuple[str | None, WriteResult, UPath]], empty: list[str | None]
    ) -> tuple[dict[str, Any], dict[str | None, dict[str, Any]]]:
        """Metadata of the whole write, and of each partition's materialization."""
        run_level: dict[str, Any] = {
            "partitions_written": dg.MetadataValue.int(
                len({k for k, _, _ in results} | set(empty))
            ),
            "bytes_written": dg.MetadataValue.int(sum(r.size_bytes for _, r, _ in results)),
            "run_finished_utc": dg.MetadataValue.text(
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            ),
        }
        if results:
            run_level["dagster/column_schema"] = column_schema(results[0][1].schema)
        grouped: dict[str | None, list[tuple[WriteResult, UPath]]] = {key: [] for key in empty}
        for key, result, sidecar in results:
            grouped.setdefault(key, []).append((result, sidecar))
        by_partition: dict[str | None, dict[str, Any]] = {}
        for key, files in grouped.items():
            rows = sum(r.rows for r, _ in files)
            metadata: dict[str, Any] = {
                "dagster/row_count": dg.MetadataValue.int(rows),
                "output_files": dg.MetadataValue.json(
                    [self.factory.relative(r.path) for r, _ in files]
                ),
                "empty_partition": dg.MetadataValue.bool(not files),
            }
            null_rates = _null_rates([r for r, _ in files], rows)
            if null_rates:
                # Plain numbers, so the UI plots each nullable column's rate over time.
                metadata["null_rate_max"] = dg.MetadataValue.float(max(null_rates.values()))
                for column, rate in null_rates.items():
                    metadata[f"null_rate/{column}"] = dg.MetadataValue.float(rate)
            if len(files) == 1:
                result, sidecar = files[0]
                metadata["path"] = dg.MetadataValue.path(str(result.path))
                metadata["sha256"] = dg.MetadataValue.text(result.sha256)
                metadata["sidecar"] = dg.MetadataValue.path(str(sidecar))
                metadata["trace"] = dg.MetadataValue.text(f"pipeline trace {result.path}")
            metadata["summary"] = dg.MetadataValue.md(
                self._summary([r for r, _ in files], rows, null_rates)
            )
            by_partition[key] = metadata
        return run_level, by_partition

    def _summary(self, results: list[WriteResult], rows: int, null_rates: dict[str, float]) -> str:
        """The partition as the UI's markdown: its files, each with the command tracing it."""
        if not results:
            return f"**Empty partition**: no rows; `{EMPTY_MARKER}` stands in for its files."
        files = f"{len(results)} file{'s' if len(results) > 1 else ''}"
        lines = [f"**{rows:,} rows** in {files}, {sum(r.size_bytes for r in results):,} bytes."]
        if null_rates:
            worst = max(null_rates, key=lambda c: null_rates[c])
            lines.append(f"Highest null rate: `{worst}` {null_rates[worst]:.2%}.")
        lines += ["", "| file | rows | sha256 | trace |", "| --- | ---: | --- | --- |"]
        for r in results[:_SUMMARY_MAX_FILES]:
            lines.append(
                f"| `{self.factory.relative(r.path)}` | {r.rows:,} | `{r.sha256[:12]}` "
                f"| `pipeline trace {r.path}` |"
            )
        if len(results) > _SUMMARY_MAX_FILES:
            lines.append(f"| … {len(results) - _SUMMARY_MAX_FILES} more in `output_files` | | | |")
        return "\n".join(lines)

    # --- reading -------------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> Any:
        """Load the input's partitions in the shape its type annotation asks for.

        `dict[str, T]`: one entry per partition; `pa.Table` or `pd.DataFrame`: the partitions
        concatenated in partition order; `pa.RecordBatchReader`: a stream over all of them in
        bounded memory; no annotation: one object for one partition, a dict for several.
        """
        upstream = context.upstream_output
        upstream_metadata = (upstream.definition_metadata if upstream is not None else None) or {}
        split_by = _split_by(upstream_metadata)
        folders = self._folders(context, upstream_metadata)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        present: dict[str | None, dict[UPath, str] | pa.Schema] = {}
        for key, folder in folders.items():
            files = self.partition_files(folder, split_by)
            if files is None:
                if allow_missing and key is not None:
                    context.log.warning(self.get_missing_partition_log_message(key))
                    continue
                what = f"partition {key} of " if key is not None else ""
                expected = folder if split_by else folder / DATA_FILE_NAME
                raise LakeError(
                    f"{what}asset {context.asset_key.to_user_string()} is missing: expected {expected}; "
                    "materialize it first"
                )
            if files:
                present[key] = {path: self._check_and_record(context, key, path) for path in files}
            else:
                marker = folder / EMPTY_MARKER
                ref = self.factory.file_parent(marker)
                self._loaded[_step_identity(context)].append((key, ref))
                self._loaded_from[_step_identity(context)][ref.path] = context.asset_key
                present[key] = _empty_schema(marker)

        wanted = context.dagster_type.typing_type if context.dagster_type else Any
        if typing.get_origin(wanted) is dict:
            value_type = (typing.get_args(wanted) or (Any, Any))[1]
            return {key: self._read_as(value_type, [entry]) for key, entry in present.items()}
        if wanted in (pa.Table, pd.DataFrame, pa.RecordBatchReader):
            return self._read_as(wanted, list(present.values()))
        if not context.has_asset_partitions or len(folders) == 1:
            return self._read_as(pa.Table, list(present.values()))
        return {key: self._read_as(pa.Table, [entry]) for key, entry in present.items()}

    def _check_and_record(
        self, context: dg.InputContext, partition_key: str | None, path: UPath
    ) -> str:
        """Read the file's sidecar and note the file as a parent of what this step writes;
        returns the SHA256 the file must have."""
        record = read_sidecar(path)
        ref = self.factory.file_parent(path, sha256=record.file_sha256)
        self._loaded[_step_identity(context)].append((partition_key, ref))
        self._loaded_from[_step_identity(context)][ref.path] = context.asset_key
        return record.file_sha256

    def _read_as(self, wanted: Any, partitions: list[dict[UPath, str] | pa.Schema]) -> Any:
        """Read partitions (each its files with their expected SHA256, or the schema of an empty
        one) as one object of the wanted type."""
        files = {
            path: sha for part in partitions if isinstance(part, dict) for path, sha in part.items()
        }
        schemas = [part for part in partitions if isinstance(part, pa.Schema)]
        if not files:
            if not schemas:
                raise LakeError("no partitions to read")
            table = schemas[0].empty_table()
            if wanted is pa.RecordBatchReader:
                return pa.RecordBatchReader.from_batches(table.schema, [])
            return table.to_pandas() if wanted is pd.DataFrame else table
        if wanted is pa.RecordBatchReader:
            if self.verify_on_load:
                for path, sha in files.items():
                    verify_file(path, expected_sha256=sha)
            readers = [stream_parquet(p) for p in files]
            return pa.RecordBatchReader.from_batches(
                readers[0].schema, (b for r in readers for b in r)
            )
        tables = [
            read_parquet(path, expected_sha256=sha if self.verify_on_load else None)
            for path, sha in files.items()
        ]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return table.to_pandas() if wanted is pd.DataFrame else table

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return read_parquet(path)


class LakeIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet lake on local disk or object storage (`lake_root` a folder or an fsspec URL)."""

    lake_root: str = Field(description="Folder or fsspec URL (s3://bucket/prefix) of the lake.")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server.")
    aws_access_key_id: str | None = Field(
        None, description="Key id for object storage (from the environment)."
    )
    aws_secret_access_key: str | None = Field(
        None, description="Secret for object storage (from the environment)."
    )
    row_group_size: int = Field(DEFAULT_ROW_GROUP_SIZE, description="Rows per Parquet row group.")
    zstd_level: int = Field(DEFAULT_ZSTD_LEVEL, description="zstd compression level.")
    fsync: bool = Field(True, description="Flush files to disk before they appear (local disk).")
    verify_on_load: bool = Field(
        True, description="Check each file's SHA256 against its sidecar before reading it."
    )

    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.lake_root.startswith("s3://"):
            if self.s3_endpoint_url:
                options["endpoint_url"] = self.s3_endpoint_url
            if self.aws_access_key_id:
                options["key"] = self.aws_access_key_id
            if self.aws_secret_access_key:
                options["secret"] = self.aws_secret_access_key
        return options

    def base_path(self) -> UPath:
        return as_upath(self.lake_root, **self.storage_options())

    def create_io_manager(self, context: dg.InitResourceContext) -> LakeParquetIOManager:
        return LakeParquetIOManager(
            self.base_path(),
            row_group_size=self.row_group_size,
            zstd_level=self.zstd_level,
            fsync=self.fsync,
            verify_on_load=self.verify_on_load,
        )
