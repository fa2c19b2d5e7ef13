"""The bronze watcher: lands again each UTC day whose rows changed in a worker file.

Every minute it compares each worker file with what it saw last (the cursor holds, per file name,
`[size, mtime_ns, max market_ticks id, max connection_events id]`). A file that is new or has
changed is asked, read-only, which event days its rows past the last seen ids fall on; each such
day gets one `bronze_job` run, keyed by the file states that touched it, so a repeated evaluation
never launches the same run twice. Runs land a whole day from every file, exactly as a backfill
does, so the watcher path writes the same bytes as any other.
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
from pipeline_assets.defs.market_data.partitions import market_daily_partitions
from pipeline_assets.resources.market_sources import MarketSources

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


def new_rows_days(path: Path, after_tick_id: int, after_event_id: int) -> tuple[set[str], int, int]:
    """Event days (`YYYY-MM-DD` text) of the rows past the given ids, and the current max ids.

    A file whose ids went backwards was replaced: all its rows count as new.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    try:
        (max_tick,) = conn.execute("SELECT coalesce(max(id), 0) FROM market_ticks").fetchone()
        (max_event,) = conn.execute("SELECT coalesce(max(id), 0) FROM connection_events").fetchone()
        if max_tick < after_tick_id or max_event < after_event_id:
            after_tick_id = after_event_id = 0
        days: set[str] = set()
        # DISTINCT rather than min/max: the same scan of the new rows (they are found by id, the
        # rowid), and a late row for an old day does not drag in every day in between.
        for table, after, upto in (
            ("market_ticks", after_tick_id, max_tick),
            ("connection_events", after_event_id, max_event),
        ):
            if upto > after:
                days.update(
                    day
                    for (day,) in conn.execute(
                        f"SELECT DISTINCT substr(event_ts_utc, 1, 10) FROM {table} WHERE id > ? AND id <= ?",
                        (after, upto),
                    )
                    if isinstance(day, str)
                )
    finally:
        conn.close()
    return days, max_tick, max_event


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
    for path in market_sources.worker_files():
        before = previous.get(path.name)
        try:
            size, mtime_ns = file_stat(path)
            if before is not None and before[:2] == [size, mtime_ns]:
                cursor[path.name] = before
                continue
            after_tick, after_event = (before[2], before[3]) if before else (0, 0)
            days, max_tick, max_event = new_rows_days(path, after_tick, after_event)
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
