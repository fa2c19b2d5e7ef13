"""Published JSON Schemas and docs agree with the contract definitions; the mechanism maps types faithfully."""

import datetime as dt
import decimal
import json
from typing import Any, ClassVar, Literal

import jsonschema
import pyarrow as pa
import pytest
from pydantic import Field

from contracts import (
    ContractInfo,
    ContractModel,
    arrow_schema,
    json_schema,
    key_duplicates,
    schema_violations,
)
from contracts.custody import CONTRACTS, ProcessedMetadata
from contracts.publish import SCHEMA_DIR, expected_files, stale_files


def test_published_files_are_up_to_date():
    assert stale_files() == []


def test_a_changed_definition_makes_the_check_fail(tmp_path):
    schema_dir, docs_dir = tmp_path / "schemas", tmp_path / "docs"
    for path, text in expected_files(schema_dir, docs_dir).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert stale_files(schema_dir, docs_dir) == []
    victim = schema_dir / ProcessedMetadata.contract.schema_file_name
    victim.write_text(victim.read_text().replace("processed_sha256", "output_sha256"))
    (schema_dir / "orphan-1.0.0.schema.json").write_text("{}")
    problems = stale_files(schema_dir, docs_dir)
    assert any("out of date" in p and victim.name in p for p in problems)
    assert any("belongs to no contract" in p for p in problems)


@pytest.mark.parametrize("model", CONTRACTS, ids=lambda m: m.contract.name)
def test_published_schema_accepts_what_the_model_writes(model):
    published = json.loads((SCHEMA_DIR / model.contract.schema_file_name).read_text())
    jsonschema.Draft202012Validator.check_schema(published)
    example = {
        "download_metadata": {
            "path": "source/x.json",
            "source_url": "https://example.invalid/x.json",
            "sha256": "a" * 64,
            "compressed_size": 3,
            "compression": "none",
        },
        "sample_metadata": {
            "path": "samples/x.jsonl",
            "parent_sha256": "a" * 64,
            "sample_sha256": "b" * 64,
            "regime_type": "head",
            "n_rows": 3,
            "strategy_used": "HeadSampler",
        },
        "processed_metadata": {
            "path": "bronze/a/data.parquet",
            "parent_sha256": "a" * 64,
            "processed_sha256": "b" * 64,
            "transformation_name": "a",
            "size_bytes": 10,
        },
    }[model.contract.name]
    document = model.model_validate(example).model_dump(mode="json")
    jsonschema.validate(document, published)
    document.pop("contract_name")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, published)


class _Trade(ContractModel):
    contract: ClassVar[ContractInfo] = ContractInfo(
        name="trade_probe",
        version="1.2.0",
        title="Trade",
        description="probe",
        write_semantics="append",
        primary_key=("trade_id",),
    )
    trade_id: str = Field(..., description="id")
    price: decimal.Decimal = Field(..., max_digits=18, decimal_places=8)
    size: float
    at: dt.datetime
    day: dt.date | None = None
    side: Literal["buy", "sell"] | None = None
    attempts: int
    tags: list[str] = Field(default_factory=list)
    raw: dict[str, Any] | None = None


def test_arrow_types_keep_their_meaning():
    schema = arrow_schema(_Trade)
    assert schema.field("price").type == pa.decimal128(18, 8)
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("day").type == pa.date32() and schema.field("day").nullable
    assert not schema.field("trade_id").nullable
    assert schema.field("raw").metadata[b"logical_type"] == b"json"
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("trade_id").metadata[b"description"] == b"id"
    assert schema.metadata[b"contract_version"] == b"1.2.0"
    assert json_schema(_Trade)["x-primary-key"] == ["trade_id"]


def test_schema_violations_name_each_difference():
    good = arrow_schema(_Trade)
    assert schema_violations(good, _Trade) == []
    bad = good.remove(good.get_field_index("size")).append(pa.field("extra", pa.int8()))
    bad = bad.set(bad.get_field_index("attempts"), pa.field("attempts", pa.int32(), nullable=False))
    problems = schema_violations(bad, _Trade)
    assert "column 'size' is missing (expected double)" in problems
    assert "column 'attempts' has type int32, expected int64" in problems
    assert "column 'extra' is not in contract trade_probe" in problems


def test_key_duplicates_finds_repeated_keys():
    table = pa.table({"trade_id": ["a", "b", "a", "c", "c", "c"]})
    assert sorted((d["trade_id"], d["count_all"]) for d in key_duplicates(table, ["trade_id"])) == [
        ("a", 2),
        ("c", 3),
    ]
    assert key_duplicates(pa.table({"trade_id": ["a", "b"]}), ["trade_id"]) == []
