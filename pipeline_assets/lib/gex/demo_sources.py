"""Generated gexbot files for the demo and the benchmark: the classic endpoints' real field names.

A day's history is a JSON list of snapshots through the US session (every `step_minutes`), each
with the fields `/classic/gex_zero` returns (live probe in `realdata/gex/`), strikes around the
spot as `[strike, gex_vol, gex_oi, [priors...]]`, and `max_priors` as `[strike, value]` pairs.
`/majors` and `/maxchange` histories have their own fields. Generation is deterministic: the same
arguments give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline_assets.lib.files import as_upath, write_bytes_atomic
from pipeline_assets.lib.gex.imports import GexImporter

BASE_SPOT = {"SPX": 6050.0, "NQ_NDX": 21400.0}
STRIKE_STEP = {"SPX": 5.0, "NQ_NDX": 25.0}
SESSION_OPEN_UTC = dt.time(14, 30)
SESSION_MINUTES = 390


def _seed(*parts: object) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate("|".join(map(str, parts))))


def snapshots(
    ticker: str, day: dt.date, *, step_minutes: int = 5, strikes: int = 40
) -> Iterator[dict[str, Any]]:
    """`/classic/gex_zero` snapshots of one ticker through one session."""
    rng = random.Random(_seed(ticker, day, "zero"))
    spot = BASE_SPOT.get(ticker, 500.0) * (1 + rng.uniform(-0.01, 0.01))
    step = STRIKE_STEP.get(ticker, 1.0)
    start = dt.datetime.combine(day, SESSION_OPEN_UTC, tzinfo=dt.UTC)
    for minute in range(0, SESSION_MINUTES, step_minutes):
        spot = round(spot * (1 + rng.gauss(0, 0.0008)), 2)
        center = round(spot / step) * step
        items = []
        for k in range(-(strikes // 2), strikes - strikes // 2):
            strike = center + k * step
            vol = round(rng.gauss(0, 40) * (1 - abs(k) / strikes), 3)
            oi = round(rng.gauss(0, 120) * (1 - abs(k) / strikes), 3)
            items.append([strike, vol, oi, [round(vol + rng.gauss(0, 2), 3) for _ in range(5)]])
        by_vol = sorted(items, key=lambda it: it[1])
        by_oi = sorted(items, key=lambda it: it[2])
        yield {
            "timestamp": int((start + dt.timedelta(minutes=minute)).timestamp()),
            "ticker": ticker,
            "min_dte": 0,
            "sec_min_dte": 1,
            "spot": spot,
            "zero_gamma": round(spot - rng.uniform(-30, 30) * step / 5, 2),
            "major_pos_vol": by_vol[-1][0],
            "major_pos_oi": by_oi[-1][0],
            "major_neg_vol": by_vol[0][0],
            "major_neg_oi": by_oi[0][0],
            "strikes": items,
            "sum_gex_vol": round(sum(it[1] for it in items), 3),
            "sum_gex_oi": round(sum(it[2] for it in items), 3),
            "delta_risk_reversal": round(rng.uniform(-0.2, 0.2), 4),
            "max_priors": [[it[0], it[1]] for it in by_vol[-6:]],
        }


def majors(ticker: str, day: dt.date, *, step_minutes: int = 5) -> list[dict[str, Any]]:
    """`/classic/gex_zero/majors` snapshots (the majors' own field names)."""
    out = []
    for snap in snapshots(ticker, day, step_minutes=step_minutes, strikes=20):
        out.append(
            {
                "timestamp": snap["timestamp"],
                "ticker": ticker,
                "spot": snap["spot"],
                "zero_gamma": snap["zero_gamma"],
                "mpos_vol": snap["major_pos_vol"],
                "mpos_oi": snap["major_pos_oi"],
                "mneg_vol": snap["major_neg_vol"],
                "mneg_oi": snap["major_neg_oi"],
                "net_gex_vol": snap["sum_gex_vol"],
                "net_gex_oi": snap["sum_gex_oi"],
            }
        )
    return out


def maxchange(ticker: str, day: dt.date, *, step_minutes: int = 5) -> list[dict[str, Any]]:
    """`/classic/gex_zero/maxchange` snapshots: `[strike, change]` per window, no spot."""
    rng = random.Random(_seed(ticker, day, "maxchange"))
    out = []
    for snap in snapshots(ticker, day, step_minutes=step_minutes, strikes=20):
        strikes = [it[0] for it in snap["strikes"]]
        record: dict[str, Any] = {"timestamp": snap["timestamp"], "ticker": ticker}
        for window in ("current", "one", "five", "ten", "fifteen", "thirty"):
            record[window] = [rng.choice(strikes), round(rng.gauss(0, 15), 3)]
        out.append(record)
    return out


def write_history(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write a day's history as gexbot sends it (a compact JSON list), atomically."""
    data = json.dumps(records, separators=(",", ":")).encode()
    if not (path.exists() and path.read_bytes() == data):
        write_bytes_atomic(as_upath(path), data, fsync=False)
    return path


def write_demo_gex_files(
    folder: Path, days: list[dt.date], tickers: tuple[str, ...] = ("SPX", "NQ_NDX")
) -> list[tuple[Path, str, str]]:
    """The demo's source files: `(path, ticker, endpoint)` for each, written idempotently.

    A `gex_zero` history per ticker and day, and for the first ticker and day a `majors` and a
    `maxchange` history too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, str, str]] = []
    for day in days:
        for ticker in tickers:
            path = folder / f"{day.isoformat()}_{ticker}_gex_zero.json"
            written.append((write_history(path, list(snapshots(ticker, day))), ticker, "gex_zero"))
    first_day, first_ticker = days[0], tickers[0]
    for endpoint, build in (("gex_zero_majors", majors), ("gex_zero_maxchange", maxchange)):
        path = folder / f"{first_day.isoformat()}_{first_ticker}_{endpoint}.json"
        written.append(
            (write_history(path, build(first_ticker, first_day)), first_ticker, endpoint)
        )
    return written


def write_large_history(
    path: Path, target_bytes: int, *, ticker: str = "SPX", strikes: int = 120
) -> int:
    """A history file of about `target_bytes` (for the benchmark), one snapshot per second; returns records."""
    day = dt.date(2026, 2, 19)
    records: list[dict[str, Any]] = []
    size = 2
    gen = snapshots(ticker, day, step_minutes=1, strikes=strikes)
    while size < target_bytes:
        try:
            snap = next(gen)
        except StopIteration:
            day += dt.timedelta(days=1)
            gen = snapshots(ticker, day, step_minutes=1, strikes=strikes)
            continue
        records.append(snap)
        size += len(json.dumps(snap, separators=(",", ":"))) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(records, separators=(",", ":")).encode())
    return len(records)


DEMO_SOURCE_DIR = "demo/gexbot"  # under the data root: the "remote" files the demo enqueues


def write_demo_gex_jobs(importer: GexImporter, days: list[dt.date]) -> str:
    """Write the demo files and enqueue each once by `file://` URL, the first one twice (a skip).

    Idempotent: a URL that already has its jobs is not enqueued again.
    """
    files = write_demo_gex_files(importer.paths.data_root / DEMO_SOURCE_DIR, days)
    jobs = importer.store.jobs()
    count = {url: sum(1 for j in jobs if j.url == url) for url in {j.url for j in jobs}}
    wanted = [(path.as_uri(), ticker, endpoint) for path, ticker, endpoint in files]
    wanted.append(wanted[0])  # the same file again: skipped by checksum
    enqueued = skipped = 0
    for n, (url, ticker, endpoint) in enumerate(wanted):
        expected = 2 if n == len(wanted) - 1 else 1
        if count.get(url, 0) >= (expected if url == wanted[0][0] else 1):
            continue
        job = importer.enqueue(url, ticker, endpoint)
        count[url] = count.get(url, 0) + 1
        enqueued += 1
        skipped += job.skipped
    return (
        f"GEX: {len(files)} gexbot files for {len({t for _, t, _ in files})} tickers in "
        f"{importer.paths.data_root / DEMO_SOURCE_DIR}; {enqueued} jobs enqueued ({skipped} skipped by checksum)"
    )


def demo_gex_partition_keys(importer: GexImporter) -> list[str]:
    """The jobs the demo materializes: pending and completed ones (as the sensor would add them)."""
    return [j.partition_key for j in importer.store.jobs() if j.status in ("pending", "completed")]
