"""The bronze watcher: lands again each UTC day whose rows changed in a worker file.

Every minute it compares each worker file with what it saw last (the cursor holds, per file name,
`[size, mtime_ns, max market_ticks id, max connection_events id]`). A file that is new or has
changed is asked, read-only, which event days its rows past the last seen ids fall on; each such
day gets one `bronze_job` run, keyed by the file states that touched it, so a repeated evaluation
never launches the same run twice. Runs land a whole day from every file, exactly as a backfill
does, so the watcher path writes the same bytes as any other.

A file the cursor does not know (every file, when the cursor is empty: a new instance, or the first
daemon after `make demo`) is compared with what bronze already holds instead: each materialized
day records the ids it read each file up to (`watermarks`), so only the days that file has rows
for past those ids, or that were never landed from it, are requested. A file no materialization
names (a new worker) requests every day it holds.
"""

import datetime as dt
import hashlib
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import dagster as dg

# The module, not the job: a job bound at the top level here would be loaded a second time.
from pipeline_assets.defs.market_data import jobs
from pipeline_assets.defs.market_data.bronze import BRONZE_CONNECTION_EVENTS
from pipeline_assets.defs.market_data.partitions import market_daily_partitions
from pipeline_assets.resources.market_sources import MarketSources
from pipeline_assets.utils.materializations import latest_metadata_by_partition

BRONZE_WATCHER = "bronze_watcher"

FileState = list[int]  # [size, mtime_ns, max market_ticks id, max connection_events id]


def file_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a worker file together with its write-ahead log.

    Collectors write in WAL mode: new rows sit in the `-wal` file until a checkpoint, so the
    database file's own size and time may not move while rows arrive.
    """
    stat = path.stat()
    size, mtime_ns = stat.st_size, stat.st_mtime_ns
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        wal_stat = wal.stat()
        size, mtime_ns = size + wal_stat.st_size, max(mtime_ns, wal_stat.st_mtime_ns)
    return size, mtime_ns


def new_rows_by_day(
    path: Path, after_tick_id: int, after_event_id: int
) -> tuple[dict[str, list[int]], int, int]:
    """Per event day (`YYYY-MM-DD` text) of the rows past the given ids, the highest id of its
    rows in each table (`[market_ticks id, connection_events id]`, 0 for none); and the file's
    current max ids.

    A file whose ids went backwards was replaced: all its rows count as new.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    try:
        (max_tick,) = conn.execute("SELECT coalesce(max(id), 0) FROM market_ticks").fetchone()
        (max_event,) = conn.execute("SELECT coalesce(max(id), 0) FROM connection_events").fetchone()
        if max_tick < after_tick_id or max_event < after_event_id:
            after_tick_id = after_event_id = 0
        days: dict[str, list[int]] = {}
        # Grouped by day rather than min/max: the same scan of the new rows (they are found by
        # id, the rowid), and a late row for an old day does not drag in every day in between.
        for column, (table, after, upto) in enumerate(
            (
                ("market_ticks", after_tick_id, max_tick),
                ("connection_events", after_event_id, max_event),
            )
        ):
            if upto > after:
                for day, top in conn.execute(
                    f"SELECT substr(event_ts_utc, 1, 10), max(id) FROM {table} "
                    "WHERE id > ? AND id <= ? GROUP BY 1",
                    (after, upto),
                ):
                    if isinstance(day, str):
                        days.setdefault(day, [0, 0])[column] = top
    finally:
        conn.close()
    return days, max_tick, max_event


def new_rows_days(path: Path, after_tick_id: int, after_event_id: int) -> tuple[set[str], int, int]:
    """Event days (`YYYY-MM-DD` text) of the rows past the given ids, and the current max ids."""
    days, max_tick, max_event = new_rows_by_day(path, after_tick_id, after_event_id)
    return set(days), max_tick, max_event


LandedMarks = dict[str, dict[str, tuple[int, int]]]  # day -> file -> (ticks id, events id) read


def landed_watermarks(instance: dg.DagsterInstance) -> LandedMarks:
    """Per bronze day, the ids its latest materialization read each worker file up to.

    A day whose latest materialization records no watermarks maps to {}: its files count as unread.
    """
    marks: LandedMarks = {}
    recorded = latest_metadata_by_partition(
        instance, dg.AssetKey(BRONZE_CONNECTION_EVENTS), "watermarks"
    )
    for day, files in recorded.items():
        marks[day] = {
            name: (
                int(ids.get("market_ticks_max_id") or 0),
                int(ids.get("connection_events_max_id") or 0),
            )
            for name, ids in (files or {}).items()
            if isinstance(ids, dict)
        }
    return marks


def days_changed_since_landed(path: Path, landed: LandedMarks) -> tuple[set[str], int, int]:
    """Days of a worker file that bronze does not hold as they are now, and the current max ids.

    A day is changed when it was never landed from this file, or when the file has rows for it
    past the ids its latest landing read. A file replaced since (ids lower than a landing read)
    counts whole.
    """
    marks = {day: files[path.name] for day, files in landed.items() if path.name in files}
    days, max_tick, max_event = new_rows_by_day(path, 0, 0)
    if marks and (
        max_tick < max(m[0] for m in marks.values())
        or max_event < max(m[1] for m in marks.values())
    ):
        return set(days), max_tick, max_event
    changed = {
        day
        for day, (tick, event) in days.items()
        if day not in marks or tick > marks[day][0] or event > marks[day][1]
    }
    return changed, max_tick, max_event


def _load_cursor(cursor: str | None) -> dict[str, FileState]:
    if not cursor:
        return {}
    loaded = json.loads(cursor)
    return {
        name: list(state)
        for name, state in loaded.items()
        if isinstance(state, list) and len(state) == 4
    }


def _is_partition(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return market_daily_partitions.has_partition_key(day)


def _run_key(day: str, rows_seen: list[tuple[str, int, int]]) -> str:
    # From the rows seen (file, max ids), not from size and time: this sensor's own first read of
    # a WAL file creates the -wal beside it, and the same rows must give the same key.
    digest = hashlib.sha256(json.dumps(sorted(rows_seen)).encode()).hexdigest()[:16]
    return f"bronze:{day}:{digest}"


@dg.sensor(
    name=BRONZE_WATCHER,
    job=jobs.bronze_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the collectors' worker files and lands again (one bronze_job run per UTC day) "
        "every day whose ticks or connection events changed since the last look."
    ),
)
def bronze_watcher(
    context: dg.SensorEvaluationContext, market_sources: MarketSources
) -> dg.SensorResult:
    previous = _load_cursor(context.cursor)
    cursor: dict[str, FileState] = {}
    touched: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    landed: LandedMarks | None = None  # read from the instance once, when a file is unknown
    for path in market_sources.worker_files():
        before = previous.get(path.name)
        try:
            size, mtime_ns = file_stat(path)
            if before is not None and before[:2] == [size, mtime_ns]:
                cursor[path.name] = before
                continue
            if before is None:
                if landed is None:
                    landed = landed_watermarks(context.instance)
                days, max_tick, max_event = days_changed_since_landed(path, landed)
            else:
                days, max_tick, max_event = new_rows_days(path, before[2], before[3])
        except (OSError, sqlite3.Error) as exc:
            # A file being replaced, or not a collector file (yet): look again next time; a run
            # would fail on it too, naming it.
            context.log.warning(f"worker file {path}: cannot read it ({exc}); will look again")
            if before is not None:
                cursor[path.name] = before
            continue
        state = [size, mtime_ns, max_tick, max_event]
        cursor[path.name] = state
        for day in days:
            touched[day].append((path.name, max_tick, max_event))

    requests = []
    for day in sorted(touched):
        files = sorted(name for name, *_ in touched[day])
        if not _is_partition(day):
            context.log.warning(
                f"rows with event day {day!r} in {', '.join(files)} "
                "have no bronze partition (before PIPELINE_MARKET_START_DATE, in the future, or "
                "not a date); they are not landed"
            )
            continue
        requests.append(
            dg.RunRequest(
                run_key=_run_key(day, touched[day]),
                partition_key=day,
                tags={"market/changed_files": ",".join(files)},
            )
        )
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason="no worker file has new rows", cursor=new_cursor)
    context.log.info(f"requesting bronze runs for {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
