"""`pipeline demo` end to end, as `make demo` runs it: real instance, real sources, summary printed,
a verifying sidecar beside every file it wrote, idempotent."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_assets.lib.trace import audit_tree

REPO = Path(__file__).resolve().parents[2]


def _run_demo(home: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATA_ROOT": str(data)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "pipeline"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _lake_files(data: Path) -> dict[str, str]:
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for layer in ("bronze", "silver", "gold", "hq")
        for p in sorted((data / layer).rglob("*.parquet"))
    }


@pytest.mark.slow
def test_demo_command_prints_its_summary_and_reruns_to_the_same_bytes(tmp_path, demo_data_root):
    home, data = tmp_path / "home", demo_data_root
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")

    first = _run_demo(home, data)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary = first.stdout[first.stdout.index("asset  ") :]
    assert "checks failed" in summary.splitlines()[0]
    assert ", 0 failed, " in summary and "(0 failed)" in summary
    files = _lake_files(data)
    assert files, "the demo wrote no lake files"
    # A sidecar that verifies beside every file the demo wrote, sources exempt.
    checked, problems = audit_tree(data)
    assert len(checked) > 100 and problems == [], "\n".join(map(str, problems))
    # The runs are recorded in the instance the UI reads.
    assert any((home / "history").rglob("*.db")) or any((home / "storage").rglob("*"))

    second = _run_demo(home, data)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert _lake_files(data) == files
