"""Shared helpers of the staging export tests: demo worker files, an independent row reader."""

import datetime as dt
import sqlite3
from pathlib import Path

from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.lib.market.staging_export import ExportOptions, run_staging_export

DAY = dt.date(2026, 2, 19)
END = "2026-02-20T00:00:00Z"


def make_root(tmp_path: Path, rows_per_day: int = 200) -> Path:
    write_demo_worker_files(tmp_path / "source/workers", [DAY], rows_per_day=rows_per_day)
    return tmp_path


def worker_files(root: Path) -> list[Path]:
    return sorted((root / "source/workers").glob("*.db"))


def export(root: Path, options: ExportOptions, **kwargs):
    return run_staging_export(
        options,
        worker_files=worker_files(root),
        input_glob="source/workers/*.db",
        data_root=root,
        staging_dir=root / "staging",
        **kwargs,
    )


def source_ids(
    root: Path, lower: str, upper: str, lower_inclusive: bool = True
) -> set[tuple[str, int]]:
    """(file, id) of market_ticks with lower < ingestion <= upper, by plain SQL (independent)."""
    op = ">=" if lower_inclusive else ">"
    out = set()
    for path in worker_files(root):
        conn = sqlite3.connect(path)
        out |= {
            (path.name, i)
            for (i,) in conn.execute(
                f"SELECT id FROM market_ticks WHERE ingestion_ts_utc {op} ? AND ingestion_ts_utc <= ?",
                (lower, upper),
            )
        }
        conn.close()
    return out


def insert_ticks(
    path: Path, ingestion_ts: list[str], exchange: str = "Binance", symbol: str = "BTCUSDT"
) -> None:
    conn = sqlite3.connect(path, timeout=30)
    conn.executemany(
        "INSERT INTO market_ticks (exchange, symbol, channel, event_ts_utc, ingestion_ts_utc, payload) "
        'VALUES (?, ?, \'ticker\', ?, ?, \'{"bid": 1, "ask": 2, "last": 1, "volume_24h": 3}\')',
        [(exchange, symbol, ts, ts) for ts in ingestion_ts],
    )
    conn.commit()
    conn.close()
