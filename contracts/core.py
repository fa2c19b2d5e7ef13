"""The contract mechanism: one Pydantic definition per contract yields everything that must agree.

A contract is a `ContractModel` subclass with a `contract: ClassVar[ContractInfo]`. From that one
class come:

- the Pydantic model itself (validation of documents such as sidecars and run metadata),
- the Arrow schema (`arrow_schema`) for Parquet datasets, types keeping their meaning
  (timestamps as UTC, decimals exact, JSON as text tagged `logical_type=json`),
- the published JSON Schema (`json_schema`), written to `contracts/schemas/` by `contracts.publish`,
- a human-readable field table (`markdown_doc`),
- the table checks (`table_violations`) that asset checks run.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import types
import typing
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

WriteSemantics = Literal["document", "append", "upsert"]

JSON_LOGICAL_TYPE = b"json"


class ContractInfo(BaseModel):
    """The identity and table semantics of a contract."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str
    description: str
    write_semantics: WriteSemantics = "document"
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def schema_file_name(self) -> str:
        return f"{self.name}-{self.version}.schema.json"


class ContractModel(BaseModel):
    """Base class of every contract definition."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    contract: ClassVar[ContractInfo]


class ContractError(ValueError):
    """A contract definition uses a type the mechanism cannot map."""


# --- Arrow -------------------------------------------------------------------------------------


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], nullable
        raise ContractError(f"union types other than Optional are not supported: {annotation!r}")
    return annotation, False


def _decimal_type(field_info: Any) -> pa.DataType:
    max_digits = decimal_places = None
    for item in getattr(field_info, "metadata", []) or []:
        max_digits = getattr(item, "max_digits", max_digits)
        decimal_places = getattr(item, "decimal_places", decimal_places)
    if max_digits is None or decimal_places is None:
        raise ContractError("a Decimal field needs max_digits and decimal_places to fix its type")
    return pa.decimal128(max_digits, decimal_places)


def _arrow_type(annotation: Any, field_info: Any = None) -> tuple[pa.DataType, bool]:
    """Map one annotation to (Arrow type, is_json_text)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is str:
        return pa.string(), False
    if annotation is bool:
        return pa.bool_(), False
    if annotation is int:
        return pa.int64(), False
    if annotation is float:
        return pa.float64(), False
    if annotation is dt.datetime:
        return pa.timestamp("us", tz="UTC"), False
    if annotation is dt.date:
        return pa.date32(), False
    if annotation is decimal.Decimal:
        return _decimal_type(field_info), False
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return pa.string(), False
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return pa.string(), False
    if origin is dict or annotation is dict or annotation is Any:
        return pa.string(), True
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        item_type, _ = _arrow_type(_strip_optional(item)[0])
        return pa.list_(item_type), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_arrow_fields(annotation)), False
    raise ContractError(f"no Arrow type for annotation {annotation!r}")


def _arrow_fields(model: type[BaseModel]) -> list[pa.Field]:
    fields = []
    for name, info in model.model_fields.items():
        annotation, nullable = _strip_optional(info.annotation)
        arrow_type, is_json = _arrow_type(annotation, info)
        metadata = {}
        if info.description:
            metadata[b"description"] = info.description.encode()
        if is_json:
            metadata[b"logical_type"] = JSON_LOGICAL_TYPE
        fields.append(pa.field(name, arrow_type, nullable=nullable, metadata=metadata or None))
    return fields


def arrow_schema(model: type[ContractModel]) -> pa.Schema:
    """The Arrow schema of a contract's rows, with its identity in the schema metadata."""
    info = model.contract
    return pa.schema(
        _arrow_fields(model),
        metadata={b"contract_name": info.name.encode(), b"contract_version": info.version.encode()},
    )


# --- JSON Schema and docs ----------------------------------------------------------------------


def json_schema(model: type[ContractModel]) -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of a contract."""
    info = model.contract
    schema = model.model_json_schema(mode="serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"contracts/schemas/{info.schema_file_name}",
        **schema,
        "title": info.title,
        "description": info.description,
        "x-contract-name": info.name,
        "x-contract-version": info.version,
        "x-write-semantics": info.write_semantics,
    }
    if info.primary_key:
        schema["x-primary-key"] = list(info.primary_key)
    if info.unique:
        schema["x-unique"] = [list(u) for u in info.unique]
    return schema


def _type_label(annotation: Any, field_info: Any = None) -> str:
    annotation, _nullable = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        label = f"object ({annotation.__name__})"
    elif typing.get_origin(annotation) in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        label = f"list of {_type_label(item)}"
    elif typing.get_origin(annotation) is Literal:
        label = " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        label = " \\| ".join(f"`{m.value}`" for m in annotation)
    else:
        arrow_type, is_json = _arrow_type(annotation, field_info)
        label = "json (text)" if is_json else str(arrow_type)
    return label


def markdown_doc(model: type[ContractModel]) -> str:
    """A human-readable page for one contract, generated from its definition."""
    info = model.contract
    lines = [
        f"# {info.title}",
        "",
        (
            f"Contract `{info.name}`, version `{info.version}` ({info.write_semantics}). "
            f"Generated from `{model.__module__}.{model.__name__}`; do not edit by hand."
        ),
        "",
        info.description,
        "",
    ]
    if info.primary_key:
        lines += [f"Primary key: ({', '.join(f'`{c}`' for c in info.primary_key)})", ""]
    for guard in info.unique:
        lines += [f"Unique: ({', '.join(f'`{c}`' for c in guard)})", ""]
    lines += [
        "| field | type | required | nullable | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    nested: list[type[BaseModel]] = []
    for name, field_info in model.model_fields.items():
        inner, nullable = _strip_optional(field_info.annotation)
        for candidate in (inner, *typing.get_args(inner)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                nested.append(candidate)
        required = "yes" if field_info.is_required() else "no"
        description = (field_info.description or "").replace("|", "\\|")
        label = _type_label(field_info.annotation, field_info)
        lines.append(
            f"| `{name}` | {label} | {required} | {'yes' if nullable else 'no'} | {description} |"
        )
    seen: set[type[BaseModel]] = set()
    for sub in nested:
        if sub in seen:
            continue
        seen.add(sub)
        lines += ["", f"## {sub.__name__}", "", sub.__doc__ or "", ""]
        lines += ["| field | type | nullable | description |", "| --- | --- | --- | --- |"]
        for name, field_info in sub.model_fields.items():
            _, nullable = _strip_optional(field_info.annotation)
            description = (field_info.description or "").replace("|", "\\|")
            label = _type_label(field_info.annotation, field_info)
            lines.append(f"| `{name}` | {label} | {'yes' if nullable else 'no'} | {description} |")
    return "\n".join(lines).rstrip() + "\n"


# --- Table checks ------------------------------------------------------------------------------


def schema_violations(actual: pa.Schema, model: type[ContractModel]) -> list[str]:
    """Differences between a dataset's schema and its contract: missing, extra, retyped columns."""
    expected = arrow_schema(model)
    problems = []
    actual_names = set(actual.names)
    for field in expected:
        if field.name not in actual_names:
            problems.append(f"column {field.name!r} is missing (expected {field.type})")
            continue
        got = actual.field(field.name)
        if not got.type.equals(field.type):
            problems.append(f"column {field.name!r} has type {got.type}, expected {field.type}")
        if got.nullable and not field.nullable:
            problems.append(f"column {field.name!r} is nullable, expected NOT NULL")
    for name in actual.names:
        if name not in expected.names:
            problems.append(f"column {name!r} is not in contract {model.contract.name}")
    return problems


def key_duplicates(
    table: pa.Table, columns: Iterable[str], limit: int = 20
) -> list[dict[str, Any]]:
    """Key values that occur more than once in the table (at most `limit` of them)."""
    columns = list(columns)
    if table.num_rows == 0:
        return []
    counts = table.group_by(columns).aggregate([([], "count_all")])
    dupes = counts.filter(pc.greater(counts["count_all"], 1))
    return dupes.slice(0, limit).to_pylist()


def registered_contracts() -> list[type[ContractModel]]:
    """Every contract the project defines, in a stable order."""
    from contracts import custody, gex, hq, hq_reconciliation, market, market_features, staging

    models: list[type[ContractModel]] = [
        *custody.CONTRACTS,
        *gex.CONTRACTS,
        *hq.CONTRACTS,
        *hq_reconciliation.CONTRACTS,
        *market.CONTRACTS,
        *market_features.CONTRACTS,
        *staging.CONTRACTS,
    ]
    return sorted(models, key=lambda m: m.contract.name)
