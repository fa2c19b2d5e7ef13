"""A staging export killed mid-run (SIGKILL, in a subprocess) leaves the state untouched and no
file at a canonical name once the next run has recovered, and the rerun exports the same rows."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline_assets.lib.market.staging_export import export_options, read_export_rows
from pipeline_assets_tests.market_data.staging_helpers import END, export, make_root

REPO = Path(__file__).resolve().parents[2]

# The child runs a real export with a tiny chunk_size, slowed at one point, and prints READY there.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipeline_assets.lib.market import staging_export as se
    root, where = Path(sys.argv[1]), sys.argv[2]
    if where == "write":
        original = se._Output.write
        def slow(self, table, batch):
            original(self, table, batch)
            if self.rows["market_ticks"] >= 30:
                print("READY", flush=True); time.sleep(60)
        se._Output.write = slow
    else:
        def slow_commit(result, _orig=se.commit):
            print("READY", flush=True); time.sleep(60)
        se.commit = slow_commit
    options = se.export_options(hours=24, end_utc=sys.argv[3], chunk_size=7, incremental=True,
                                update_state=True, state_key="k", output_format=sys.argv[4])
    se.run_staging_export(options, worker_files=sorted((root / "source/workers").glob("*.db")),
                          input_glob="source/workers/*.db", data_root=root, staging_dir=root / "staging")
    """
)


def canonical(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.iterdir() if not p.name.startswith("."))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["write", "commit"])
@pytest.mark.parametrize("fmt", ["sqlite", "csv"])
def test_killed_run_leaves_state_and_rerun_exports_same_rows(tmp_path, where, fmt):
    root = make_root(tmp_path)
    options = export_options(
        hours=24, end_utc=END, incremental=True, update_state=True, state_key="k", output_format=fmt
    )
    # A committed first run, so the state has a profile the killed run must not move.
    staging = root / "staging"
    first = export(
        root,
        export_options(
            hours=24,
            end_utc="2026-02-19T12:00:00Z",
            incremental=True,
            update_state=True,
            state_key="k",
        ),
    )
    state_before = (staging / "staging_export_state.json").read_bytes()
    files_before = canonical(staging)

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), where, END, fmt],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()
        assert time.monotonic() < deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (staging / "staging_export_state.json").read_bytes() == state_before
    if where == "write":
        # Killed while writing: only hidden temporaries, nothing at a canonical name.
        assert canonical(staging) == files_before
    rerun = export(root, options)
    assert canonical(staging) == sorted(
        files_before
        + [Path(p).name for p in rerun.metadata["output_files"]]
        + [f"{Path(p).name}.meta.json" for p in rerun.metadata["output_files"]]
        + [rerun.metadata_path.name, f"{rerun.metadata_path.name}.meta.json"]
    )
    assert not any(p.name.endswith(".tmp") for p in staging.iterdir())
    assert rerun.metadata["watermarks"]["previous"] == first.metadata["watermarks"]["new"]
    # The same rows as an export that was never interrupted, by an independent count.
    from pipeline_assets_tests.market_data.staging_helpers import source_ids

    lower = first.metadata["watermarks"]["new"]["market_ticks_ingestion_ts_utc"].replace("Z", "")
    lower = lower + "0" * (26 - len(lower)) + "Z" if "." in lower else lower + ".000000Z"
    expected = source_ids(root, lower, "2026-02-20T00:00:00.000000Z", lower_inclusive=False)
    rejected = {
        (r["source_file"], r["source_id"])
        for r in read_export_rows(rerun, "rejects")
        if r["source_table"] == "market_ticks"
    }
    got = [(r["source_file"], r["source_id"]) for r in read_export_rows(rerun)]
    assert len(got) == len(set(got)) and set(got) == expected - rejected
    state = json.loads((staging / "staging_export_state.json").read_text())
    assert state["profiles"]["k"]["last_run_id"] == rerun.run_id
