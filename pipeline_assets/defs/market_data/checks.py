"""Asset checks of the bronze market data: each tests one property of every day a run wrote.

The checks are declared as `check_specs` on the bronze multi-asset and evaluated inside its step,
after the outputs are written, rather than as separate `@asset_check`s that reload partitions.
They read what the write streamed (`BronzeDayStore.streamed`: rows and event dates counted batch
by batch as the lake IO manager wrote them) and the day's spill (keys, quarantine counts), so a
day of any size is checked in bounded memory without reading the files back:

- A single-run backfill is one step over a range of days, and a check then reports one result
  for the run (Dagster scopes a check evaluation to a partition only when the step has a single
  partition key). Evaluated here, that result covers every day of the range, with the figures
  of each day in its metadata and the failing days named, from the very rows that were
  written; a separate check would re-read and re-hash every file of the range to say the same.
- The source count must stop at the ids the read stopped at (collectors keep appending to the
  current day), and only this step knows them; counting up to them keeps the check true while
  a collector writes.
- Blocking checks (schema, keys, event date) fail the step after every result is reported, so
  nothing downstream runs on a partition that broke its contract.
"""

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from contracts.core import schema_violations
from pipeline_assets.lib.market.bronze import (
    CHANNELS,
    CONNECTION_EVENTS,
    DAY_EVENTS_SQL,
    DAY_TICKS_SQL,
    LANDED_CONTRACTS,
    NO_EVENT_DATE,
    QUARANTINE,
)
from pipeline_assets.lib.market.bronze_stream import TABLE_SCHEMAS, BronzeDayStore

EVENT_DATE_MATCHES_PARTITION = "event_date_matches_partition"
NO_DUPLICATE_KEYS = "no_duplicate_keys"
SCHEMA_MATCHES_CONTRACT = "schema_matches_contract"
ROW_COUNT_MATCHES_SOURCE = "row_count_matches_source"
EVERY_ROW_HAS_AN_EVENT_DATE = "every_row_has_an_event_date"

_DESCRIPTIONS = {
    EVENT_DATE_MATCHES_PARTITION: (
        "Passes when every row's event_ts_utc falls on its partition's UTC date, so each row is "
        "in exactly the daily partition a reader looks for it in."
    ),
    NO_DUPLICATE_KEYS: (
        "Passes when the contract's primary key is unique within each day written (after exact "
        "duplicates recorded by two workers are dropped)."
    ),
    SCHEMA_MATCHES_CONTRACT: (
        "Passes when the columns written (names, types, nullability) are exactly the contract's: "
        "nothing missing, retyped or extra."
    ),
    ROW_COUNT_MATCHES_SOURCE: (
        "Passes when each day's rows equal the source rows of that day, counted again in the "
        "worker files with a plain SQLite COUNT up to the ids the read stopped at, less the rows "
        "quarantined and the duplicates dropped: no source row lost or landed twice."
    ),
    EVERY_ROW_HAS_AN_EVENT_DATE: (
        "Warns when source rows were quarantined on this day because their event time has no "
        "date at all (another layout such as 19/02/2026 10:30:00, an epoch number, empty text): "
        "no date is guessed, so such a row is quarantined on its ingestion date (reason "
        "timestamp_not_iso8601) and a collector is writing timestamps it should not. The metadata "
        "counts them per worker file and names the first row ids."
    ),
}
_QUARANTINE_ROW_COUNT_DESCRIPTION = (
    "Passes when each day's quarantined rows equal the source rows of that day (market_ticks and "
    "connection_events, counted again with a plain SQLite COUNT) less the rows landed in the "
    "channel and connection-event tables and the duplicates dropped: every source row is "
    "accounted for exactly once."
)
_BLOCKING = {
    SCHEMA_MATCHES_CONTRACT: True,
    NO_DUPLICATE_KEYS: True,
    EVENT_DATE_MATCHES_PARTITION: True,
    # The source is live and may be rewritten between the read and the count: report, don't gate.
    ROW_COUNT_MATCHES_SOURCE: False,
    # The rows are kept in the quarantine: a warning for the collector's owner, not a gate.
    EVERY_ROW_HAS_AN_EVENT_DATE: False,
}
_SEVERITY = {EVERY_ROW_HAS_AN_EVENT_DATE: dg.AssetCheckSeverity.WARN}

_ALL_CHECKS = (
    SCHEMA_MATCHES_CONTRACT,
    NO_DUPLICATE_KEYS,
    EVENT_DATE_MATCHES_PARTITION,
    ROW_COUNT_MATCHES_SOURCE,
)
# Quarantined rows are by definition unparsed, so their event time is text that may be anything.
CHECKS_BY_TABLE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(CHANNELS, _ALL_CHECKS),
    CONNECTION_EVENTS: _ALL_CHECKS,
    QUARANTINE: (
        SCHEMA_MATCHES_CONTRACT,
        NO_DUPLICATE_KEYS,
        ROW_COUNT_MATCHES_SOURCE,
        EVERY_ROW_HAS_AN_EVENT_DATE,
    ),
}


def bronze_check_specs(asset_tables: Mapping[str, str]) -> list[dg.AssetCheckSpec]:
    """The check specs of the bronze assets; `asset_tables` maps asset name to landed table."""
    specs = []
    for asset, table in asset_tables.items():
        for name in CHECKS_BY_TABLE[table]:
            description = _DESCRIPTIONS[name]
            if table == QUARANTINE and name == ROW_COUNT_MATCHES_SOURCE:
                description = _QUARANTINE_ROW_COUNT_DESCRIPTION
            specs.append(
                dg.AssetCheckSpec(
                    name, asset=asset, description=description, blocking=_BLOCKING[name]
                )
            )
    return specs


# --- one property each: (passed, figures of one day) -------------------------------------------


def _streamed(day: BronzeDayStore, table: str) -> tuple[int, int, dict[str, Any]]:
    counts = day.streamed.get(table)
    if counts is None or not counts.finished:
        return -1, -1, {"error": "the table was not streamed to the lake in full"}
    figures: dict[str, Any] = {}
    if counts.first_event_date is not None:
        figures["first_event_date"] = counts.first_event_date.isoformat()
        figures["last_event_date"] = counts.last_event_date.isoformat()  # type: ignore[union-attr]
    return counts.rows, counts.rows_on_other_dates, figures


def _event_date(day: BronzeDayStore, table: str, **_: Any) -> tuple[bool, dict[str, Any]]:
    rows, elsewhere, figures = _streamed(day, table)
    return elsewhere == 0, {"rows": rows, "rows_on_other_dates": elsewhere, **figures}


def _no_duplicate_keys(day: BronzeDayStore, table: str, **_: Any) -> tuple[bool, dict[str, Any]]:
    key = list(LANDED_CONTRACTS[table].contract.primary_key)
    dupes = day.duplicate_keys(table, key, limit=5)
    figures: dict[str, Any] = {"rows": day.rows[table], "primary_key": key}
    if dupes:
        figures["duplicate_keys"] = [{k: str(v) for k, v in d.items()} for d in dupes]
    return not dupes, figures


def _schema(day: BronzeDayStore, table: str, **_: Any) -> tuple[bool, dict[str, Any]]:
    model = LANDED_CONTRACTS[table]
    problems = schema_violations(TABLE_SCHEMAS[table], model)
    return not problems, {
        "contract": f"{model.contract.name} {model.contract.version}",
        "violations": problems,
    }


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)


def count_source_rows(
    path: Path, table: str, day: dt.date, max_id: int | None, channel: str | None = None
) -> int:
    """Rows of `table` in one worker file whose event time falls on `day`, with id <= max_id."""
    if max_id is None:
        return 0
    # Rows without an event date count on the day they are quarantined on.
    in_day = DAY_TICKS_SQL if table == "market_ticks" else DAY_EVENTS_SQL

    sql = f"SELECT count(*) FROM {table} WHERE id <= :max AND {in_day}"
    params: dict[str, Any] = {
        "max": max_id,
        "lower": day.isoformat(),
        "upper": (day + dt.timedelta(days=1)).isoformat(),
    }
    if channel is not None:
        sql += " AND channel = :channel"
        params["channel"] = channel
    conn = _connect(path)
    try:
        (count,) = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    return count


def _row_count(
    day: BronzeDayStore, table: str, *, worker_paths: Mapping[str, Path]
) -> tuple[bool, dict[str, Any]]:
    def source(source_table: str, channel: str | None = None) -> int:
        return sum(
            count_source_rows(
                worker_paths[s.file],
                source_table,
                day.day,
                s.market_ticks_max_id
                if source_table == "market_ticks"
                else s.connection_events_max_id,
                channel,
            )
            for s in day.sources
        )

    rows, _, _ = _streamed(day, table)
    if table in CHANNELS:
        figures = {
            "source_rows": source("market_ticks", table),
            "quarantined": day.quarantined("market_ticks", table),
            "duplicates_dropped": day.duplicates_dropped[table],
        }
        expected = figures["source_rows"] - figures["quarantined"] - figures["duplicates_dropped"]
    elif table == CONNECTION_EVENTS:
        figures = {
            "source_rows": source("connection_events"),
            "quarantined": day.quarantined("connection_events"),
        }
        expected = figures["source_rows"] - figures["quarantined"]
    else:
        landed = sum(_streamed(day, c)[0] for c in (*CHANNELS, CONNECTION_EVENTS))
        figures = {
            "source_rows": source("market_ticks") + source("connection_events"),
            "landed": landed,
            "duplicates_dropped": sum(day.duplicates_dropped.values()),
        }
        expected = figures["source_rows"] - landed - figures["duplicates_dropped"]
    figures.update(rows=rows, expected_rows=expected, files_counted=[s.file for s in day.sources])
    return rows == expected, figures


def _every_row_has_an_event_date(
    day: BronzeDayStore, table: str, **_: Any
) -> tuple[bool, dict[str, Any]]:
    found = day.quarantined_with_reason(NO_EVENT_DATE)
    return not found, {
        "quarantined_rows": sum(count for count, _ in found.values()),
        "rows_by_file": {name: count for name, (count, _) in found.items()},
        "first_row_ids": {name: ids for name, (_, ids) in found.items()},
    }


_EVALUATORS = {
    EVENT_DATE_MATCHES_PARTITION: _event_date,
    NO_DUPLICATE_KEYS: _no_duplicate_keys,
    SCHEMA_MATCHES_CONTRACT: _schema,
    ROW_COUNT_MATCHES_SOURCE: _row_count,
    EVERY_ROW_HAS_AN_EVENT_DATE: _every_row_has_an_event_date,
}


def _explain(
    name: str, failed: Sequence[str], by_day: Mapping[str, Mapping[str, Any]]
) -> str | None:
    if not failed:
        return None
    return "; ".join(
        f"{name} failed on {day}: "
        + json.dumps({k: v for k, v in by_day[day].items() if k != "passed"}, default=str)
        for day in failed
    )[:2000]


def bronze_check_results(
    asset_tables: Mapping[str, str],
    days: Sequence[BronzeDayStore],
    worker_paths: Mapping[str, Path],
) -> Iterator[dg.AssetCheckResult]:
    """One result per check and asset, covering every day of the run, with each day's figures."""
    for asset, table in asset_tables.items():
        for name in CHECKS_BY_TABLE[table]:
            by_day: dict[str, dict[str, Any]] = {}
            failed: list[str] = []
            for day in days:
                passed, figures = _EVALUATORS[name](day, table, worker_paths=worker_paths)
                by_day[day.day.isoformat()] = {"passed": passed, **figures}
                if not passed:
                    failed.append(day.day.isoformat())
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=not failed,
                severity=_SEVERITY.get(name, dg.AssetCheckSeverity.ERROR),
                # What the UI shows beside a failure: the days and their figures, keys included.
                description=_explain(name, failed, by_day),
                metadata={
                    "days_checked": dg.MetadataValue.int(len(days)),
                    "failed_days": dg.MetadataValue.json(failed),
                    "by_day": dg.MetadataValue.json(by_day),
                },
            )
