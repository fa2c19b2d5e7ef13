"""Shared fixtures of the HQ export tests: one embedded Postgres (pgserver) for the package, and a
fresh source schema per test."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg
import pytest

from pipeline_assets.lib.hq.source_tables import create_source_tables
from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: a pytest session starting elsewhere on the machine resets
    # /tmp/pytest-of-<user> to mode 0700, which locks out the server's own system user (as root,
    # pgserver runs PostgreSQL as `pgserver`).
    base = Path(tempfile.mkdtemp(prefix="hq_export_pg_"))
    folder = (base / "postgres").resolve()
    yield folder
    # pg_ctl fails when the server is already gone: then there is nothing to stop.
    with contextlib.suppress(subprocess.CalledProcessError):
        stop_embedded(folder)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_dir: Path) -> str:
    return embedded_dsn(pg_dir)


def new_source_schema(dsn: str, name: str) -> str:
    """A schema `name` holding empty source tables (replacing any of that name)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        create_source_tables(conn, name)
    return name


@pytest.fixture
def source_schema(pg_dsn: str) -> str:
    """A new schema holding empty source tables, for one test."""
    return new_source_schema(pg_dsn, f"src_{next(_counter)}")


@pytest.fixture(scope="module")
def schema(pg_dsn: str, request: pytest.FixtureRequest) -> str:
    """A schema of empty source tables shared by one module's tests (which truncate what they use)."""
    return new_source_schema(pg_dsn, "m_" + request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="session")
def connect(pg_dsn: str) -> Callable[[], AbstractContextManager[psycopg.Connection]]:
    """A connection factory like `SourcePostgres.connection`, for the plain export functions."""

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection]:
        with psycopg.connect(pg_dsn) as conn:
            yield conn

    return factory
