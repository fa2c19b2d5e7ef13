"""Chain-of-custody contracts: the sidecar written beside every file the product downloads,
samples or writes (`<file name>.meta.json`).

The fields of `spec/metadata-chain-of-custody.md` are kept as the spec names them; each record adds
what a trace needs: the file's path relative to its root, its parents as `{path, sha256}` items,
and the Dagster asset, partition, run and code version that produced it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from contracts.core import ContractInfo, ContractModel

SHA256_PATTERN = r"^[0-9a-f]{64}$"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CompressionType(str, enum.Enum):
    GZIP = "gzip"
    BZIP2 = "bz2"
    ZSTD = "zstd"
    NONE = "none"


class ParentRef(ContractModel):
    """One input of a file: another file (verifiable on disk), a URL, or a database query."""

    kind: Literal["file", "url", "query"] = Field(
        "file",
        description="`file`: a file under the data or lake root; `url`: where a download came from; `query`: rows read from a database.",
    )
    path: str = Field(
        ...,
        description="For a file, its path relative to the root; for a URL, the URL; for a query, the redacted DSN and relation.",
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="SHA256 of the parent's bytes (for a query, of its rows in a canonical encoding).",
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="What else identifies the parent (for a query: query text, bounds, row count).",
    )


class _CustodyRecord(ContractModel):
    contract: ClassVar[ContractInfo]

    contract_name: str = Field(
        ..., description="Name of the metadata contract this sidecar follows."
    )
    contract_version: str = Field(..., description="Version of that contract.")
    path: str = Field(
        ...,
        description="The file's path relative to the data root (or the lake root for lake files).",
    )
    parents: list[ParentRef] = Field(
        default_factory=list, description="The inputs this file was made from."
    )
    asset_key: str | None = Field(None, description="Dagster asset that wrote the file, if any.")
    partition_key: str | None = Field(
        None, description="Dagster partition the file belongs to, if any."
    )
    run_id: str | None = Field(
        None, description="Dagster run id (or another run identifier) that wrote the file."
    )
    code_version: str | None = Field(None, description="Version of the code that wrote the file.")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"path must be relative to its root and stay inside it, got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_identity(cls, data: Any) -> Any:
        # Writers need not repeat the identity; readers reject a sidecar of another contract or major.
        if isinstance(data, dict):
            data = {
                "contract_name": cls.contract.name,
                "contract_version": cls.contract.version,
                **data,
            }
            if data["contract_name"] != cls.contract.name:
                raise ValueError(
                    f"contract_name is {data['contract_name']!r}, expected {cls.contract.name!r}"
                )
            major = str(data["contract_version"]).split(".")[0]
            if major != str(cls.contract.major):
                raise ValueError(
                    f"contract_version {data['contract_version']!r} has another major version than {cls.contract.version!r}"
                )
        return data


class DownloadMetadata(_CustodyRecord):
    """Metadata for a raw downloaded file."""

    contract: ClassVar[ContractInfo] = ContractInfo(
        name="download_metadata",
        version="1.0.0",
        title="Download metadata",
        description="Sidecar of a raw file downloaded from a URL (spec: metadata-chain-of-custody, DownloadMetadata).",
    )

    source_url: str = Field(
        ..., description="URL the file was downloaded from (credentials removed)."
    )
    download_timestamp: dt.datetime = Field(
        default_factory=_utc_now, description="When the download finished (UTC)."
    )
    etag: str | None = Field(None, description="ETag the server sent, if any.")
    sha256: str = Field(
        ..., pattern=SHA256_PATTERN, description="SHA256 hash of the downloaded file content."
    )
    compressed_size: int = Field(..., ge=0, description="Size of the file on disk in bytes.")
    uncompressed_size_estimate: int | None = Field(
        None, ge=0, description="Estimated size after decompression."
    )
    compression: CompressionType = Field(
        ..., description="Compression detected from the file's bytes."
    )

    @property
    def file_sha256(self) -> str:
        return self.sha256


class SampleMetadata(_CustodyRecord):
    """Metadata for a generated sample file."""

    contract: ClassVar[ContractInfo] = ContractInfo(
        name="sample_metadata",
        version="1.0.0",
        title="Sample metadata",
        description="Sidecar of a sample drawn from a larger file (spec: metadata-chain-of-custody, SampleMetadata).",
    )

    parent_sha256: str = Field(
        ..., pattern=SHA256_PATTERN, description="SHA256 hash of the original raw download."
    )
    sample_sha256: str = Field(
        ..., pattern=SHA256_PATTERN, description="SHA256 hash of the sample file content."
    )
    created_at: dt.datetime = Field(
        default_factory=_utc_now, description="When the sample was written (UTC)."
    )
    regime_type: str = Field(
        ..., description="Type of sampling performed (e.g., 'head', 'random', 'systematic')."
    )
    n_rows: int = Field(..., ge=0, description="Number of records captured in the sample.")
    source_offset: int | None = Field(
        None, ge=0, description="Starting position in the source file."
    )
    strategy_used: str = Field(..., description="Name of the sampling strategy class used.")
    sampler_version: str = Field("1.0", description="Version of the sampler logic.")
    seed: int | None = Field(None, description="Random seed, for the random regime.")

    @property
    def file_sha256(self) -> str:
        return self.sample_sha256


class ProcessedMetadata(_CustodyRecord):
    """Metadata for a file after a processing/transformation step."""

    contract: ClassVar[ContractInfo] = ContractInfo(
        name="processed_metadata",
        version="1.0.0",
        title="Processed metadata",
        description=(
            "Sidecar of a file written by a processing step (spec: metadata-chain-of-custody, "
            "ProcessedMetadata). With several parents, `parent_sha256` is the SHA256 of their "
            "SHA256s, sorted and joined by newlines; each parent is listed in `parents`."
        ),
    )

    parent_sha256: str = Field(
        ...,
        pattern=SHA256_PATTERN,
        description="SHA256 hash of the input file to this process (could be raw, sample, or another processed file).",
    )
    processed_sha256: str = Field(
        ..., pattern=SHA256_PATTERN, description="SHA256 hash of the output processed file content."
    )
    created_at: dt.datetime = Field(
        default_factory=_utc_now, description="When the file was written (UTC)."
    )
    transformation_name: str = Field(
        ...,
        description="Name of the transformation applied (e.g., 'SchemaEnrichment', 'FieldNormalization').",
    )
    transformation_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters used for the transformation."
    )
    processor_version: str = Field("1.0", description="Version of the processing logic.")
    size_bytes: int = Field(..., ge=0, description="Size of the file in bytes.")
    rows: int | None = Field(None, ge=0, description="Rows in the file, for tabular data.")

    @property
    def file_sha256(self) -> str:
        return self.processed_sha256


CustodyRecord = DownloadMetadata | SampleMetadata | ProcessedMetadata

CONTRACTS: tuple[type[ContractModel], ...] = (DownloadMetadata, SampleMetadata, ProcessedMetadata)

RECORD_TYPES: dict[str, type[DownloadMetadata | SampleMetadata | ProcessedMetadata]] = {
    model.contract.name: model for model in (DownloadMetadata, SampleMetadata, ProcessedMetadata)
}
