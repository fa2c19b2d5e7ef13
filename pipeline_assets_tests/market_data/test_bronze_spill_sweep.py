"""Bronze spill folders: a folder left by a killed run is removed when the next spill starts in
the same place, and the bronze run logs it with its size; a live run's folder, and a recent
folder without an owner lock, are kept."""

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg

from pipeline_assets.defs.market_data.bronze import bronze_market_data
from pipeline_assets.lib.market.bronze_stream import (
    SPILL_PREFIX,
    UNLOCKED_SPILL_MAX_AGE_S,
    BronzeSpill,
    sweep_stale_spills,
)
from pipeline_assets.lib.market.demo_sources import write_demo_worker_files
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets.resources.market_sources import MarketSources

DAY = dt.date(2026, 2, 19)
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    from pipeline_assets.lib.market.bronze_stream import BronzeSpill
    spill = BronzeSpill(spill_dir=sys.argv[1])
    (spill.folder / "orderbook.0000.arrow").write_bytes(b"x" * 1000)
    print(spill.folder, flush=True)
    time.sleep(60)
    """
)


def _killed_run_folder(parent: Path) -> Path:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(parent)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        folder = Path(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return folder


def test_folder_of_a_killed_run_is_swept_by_the_next_spill(tmp_path):
    left = _killed_run_folder(tmp_path)
    assert left.is_dir() and left.name.startswith(SPILL_PREFIX)
    # What the killed run left: its DuckDB file, its lock and the 1,000-byte spill file.
    held = sum(p.stat().st_size for p in left.rglob("*") if p.is_file())
    assert held >= 1000
    with BronzeSpill(spill_dir=tmp_path) as spill:
        assert [(s.path, s.size_bytes) for s in spill.swept] == [(left, held)]
        assert not left.exists()
        assert [p.name for p in tmp_path.iterdir()] == [spill.folder.name]
    assert list(tmp_path.iterdir()) == []


def test_live_spill_is_never_swept(tmp_path):
    with BronzeSpill(spill_dir=tmp_path) as live:
        (live.folder / "trades.0000.arrow").write_bytes(b"y")
        assert sweep_stale_spills(tmp_path) == []
        with BronzeSpill(spill_dir=tmp_path) as second:
            assert second.swept == []
            assert live.folder.is_dir() and second.folder.is_dir()
        assert (live.folder / "trades.0000.arrow").read_bytes() == b"y"


def test_unlocked_folder_is_swept_only_when_old(tmp_path):
    old = tmp_path / f"{SPILL_PREFIX}legacy"
    old.mkdir()
    (old / "spill.duckdb").write_bytes(b"z")
    other = tmp_path / "not-a-spill"
    other.mkdir()
    assert sweep_stale_spills(tmp_path) == []
    later = time.time() + UNLOCKED_SPILL_MAX_AGE_S + 1
    swept = sweep_stale_spills(tmp_path, now=later)
    assert [(s.path, s.size_bytes) for s in swept] == [(old, 1)]
    assert other.is_dir() and not old.exists()
    assert os.listdir(tmp_path) == ["not-a-spill"]


def test_the_bronze_run_logs_each_swept_folder_with_its_size(tmp_path):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    left = _killed_run_folder(spill_dir)
    held = sum(p.stat().st_size for p in left.rglob("*") if p.is_file())
    root = tmp_path / "data"
    write_demo_worker_files(root / "source/workers", [DAY], rows_per_day=50)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bronze_market_data],
            resources={
                "io_manager": LakeIOManager(lake_root=str(root)),
                "market_sources": MarketSources(workers_dir=str(root / "source/workers")),
            },
            instance=instance,
            partition_key=DAY.isoformat(),
            run_config={"ops": {"bronze_market_data": {"config": {"spill_dir": str(spill_dir)}}}},
        )
        assert result.success
        messages = [
            record.user_message
            for record in instance.all_logs(result.run_id)
            if record.level >= logging.WARNING and "spill folder" in record.user_message
        ]
    assert messages == [f"removed the spill folder {left} of a killed run ({held:,} bytes)"], (
        messages
    )
    assert not left.exists()
    assert list(spill_dir.iterdir()) == []
