"""Chain of custody: the one factory that builds sidecar records, and reading and verifying them.

Every data file `X` has a sidecar `X.meta.json` holding one of the custody contracts
(`contracts.custody`). Hashes are computed while a file is written (see `files.HashingWriter`) or
streamed from disk, never by loading a whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from upath import UPath

from contracts.custody import (
    RECORD_TYPES,
    CompressionType,
    CustodyRecord,
    DownloadMetadata,
    ParentRef,
    ProcessedMetadata,
    SampleMetadata,
)
from pipeline_assets.lib.files import as_upath, sha256_file, write_bytes_atomic

SIDECAR_SUFFIX = ".meta.json"


class CustodyError(Exception):
    """A sidecar is missing, unreadable, or does not match the file it describes."""


def sidecar_path(data_path: UPath) -> UPath:
    return data_path.with_name(data_path.name + SIDECAR_SUFFIX)


def combined_parent_sha256(parents: Iterable[ParentRef]) -> str:
    """The `parent_sha256` of a file: its one parent's hash, or the hash of all parents' hashes."""
    hashes = sorted({p.sha256 for p in parents if p.sha256})
    if not hashes:
        raise CustodyError("a processed file needs at least one parent with a SHA256")
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def relative_to_root(
    path: str | os.PathLike[str] | UPath, root: str | os.PathLike[str] | UPath
) -> str:
    """`path` relative to `root`, with forward slashes; refuses a path outside the root."""
    p, r = str(as_upath(path)), str(as_upath(root)).rstrip("/")
    if not p.startswith(r + "/"):
        raise CustodyError(f"{p} is not under the root {r}")
    return p[len(r) + 1 :]


class MetadataFactory:
    """Builds custody records for files under one root, stamped with the code version."""

    def __init__(self, root: str | os.PathLike[str] | UPath, *, code_version: str):
        self.root = as_upath(root)
        self.code_version = code_version

    def relative(self, path: str | os.PathLike[str] | UPath) -> str:
        return relative_to_root(path, self.root)

    def file_parent(
        self, path: str | os.PathLike[str] | UPath, sha256: str | None = None, **details: Any
    ) -> ParentRef:
        """A parent that is a file under this root; hashed from disk unless the hash is given."""
        sha = sha256 or sha256_file(path)[0]
        return ParentRef(kind="file", path=self.relative(path), sha256=sha, details=details)

    def processed(
        self,
        path: UPath,
        *,
        sha256: str | None = None,
        size_bytes: int | None = None,
        parents: Iterable[ParentRef],
        transformation_name: str,
        transformation_params: Mapping[str, Any] | None = None,
        rows: int | None = None,
        asset_key: str | None = None,
        partition_key: str | None = None,
        run_id: str | None = None,
        processor_version: str | None = None,
    ) -> ProcessedMetadata:
        parents = list(parents)
        if sha256 is None or size_bytes is None:
            sha256, size_bytes = sha256_file(path)
        return ProcessedMetadata(
            path=self.relative(path),
            parents=parents,
            parent_sha256=combined_parent_sha256(parents),
            processed_sha256=sha256,
            size_bytes=size_bytes,
            rows=rows,
            transformation_name=transformation_name,
            transformation_params=dict(transformation_params or {}),
            processor_version=processor_version or self.code_version,
            asset_key=asset_key,
            partition_key=partition_key,
            run_id=run_id,
            code_version=self.code_version,
        )

    def download(
        self,
        path: UPath,
        *,
        source_url: str,
        compression: CompressionType,
        etag: str | None = None,
        uncompressed_size_estimate: int | None = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        run_id: str | None = None,
        asset_key: str | None = None,
        partition_key: str | None = None,
    ) -> DownloadMetadata:
        if sha256 is None or size_bytes is None:
            sha256, size_bytes = sha256_file(path)
        return DownloadMetadata(
            path=self.relative(path),
            parents=[ParentRef(kind="url", path=source_url, sha256=sha256)],
            source_url=source_url,
            etag=etag,
            sha256=sha256,
            compressed_size=size_bytes,
            uncompressed_size_estimate=uncompressed_size_estimate,
            compression=compression,
            run_id=run_id,
            asset_key=asset_key,
            partition_key=partition_key,
            code_version=self.code_version,
        )

    def sample(
        self,
        path: UPath,
        *,
        parent: ParentRef,
        regime_type: str,
        n_rows: int,
        strategy_used: str,
        source_offset: int | None = None,
        seed: int | None = None,
        sampler_version: str = "1.0",
        run_id: str | None = None,
    ) -> SampleMetadata:
        if parent.sha256 is None:
            raise CustodyError(f"the parent of sample {path} has no SHA256")
        sample_sha256, _ = sha256_file(path)
        return SampleMetadata(
            path=self.relative(path),
            parents=[parent],
            parent_sha256=parent.sha256,
            sample_sha256=sample_sha256,
            regime_type=regime_type,
            n_rows=n_rows,
            source_offset=source_offset,
            strategy_used=strategy_used,
            sampler_version=sampler_version,
            seed=seed,
            run_id=run_id,
            code_version=self.code_version,
        )


def sidecar_bytes(record: CustodyRecord) -> bytes:
    return (json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def write_sidecar(data_path: UPath, record: CustodyRecord, *, fsync: bool = True) -> UPath:
    """Write the record beside its file, atomically; returns the sidecar's path."""
    target = sidecar_path(data_path)
    write_bytes_atomic(target, sidecar_bytes(record), fsync=fsync)
    return target


def read_sidecar(data_path: UPath) -> CustodyRecord:
    """The validated record of a file, or a CustodyError naming the sidecar and what is wrong."""
    target = sidecar_path(data_path)
    try:
        raw = json.loads(target.read_bytes())
    except FileNotFoundError as exc:
        raise CustodyError(f"{data_path}: its sidecar {target.name} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CustodyError(f"{target}: not valid JSON ({exc})") from exc
    name = raw.get("contract_name") if isinstance(raw, dict) else None
    model = RECORD_TYPES.get(name or "")
    if model is None:
        raise CustodyError(
            f"{target}: contract_name is {name!r}, expected one of {sorted(RECORD_TYPES)}"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise CustodyError(f"{target}: does not follow contract {name}: {exc}") from exc


def verify_file(data_path: UPath, *, expected_sha256: str | None = None) -> CustodyRecord:
    """Check a file against its sidecar (and, if given, an expected hash); returns the record."""
    record = read_sidecar(data_path)
    try:
        actual_sha, actual_size = sha256_file(data_path)
    except FileNotFoundError as exc:
        raise CustodyError(f"{data_path}: the file is missing but its sidecar exists") from exc
    if actual_sha != record.file_sha256:
        raise CustodyError(
            f"{data_path}: SHA256 is {actual_sha}, but its sidecar records {record.file_sha256} "
            "(the file was changed after it was written)"
        )
    if expected_sha256 is not None and actual_sha != expected_sha256:
        raise CustodyError(f"{data_path}: SHA256 is {actual_sha}, expected {expected_sha256}")
    recorded_size = getattr(record, "size_bytes", None) or getattr(record, "compressed_size", None)
    if recorded_size is not None and recorded_size != actual_size:
        raise CustodyError(
            f"{data_path}: size is {actual_size} bytes, its sidecar records {recorded_size}"
        )
    return record


def completed_output_reason(
    data_path: UPath,
    *,
    parents: Iterable[ParentRef],
    params: Mapping[str, Any],
    code_version: str,
) -> str | None:
    """Why `data_path` need not be made again, or None.

    It need not when it exists, verifies against its sidecar, and the sidecar records exactly
    these parents (path and SHA256), these transformation parameters and this code version: the
    same inputs through the same code give the same bytes, so making it again would change
    nothing. Anything missing, changed or different gives None (make it).
    """
    try:
        record = verify_file(data_path)
    except CustodyError:
        return None
    wanted = sorted((p.path, p.sha256 or "") for p in parents)
    if not isinstance(record, ProcessedMetadata):
        return None
    if sorted((p.path, p.sha256 or "") for p in record.parents) != wanted:
        return None
    if json.loads(json.dumps(dict(params), sort_keys=True, default=str)) != dict(
        record.transformation_params
    ):
        return None
    if record.code_version != code_version:
        return None
    return (
        f"{record.path} was made by run {record.run_id} from the same {len(wanted)} input(s) "
        f"(path and SHA256), parameters and code version {code_version}"
    )
