"""The demo tests' data folder, whose embedded PostgreSQL is stopped when the test ends."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_assets.lib.postgres import stop_embedded
from pipeline_assets.lib.settings import SOURCE_POSTGRES_DIR


@pytest.fixture
def demo_data_root() -> Iterator[Path]:
    # Not under pytest's basetemp: a pytest session starting elsewhere on the machine resets
    # /tmp/pytest-of-<user> to mode 0700, which locks out the embedded server's own system user
    # (as root, pgserver runs PostgreSQL as `pgserver`) in the middle of the demo.
    base = Path(tempfile.mkdtemp(prefix="demo_data_"))
    data = base / "data"
    yield data
    # The demo starts the embedded server of its data folder and leaves it running, as a user
    # would want; a test must not leave one behind. pg_ctl fails when it is already gone.
    with contextlib.suppress(subprocess.CalledProcessError):
        stop_embedded(data / SOURCE_POSTGRES_DIR)
    shutil.rmtree(base, ignore_errors=True)
