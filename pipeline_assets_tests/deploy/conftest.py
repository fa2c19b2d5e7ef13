"""The deployment tests' real servers: an embedded PostgreSQL for the instance and the HQ source,
and an S3-compatible server (moto) on loopback for the lake."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from pipeline_assets.lib.postgres import embedded_dsn, stop_embedded

S3_KEY, S3_SECRET, S3_REGION = "deploy-test-key", "deploy-test-secret", "us-east-1"


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path

    def url(self, database: str) -> str:
        """A libpq URL of one database (the server listens on a unix socket only)."""
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    def instance_url(self, database: str) -> str:
        """The same database as dagster-postgres's SQLAlchemy URL, which names its driver."""
        return self.url(database).replace("postgresql://", "postgresql+psycopg2://", 1)

    def create_database(self, database: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return self.instance_url(database)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            "PIPELINE_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": S3_REGION,
        }


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # Not pytest's tmp_path: its root is mode 0700, and pgserver runs the server as another user.
    folder = Path(tempfile.mkdtemp(prefix="deploy-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server(scratch: Path) -> Iterator[PostgresServer]:
    pgdata = scratch / "postgres"
    embedded_dsn(pgdata)
    yield PostgresServer(socket_dir=pgdata)
    with contextlib.suppress(subprocess.CalledProcessError):
        stop_embedded(pgdata)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = "lake"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name=S3_REGION,
    ).create_bucket(Bucket=bucket)
    yield S3Server(endpoint=endpoint, bucket=bucket)
    server.stop()
