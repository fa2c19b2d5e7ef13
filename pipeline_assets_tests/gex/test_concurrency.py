"""Single writer: imports and enqueues started at the same time, in real processes and threads,
all complete without meeting DuckDB's lock error."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from pipeline_assets_tests.gex.conftest import snapshot, write_json

PIPELINE = str(Path(sys.executable).parent / "pipeline")


def test_two_import_processes_started_at_once_both_complete(importer, data_root, sources):
    for i in range(4):
        src = write_json(sources, f"f{i}.json", [snapshot(ts=1771511400 + 60 * i, strikes=50)])
        importer.enqueue(src.as_uri(), "SPX", "gex_zero")
    env = {**os.environ, "PIPELINE_DATA_ROOT": str(data_root)}
    # Each process imports two jobs; both open gex_data.db and gex_history.db for writing.
    procs = [
        subprocess.Popen(
            [PIPELINE, "gex", "import", *ids],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ids in (["1", "3"], ["2", "4"])
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert all(json.loads(line)["status"] == "completed" for line in out.splitlines())
    assert [j.status for j in importer.store.jobs()] == ["completed"] * 4


def test_enqueues_and_imports_on_threads_never_meet_a_lock_error(importer, sources):
    errors: list[BaseException] = []
    jobs = []

    def enqueue(i: int) -> None:
        try:
            src = write_json(sources, f"t{i}.json", [snapshot(ts=1771511400 + 60 * i)])
            jobs.append(importer.enqueue(src.as_uri(), "SPX", "gex_zero"))
            importer.import_pending()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(j.id for j in importer.store.jobs(status="completed")) == [1, 2, 3, 4, 5, 6]
