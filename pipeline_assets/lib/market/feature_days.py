"""Running the silver features and gold bars day by day, symbol by symbol (no Dagster).

Every path (one day, a range in one run, a watcher-triggered run) calls these functions the same
way: `previous_state` finds the state the day starts from, `compute_features_day` reads the day's
bronze files one symbol at a time, spills each output to an Arrow IPC file (memory holds one
symbol's rows), and returns the end-of-day state, which `write_checkpoint` stores beside the
silver partitions. `compute_bars_day` reads the day's silver files one symbol at a time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from contracts.custody import ParentRef, ProcessedMetadata
from pipeline_assets.lib.custody import (
    CustodyError,
    MetadataFactory,
    completed_output_reason,
    read_sidecar,
    verify_file,
    write_sidecar,
)
from pipeline_assets.lib.market.bars import BARS_SCHEMA, bars_for_symbol
from pipeline_assets.lib.market.bronze import (
    BRONZE_CONNECTION_EVENTS_SCHEMA,
    BRONZE_ORDERBOOK_SCHEMA,
    BRONZE_TICKER_SCHEMA,
    BRONZE_TRADES_SCHEMA,
)
from pipeline_assets.lib.market.features import (
    ORDERBOOK_SCHEMA,
    STATE_SCHEMA,
    TICKER_SCHEMA,
    TRADES_SCHEMA,
    FeatureParams,
    FeatureState,
    FeatureStateError,
    advance_idle_streams,
    compute_symbol_day,
    disconnect_times,
    state_from_table,
    state_to_table,
)
from pipeline_assets.lib.parquet_lake import (
    DATA_FILE_NAME,
    WriteResult,
    hive_folder,
    parse_hive_folder,
    read_parquet,
    write_parquet,
)

CHECKPOINT_FOLDER = ("silver", "_state", "market_features")
CHECKPOINT_FILE = "state.parquet"
EMPTY_MARKER = "_empty.json"

SILVER_OUTPUTS = ("orderbook", "trades", "ticker")
SILVER_SCHEMAS = {"orderbook": ORDERBOOK_SCHEMA, "trades": TRADES_SCHEMA, "ticker": TICKER_SCHEMA}
BRONZE_SCHEMAS = {
    "orderbook": BRONZE_ORDERBOOK_SCHEMA,
    "trades": BRONZE_TRADES_SCHEMA,
    "ticker": BRONZE_TICKER_SCHEMA,
}


class MissingStateError(RuntimeError):
    """The previous day's state is needed and does not exist."""


class StaleLaterDaysError(RuntimeError):
    """Recomputing a day would change the state that later, already computed days started from."""


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def release_freed_memory() -> None:
    """Return the pages Arrow's allocator still holds after a symbol's buffers were freed.

    Without it they stay resident, the next symbols' buffers land beside them, and the peak of a
    range run creeps up from day to day: `bench/market_features.py` measured 916 MiB for one day
    and 1,023 MiB for ten without it, 765 and 787 MiB with it.
    """
    pa.default_memory_pool().release_unused()


# ---------------------------------------------------------------------------------------------
# Lake files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeFile:
    path: UPath
    sha256: str


def partition_symbol_files(partition_folder: UPath) -> dict[str, LakeFile]:
    """`{symbol: file}` of a partition split by symbol (none when it was never written)."""
    if not partition_folder.exists():
        return {}
    files = {}
    for path in sorted(partition_folder.glob(f"*/{DATA_FILE_NAME}"), key=str):
        symbol = parse_hive_folder(path.parent.name).get("symbol")
        if symbol is not None:
            files[symbol] = LakeFile(path, read_sidecar(path).file_sha256)
    return files


def partition_written(partition_folder: UPath) -> bool:
    """Whether a partition folder holds data files or the empty-partition marker."""
    return partition_folder.exists() and (
        (partition_folder / EMPTY_MARKER).exists()
        or (partition_folder / DATA_FILE_NAME).exists()
        or any(partition_folder.glob(f"*/{DATA_FILE_NAME}"))
    )


def read_verified(file: LakeFile) -> pa.Table:
    """A lake file's rows, its SHA256 checked against its sidecar while it is read."""
    return read_parquet(file.path, expected_sha256=file.sha256)


def read_single_file(
    partition_folder: UPath, schema: pa.Schema
) -> tuple[pa.Table, LakeFile | None]:
    """An unsplit partition's rows (its empty marker reads as no rows)."""
    path = partition_folder / DATA_FILE_NAME
    if not path.exists():
        return schema.empty_table(), None
    file = LakeFile(path, read_sidecar(path).file_sha256)
    return read_verified(file), file


# ---------------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------------


def checkpoint_path(lake_base: UPath, day: dt.date) -> UPath:
    return lake_base.joinpath(
        *CHECKPOINT_FOLDER, hive_folder([("date", day.isoformat())]), CHECKPOINT_FILE
    )


def write_checkpoint(
    lake_base: UPath,
    day: dt.date,
    state: FeatureState | pa.Table,
    params: FeatureParams,
    *,
    factory: MetadataFactory,
    parents: Sequence[ParentRef],
    run_id: str | None,
) -> WriteResult:
    """Write the end-of-day state of `day` (a state, or its checkpoint table) and its sidecar,
    recording the parameters."""
    path = checkpoint_path(lake_base, day)
    table = state if isinstance(state, pa.Table) else state_to_table(state)
    result = write_parquet(path, table, schema=STATE_SCHEMA)
    record = factory.processed(
        path,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        rows=result.rows,
        parents=list(parents),
        transformation_name="market_feature_state",
        transformation_params={"day": day.isoformat(), **params.as_params()},
        asset_key="silver_market_features",
        partition_key=day.isoformat(),
        run_id=run_id,
    )
    write_sidecar(path, record)
    return result


@dataclass
class PreviousState:
    """The state a day starts from, and where it came from."""

    state: FeatureState
    origin: str  # 'this_run', 'checkpoint', 'cold_start'
    file: LakeFile | None = None


def previous_state(
    lake_base: UPath,
    day: dt.date,
    params: FeatureParams,
    *,
    in_run: Mapping[dt.date, FeatureState],
    bronze_landed: bool,
) -> PreviousState:
    """The state at the end of `day - 1`.

    From this run when it computed that day; else from its checkpoint (verified, and written with
    the same parameters); else, when bronze has never landed that day, a cold start (every stream
    starts with `no_prior_state`). Otherwise the previous day's features must be computed first:
    `MissingStateError` says so.
    """
    before = day - dt.timedelta(days=1)
    if before in in_run:
        return PreviousState(in_run[before], "this_run")
    path = checkpoint_path(lake_base, before)
    if path.exists():
        record = read_sidecar(path)
        used = {k: record.transformation_params.get(k) for k in params.as_params()}
        if used != params.as_params():
            raise FeatureStateError(
                f"the checkpoint {path} of {before} was written with {json.dumps(used)}, but this "
                f"run uses {json.dumps(params.as_params())}: rematerialize the silver features "
                f"from the first day you want the new settings for, in one range run"
            )
        file = LakeFile(path, record.file_sha256)
        return PreviousState(state_from_table(read_verified(file)), "checkpoint", file)
    if not bronze_landed:
        return PreviousState({}, "cold_start")
    raise MissingStateError(
        f"the silver features of {day} start from the state at the end of {before}, and its "
        f"checkpoint {path} does not exist while bronze for {before} is landed: materialize "
        f"silver_orderbook_features (with its siblings) for {before} first, or a range from "
        f"{before} to {day} in one run"
    )


def checkpoint_sha256(state: FeatureState | pa.Table, scratch: Path) -> str:
    """The SHA256 the checkpoint of `state` (or of its checkpoint table) would have, written to a
    scratch file, not the lake.

    The checkpoint is written deterministically, so equal states give equal hashes.
    """
    scratch.parent.mkdir(parents=True, exist_ok=True)
    table = state if isinstance(state, pa.Table) else state_to_table(state)
    result = write_parquet(UPath(scratch), table, schema=STATE_SCHEMA, fsync=False)
    scratch.unlink(missing_ok=True)
    return result.sha256


def _recorded_start(lake_base: UPath, day: dt.date) -> str | None:
    """The SHA256 of the checkpoint of `day - 1` that the checkpoint of `day` records as its
    parent: the state `day` started from (None: it started cold, without that checkpoint)."""
    wanted = "/".join(
        [
            *CHECKPOINT_FOLDER,
            hive_folder([("date", (day - dt.timedelta(days=1)).isoformat())]),
            CHECKPOINT_FILE,
        ]
    )
    record = read_sidecar(checkpoint_path(lake_base, day))
    return next((p.sha256 for p in record.parents if p.path == wanted), None)


def stale_later_days(lake_base: UPath, day: dt.date, new_checkpoint_sha256: str) -> list[dt.date]:
    """The computed days after `day` whose state chain a new end-of-day state of `day` breaks.

    Empty when `day + 1` was never computed, or started from a checkpoint with exactly this hash
    (recomputing `day` gave the same state). Otherwise `day + 1` and every consecutive day after
    it with a checkpoint: their silver (and the gold made from it) came from the old state.
    """
    after = day + dt.timedelta(days=1)
    if not checkpoint_path(lake_base, after).exists():
        return []
    if _recorded_start(lake_base, after) == new_checkpoint_sha256:
        return []
    stale = []
    while checkpoint_path(lake_base, after).exists():
        stale.append(after)
        after += dt.timedelta(days=1)
    return stale


def checkpoint_hashes(
    states: Mapping[dt.date, FeatureState], scratch_dir: Path
) -> dict[dt.date, str]:
    """The SHA256 each day's checkpoint will have, computed before anything is written."""
    return {
        day: checkpoint_sha256(state, scratch_dir / f"{day.isoformat()}-state.parquet")
        for day, state in states.items()
    }


def link_in_run_starts(
    lake_base: UPath, days: Sequence[FeatureDay], hashes: Mapping[dt.date, str]
) -> None:
    """Name the previous day's checkpoint as a parent of each day that started from it in this run.

    A day read from the checkpoint file names it (with its hash); a day whose previous day was
    computed in the same run names the checkpoint this run is about to write, with the hash it
    will have, so the sidecars of a range run equal those of days run one at a time.
    """
    for day in days:
        before = day.day - dt.timedelta(days=1)
        if day.origin == "this_run":
            day.parents.append(LakeFile(checkpoint_path(lake_base, before), hashes[before]))


def refuse_stale_later_days(lake_base: UPath, hashes: Mapping[dt.date, str]) -> None:
    """Raise `StaleLaterDaysError` when a day of this run is the last of it before a computed day
    whose starting state it would change (`hashes`: each run day's checkpoint SHA256, from
    `checkpoint_hashes`); call it before anything is written."""
    for day in sorted(hashes):
        if day + dt.timedelta(days=1) in hashes:
            continue
        stale = stale_later_days(lake_base, day, hashes[day])
        if stale:
            first, last = min(hashes), stale[-1]
            raise StaleLaterDaysError(
                f"recomputing {day} changes the state at its end, and the silver features of "
                f"{stale[0]}{f' to {last}' if last != stale[0] else ''} were computed from the "
                f"old one (the checkpoint of {day} they started from no longer matches): "
                f"materialize {first} to {last} in one range run, so that every later day starts "
                "from the new state; nothing was written"
            )


# ---------------------------------------------------------------------------------------------
# One day of silver features
# ---------------------------------------------------------------------------------------------


@dataclass
class FeatureDay:
    day: dt.date
    spills: dict[str, Path]  # output -> Arrow IPC file of the day's rows
    rows: dict[str, int]
    resets: dict[str, int]
    state: FeatureState | None  # None once spilled (`spill_state`)
    parents: list[LakeFile] = field(default_factory=list)
    origin: str = "cold_start"
    state_spill: Path | None = None

    def reader(self, output: str) -> pa.RecordBatchReader:
        """The day's rows of one output, streamed from its spill file."""
        return _file_reader(pa.memory_map(str(self.spills[output])))

    def table(self, output: str) -> pa.Table:
        return _read_spill(self.spills[output])

    def checkpoint_table(self) -> pa.Table:
        """The end-of-day state as its checkpoint table (from memory or from its spill file)."""
        if self.state is not None:
            return state_to_table(self.state)
        if self.state_spill is None:
            raise FeatureStateError(f"the end-of-day state of {self.day} was never computed")
        return _read_spill(self.state_spill)

    def spill_state(self, spill_dir: Path) -> pa.Table:
        """Move the end-of-day state to a spill file, so that a range run holds the state of one
        day at a time, whatever the range; returns its checkpoint table."""
        table = self.checkpoint_table()
        path = spill_dir / f"{self.day.isoformat()}-state.arrow"
        with pa.ipc.new_file(str(path), table.schema) as writer:
            writer.write_table(table)
        self.state, self.state_spill = None, path
        return table


def _read_spill(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _file_reader(source: pa.NativeFile) -> pa.RecordBatchReader:
    file = pa.ipc.open_file(source)

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(file.num_record_batches):
            yield file.get_batch(i)

    return pa.RecordBatchReader.from_batches(file.schema, batches())


def compute_features_day(
    day: dt.date,
    bronze_folders: Mapping[str, UPath],
    connection_events_folder: UPath,
    start: PreviousState,
    params: FeatureParams,
    spill_dir: Path,
) -> FeatureDay:
    """The silver features of one day, symbol by symbol, spilled to `spill_dir`.

    `bronze_folders` maps 'orderbook', 'trades', 'ticker' to the day's bronze partition folders
    (split by symbol). The state is copied through its checkpoint form first, so a day computed
    after another in one run starts from exactly what a run reading the checkpoint would.
    """
    state = state_from_table(state_to_table(start.state))
    events, events_file = read_single_file(
        connection_events_folder, BRONZE_CONNECTION_EVENTS_SCHEMA
    )
    disconnects = disconnect_times(events)
    files = {name: partition_symbol_files(folder) for name, folder in bronze_folders.items()}
    symbols = sorted(set().union(*(f.keys() for f in files.values())))
    spill_dir.mkdir(parents=True, exist_ok=True)
    spills = {name: spill_dir / f"{day.isoformat()}-{name}.arrow" for name in SILVER_OUTPUTS}
    rows = dict.fromkeys(SILVER_OUTPUTS, 0)
    resets = dict.fromkeys(SILVER_OUTPUTS, 0)
    seen: set[tuple[str, str]] = set()
    parents = [f for by_symbol in files.values() for f in by_symbol.values()]
    if events_file is not None:
        parents.append(events_file)
    if start.file is not None:
        parents.append(start.file)
    writers = {
        name: pa.ipc.new_file(str(spills[name]), SILVER_SCHEMAS[name]) for name in SILVER_OUTPUTS
    }
    try:
        for symbol in symbols:
            tables = {
                name: read_verified(files[name][symbol])
                if symbol in files[name]
                else BRONZE_SCHEMAS[name].empty_table()
                for name in SILVER_OUTPUTS
            }
            out = compute_symbol_day(
                tables["orderbook"], tables["trades"], tables["ticker"], disconnects, state, params
            )
            for name, table in (
                ("orderbook", out.orderbook),
                ("trades", out.trades),
                ("ticker", out.ticker),
            ):
                if table.num_rows:
                    writers[name].write_table(table)
                rows[name] += table.num_rows
            for name in SILVER_OUTPUTS:
                resets[name] += out.resets[name]
            seen |= out.streams
            del tables, out
            release_freed_memory()
    finally:
        for writer in writers.values():
            writer.close()
    advance_idle_streams(state, seen, disconnects)
    return FeatureDay(day, spills, rows, resets, state, parents, start.origin)


# ---------------------------------------------------------------------------------------------
# A day computed earlier from the same inputs
# ---------------------------------------------------------------------------------------------


@dataclass
class CompletedFeatureDay:
    """A day whose silver files and checkpoint an earlier run made from the same inputs."""

    day: dt.date
    reason: str
    checkpoint_sha256: str
    rows: dict[str, int]
    resets: dict[str, int]
    empty: dict[str, bool]  # output -> its partition holds no rows (only the empty marker)
    parents: list[LakeFile] = field(default_factory=list)
    origin: str = "completed_earlier"


def feature_day_parents(
    bronze_folders: Mapping[str, UPath], connection_events_folder: UPath, start: LakeFile | None
) -> list[LakeFile]:
    """The files a day's silver features are made from, in the order its sidecars name them:
    the day's bronze files, its connection events, and the checkpoint it starts from."""
    parents = [
        f for folder in bronze_folders.values() for f in partition_symbol_files(folder).values()
    ]
    events = connection_events_folder / DATA_FILE_NAME
    if events.exists():
        parents.append(LakeFile(events, read_sidecar(events).file_sha256))
    if start is not None:
        parents.append(start)
    return parents


def _reset_rows(path: UPath) -> int:
    """Rows of a silver file whose `state_reset` names a reason (one column read)."""
    with path.open("rb") as handle:
        column = pq.ParquetFile(handle).read(columns=["state_reset"])["state_reset"]
    return len(column) - column.null_count


def completed_features_day(
    lake_base: UPath,
    day: dt.date,
    bronze_folders: Mapping[str, UPath],
    connection_events_folder: UPath,
    start: LakeFile | None,
    silver_folders: Mapping[str, UPath],
    params: FeatureParams,
    factory: MetadataFactory,
) -> CompletedFeatureDay | None:
    """The day, when its features need not be computed again; None: compute them.

    They need not when the day's checkpoint verifies and its sidecar records exactly the parents
    the day would have now (each bronze file, the connection events and the checkpoint it starts
    from, by path and SHA256; `start` is that checkpoint, None for a cold start), the same
    parameters and code version; and when every silver output of the day was written by the same
    run (its files verify, one per symbol of the channel's bronze files, with the same parameters
    and code version). The same inputs through the same code give the same bytes. The end state
    is the checkpoint's, so the days after it continue exactly as if it had been computed.
    """
    path = checkpoint_path(lake_base, day)
    wanted_params = {"day": day.isoformat(), **params.as_params()}
    try:
        parents = feature_day_parents(bronze_folders, connection_events_folder, start)
    except CustodyError:
        return None
    reason = completed_output_reason(
        path,
        parents=[factory.file_parent(f.path, sha256=f.sha256) for f in parents],
        params=wanted_params,
        code_version=factory.code_version,
    )
    if reason is None:
        return None
    checkpoint = read_sidecar(path)
    rows, resets, empty = {}, {}, {}
    for name in SILVER_OUTPUTS:
        folder = silver_folders[name]
        bronze_symbols = set(partition_symbol_files(bronze_folders[name]))
        try:
            files = partition_symbol_files(folder)
        except CustodyError:
            return None
        if set(files) != bronze_symbols or not partition_written(folder):
            return None
        rows[name] = resets[name] = 0
        for file in files.values():
            try:
                record = verify_file(file.path)
            except CustodyError:
                return None
            if (
                not isinstance(record, ProcessedMetadata)
                or record.run_id != checkpoint.run_id
                or record.code_version != factory.code_version
                or dict(record.transformation_params)
                != json.loads(json.dumps(wanted_params, default=str))
            ):
                return None
            rows[name] += record.rows or 0
            resets[name] += _reset_rows(file.path)
        empty[name] = not files
    return CompletedFeatureDay(
        day=day,
        reason=(
            f"the silver features of {day} were computed by run {checkpoint.run_id} from the same "
            f"{len(parents)} input files (bronze, connection events and the starting checkpoint, "
            f"by path and SHA256), parameters and code version {factory.code_version}; computing "
            "them again would write the same bytes"
        ),
        checkpoint_sha256=checkpoint.file_sha256,
        rows=rows,
        resets=resets,
        empty=empty,
        parents=parents,
    )


def read_symbol_partition(folder: UPath, schema: pa.Schema) -> pa.Table:
    """A partition split by symbol as written (verified), symbols in order: the rows a run
    that computed it wrote, in the same order."""
    files = partition_symbol_files(folder)
    parts = [read_verified(files[symbol]) for symbol in sorted(files)]
    return pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()


# ---------------------------------------------------------------------------------------------
# One day of gold bars
# ---------------------------------------------------------------------------------------------


@dataclass
class BarsDay:
    day: dt.date
    spill: Path  # Arrow IPC file of the day's bars
    rows: int
    parents: list[LakeFile]

    def reader(self) -> pa.RecordBatchReader:
        """The day's bars, streamed from their spill file."""
        return _file_reader(pa.memory_map(str(self.spill)))

    def table(self) -> pa.Table:
        return _read_spill(self.spill)


def completed_bars_reason(
    day: dt.date,
    orderbook_folder: UPath,
    trades_folder: UPath,
    gold_folder: UPath,
    factory: MetadataFactory,
) -> str | None:
    """Why the bars of `day` need not be computed again, or None (compute them).

    They need not when the day's gold folder holds one verified file per symbol of the day's
    silver files, each made from exactly that symbol's silver files (path and SHA256, as its
    sidecar records them), with the same parameters and code version: the same inputs through
    the same code give the same bytes.
    """
    books, trades = partition_symbol_files(orderbook_folder), partition_symbol_files(trades_folder)
    symbols = set(books) | set(trades)
    try:
        gold = partition_symbol_files(gold_folder)
    except CustodyError:
        return None
    if not symbols or set(gold) != symbols:
        return None
    for symbol in sorted(symbols):
        parents = [
            factory.file_parent(f.path, sha256=f.sha256)
            for f in (books.get(symbol), trades.get(symbol))
            if f is not None
        ]
        reason = completed_output_reason(
            gold[symbol].path,
            parents=parents,
            params={"day": day.isoformat()},
            code_version=factory.code_version,
        )
        if reason is None:
            return None
    return (
        f"the bars of {day} ({len(symbols)} symbol files) were made from the same silver files "
        f"(path and SHA256), parameters and code version {factory.code_version}; computing them "
        "again would write the same bytes"
    )


def read_bars_day(gold_folder: UPath) -> pa.Table:
    """A day's gold bars as written (verified), symbols in order, as `compute_bars_day` makes them."""
    return read_symbol_partition(gold_folder, BARS_SCHEMA)


def compute_bars_day(
    day: dt.date, orderbook_folder: UPath, trades_folder: UPath, spill_dir: Path
) -> BarsDay:
    """The one-minute bars of one day from its silver partitions, one symbol at a time, spilled
    to an Arrow IPC file in `spill_dir` (a range run holds no day's bars in memory)."""
    books, trades = partition_symbol_files(orderbook_folder), partition_symbol_files(trades_folder)
    parents: list[LakeFile] = []
    rows = 0
    spill_dir.mkdir(parents=True, exist_ok=True)
    spill = spill_dir / f"{day.isoformat()}-bars.arrow"
    with pa.ipc.new_file(str(spill), BARS_SCHEMA) as writer:
        for symbol in sorted(set(books) | set(trades)):
            b = read_verified(books[symbol]) if symbol in books else ORDERBOOK_SCHEMA.empty_table()
            t = read_verified(trades[symbol]) if symbol in trades else TRADES_SCHEMA.empty_table()
            parents += [f for f in (books.get(symbol), trades.get(symbol)) if f is not None]
            bars = bars_for_symbol(b, t)
            if bars.num_rows:
                writer.write_table(bars)
            rows += bars.num_rows
            del b, t, bars
            release_freed_memory()
    return BarsDay(day, spill, rows, parents)
