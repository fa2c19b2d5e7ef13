"""Expected bronze figures of demo worker files, computed with plain SQLite SQL (independent of the
bronze code): which rows are landable, and how many distinct ticks each day holds."""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from pathlib import Path

# The collectors' timestamp form as a SQLite GLOB; the demo's one bad timestamp per day misses it.
TS_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]."
    "[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)
# The demo rows a bronze reader can land, in plain SQLite SQL (json1 is built in).
GOOD_ROWS = (
    "channel IN ('orderbook', 'trades', 'ticker') AND json_valid(payload) "
    f"AND event_ts_utc GLOB '{TS_GLOB}' AND symbol NOT LIKE '%-PERP' "
    "AND (channel != 'ticker' OR coalesce(CASE WHEN json_valid(payload) "
    "THEN json_type(payload, '$.last') END, '') IN ('integer', 'real'))"
)


def _all_ticks(conn: sqlite3.Connection, workers: Sequence[Path]) -> str:
    for i, path in enumerate(workers):
        conn.execute(f"ATTACH DATABASE ? AS w{i}", (f"{path.resolve().as_uri()}?mode=ro",))
    return " UNION ALL ".join(f"SELECT * FROM w{i}.market_ticks" for i in range(len(workers)))


def landed_counts(workers: Sequence[Path], channel: str) -> collections.Counter:
    """(day, exchange, symbol) -> rows bronze must land for `channel`: the good rows of every
    worker file, an exact copy (exchange, symbol, event time, payload) counted once."""
    conn = sqlite3.connect(":memory:", uri=True)
    try:
        ticks = _all_ticks(conn, workers)
        rows = conn.execute(
            "SELECT substr(event_ts_utc, 1, 10), exchange, symbol, count(*) FROM ("
            f"SELECT DISTINCT exchange, symbol, event_ts_utc, payload FROM ({ticks}) "
            f"WHERE channel = ? AND {GOOD_ROWS}) GROUP BY 1, 2, 3",
            (channel,),
        ).fetchall()
    finally:
        conn.close()
    return collections.Counter({(d, e, s): n for d, e, s, n in rows})


def day_figures(workers: Sequence[Path], day: str) -> dict[str, int]:
    """Source rows, bad rows and exact copies of one day across the worker files."""
    conn = sqlite3.connect(":memory:", uri=True)
    try:
        ticks = _all_ticks(conn, workers)
        on_day = f"substr(event_ts_utc, 1, 10) = '{day}'"
        ((source, bad),) = conn.execute(
            f"SELECT count(*), count(*) FILTER (WHERE NOT ({GOOD_ROWS})) FROM ({ticks}) WHERE {on_day}"
        ).fetchall()
        ((distinct,),) = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT channel, exchange, symbol, event_ts_utc, payload "
            f"FROM ({ticks}) WHERE {on_day} AND {GOOD_ROWS})"
        ).fetchall()
    finally:
        conn.close()
    return {"source": source, "bad": bad, "copies": source - bad - distinct}


def remove_demo_anomalies(workers: Sequence[Path]) -> None:
    """Delete the demo's bad rows and its copies of worker_01's ticks from (test copies of) the
    worker files, for tests that plant their own bad rows or duplicates and count exactly those."""
    first = workers[0]
    for path in workers:
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.execute(f"DELETE FROM market_ticks WHERE NOT ({GOOD_ROWS})")
                if path != first:
                    conn.execute("ATTACH DATABASE ? AS first", (str(first),))
                    conn.execute(
                        "DELETE FROM market_ticks WHERE (exchange, symbol, channel, event_ts_utc, "
                        "payload) IN (SELECT exchange, symbol, channel, event_ts_utc, payload "
                        "FROM first.market_ticks)"
                    )
        finally:
            conn.close()
