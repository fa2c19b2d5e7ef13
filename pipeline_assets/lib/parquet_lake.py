"""Writing and reading the Parquet lake: deterministic files, hive-style partition folders.

Determinism: the same rows give the same bytes, whatever batches they arrive in. Rows are
re-cut into row groups of a fixed size (`row_group_size`) and each row group is written from
contiguous arrays, with fixed writer settings and nothing time-dependent inside the file.
Streaming: a `RecordBatchReader` or an iterator of batches is written holding at most one row
group in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from contracts.custody import ParentRef
from pipeline_assets.lib.files import atomic_write, is_local, sha256_file

DATA_FILE_NAME = "data.parquet"
# Stands in for the files of a partition that has no rows (see the lake IO manager).
EMPTY_MARKER = "_empty.json"
# pyarrow's own default: on these machines, smaller groups wrote 2x slower and 15-35% larger
# files; a reader streaming the file holds one group (tens of MB for market rows) at a time.
DEFAULT_ROW_GROUP_SIZE = 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3

# Hashing runs beside Parquet decoding; both release the GIL, so a second core does the hashing.
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lake-sha256")

_PARTITION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class LakeError(Exception):
    """A lake file is missing, unreadable, or not what the reader expected."""


@dataclass
class LakeOutput:
    """Data for one file of the lake, with what it was made from.

    `data` is a Table, a RecordBatch, a RecordBatchReader, or an iterable of RecordBatches (then
    `schema` is required). `parents` are inputs the IO manager cannot see itself (source files,
    queries); `params` are recorded as the transformation's parameters in the sidecar.
    """

    data: Any
    parents: Sequence[ParentRef] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    schema: pa.Schema | None = None


@dataclass(frozen=True)
class WriteResult:
    path: UPath
    sha256: str
    size_bytes: int
    rows: int
    row_groups: int
    schema: pa.Schema


def hive_segment(name: str, value: str) -> str:
    """One `name=value` folder; the value escaped as Hive does, so no key can leave its folder."""
    if not _PARTITION_NAME.match(name):
        raise LakeError(f"partition folder name {name!r}: expected lowercase letters, digits and _")
    if value == "":
        raise LakeError(f"partition {name!r} has an empty key")
    return f"{name}={urllib.parse.quote(value, safe='-_.~ ')}"


def hive_folder(dimensions: Sequence[tuple[str, str]]) -> str:
    return "/".join(hive_segment(name, value) for name, value in dimensions)


def time_levels(start: dt.datetime, levels: Sequence[str]) -> list[tuple[str, str]]:
    """The `(folder name, value)` pairs of a time window laid out over several hive levels.

    `levels` are `name=<strftime format>` items, outermost first: `["date=%Y-%m-%d", "hour=%H"]`
    puts the hour starting at 2026-02-17 10:00 in `date=2026-02-17/hour=10`. Together the levels
    must name the start exactly (in the partitions' own time zone), so that no two windows share
    a folder; levels that lose part of it raise `LakeError`.
    """
    pairs = []
    for level in levels:
        name, sep, fmt = str(level).partition("=")
        if not sep or not fmt:
            raise LakeError(f"partition level {level!r}: expected 'name=<strftime format>'")
        pairs.append((name, fmt))
    if not pairs:
        raise LakeError("partition levels: expected at least one 'name=<strftime format>'")
    values = [start.strftime(fmt) for _, fmt in pairs]
    # A separator no format or value holds, to parse the values back as one string.
    try:
        parsed = dt.datetime.strptime("\x1f".join(values), "\x1f".join(f for _, f in pairs))
    except ValueError as exc:
        raise LakeError(
            f"partition levels {list(levels)}: {values} do not parse back ({exc})"
        ) from exc
    if parsed != start.replace(tzinfo=None):
        raise LakeError(
            f"partition levels {list(levels)} do not identify the window starting at "
            f"{start.isoformat()} (they give {parsed.isoformat()}): add the missing fields"
        )
    return [(name, value) for (name, _), value in zip(pairs, values)]


def parse_hive_folder(folder: str) -> dict[str, str]:
    """Inverse of `hive_folder`."""
    parts = {}
    for segment in folder.strip("/").split("/"):
        name, _, value = segment.partition("=")
        parts[name] = urllib.parse.unquote(value)
    return parts


def _batches(data: Any, schema: pa.Schema | None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches())
    if isinstance(data, pa.RecordBatch):
        return data.schema, iter([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data)
    if hasattr(data, "to_arrow") and not isinstance(data, Iterable):
        table = data.to_arrow()
        return table.schema, iter(table.to_batches())
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            table = pa.Table.from_pandas(data, preserve_index=False)
            return table.schema, iter(table.to_batches())
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(data, Iterable):
        if schema is None:
            raise LakeError(
                "an iterable of record batches needs an explicit schema (LakeOutput(schema=...))"
            )
        return schema, iter(data)
    raise LakeError(
        f"cannot write {type(data).__name__} to Parquet: expected a pyarrow Table, RecordBatch, "
        "RecordBatchReader, an iterable of RecordBatches, or a pandas DataFrame"
    )


class _ParquetSink:
    """One lake file being written: rows are re-cut into fixed row groups as they arrive."""

    def __init__(
        self,
        path: UPath,
        schema: pa.Schema,
        stack: contextlib.ExitStack,
        *,
        row_group_size: int,
        zstd_level: int,
        fsync: bool,
    ):
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self._out = stack.enter_context(atomic_write(path, fsync=fsync))
        self._writer = stack.enter_context(
            pq.ParquetWriter(
                self._out,
                schema,
                compression="zstd",
                compression_level=zstd_level,
                version="2.6",
                use_dictionary=True,
                write_statistics=True,
                store_schema=True,
            )
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0
        self.row_groups = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self.row_group_size:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._write_group(table.slice(0, self.row_group_size))
            rest = table.slice(self.row_group_size)
            self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        self._writer.write_table(table.combine_chunks(), row_group_size=self.row_group_size)
        self.rows += table.num_rows
        self.row_groups += 1

    def finish(self) -> None:
        """Write the last row group; the file becomes visible when the ExitStack closes."""
        if self._pending_rows:
            self._write_group(pa.Table.from_batches(self._pending, schema=self.schema))
            self._pending, self._pending_rows = [], 0
        if self.rows == 0:
            # An empty file is still a readable file with the schema.
            self._writer.write_table(self.schema.empty_table())

    def result(self) -> WriteResult:
        return WriteResult(
            self.path,
            self._out.hexdigest,
            self._out.bytes_written,
            self.rows,
            self.row_groups,
            self.schema,
        )


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema == schema:
        return batch
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise LakeError(f"a record batch does not match the output schema: {exc}") from exc


def write_parquet(
    path: UPath,
    data: Any,
    *,
    schema: pa.Schema | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    fsync: bool = True,
) -> WriteResult:
    """Write `data` to `path` atomically and deterministically; returns the file's hash and size."""
    out_schema, batches = _batches(data, schema)
    with contextlib.ExitStack() as stack:
        sink = _ParquetSink(
            path,
            out_schema,
            stack,
            row_group_size=row_group_size,
            zstd_level=zstd_level,
            fsync=fsync,
        )
        for batch in batches:
            sink.add(_conformed(batch, out_schema))
        sink.finish()
    return sink.result()


def _split_keys(batch: pa.RecordBatch, columns: Sequence[str]) -> list[tuple[str, ...]]:
    table = pa.Table.from_batches([batch])
    for column in columns:
        if table.column(column).null_count:
            raise LakeError(
                f"split column {column!r} has null values; expected a value in every row"
            )
    distinct = table.group_by(list(columns)).aggregate([]).to_pylist()
    return sorted(tuple(str(row[c]) for c in columns) for row in distinct)


def _rows_of(batch: pa.RecordBatch, columns: Sequence[str], key: tuple[str, ...]) -> pa.RecordBatch:
    mask = None
    for column, value in zip(columns, key):
        values = batch.column(batch.schema.get_field_index(column))
        term = pc.equal(pc.cast(values, pa.string()), value)
        mask = term if mask is None else pc.and_(mask, term)
    return batch.filter(mask)


def write_split_parquet(
    folder: UPath,
    data: Any,
    split_by: Sequence[str],
    *,
    schema: pa.Schema | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    fsync: bool = True,
    grouped: bool = False,
) -> list[WriteResult]:
    """Write rows into `folder/<col>=<value>/.../data.parquet`, one file per distinct value.

    Rows stay in arrival order within each file, so the bytes equal those of filtering the whole
    table. Streams are split as they arrive: memory holds one pending row group per open file.
    With `grouped`, the stream promises that each value's rows arrive together: a file is
    finished (its last row group written) as soon as another value begins, so memory holds one
    pending row group in all; a value that comes back raises `LakeError`.
    """
    out_schema, batches = _batches(data, schema)
    missing = [c for c in split_by if c not in out_schema.names]
    if missing:
        raise LakeError(f"split columns {missing} are not in the output schema {out_schema.names}")
    sinks: dict[tuple[str, ...], _ParquetSink] = {}
    finished: set[tuple[str, ...]] = set()
    with contextlib.ExitStack() as stack:
        for batch in batches:
            batch = _conformed(batch, out_schema)
            if batch.num_rows == 0:
                continue
            for key in _split_keys(batch, split_by):
                if grouped:
                    if key in finished:
                        raise LakeError(
                            f"rows of {dict(zip(split_by, key))} arrived again after other values: "
                            f"the stream is not grouped by {list(split_by)}"
                        )
                    for other in [k for k in sinks if k != key and k not in finished]:
                        sinks[other].finish()
                        finished.add(other)
                if key not in sinks:
                    sub = hive_folder(list(zip(split_by, key)))
                    sinks[key] = _ParquetSink(
                        folder.joinpath(*sub.split("/"), DATA_FILE_NAME),
                        out_schema,
                        stack,
                        row_group_size=row_group_size,
                        zstd_level=zstd_level,
                        fsync=fsync,
                    )
                sinks[key].add(_rows_of(batch, split_by, key))
        for key, sink in sinks.items():
            if key not in finished:
                sink.finish()
    return [sinks[key].result() for key in sorted(sinks)]


def _native_source(path: UPath) -> Any:
    """A local path as a plain string (pyarrow reads it natively, in parallel); else a file object."""
    return path.path if is_local(path) else path.open("rb")


def open_parquet(path: UPath) -> pq.ParquetFile:
    """Open a lake file, turning a missing or corrupt file into an error that names it."""
    try:
        source = _native_source(path)
    except FileNotFoundError as exc:
        raise LakeError(f"{path}: the file does not exist") from exc
    try:
        return pq.ParquetFile(source)
    except FileNotFoundError as exc:
        raise LakeError(f"{path}: the file does not exist") from exc
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if hasattr(source, "close"):
            source.close()
        raise LakeError(
            f"{path}: not a readable Parquet file ({exc}); expected a file written by the lake"
        ) from exc


def read_parquet(path: UPath, *, expected_sha256: str | None = None) -> pa.Table:
    """Read a whole file; with `expected_sha256`, its bytes are hashed alongside the decoding
    (on another core) and a mismatch raises instead of returning the rows."""
    hashing = _HASH_POOL.submit(sha256_file, path) if expected_sha256 is not None else None

    def check_hash() -> None:
        if hashing is not None:
            actual, _ = hashing.result()
            if actual != expected_sha256:
                raise LakeError(
                    f"{path}: SHA256 is {actual}, but its sidecar records {expected_sha256} "
                    "(the file was changed after it was written)"
                )

    try:
        parquet_file = open_parquet(path)
        try:
            table = parquet_file.read()
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise LakeError(f"{path}: corrupt Parquet data ({exc})") from exc
        finally:
            parquet_file.close()
    except LakeError:
        # A changed file is the likelier story than a bug in the reader: say so when the hash agrees.
        check_hash()
        raise
    check_hash()
    return table


def stream_parquet(path: UPath, batch_size: int = 64 * 1024) -> pa.RecordBatchReader:
    """A reader over the file's batches, holding about one row group in memory."""
    parquet_file = open_parquet(path)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet_file.iter_batches(batch_size=batch_size)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise LakeError(f"{path}: corrupt Parquet data ({exc})") from exc
        finally:
            parquet_file.close()

    return pa.RecordBatchReader.from_batches(parquet_file.schema_arrow, batches())
