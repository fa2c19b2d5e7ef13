"""Reading one window of one dataset from Postgres in bounded memory, and shaping it to the contract.

`read_window` runs the window query as `COPY (...) TO STDOUT (FORMAT csv)`. A thread streams the
COPY bytes into a pipe while hashing them; Arrow's CSV reader parses the other end in blocks, and
each block becomes contract rows (UTC timestamps, exact decimals, redacted text and JSON, `v1`),
written to a private Arrow stream file, and dead-letter rows. Postgres and Python work at the same
time; memory holds a block, whatever the window's size.

A connection lost mid-stream (or any transient `OperationalError`) throws the partial file away
and reads the window again on a new connection, with exponential backoff and jitter, so a retry
can never duplicate a row: nothing reaches the lake before the whole window has been read. The
SHA256 of the COPY bytes is the content hash of the rows in a canonical encoding (the classified
CSV, in key order), recorded as the `query` parent of every file made from them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from contracts.core import arrow_schema
from contracts.hq import EXPORT_SCHEMA_VERSION, DxDeadLetter
from pipeline_assets.lib.hq.datasets import (
    BOOKKEEPING,
    SOURCE_SCHEMA,
    VERSION_COLUMN,
    DatasetSpec,
    copy_statement,
    transport_schema,
    window_query,
)
from pipeline_assets.lib.hq.redaction import (
    redact_json_array,
    redact_json_value,
    redact_text,
    redact_text_array,
)

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
DEAD_LETTER_SCHEMA = arrow_schema(DxDeadLetter)
BLOCK_SIZE = 4 * 1024 * 1024
SUPERSEDED = "superseded"


class SourceSchemaError(RuntimeError):
    """The source table is missing, or lacks a column the contract needs."""


class SourceReadError(RuntimeError):
    """A window could not be read after every attempt (the message names dataset and window)."""


@dataclass
class SourceRead:
    """What was read for one window: the query, its row count and the SHA256 of its bytes."""

    spec: DatasetSpec
    sha256: str
    size_bytes: int
    query: str
    attempts: int
    rows: int


@dataclass
class WindowResult:
    """Counts of one dataset window, filled while its rows stream to the lake."""

    rows: int = 0
    rows_by_org: dict[str, int] = field(default_factory=dict)
    dead: list[dict[str, Any]] = field(default_factory=list)
    # Upsert datasets: versions a later, higher version replaced (not errors; not exported).
    superseded: int = 0
    dead_keys: dict[str, int] = field(default_factory=dict)

    def dead_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.dead:
            out[row["reason"]] = out.get(row["reason"], 0) + 1
        return dict(sorted(out.items()))


def session_setup(conn: psycopg.Connection) -> None:
    """Every export session reads in UTC, read-only."""
    conn.read_only = True
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")


class ReusedConnection:
    """One connection shared by the reads of a run, opened on first use and again after a failure.

    Calling it gives a context manager like `SourcePostgres.connection()`; an error inside closes
    the connection, so the retry of that read starts on a fresh one.
    """

    def __init__(self, connect: Connect):
        self._connect = connect
        self._stack: contextlib.ExitStack | None = None
        self._conn: psycopg.Connection | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[psycopg.Connection]:
        if self._conn is None or self._conn.closed:
            self.close()
            self._stack = contextlib.ExitStack()
            self._conn = self._stack.enter_context(self._connect())
        try:
            yield self._conn
        except BaseException:
            self.close()  # whatever state a failed read left it in, the next one starts afresh
            raise

    def close(self) -> None:
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._stack.close()
        self._stack, self._conn = None, None


def check_source_columns(
    conn: psycopg.Connection, spec: DatasetSpec, schema: str = SOURCE_SCHEMA
) -> None:
    """Raise SourceSchemaError naming the table or the columns the contract needs and it lacks."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, spec.table),
    ).fetchall()
    if not rows:
        raise SourceSchemaError(
            f"source table {schema}.{spec.table} does not exist (dataset {spec.name} reads it)"
        )
    present = {r[0] for r in rows}
    missing = [c for c in spec.source_columns if c not in present]
    if missing:
        raise SourceSchemaError(
            f"source table {schema}.{spec.table} has no column {', '.join(repr(c) for c in missing)}; "
            f"contract {spec.name} {spec.model.contract.version} needs it (a removed or renamed "
            "source column needs a new export version, v2)"
        )


def read_window(
    connect: Connect,
    spec: DatasetSpec,
    key: str,
    start: Any,
    end: Any,
    *,
    schema: str = SOURCE_SCHEMA,
    attempts: int = 5,
    backoff_seconds: float = 0.5,
    max_backoff_seconds: float = 8.0,
    spool_dir: str | None = None,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> tuple[PreparedWindow, SourceRead]:
    """Read and shape the window [start, end) (partition `key`), retrying transient failures whole."""
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            prepared, read = _read_once(connect, spec, (key, start, end), schema, spool_dir)
            read.attempts = attempt
            return prepared, read
        except psycopg.OperationalError as exc:
            text = str(exc).strip()
            last_error = text.splitlines()[0] if text else type(exc).__name__
        if attempt == attempts:
            break
        delay = min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        if on_retry is not None:
            on_retry(attempt, delay, last_error)
        time.sleep(delay)
    raise SourceReadError(
        f"dataset {spec.name}, window [{start}, {end}): reading {schema}.{spec.table} failed "
        f"{attempts} times; last error: {last_error}"
    )


def _read_once(
    connect: Connect,
    spec: DatasetSpec,
    window: tuple[str, Any, Any],
    schema: str,
    spool_dir: str | None,
) -> tuple[PreparedWindow, SourceRead]:
    _, start, end = window
    with connect() as conn:
        session_setup(conn)
        check_source_columns(conn, spec, schema)
        statement = copy_statement(window_query(spec, start, end, schema=schema))
        query_text = statement.as_string(conn)
        digest = hashlib.sha256()
        produced = {"bytes": 0, "rows": 0}
        failure: list[BaseException] = []
        read_fd, write_fd = os.pipe()

        def produce() -> None:
            try:
                with os.fdopen(write_fd, "wb") as sink, conn.cursor() as cursor:
                    with cursor.copy(statement) as copy:
                        for chunk in copy:
                            digest.update(chunk)
                            produced["bytes"] += len(chunk)
                            sink.write(chunk)
                    produced["rows"] = max(cursor.rowcount, 0)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the reading thread
                failure.append(exc)

        producer = threading.Thread(target=produce, name=f"copy-{spec.name}", daemon=True)
        producer.start()
        prepared: PreparedWindow | None = None
        try:
            with os.fdopen(read_fd, "rb") as source:
                prepared = prepare_stream(spec, source, window, spool_dir=spool_dir)
        finally:
            producer.join()
            # A failed COPY explains a failed parse (a truncated stream) and decides the retry.
            # (A broken pipe only means the reader stopped first: its own error is on its way.)
            if failure and not isinstance(failure[0], BrokenPipeError):
                if prepared is not None:
                    prepared.remove()
                raise failure[0]
        conn.rollback()
    assert prepared is not None
    read = SourceRead(spec, digest.hexdigest(), produced["bytes"], query_text, 1, produced["rows"])
    return prepared, read


def _csv_batches(
    spec: DatasetSpec, source: Any, block_size: int = BLOCK_SIZE
) -> Iterator[pa.RecordBatch]:
    """CSV transport rows as Arrow batches in the transport types, one block at a time."""
    types = transport_schema(spec)
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=list(types), block_size=block_size),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return  # no rows in the window
        raise
    yield from reader


def _to_contract_column(spec: DatasetSpec, name: str, values: pa.Array) -> pa.Array:
    target = spec.field(name).type
    if pa.types.is_decimal(target):
        return pc.cast(values, target)
    if spec.is_json(name):
        return redact_json_array(values)
    if name in spec.free_text_columns:
        return redact_text_array(values)
    return pc.cast(values, target)


def contract_batch(spec: DatasetSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Valid transport rows as a batch of the contract's schema."""
    schema = spec.schema
    arrays = []
    for f in schema:
        if f.name == VERSION_COLUMN:
            arrays.append(pa.array([EXPORT_SCHEMA_VERSION] * batch.num_rows, pa.string()))
        else:
            arrays.append(_to_contract_column(spec, f.name, batch.column(f.name)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dead_letter_row(
    spec: DatasetSpec, row: dict[str, Any], window: tuple[str, Any, Any]
) -> dict[str, Any]:
    """One dead-letter record from a transport row: contract columns only, redacted."""
    batch_key, start, end = window
    content: dict[str, Any] = {}
    for name in spec.source_columns:
        value = row[name]
        t = spec.field(name).type
        if value is not None and pa.types.is_timestamp(t):
            value = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        elif value is not None and spec.is_json(name):
            try:
                value = redact_json_value(json.loads(value))
            except json.JSONDecodeError:
                value = redact_text(value)
        elif isinstance(value, str):
            value = redact_text(value)
        content[name] = value
    return {
        "dataset": spec.name,
        "source_table": f"{SOURCE_SCHEMA}.{spec.table}",
        "source_key": redact_text(row["_key"]),
        "occurrence": 1,
        "org_id": row.get("org_id"),
        "reason": row["_reason"],
        "detail": redact_text(row["_detail"] or row["_reason"]),
        "batch": batch_key,
        "window_start": start,
        "window_end": end,
        "row_json": json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    }


def split_batch(
    spec: DatasetSpec, batch: pa.RecordBatch, window: tuple[str, Any, Any], result: WindowResult
) -> pa.RecordBatch:
    """The batch's exported rows in the contract schema; its dead rows appended to `result`."""
    reasons = batch.column("_reason")
    if reasons.null_count < batch.num_rows:
        superseded = pc.fill_null(pc.equal(reasons, SUPERSEDED), False)
        if pc.any(superseded).as_py():
            result.superseded += pc.sum(pc.cast(superseded, pa.int64())).as_py()
            batch = batch.filter(pc.invert(superseded))
            reasons = batch.column("_reason")
    if reasons.null_count < batch.num_rows:
        dead = batch.filter(pc.invert(pc.is_null(reasons)))
        for row in dead.to_pylist():
            record = dead_letter_row(spec, row, window)
            # The n-th dead row of a key in the window (rows arrive in a fixed order).
            record["occurrence"] = result.dead_keys[record["source_key"]] = (
                result.dead_keys.get(record["source_key"], 0) + 1
            )
            result.dead.append(record)
        batch = batch.filter(pc.is_null(reasons))
    out = contract_batch(spec, batch.drop_columns(list(BOOKKEEPING)))
    result.rows += out.num_rows
    if out.num_rows:
        counts = pc.value_counts(out.column("org_id"))
        for item in counts.to_pylist():
            result.rows_by_org[item["values"]] = (
                result.rows_by_org.get(item["values"], 0) + item["counts"]
            )
    return out


@dataclass
class PreparedWindow:
    """One dataset window shaped to the contract, on local disk (one Arrow IPC stream file per
    `org_id`), with its counts."""

    spec: DatasetSpec
    paths: dict[str, Path]
    result: WindowResult

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The contract rows, org by org (orgs in sorted order, each org's rows in key order),
        streamed from disk; each file is removed once read, all of them if the stream is abandoned.

        Grouped by org, the lake writes one org file after the other, so it holds one pending row
        group in all, however many orgs the window has (`lake/split_grouped`).
        """
        try:
            for org in sorted(self.paths):
                # Read, not memory-mapped: mapped pages would count against the process as it goes.
                with pa.OSFile(str(self.paths[org]), "rb") as source:
                    yield from pa.ipc.open_stream(source)
                self.paths[org].unlink(missing_ok=True)
        finally:
            self.remove()

    def remove(self) -> None:
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def _org_slices(batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The batch's rows of each org_id, in their order (an exported row always has an org_id)."""
    orgs = batch.column("org_id")
    values = pc.unique(orgs).to_pylist()
    if len(values) == 1:
        yield values[0], batch
        return
    for org in values:
        yield org, batch.filter(pc.equal(orgs, org))


def prepare_stream(
    spec: DatasetSpec, source: Any, window: tuple[str, Any, Any], *, spool_dir: str | None = None
) -> PreparedWindow:
    """Classify and convert CSV transport rows block by block into one Arrow stream file per org;
    the dead rows and the counts per org land in the result."""
    result = WindowResult()
    paths: dict[str, Path] = {}
    try:
        with contextlib.ExitStack() as stack:
            writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
            for batch in _csv_batches(spec, source):
                out = split_batch(spec, batch, window, result)
                if not out.num_rows:
                    continue
                for org, rows in _org_slices(out):
                    if org not in writers:
                        fd, name = tempfile.mkstemp(
                            prefix=f".{spec.name}-", suffix=".arrows", dir=spool_dir
                        )
                        os.close(fd)
                        paths[org] = Path(name)
                        sink = stack.enter_context(pa.OSFile(name, "wb"))
                        writers[org] = stack.enter_context(pa.ipc.new_stream(sink, spec.schema))
                    writers[org].write_batch(rows)
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    return PreparedWindow(spec, paths, result)


def dead_letter_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Dead-letter rows in a stable order (dataset, key, occurrence)."""
    ordered = sorted(rows, key=lambda r: (r["dataset"], r["source_key"], r["occurrence"]))
    return pa.Table.from_pylist(ordered, schema=DEAD_LETTER_SCHEMA)
