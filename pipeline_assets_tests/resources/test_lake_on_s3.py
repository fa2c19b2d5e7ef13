"""The same assets end to end on an S3-compatible server on loopback (moto in server mode, real HTTP)."""

import hashlib
import socket

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from upath import UPath

from pipeline_assets.lib.custody import read_sidecar
from pipeline_assets.resources.lake_io_manager import LakeIOManager
from pipeline_assets_tests.lake_assets import bronze_demo_ticks, range_tags, silver_demo_prices

BUCKET = "lake-test"
DAYS = ("2026-01-10", "2026-01-12")
KEY, SECRET = "test-key-id", "test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _s3_io(endpoint: str, prefix: str) -> LakeIOManager:
    return LakeIOManager(
        lake_root=f"s3://{BUCKET}/{prefix}",
        s3_endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )


def test_assets_run_end_to_end_on_s3_and_match_local_bytes(
    s3_endpoint, lake_root, lake_io, monkeypatch
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assets = [bronze_demo_ticks, silver_demo_prices]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            assets,
            resources={"io_manager": _s3_io(s3_endpoint, "e2e")},
            instance=instance,
            tags=range_tags(*DAYS),
        )
        assert result.success
        dg.materialize(
            assets, resources={"io_manager": lake_io}, instance=instance, tags=range_tags(*DAYS)
        )

    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": s3_endpoint})
    keys = sorted(fs.find(f"{BUCKET}/e2e"))
    local = sorted(str(p.relative_to(lake_root)) for p in lake_root.rglob("*") if p.is_file())
    assert [k.removeprefix(f"{BUCKET}/e2e/") for k in keys] == local
    assert len([k for k in keys if k.endswith(".parquet")]) == 6

    for key in keys:
        if not key.endswith(".parquet"):
            continue
        relative = key.removeprefix(f"{BUCKET}/e2e/")
        remote_bytes = fs.cat_file(key)
        # Same bytes as the local run, and readable by an independent reader.
        assert (
            hashlib.sha256(remote_bytes).hexdigest()
            == hashlib.sha256((lake_root / relative).read_bytes()).hexdigest()
        )
        with fs.open(key, "rb") as handle:
            assert pq.read_table(handle).num_rows == 1000
        record = read_sidecar(
            UPath(f"s3://{key}", key=KEY, secret=SECRET, endpoint_url=s3_endpoint)
        )
        assert record.processed_sha256 == hashlib.sha256(remote_bytes).hexdigest()
        assert record.path == relative


def test_failed_upload_leaves_no_object(s3_endpoint):
    import pyarrow as pa

    from pipeline_assets.lib.parquet_lake import write_parquet

    schema = pa.schema([("x", pa.int64())])

    def broken():
        yield pa.record_batch([pa.array(range(100_000))], schema=schema)
        raise RuntimeError("source went away")

    path = UPath(
        f"s3://{BUCKET}/broken/data.parquet", key=KEY, secret=SECRET, endpoint_url=s3_endpoint
    )
    with pytest.raises(RuntimeError, match="source went away"):
        write_parquet(path, broken(), schema=schema, row_group_size=10_000)
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": s3_endpoint})
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/broken/data.parquet")
