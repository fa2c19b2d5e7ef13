"""A writer killed with SIGKILL mid-write leaves no partial file at the canonical path; a rerun completes."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WRITER = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    import pyarrow as pa
    from contracts.custody import ParentRef
    from pipeline_assets.lib.parquet_lake import LakeOutput
    from pipeline_assets.resources.lake_io_manager import LakeIOManager

    lake_root, slow = sys.argv[1], sys.argv[2] == "slow"
    schema = pa.schema([("i", pa.int64()), ("payload", pa.string())])

    def batches():
        for n in range(40):
            if slow:
                time.sleep(0.05)
            yield pa.record_batch([pa.array(range(n * 5000, (n + 1) * 5000)), pa.array([f"row-{n}"] * 5000)], schema=schema)

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition("2026-01-01"), metadata={"lake/layer": "bronze"})
    def bronze_killable():
        return LakeOutput(batches(), schema=schema, parents=[ParentRef(kind="url", path="file:///x", sha256="1" * 64)])

    dg.materialize([bronze_killable], resources={"io_manager": LakeIOManager(lake_root=lake_root, row_group_size=5000)},
                   instance=dg.DagsterInstance.ephemeral(), partition_key="2026-01-02")
    """
)


def _run_writer(lake_root: Path, slow: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(lake_root), "slow" if slow else "fast"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_temp(folder: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists() and any(p.name.endswith(".tmp") for p in folder.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"writer ended before writing: {proc.stderr.read().decode()[-2000:]}"
            )
        time.sleep(0.01)
    raise AssertionError("the writer never started writing")


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_mid_write_leaves_no_partial_file(tmp_path, seed):
    folder = tmp_path / "bronze/bronze_killable/date=2026-01-02"
    canonical = folder / "data.parquet"
    rng = random.Random(seed)

    # First write killed: nothing at the canonical path.
    proc = _run_writer(tmp_path, slow=True)
    _wait_for_temp(folder, proc)
    time.sleep(rng.uniform(0.0, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not canonical.exists()
    assert not (folder / "data.parquet.meta.json").exists()

    # The rerun completes and cleans the leftover temporary file.
    rerun = _run_writer(tmp_path, slow=False)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()[-2000:]
    good = hashlib.sha256(canonical.read_bytes()).hexdigest()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    # A rewrite killed midway leaves the previous complete file untouched.
    proc = _run_writer(tmp_path, slow=True)
    _wait_for_temp(folder, proc)
    time.sleep(rng.uniform(0.0, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert hashlib.sha256(canonical.read_bytes()).hexdigest() == good

    import pyarrow.parquet as pq

    assert pq.read_table(canonical).num_rows == 200_000
