"""The custody factory: streamed hashes, relative paths, parents, and sidecars that round-trip."""

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from upath import UPath

from contracts.custody import CompressionType, ParentRef, ProcessedMetadata
from pipeline_assets.lib.custody import (
    CustodyError,
    MetadataFactory,
    combined_parent_sha256,
    read_sidecar,
    relative_to_root,
    verify_file,
    write_sidecar,
)
from pipeline_assets.lib.files import sha256_file

hashes = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=50)
@given(st.binary(max_size=3_000_000))
def test_streamed_sha256_equals_hashlib(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("h") / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), len(data))


@given(st.lists(hashes, min_size=1, max_size=6))
def test_parent_sha256_is_independent_of_order(parent_hashes):
    parents = [ParentRef(path=f"p{i}", sha256=h) for i, h in enumerate(parent_hashes)]
    combined = combined_parent_sha256(parents)
    assert combined == combined_parent_sha256(list(reversed(parents)))
    unique = sorted(set(parent_hashes))
    expected = (
        unique[0] if len(unique) == 1 else hashlib.sha256("\n".join(unique).encode()).hexdigest()
    )
    assert combined == expected


def test_sidecar_round_trips_and_verifies(tmp_path):
    root = UPath(tmp_path)
    data = root / "silver" / "x" / "data.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"payload")
    source = root / "source" / "in.db"
    source.parent.mkdir()
    source.write_bytes(b"source bytes")
    factory = MetadataFactory(root, code_version="9.9.9")
    record = factory.processed(
        data,
        parents=[factory.file_parent(source)],
        transformation_name="t",
        transformation_params={"k": 1},
        rows=1,
    )
    assert record.path == "silver/x/data.parquet"
    assert record.parents[0].path == "source/in.db"
    assert record.parent_sha256 == hashlib.sha256(b"source bytes").hexdigest()
    assert record.processed_sha256 == hashlib.sha256(b"payload").hexdigest()
    assert record.code_version == "9.9.9"
    write_sidecar(data, record)
    assert read_sidecar(data) == record
    assert verify_file(data) == record
    raw = json.loads((tmp_path / "silver/x/data.parquet.meta.json").read_text())
    assert raw["contract_name"] == "processed_metadata" and raw["contract_version"] == "1.0.0"
    data.write_bytes(b"payloaD")
    with pytest.raises(CustodyError, match="changed after it was written"):
        verify_file(data)


def test_download_record_names_its_url_as_parent(tmp_path):
    root = UPath(tmp_path)
    path = root / "source" / "f.json.gz"
    path.parent.mkdir()
    path.write_bytes(b"\x1f\x8b...")
    record = MetadataFactory(root, code_version="1").download(
        path,
        source_url="https://example.invalid/f.json.gz",
        compression=CompressionType.GZIP,
        etag='"abc"',
    )
    assert record.parents[0].kind == "url" and record.parents[0].sha256 == record.sha256
    assert record.compressed_size == 5


@pytest.mark.parametrize("bad", ["/abs/path", "../up", "a/../../b"])
def test_paths_must_stay_relative(bad):
    with pytest.raises(ValueError, match="relative to its root"):
        ProcessedMetadata(
            path=bad,
            parent_sha256="a" * 64,
            processed_sha256="b" * 64,
            transformation_name="t",
            size_bytes=1,
        )


def test_files_outside_the_root_are_refused(tmp_path):
    with pytest.raises(CustodyError, match="is not under the root"):
        relative_to_root(tmp_path / "elsewhere" / "f", tmp_path / "root")
    with pytest.raises(CustodyError, match="is not under the root"):
        relative_to_root(str(tmp_path) + "-sibling/f", tmp_path)
