"""Bronze spill folders: a folder left by a killed run is removed when the next spill starts in
the same place; a live run's folder, and a recent folder without an owner lock, are kept."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pipeline_assets.lib.market.bronze_stream import (
    SPILL_PREFIX,
    UNLOCKED_SPILL_MAX_AGE_S,
    BronzeSpill,
    sweep_stale_spills,
)

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
    with BronzeSpill(spill_dir=tmp_path) as spill:
        assert spill.swept == [left]
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
    assert sweep_stale_spills(tmp_path, now=later) == [old]
    assert other.is_dir() and not old.exists()
    assert os.listdir(tmp_path) == ["not-a-spill"]
